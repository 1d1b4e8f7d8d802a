package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// The event log and the histories (lm/events.go, lm/history.go):
//
//	GET /v1/events?after=SEQ&since=RFC3339&type=T1,T2&limit=N&wait=DURATION
//
// lists the stored events (oldest first) and Last, the sequence number a
// follower passes as after= next time. With wait, the request is a long
// poll: it answers as soon as a selected event above after is committed,
// or after wait (at most maxEventWait) with none. A follower just repeats
// it; nothing is lost between two polls, since the log is read by
// sequence number.
//
//	GET /v1/history/migrations[?source=SRC]
//	GET /v1/history/sessions/{name}

// maxEventWait bounds one long poll (below the client's timeout).
const maxEventWait = 60 * time.Second

const eventsObject = "events"

// eventRoutes registers the event and history routes.
func (s *Server) eventRoutes(m *http.ServeMux) {
	v := wire.Version
	svc := s.svc
	m.HandleFunc("GET "+v+"/events", func(w http.ResponseWriter, r *http.Request) {
		q, wait, e := parseEventQuery(r)
		if e != nil {
			writeError(w, e)
			return
		}
		ctx := r.Context()
		if wait > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, wait)
			defer cancel()
			go func() { // ends with the request (cancel above)
				select {
				case <-s.quit: // shutting down: answer now
					cancel()
				case <-ctx.Done():
				}
			}()
		}
		l, err := svc.Events(ctx, q, wait > 0)
		reply(w, http.StatusOK, l, err, eventsObject)
	})
	m.HandleFunc("GET "+v+"/history/migrations", func(w http.ResponseWriter, r *http.Request) {
		src := r.URL.Query().Get("source")
		h, err := svc.MigrationHistory(src)
		obj := "migration history"
		if src != "" {
			obj = pairObject(src)
		}
		reply(w, http.StatusOK, h, err, obj)
	})
	m.HandleFunc("GET "+v+"/history/sessions/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		h, err := svc.SessionHistory(name)
		reply(w, http.StatusOK, h, err, "session "+name)
	})
}

func parseEventQuery(r *http.Request) (lm.EventQuery, time.Duration, *wire.Error) {
	var q lm.EventQuery
	var wait time.Duration
	vals := r.URL.Query()
	if a := vals.Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			return q, 0, invalid(eventsObject, "after=%q: want a sequence number", a)
		}
		q.After = n
	}
	if sn := vals.Get("since"); sn != "" {
		t, err := time.Parse(time.RFC3339Nano, sn)
		if err != nil {
			return q, 0, invalid(eventsObject, "since=%q: want an RFC 3339 time", sn)
		}
		q.Since = t
	}
	if ts := vals.Get("type"); ts != "" {
		for _, t := range strings.Split(ts, ",") {
			if !validEventType(t) {
				return q, 0, invalid(eventsObject, "type=%q: want one of %s", t, strings.Join(lm.EventTypes, ", "))
			}
			q.Types = append(q.Types, t)
		}
	}
	if ls := vals.Get("limit"); ls != "" {
		n, err := strconv.Atoi(ls)
		if err != nil || n < 0 {
			return q, 0, invalid(eventsObject, "limit=%q: want a count", ls)
		}
		q.Limit = n
	}
	if ws := vals.Get("wait"); ws != "" {
		d, err := time.ParseDuration(ws)
		if err != nil || d < 0 {
			return q, 0, invalid(eventsObject, "wait=%q: want a duration like 30s", ws)
		}
		wait = min(d, maxEventWait)
	}
	return q, wait, nil
}

func validEventType(t string) bool {
	for _, x := range lm.EventTypes {
		if x == t {
			return true
		}
	}
	return false
}

// Events lists (follow: waits for) the events q selects.
func (s *Service) Events(ctx context.Context, q lm.EventQuery, follow bool) (wire.EventList, error) {
	el := s.lm.Events()
	var evs []lm.Event
	var last uint64
	var err error
	if follow {
		evs, last, err = el.Follow(ctx, q)
	} else {
		// What was recorded before this request (the audit records an
		// admin change before its answer leaves) is listed.
		el.Flush(ctx)
		evs, last, err = el.List(q)
	}
	if err != nil {
		return wire.EventList{}, err
	}
	out := wire.EventList{Events: make([]wire.Event, 0, len(evs)), Last: last, Dropped: el.Dropped()}
	for _, e := range evs {
		out.Events = append(out.Events, eventView(e))
	}
	return out, nil
}

func eventView(e lm.Event) wire.Event {
	return wire.Event{Seq: e.Seq, Time: e.Time, Type: e.Type, Action: e.Action, Object: e.Object, Who: e.Who, OK: e.OK,
		Reason: e.Reason, LUN: e.LUN, Pair: e.Pair, Session: e.Session, Target: e.Target, Initiator: e.Initiator,
		Address: e.Address, From: e.From, To: e.To, DurationMS: float64(e.DurationNS) / 1e6}
}

// MigrationHistory lists the histories of the pairs of a source ("" all).
func (s *Service) MigrationHistory(source string) ([]wire.PairHistory, error) {
	hs, err := s.lm.PairHistories(source)
	if err != nil {
		return nil, err
	}
	out := make([]wire.PairHistory, 0, len(hs))
	for _, h := range hs {
		out = append(out, pairHistoryView(h))
	}
	return out, nil
}

// SessionHistory is the history of a session and its pairs.
func (s *Service) SessionHistory(name string) (wire.SessionHistory, error) {
	h, err := s.lm.SessionHistoryOf(name)
	if err != nil {
		return wire.SessionHistory{}, err
	}
	out := wire.SessionHistory{ID: h.ID, Name: h.Name, Created: h.Created, Entries: entriesView(h.Entries), Pairs: []wire.PairHistory{}}
	for _, p := range h.Pairs {
		out.Pairs = append(out.Pairs, pairHistoryView(p))
	}
	return out, nil
}

func entriesView(es []metavol.HistoryEntry) []wire.HistoryEntry {
	out := make([]wire.HistoryEntry, 0, len(es))
	for _, e := range es {
		out = append(out, wire.HistoryEntry{Time: e.Time, Event: e.Event, From: e.From, To: e.To, Reason: e.Reason, Who: e.Who})
	}
	return out
}

func pairHistoryView(h lm.PairHistory) wire.PairHistory {
	v := wire.PairHistory{ID: h.ID, Source: h.SourceName, Target: h.TargetName, Session: h.Session, Created: h.Created,
		Dropped: h.Dropped, Entries: entriesView(h.Entries)}
	for i := len(h.Entries) - 1; i >= 0; i-- {
		if h.Entries[i].To != "" {
			v.State = h.Entries[i].To
			break
		}
	}
	if f := h.Final; f != nil {
		v.Final = &wire.PairFigures{State: f.State, Ended: f.Ended, DataBytes: f.DataBytes, RecopiedBytes: f.RecopiedBytes,
			DurationS: float64(f.DurationNS) / 1e9, CopyS: float64(f.CopyNS) / 1e9, AvgMBps: f.AvgBytesPerS / 1e6, SplitPauseMS: float64(f.SplitPauseNS) / 1e6,
			Vehicle: f.Vehicle, EstimateSeconds: f.EstimateSeconds, ActualSeconds: f.ActualSeconds}
	}
	return v
}
