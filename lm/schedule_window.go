package lm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Daily windows and the maximum elapsed copying time (Huawei's
// period_start_time / duration / period_speed / period_max_bandwidth).
//
// A window "22:00-06:00=highest" or "06:00-22:00=low,max-mbps=20" gives
// the speed level and cap in force while the server's local wall clock is
// in [start, end) (it wraps midnight when end < start; start == end is all
// day); seconds may be given (HH:MM:SS), which tests use to make short
// windows. Outside every window the pair's own speed and cap apply. The
// first window listed that contains the clock wins.
//
// Who applies them: the Manager's schedule goroutine (scheduleLoop, owned
// by the Manager, started by Open, ended by Close) sets every pair's
// bucket rate to what is in force now, then sleeps until the next window
// boundary of any pair, the next max-elapsed deadline, a change (create,
// set, a copy starting) or one minute, whichever comes first, and reads
// the wall clock again: a DST change or a clock step moves the boundaries
// with the wall clock, late by at most that minute.
//
// Max elapsed: a pair whose copying time (the time its copy ran: initial
// copy and DCL re-copies, summed over pauses and restarts, persisted with
// its record at checkpoints and transitions) reaches MaxElapsed goes to
// paused with the reason "max elapsed 6h0m0s reached". A resume copies on
// only after `migration set --max-elapsed` raised or removed (0) it: the
// pause would come back at once otherwise (resume says so).

// Window is one daily window (see above).
type Window struct {
	Start, End time.Duration // since local midnight
	Speed      Speed
	MaxMBps    int64
}

func (w Window) String() string {
	s := clockStr(w.Start) + "-" + clockStr(w.End) + "=" + string(w.Speed)
	if w.MaxMBps > 0 {
		s += ",max-mbps=" + strconv.FormatInt(w.MaxMBps, 10)
	}
	return s
}

func clockStr(d time.Duration) string {
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	if s != 0 {
		return fmt.Sprintf("%02d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%02d:%02d", h, m)
}

// ParseWindow reads HH:MM[:SS]-HH:MM[:SS]=SPEED[,max-mbps=N] for obj.
func ParseWindow(obj, s string) (Window, error) {
	bad := func(why string) (Window, error) {
		return Window{}, refuse(ErrInvalid, obj, "window %q: %s (want HH:MM[:SS]-HH:MM[:SS]=SPEED[,max-mbps=N], for example 22:00-06:00=highest)", s, why)
	}
	span, rest, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return bad("no =SPEED")
	}
	from, to, ok := strings.Cut(span, "-")
	if !ok {
		return bad("no start-end")
	}
	var w Window
	var err error
	if w.Start, err = parseClock(from); err != nil {
		return bad("start " + from)
	}
	if w.End, err = parseClock(to); err != nil {
		return bad("end " + to)
	}
	parts := strings.Split(rest, ",")
	w.Speed = Speed(parts[0])
	if _, err := rateOf(w.Speed); err != nil || w.Speed == "" {
		return bad("speed " + parts[0] + " (low, medium, high or highest)")
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if k != "max-mbps" || err != nil || n < 0 {
			return bad("option " + p + " (max-mbps=N)")
		}
		w.MaxMBps = n
	}
	return w, nil
}

// ParseMaxElapsed reads a maximum copying time for obj: a Go duration
// ("6h", "90m"); "" or "0" is none.
func ParseMaxElapsed(obj, s string) (time.Duration, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, refuse(ErrInvalid, obj, "max elapsed %q: want a duration such as 6h or 90m (0: none)", s)
	}
	return d, nil
}

// ParseWindows reads a list of windows ("none" alone: no window).
func ParseWindows(obj string, ss []string) ([]Window, error) {
	if len(ss) == 1 && ss[0] == "none" {
		return []Window{}, nil
	}
	ws := make([]Window, 0, len(ss))
	for _, s := range ss {
		w, err := ParseWindow(obj, s)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, nil
}

func windowStrings(ws []Window) []string {
	if len(ws) == 0 {
		return nil
	}
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.String()
	}
	return out
}

// contains reports whether the clock time tod is in the window.
func (w Window) contains(tod time.Duration) bool {
	switch {
	case w.Start == w.End:
		return true
	case w.Start < w.End:
		return tod >= w.Start && tod < w.End
	}
	return tod >= w.Start || tod < w.End
}

// sinceMidnight is the wall clock time of t (in its location).
func sinceMidnight(t time.Time) time.Duration {
	h, m, s := t.Clock()
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second +
		time.Duration(t.Nanosecond())
}

