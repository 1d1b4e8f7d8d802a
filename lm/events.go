package lm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol"
)

// The event log and the histories (docs/design.md "Events and history").
//
// EventLog owns the persistent, bounded event log ("ev/" in the meta
// volume) and the pair and session histories ("hist/"). Producers (the
// pair state owner, the split, the volume checks, the admin API, the iSCSI
// login) call Record / the history methods, which never block and never
// do I/O: they put the item in a bounded queue (EventQueue items). One
// writer goroutine, owned by the EventLog (started by newEventLog, stopped
// by close, which writes what is queued first), commits what is queued in
// one meta volume transaction: the events get their sequence numbers
// there, and the oldest events beyond MaxEvents are deleted in the same
// transaction. A full queue drops the item and counts it (Dropped); the
// writer then records an "events-dropped" event saying how many. History
// entries are the pair's own record of its transitions: a pair whose last
// entry was lost (a full queue, a kill -9 between the state commit and the
// history commit) gets the missing state appended when it is loaded again
// (pairSeen), marked as recovered from the pair record.

// Event is one entry of the event log.
type Event = metavol.Event

// Event types (Event.Type).
const (
	EventAdmin        = "admin"         // an admin API change (LUN, target, map, ACL, CHAP, migration, session, ...)
	EventLogin        = "login"         // an iSCSI login accepted
	EventLoginRefused = "login-refused" // an iSCSI login refused, with the reason
	EventPair         = "pair"          // a pair state transition
	EventSplit        = "split"         // a split's I/O pause
	EventVolume       = "volume"        // a data volume error or loss
	EventOffline      = "offline"       // a LUN taken offline
	EventDropped      = "events-dropped"
)

// EventTypes lists the event types, for --type checks.
var EventTypes = []string{EventAdmin, EventLogin, EventLoginRefused, EventPair, EventSplit, EventVolume, EventOffline, EventDropped}

// Defaults of the event log.
const (
	DefaultMaxEvents  = 10000
	DefaultEventQueue = 4096
	// maxHistoryEntries bounds one pair's or session's timeline: the
	// first entry (created) stays, the oldest after it are dropped.
	maxHistoryEntries = 1000
	// eventBatch is the most items one commit takes.
	eventBatch = 512
)

// EventQuery selects events.
type EventQuery struct {
	After uint64    // sequence numbers above this one
	Since time.Time // at or after this time (zero: any)
	Types []string  // any of these types (nil: all)
	Limit int       // at most this many (0: all)
}

func (q EventQuery) match(e *Event) bool {
	if !q.Since.IsZero() && e.Time.Before(q.Since) {
		return false
	}
	return len(q.Types) == 0 || slices.Contains(q.Types, e.Type)
}

// histOp is one change of a history, applied by the writer.
type histOp struct {
	pair *metavol.Pair // pair ops: the record after the change
	src  string        // the source and target LUN names
	tgt  string
	// seen: ensure the history exists and ends in pair.State.
	seen bool
	// fresh (with seen): pair is the record as created, never changed
	// since, so a history begun here is created in its state.
	fresh bool
	// splitPause (ns): the measured pause of the split that ended the
	// pair, known after its transition (no entry is added).
	splitPause int64
	sess       *metavol.Session // session ops
	e          metavol.HistoryEntry
}

type eventItem struct {
	ev   *Event
	hist *histOp
	// flush is closed once the items queued before it are committed.
	flush chan struct{}
}

// EventLog is the event log and history owner (see above).
type EventLog struct {
	db   *metavol.DB
	log  zerolog.Logger
	max  int
	q    chan eventItem
	stop chan struct{}
	done chan struct{}

	// limit bounds the events of one source (RecordLimited).
	limit struct {
		sync.Mutex
		by map[string]*limitWindow
	}

	stopped atomic.Bool
	dropped atomic.Uint64
	waiting atomic.Int64 // Wait calls in progress

	mu struct {
		sync.Mutex
		count    int    // events stored
		last     uint64 // highest committed sequence number
		reported uint64 // dropped count already recorded as an event
		// changed is closed (and replaced) when events are committed.
		changed chan struct{}
	}
}

