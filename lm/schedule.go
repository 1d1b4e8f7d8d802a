package lm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Scheduled start (--start-at): a pair (or every pair of a session)
// created with a start time in the future is "scheduled" until then, with
// the start time in its record and status; its run goroutine moves it to
// queued when the time comes, and from there the copy queue (queue.go)
// starts it.
//
// Decisions:
//   - The start time is a point in time (UTC in the record). "HH:MM" (or
//     "HH:MM:SS") is read by the server, in its local time zone, as the
//     next time the wall clock shows it (today if still ahead, else
//     tomorrow); an RFC 3339 time is taken as is. A time already passed
//     (or now) starts the pair at once: it is created queued.
//   - The run goroutine waits at most scheduleRecheck at a time and reads
//     the wall clock again each time, so a clock step or a DST change
//     moves the start with the wall clock, never late by more than that.
//   - Across restarts nothing special happens: a pair recovered scheduled
//     whose start time passed while lmtgt was down starts at open.
//   - A scheduled pair has no copy running: host writes go to both legs
//     (as in queued; nothing is below the cursor, so nothing is marked).
//     It can be cancelled; pause, resume and split refuse it (its state
//     says why).
//   - A session's start time holds its runner too: it resumes no held
//     pair before the start time (sessionrun.go schedule).

// scheduleRecheck bounds one wait for a start time (wall clock re-read).
const scheduleRecheck = time.Minute

// ParseStartAt reads a start time for obj: RFC 3339, or HH:MM[:SS] as the
// next occurrence in the server's local time after now. "" is the zero
// time (start at once).
func ParseStartAt(obj, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	tod, err := parseClock(s)
	if err != nil {
		return time.Time{}, refuse(ErrInvalid, obj, "start time %q: want an RFC 3339 time (2026-12-24T22:00:00+01:00) or HH:MM[:SS] in the server's local time", s)
	}
	return nextClock(now.Local(), tod).UTC(), nil
}

// parseClock reads HH:MM or HH:MM:SS as a duration since midnight.
func parseClock(s string) (time.Duration, error) {
	var h, m, sec int
	var rest string
	n, _ := fmt.Sscanf(s, "%d:%d:%d%s", &h, &m, &sec, &rest)
	if n != 3 {
		sec = 0
		if n, _ = fmt.Sscanf(s, "%d:%d%s", &h, &m, &rest); n != 2 {
			return 0, invalidf("clock %q", s)
		}
	}
	if h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec > 59 || len(s) > 8 {
		return 0, invalidf("clock %q", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second, nil
}

// atClock is the wall clock time tod of the day of t, in t's location
// (DST-safe: built from the date and the clock, not by adding hours).
func atClock(t time.Time, tod time.Duration) time.Time {
	y, mo, d := t.Date()
	h := int(tod / time.Hour)
	mi := int(tod % time.Hour / time.Minute)
	s := int(tod % time.Minute / time.Second)
	return time.Date(y, mo, d, h, mi, s, 0, t.Location())
}

// nextClock is the first time after now (or at now) the wall clock shows tod.
func nextClock(now time.Time, tod time.Duration) time.Time {
	at := atClock(now, tod)
	if at.Before(now) {
		at = atClock(now.AddDate(0, 0, 1), tod)
	}
	return at
}

// startState is the state a pair is created in: scheduled when its start
// time is still ahead, else queued.
func startState(startAt, now time.Time) PairState {
	if !startAt.IsZero() && startAt.After(now) {
		return StateScheduled
	}
	return StateQueued
}

// queueKey is the pair's place in the copy queue (queue.go).
func (p *pair) queueKey() queueKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return queueKey{priority: recPriority(p.mu.rec.Priority), created: p.mu.rec.Created, id: p.id}
}

// waitStart is the run goroutine's step in state scheduled: once the
// start time has come, scheduled → queued; else wait (at most
// scheduleRecheck) until it comes, the pair is woken or ctx ends.
func (p *pair) waitStart(ctx context.Context) {
	p.mu.Lock()
	at := p.mu.rec.StartAt
	p.mu.Unlock()
	d := time.Until(at) // at has no monotonic reading: the wall clock
	if d <= 0 {
		reason := fmt.Sprintf("start time %s reached", at.Local().Format(time.RFC3339))
		if err := p.transitionFrom(StateScheduled, StateQueued, reason); err != nil && !errors.Is(err, ErrState) {
			p.zlog.Error().Err(err).Msg("cannot start a scheduled pair")
			p.sleep(ctx, p.m.opts.RetryMin)
		}
		return
	}
	p.sleep(ctx, min(d, scheduleRecheck))
}