// windowAt is the window in force at now (local time), or -1, and the next
// time any window starts or ends after now (the zero time: none).
func windowAt(ws []Window, now time.Time) (int, time.Time) {
	now = now.Local()
	tod := sinceMidnight(now)
	in := -1
	var next time.Time
	for i, w := range ws {
		if in < 0 && w.contains(tod) {
			in = i
		}
		if w.Start == w.End {
			continue
		}
		for _, b := range []time.Duration{w.Start, w.End} {
			t := nextClock(now, b)
			if !t.After(now) {
				t = atClock(now.AddDate(0, 0, 1), b)
			}
			if next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	return in, next
}

// pairSchedule is a pair's windows and copying time; guarded by pair.mu.
type pairSchedule struct {
	windows []Window
	// window is the index of the window in force (-1: none) and until
	// when (the next boundary).
	window int
	until  time.Time
	// elapsed is the copying time before the copy running now, started
	// at copyStart (zero: none runs).
	elapsed   time.Duration
	copyStart time.Time
}

func (p *pair) startElapsedLocked(now time.Time) { p.mu.sched.copyStart = now }

func (p *pair) stopElapsedLocked(now time.Time) {
	if !p.mu.sched.copyStart.IsZero() {
		p.mu.sched.elapsed += now.Sub(p.mu.sched.copyStart)
		p.mu.sched.copyStart = time.Time{}
	}
}

// copyElapsedLocked is the copying time until now.
func (p *pair) copyElapsedLocked(now time.Time) time.Duration {
	d := p.mu.sched.elapsed
	if !p.mu.sched.copyStart.IsZero() {
		d += now.Sub(p.mu.sched.copyStart)
	}
	return d
}

// applySchedule sets the pair's bucket to the rate in force at now (its
// window's, else its own) and returns when to look again (the zero time:
// never, as far as this pair is concerned).
func (p *pair) applySchedule(now time.Time) time.Time {
	p.mu.Lock()
	rec := p.mu.rec
	if p.mu.sched.windows == nil { // parsed once per record change (set clears it)
		ws, err := ParseWindows(pairObject(p.name()), rec.Windows)
		if err != nil {
			p.zlog.Warn().Err(err).Msg("windows of the record ignored")
			ws = []Window{}
		}
		p.mu.sched.windows = ws
	}
	ws := p.mu.sched.windows
	in, next := windowAt(ws, now)
	p.mu.sched.window, p.mu.sched.until = in, next
	rate := p.scheduledRateLocked()
	var deadline time.Time
	maxEl := time.Duration(rec.MaxElapsedNS)
	el := p.copyElapsedLocked(now)
	over := maxEl > 0 && el >= maxEl && !p.mu.sched.copyStart.IsZero()
	if maxEl > 0 && !p.mu.sched.copyStart.IsZero() && !over {
		deadline = now.Add(maxEl - el)
	}
	p.mu.Unlock()
	if r := guardedRate(rate, p.guardRate()); p.bucket.rate() != r { // latency.go: the host-latency guard may hold the copy below
		p.bucket.setRate(r)
		if in >= 0 {
			p.zlog.Info().Str("window", ws[in].String()).Int64("rate_bps", rate).Msg("window in force")
		} else if len(ws) > 0 {
			p.zlog.Info().Int64("rate_bps", rate).Msg("outside every window: own speed")
		}
	}
	if over && p.getState() == StateCopying {
		reason := fmt.Sprintf("max elapsed %v reached", maxEl)
		if err := p.transitionFrom(StateCopying, StatePaused, reason); err != nil && !errors.Is(err, ErrState) {
			p.zlog.Error().Err(err).Msg("cannot pause at max elapsed")
		}
	}
	if deadline.IsZero() || (!next.IsZero() && next.Before(deadline)) {
		return next
	}
	return deadline
}

// scheduledRateLocked is the rate that the speed level and cap in force
// allow (RateLimit): the window's when one is in force (applySchedule
// keeps which), else the pair's own. The host-latency guard may hold the
// copy below it (latency.go). p.mu held.
func (p *pair) scheduledRateLocked() int64 {
	if i := p.mu.sched.window; i >= 0 && i < len(p.mu.sched.windows) {
		w := p.mu.sched.windows[i]
		return effectiveRate(w.Speed, w.MaxMBps)
	}
	return effectiveRate(Speed(p.mu.rec.Speed), p.mu.rec.MaxMBps)
}

// windowStatus is the window in force now and until when.
func (p *pair) windowStatus() (w *Window, until time.Time, elapsed time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := p.mu.sched.window; i >= 0 && i < len(p.mu.sched.windows) {
		ww := p.mu.sched.windows[i]
		w = &ww
	}
	return w, p.mu.sched.until, p.copyElapsedLocked(time.Now())
}

// wakeSchedule makes the schedule goroutine look again now.
func (m *Manager) wakeSchedule() {
	select {
	case m.schedWake <- struct{}{}:
	default:
	}
}

// scheduleLoop is the Manager's schedule goroutine (see above).
func (m *Manager) scheduleLoop() {
	for {
		now := time.Now()
		ps := m.activePairs()
		wake := now.Add(time.Minute)
		for _, p := range ps {
			if p.getState().Final() {
				continue
			}
			if t := p.applySchedule(now); !t.IsZero() && t.Before(wake) {
				wake = t
			}
		}
		timer := time.NewTimer(max(time.Until(wake), time.Millisecond))
		select {
		case <-m.ctx.Done():
			timer.Stop()
			return
		case <-m.schedWake:
		case <-timer.C:
		}
		timer.Stop()
	}
}