// newEventLog opens the event log of db and starts its writer.
func newEventLog(db *metavol.DB, log zerolog.Logger, maxEvents, queue int) (*EventLog, error) {
	if maxEvents <= 0 {
		maxEvents = DefaultMaxEvents
	}
	if queue <= 0 {
		queue = DefaultEventQueue
	}
	l := &EventLog{db: db, log: log.With().Str("component", "events").Logger(), max: maxEvents,
		q: make(chan eventItem, queue), stop: make(chan struct{}), done: make(chan struct{})}
	l.mu.changed = make(chan struct{})
	if err := db.View(func(tx *metavol.Tx) error {
		var err error
		l.mu.count, l.mu.last, err = tx.EventStats()
		return err
	}); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	go l.writer()
	return l, nil
}

// Record queues an event; it never blocks. Time defaults to now and Who
// to "system". A full queue drops it (Dropped counts it).
func (l *EventLog) Record(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Who == "" {
		e.Who = "system"
	}
	l.put(eventItem{ev: &e})
}

func (l *EventLog) put(it eventItem) {
	if l.stopped.Load() {
		l.dropped.Add(1)
		return
	}
	select {
	case l.q <- it:
	default:
		l.dropped.Add(1)
	}
}

// Limits of RecordLimited: at most limitBurst events of one key per
// limitWindowLen; the rest are counted and reported with the next one let
// through.
const (
	limitBurst     = 10
	limitWindowLen = time.Minute
	limitKeys      = 4096
)

type limitWindow struct {
	start      time.Time
	n          int
	suppressed int
}

// RecordLimited is Record for events an outsider can cause at will (a
// refused login): at most limitBurst per key (initiator and address) per
// minute, so that a flood cannot push the rest of the log out; the next
// event let through says how many were suppressed.
func (l *EventLog) RecordLimited(key string, e Event) {
	if l == nil {
		return
	}
	now := time.Now()
	l.limit.Lock()
	if l.limit.by == nil {
		l.limit.by = map[string]*limitWindow{}
	}
	w := l.limit.by[key]
	if w == nil || now.Sub(w.start) >= limitWindowLen {
		if len(l.limit.by) >= limitKeys {
			for k, x := range l.limit.by {
				if now.Sub(x.start) >= limitWindowLen {
					delete(l.limit.by, k)
				}
			}
		}
		sup := 0
		if w != nil {
			sup = w.suppressed
		}
		w = &limitWindow{start: now, suppressed: sup}
		if len(l.limit.by) < limitKeys {
			l.limit.by[key] = w
		}
	}
	w.n++
	if w.n > limitBurst {
		w.suppressed++
		l.limit.Unlock()
		return
	}
	sup := w.suppressed
	w.suppressed = 0
	l.limit.Unlock()
	if sup > 0 {
		e.Reason += fmt.Sprintf(" (%d similar events suppressed before this one)", sup)
	}
	l.Record(e)
}

// Dropped is how many events and history entries were dropped (queue full
// or log closed) since the start.
func (l *EventLog) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return l.dropped.Load()
}

// Last is the highest committed sequence number.
func (l *EventLog) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.last
}

// List returns the stored events q selects, and the highest committed
// sequence number (the After of the next query of a follower).
func (l *EventLog) List(q EventQuery) ([]Event, uint64, error) {
	last := l.Last()
	var all []Event
	if err := l.db.View(func(tx *metavol.Tx) error {
		var err error
		all, err = tx.Events(q.After, 0)
		return err
	}); err != nil {
		return nil, last, fmt.Errorf("event log: %w", err)
	}
	out := make([]Event, 0, len(all))
	for i := range all {
		if all[i].Seq > last {
			last = all[i].Seq
		}
		if q.match(&all[i]) {
			out = append(out, all[i])
		}
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:] // the latest
	}
	return out, last, nil
}

// Wait returns true once an event above after is committed, false when ctx
// ends first or the log is closed.
func (l *EventLog) Wait(ctx context.Context, after uint64) bool {
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	for {
		l.mu.Lock()
		last, ch := l.mu.last, l.mu.changed
		l.mu.Unlock()
		if last > after {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-l.done:
			return false
		}
	}
}

// Follow returns the events above q.After that q selects, waiting until
// there is at least one or ctx ends (then it returns what it has, maybe
// none, and the sequence number to follow from).
func (l *EventLog) Follow(ctx context.Context, q EventQuery) ([]Event, uint64, error) {
	for {
		evs, last, err := l.List(q)
		if err != nil || len(evs) > 0 {
			return evs, last, err
		}
		q.After = last
		if !l.Wait(ctx, last) {
			return nil, last, nil
		}
	}
}

// Waiting is the number of followers waiting for new events now.
func (l *EventLog) Waiting() int { return int(l.waiting.Load()) }

// Flush waits until everything queued before the call is committed (or
// ctx ends, or the log is closed).
func (l *EventLog) Flush(ctx context.Context) error {
	mark := make(chan struct{})
	select {
	case l.q <- eventItem{flush: mark}:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return errors.New("event log closed")
	}
	select {
	case <-mark:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return nil
	}
}

// close stops the writer after it committed what is queued. Records made
// afterwards are dropped.
func (l *EventLog) close() {
	if l == nil || l.stopped.Swap(true) {
		return
	}
	close(l.stop)
	<-l.done
}

// writer commits the queue in batches until close (see above).
func (l *EventLog) writer() {
	defer close(l.done)
	batch := make([]eventItem, 0, eventBatch)
	for {
		batch = batch[:0]
		select {
		case it := <-l.q:
			batch = append(batch, it)
		case <-l.stop:
			// Drain what was queued before the stop.
			for {
				select {
				case it := <-l.q:
					batch = append(batch, it)
					if len(batch) == eventBatch {
						l.commit(batch)
						batch = batch[:0]
					}
					continue
				default:
				}
				break
			}
			l.commit(batch)
			return
		}
	more:
		for len(batch) < eventBatch {
			select {
			case it := <-l.q:
				batch = append(batch, it)
			default:
				break more
			}
		}
		l.commit(batch)
	}
}

// commit writes one batch in one transaction: events get their sequence
// numbers, the oldest beyond max are deleted, histories are updated.
func (l *EventLog) commit(batch []eventItem) {
	var flushes []chan struct{}
	items := batch[:0:0]
	for _, it := range batch {
		if it.flush != nil {
			flushes = append(flushes, it.flush)
			continue
		}
		items = append(items, it)
	}
	defer func() {
		for _, f := range flushes {
			close(f)
		}
	}()
	l.mu.Lock()
	last, count := l.mu.last, l.mu.count
	if d := l.dropped.Load(); d > l.mu.reported {
		items = append(items, eventItem{ev: &Event{Time: time.Now(), Type: EventDropped, Who: "system",
			Reason: fmt.Sprintf("%d events or history entries dropped since the start (queue full or log closed)", d)}})
		l.mu.reported = d
	}
	l.mu.Unlock()
	if len(items) == 0 {
		return
	}
	var newLast uint64
	var newCount int
	var ended []*metavol.PairHistory
	err := l.db.Update(func(tx *metavol.Tx) error {
		ended = ended[:0]
		seq, n := last, count
		pairs := map[string]*metavol.PairHistory{}
		sessions := map[string]*metavol.SessionHistory{}
		for _, it := range items {
			if it.ev != nil {
				seq++
				e := *it.ev
				e.Seq = seq
				if err := tx.PutEvent(e); err != nil {
					return err
				}
				n++
			}
			if it.hist != nil {
				if err := applyHist(tx, it.hist, pairs, sessions, &ended); err != nil {
					return err
				}
			}
		}
		if n > l.max {
			d, err := tx.DeleteOldestEvents(n - l.max)
			if err != nil {
				return err
			}
			n -= d
		}
		for _, h := range pairs {
			if err := tx.PutPairHistory(*h); err != nil {
				return err
			}
		}
		for _, h := range sessions {
			if err := tx.PutSessionHistory(*h); err != nil {
				return err
			}
		}
		newLast, newCount = seq, n
		return nil
	})
	if err != nil {
		l.dropped.Add(uint64(len(items)))
		l.log.Error().Err(err).Int("items", len(items)).Msg("event log: commit failed: events dropped")
		return
	}
	for _, h := range ended {
		l.logSummary(h)
	}
	l.mu.Lock()
	l.mu.last, l.mu.count = newLast, newCount
	if newLast != last {
		close(l.mu.changed)
		l.mu.changed = make(chan struct{})
	}
	l.mu.Unlock()
}

// applyHist applies one history change to the histories read (once) into
// pairs and sessions.
func applyHist(tx *metavol.Tx, op *histOp, pairs map[string]*metavol.PairHistory, sessions map[string]*metavol.SessionHistory, ended *[]*metavol.PairHistory) error {
	if op.sess != nil {
		h := sessions[op.sess.ID]
		if h == nil {
			got, err := tx.GetSessionHistory(op.sess.ID)
			if err != nil && !errors.Is(err, metavol.ErrNotFound) {
				return err
			}
			if errors.Is(err, metavol.ErrNotFound) {
				got = metavol.SessionHistory{ID: op.sess.ID, Name: op.sess.Name, Created: op.sess.Created}
			}
			h = &got
			sessions[op.sess.ID] = h
		}
		h.Name = op.sess.Name
		h.PairIDs = slices.Clone(op.sess.PairIDs)
		h.Entries, h.Dropped = appendBounded(h.Entries, h.Dropped, op.e)
		return nil
	}
	rec := op.pair
	h := pairs[rec.ID]
	if h == nil {
		got, err := tx.GetPairHistory(rec.ID)
		if err != nil && !errors.Is(err, metavol.ErrNotFound) {
			return err
		}
		if errors.Is(err, metavol.ErrNotFound) {
			created := metavol.HistoryEntry{Time: rec.Created, Event: "created", To: StateQueued.String(), Reason: "pair created", Who: "admin"}
			if op.fresh && rec.State != created.To {
				// The record as created: a pair created scheduled (a
				// start time ahead) or held by its session starts there.
				created.To, created.Reason = rec.State, "pair created: "+rec.Reason
			}
			got = metavol.PairHistory{ID: rec.ID, SourceLUN: rec.SourceLUN, TargetLUN: rec.TargetLUN,
				SourceName: op.src, TargetName: op.tgt, Session: rec.Session, Created: rec.Created,
				Entries: []metavol.HistoryEntry{created}}
		}
		h = &got
		pairs[rec.ID] = h
	}
	if op.splitPause > 0 {
		if h.Final != nil {
			h.Final.SplitPauseNS = op.splitPause
			*ended = append(*ended, h) // the summary waits for the pause
		}
		return nil
	}
	if op.seen {
		// A pair loaded or started: its record's state is the truth.
		if lastState(h) != rec.State {
			h.Entries, h.Dropped = appendBounded(h.Entries, h.Dropped, metavol.HistoryEntry{Time: op.e.Time, Event: "state",
				From: lastState(h), To: rec.State, Reason: rec.Reason + " (recovered from the pair record: the history entry was lost)", Who: "system"})
		}
	} else {
		h.Entries, h.Dropped = appendBounded(h.Entries, h.Dropped, op.e)
	}
	if st, err := ParseState(rec.State); err == nil && st.Final() && h.Final == nil {
		h.Final = figures(h, rec, op.e.Time)
		if rec.State != StateSplit.String() {
			*ended = append(*ended, h) // a split's summary waits for its pause (splitPaused)
		}
	}
	return nil
}

// lastState is the state the history's last state entry reached.
func lastState(h *metavol.PairHistory) string {
	for i := len(h.Entries) - 1; i >= 0; i-- {
		if h.Entries[i].To != "" {
			return h.Entries[i].To
		}
	}
	return ""
}

// appendBounded appends e, dropping the oldest entries after the first
// beyond maxHistoryEntries.
func appendBounded(es []metavol.HistoryEntry, dropped int, e metavol.HistoryEntry) ([]metavol.HistoryEntry, int) {
	es = append(es, e)
	if over := len(es) - maxHistoryEntries; over > 0 {
		es = append(es[:1], es[1+over:]...)
		dropped += over
	}
	return es, dropped
}

// figures are a pair's final figures: the duration runs from its first
// copy start (else its creation) to end; the average rate is over the
// time it was copying (its waits while queued, paused or synced are not
// the copy's speed).
func figures(h *metavol.PairHistory, rec *metavol.Pair, end time.Time) *metavol.PairFigures {
	start := rec.Created
	for _, e := range h.Entries {
		if e.To == StateCopying.String() {
			start = e.Time
			break
		}
	}
	d := end.Sub(start)
	f := &metavol.PairFigures{State: rec.State, Ended: end, DataBytes: rec.DataBytes, RecopiedBytes: rec.RecopiedBytes,
		DurationNS: int64(d), SplitPauseNS: rec.SplitPauseNS, Vehicle: rec.Vehicle}
	moved := float64(rec.DataBytes + rec.RecopiedBytes)
	switch c := time.Duration(rec.CopyElapsedNS); {
	case c > 0:
		f.CopyNS = int64(c)
		f.AvgBytesPerS = moved / c.Seconds()
	case d > 0:
		f.AvgBytesPerS = moved / d.Seconds()
	}
	if rec.EstimateNS > 0 { // estimate.go: made when the pair was created
		est := time.Duration(rec.EstimateNS).Seconds()
		f.EstimateSeconds = &est
		f.ActualSeconds = time.Duration(rec.ActualNS).Seconds()
	}
	return f
}

// ---- producers ----

// causeOf says who caused a pair transition from its reason: the admin's
// operations give reasons ending in "by admin" (pairadmin.go) or saying
// "by admin: ..." (split.go, rollback.go).
func causeOf(reason string) string {
	if strings.HasSuffix(reason, "by admin") || strings.Contains(reason, "by admin ") || strings.Contains(reason, "by admin:") {
		return "admin"
	}
	return "system"
}

// pairChanged records a committed pair transition: a history entry and
// an event. Called with p.mu held (it only queues).
func (l *EventLog) pairChanged(p *pair, rec metavol.Pair, from, to PairState) {
	if l == nil {
		return
	}
	now := time.Now()
	who := causeOf(rec.Reason)
	r := rec
	l.put(eventItem{
		ev: &Event{Time: now, Type: EventPair, Action: "state", Object: "pair " + p.src.name, Who: who, OK: true,
			Reason: rec.Reason, LUN: p.src.name, Pair: rec.ID, Session: rec.Session, From: from.String(), To: to.String()},
		hist: &histOp{pair: &r, src: p.src.name, tgt: p.tgt.name,
			e: metavol.HistoryEntry{Time: now, Event: "state", From: from.String(), To: to.String(), Reason: rec.Reason, Who: who}},
	})
}

// splitPaused records the measured I/O pause of a split (split.go), once
// it is known: an event per pair and the pair's final figures.
func (l *EventLog) splitPaused(ps []*pair, recs []metavol.Pair, pause time.Duration) {
	if l == nil {
		return
	}
	now := time.Now()
	for i, p := range ps {
		r := recs[i]
		l.put(eventItem{
			ev: &Event{Time: now, Type: EventSplit, Action: "pause", Object: "pair " + p.src.name, Who: "system", OK: true,
				LUN: p.src.name, Pair: r.ID, Session: r.Session, DurationNS: int64(pause),
				Reason: fmt.Sprintf("host I/O paused %.3f ms for the split of %d pair(s)", float64(pause)/1e6, len(ps))},
			hist: &histOp{pair: &r, src: p.src.name, tgt: p.tgt.name, splitPause: int64(pause)},
		})
	}
}

// pairSeen makes sure a pair loaded or created has a history that ends in
// its record's state (see above). fresh: rec was never changed since its
// creation (its state is the one it was created in).
func (l *EventLog) pairSeen(rec metavol.Pair, src, tgt string, fresh bool) {
	if l == nil {
		return
	}
	l.put(eventItem{hist: &histOp{pair: &rec, src: src, tgt: tgt, seen: true, fresh: fresh, e: metavol.HistoryEntry{Time: time.Now()}}})
}

// SessionEvent appends an entry to a session's history (an admin action
// on it: who did what, and the outcome).
func (l *EventLog) sessionEvent(s metavol.Session, action, reason, who string) {
	if l == nil {
		return
	}
	l.put(eventItem{hist: &histOp{sess: &s, e: metavol.HistoryEntry{Time: time.Now(), Event: action, Reason: reason, Who: who}}})
}

// logSummary is the info line of a pair that ended: bytes, time, vehicle,
// average rate.
func (l *EventLog) logSummary(h *metavol.PairHistory) {
	f := h.Final
	l.log.Info().Str("pair", h.ID).Str("lun", h.SourceName).Str("target_lun", h.TargetName).Str("state", f.State).
		Int64("data_bytes", f.DataBytes).Int64("recopied_bytes", f.RecopiedBytes).
		Str("duration", time.Duration(f.DurationNS).Round(time.Millisecond).String()).
		Str("copy_time", time.Duration(f.CopyNS).Round(time.Millisecond).String()).
		Str("vehicle", f.Vehicle).Float64("avg_mbps", f.AvgBytesPerS/1e6).
		Float64("split_pause_ms", float64(f.SplitPauseNS)/1e6).Msg("migration summary")
}

// sessionSaved records what changed in a session's record: a pause, a
// resume, its end (split or cancelled, with the reason), its options.
func (l *EventLog) sessionSaved(old, rec metavol.Session) {
	if len(rec.Forced) > len(old.Forced) { // sessionref.go: a lone operation forced on a pair
		for _, f := range rec.Forced[len(old.Forced):] {
			l.sessionEvent(rec, "forced", f, "admin")
		}
		return
	}
	switch {
	case rec.Final != "" && old.Final == "":
		who := causeOf(rec.Reason)
		if strings.HasPrefix(rec.Reason, "split:") { // SplitSession; an auto-split says "auto-split:"
			who = "admin"
		}
		l.sessionEvent(rec, rec.Final, rec.Reason, who)
	case rec.Paused && !old.Paused:
		l.sessionEvent(rec, "paused", "paused by admin", "admin")
	case !rec.Paused && old.Paused:
		l.sessionEvent(rec, "resumed", "resumed by admin", "admin")
	case rec.Speed != old.Speed || rec.MaxMBps != old.MaxMBps || rec.MaxActive != old.MaxActive:
		l.sessionEvent(rec, "set", fmt.Sprintf("speed %s, max %d MB/s, max active %d", rec.Speed, rec.MaxMBps, rec.MaxActive), "admin")
	}
}

// flushBriefly commits what is queued before a history is read, so that
// a transition just made is in it; it waits at most a few seconds.
func (l *EventLog) flushBriefly() {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.Flush(ctx)
}
