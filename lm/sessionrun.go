package lm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// The session runtime: the registry of sessions, one session's record and
// pairs, and its runner (scheduler of held pairs, auto-split).

// sessionSet is the Manager's sessions.
type sessionSet struct {
	create sync.Mutex // serializes CreateSession (name checks)

	mu     sync.Mutex
	byName map[string]*session
	ch     chan struct{} // closed and replaced at every pair state change
}

func (ss *sessionSet) init() {
	ss.byName = map[string]*session{}
	ss.ch = make(chan struct{})
}

// changed wakes every session runner (called by pair.applyLocked).
func (ss *sessionSet) changed() {
	ss.mu.Lock()
	if ss.ch != nil {
		close(ss.ch)
		ss.ch = make(chan struct{})
	}
	ss.mu.Unlock()
}

// changes is closed at the next pair state change.
func (ss *sessionSet) changes() <-chan struct{} {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.ch
}

// session is one session's runtime.
type session struct {
	m *Manager
	// ops serializes the session's admin operations and its runner's
	// steps. Taken before Manager.admin (through the pair operations).
	ops sync.Mutex

	// mu guards rec and reason (read by status without ops).
	mu     sync.Mutex
	rec    metavol.Session
	reason string // last auto-split problem

	splitBlocked bool // auto-split failed for good (guarded by ops)

	stop   context.CancelFunc
	exited chan struct{}
}

func (s *session) record() metavol.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rec
	r.Held = slices.Clone(r.Held)
	return r
}

// save persists rec and makes it the session's record.
func (s *session) save(rec metavol.Session) error {
	rec.Updated = time.Now().UTC()
	if err := s.m.db.Update(func(tx *metavol.Tx) error { return tx.PutSession(rec) }); err != nil {
		return fmt.Errorf("session %s: persist: %w", rec.Name, err)
	}
	s.mu.Lock()
	old := s.rec
	s.rec = rec
	s.mu.Unlock()
	s.m.events.sessionSaved(old, rec) // events.go: the session's history
	return nil
}

func (s *session) setReason(r string) {
	s.mu.Lock()
	s.reason = r
	s.mu.Unlock()
}

// sessionPair is one pair of a session with its status.
type sessionPair struct {
	st    PairStatus
	state PairState
	held  bool
}

// active reports whether the pair still exists (not split nor cancelled).
func (p sessionPair) active() bool { return p.state != StateSplit && p.state != StateCancelled }

// pairs returns the session's pairs, in the order they were given.
func (s *session) pairs() []sessionPair {
	rec := s.record()
	out := make([]sessionPair, 0, len(rec.PairIDs))
	for i, id := range rec.PairIDs {
		st := s.m.pairStatusByID(id, at(rec.Sources, i), at(rec.Targets, i))
		state, err := ParseState(st.State)
		if err != nil {
			state = StateFaulty
		}
		held := state == StatePaused && slices.Contains(rec.Held, id)
		out = append(out, sessionPair{st: st, state: state, held: held})
	}
	return out
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}

func views(ps []sessionPair) []sessionPairView {
	v := make([]sessionPairView, len(ps))
	for i, p := range ps {
		v[i] = sessionPairView{State: p.state, Held: p.held}
	}
	return v
}

// state is the session's state: the recorded final state, else the
// aggregate of its pairs.
func (s *session) state(ps []sessionPair) SessionState {
	rec := s.record()
	switch rec.Final {
	case SessionSplit.String():
		return SessionSplit
	case SessionCancelled.String():
		return SessionCancelled
	}
	return aggregateState(rec.Paused, views(ps))
}

// pairStatusByID is the status of a pair by ID: the active pair, else its
// record; a pair without a record was cancelled.
func (m *Manager) pairStatusByID(id, source, target string) PairStatus {
	m.mu.Lock()
	p := m.mu.pairs[id]
	m.mu.Unlock()
	if p != nil {
		return p.status()
	}
	m.mu.Lock()
	u := m.mu.unloaded[id]
	m.mu.Unlock()
	if u != nil {
		return m.unloadedStatus(u) // counts as faulty in the session's state
	}
	var rec metavol.Pair
	err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		rec, err = tx.GetPair(id)
		return err
	})
	if err == nil {
		return m.recordStatus(rec)
	}
	return PairStatus{ID: id, Source: source, Target: target, State: StateCancelled.String(), Reason: "pair removed (cancelled)"}
}

// adoptSessionPairs gives every pair record listed by a session record
// but written before pair records carried their session (metavol.Pair.
// Session) that session's ID, in pairs and in the meta volume (one
// transaction), before the pairs are loaded. A pair listed by two
// sessions keeps the first (by name); that never happens, since
// createPairs writes a pair and its session together. A failed write is
// logged, not fatal (see below).
func (m *Manager) adoptSessionPairs(pairs []metavol.Pair) error {
	var ss []metavol.Session
	if err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		ss, err = tx.Sessions()
		return err
	}); err != nil {
		return err
	}
	owner := map[string]string{} // pair ID -> session ID
	for _, s := range ss {
		for _, id := range s.PairIDs {
			if _, ok := owner[id]; !ok {
				owner[id] = s.ID
			}
		}
	}
	var changed []int
	for i := range pairs {
		if sid, ok := owner[pairs[i].ID]; ok && pairs[i].Session == "" {
			pairs[i].Session = sid
			changed = append(changed, i)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	if err := m.db.Update(func(tx *metavol.Tx) error {
		for _, i := range changed {
			if err := tx.PutPair(pairs[i]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		// Not fatal: the pairs carry it in memory, and their next
		// persisted change writes it.
		m.log.Warn().Err(err).Int("pairs", len(changed)).Msg("session of old pair records not persisted yet")
	}
	return nil
}

// loadSessions loads the sessions (after the pairs) and starts the
// runners of the unfinished ones.
func (m *Manager) loadSessions() error {
	var recs []metavol.Session
	if err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		recs, err = tx.Sessions()
		return err
	}); err != nil {
		return fmt.Errorf("lm: load sessions: %w", err)
	}
	for _, rec := range recs {
		s := &session{m: m, rec: rec}
		m.sess.mu.Lock()
		m.sess.byName[rec.Name] = s
		m.sess.mu.Unlock()
		if rec.Final == "" {
			m.startSession(s)
		}
	}
	return nil
}

func (m *Manager) sessionByName(name string) (*session, error) {
	m.sess.mu.Lock()
	defer m.sess.mu.Unlock()
	if s := m.sess.byName[name]; s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("session %s: %w", name, ErrNotFound)
}

// startSession starts the session's runner (owned by the Manager).
func (m *Manager) startSession(s *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return
	}
	ctx, cancel := context.WithCancel(m.ctx)
	s.stop = cancel
	s.exited = make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(s.exited)
		s.run(ctx)
	}()
}

// stopRun stops the runner and waits for it. Never called with ops held
// (the runner takes ops).
func (s *session) stopRun() {
	s.m.mu.Lock()
	stop, exited := s.stop, s.exited
	s.m.mu.Unlock()
	if stop != nil {
		stop()
		<-exited
	}
}

// run is the session's runner: at every pair state change it resumes held
// pairs as copy slots free up, keeps a paused session paused, and
// auto-splits; it returns when the session is final or ctx ends.
func (s *session) run(ctx context.Context) {
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		ch := s.m.sess.changes()
		done, retry := s.step(ctx)
		if done {
			return
		}
		var timer *time.Timer
		var tc <-chan time.Time
		if retry {
			timer = time.NewTimer(backoff)
			tc = timer.C
			backoff = min(2*backoff, maxBackoff)
		} else {
			backoff = minBackoff
		}
		select {
		case <-ctx.Done():
		case <-ch:
		case <-tc:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// step is one pass of the runner. done: the session is over; retry: call
// again after a backoff even if nothing changes (a deferred auto-split).
func (s *session) step(ctx context.Context) (done, retry bool) {
	s.ops.Lock()
	defer s.ops.Unlock()
	if ctx.Err() != nil {
		return true, false
	}
	ps := s.pairs()
	st := s.state(ps)
	if st.Final() {
		s.finish(st, "")
		return true, false
	}
	rec := s.record()
	if rec.Paused {
		for _, p := range ps {
			if p.state == StateCopying || p.state == StateSynced || p.state == StateSwitched {
				if err := s.m.pause(byID(p.st.ID)); err != nil {
					s.m.log.Warn().Err(err).Str("session", rec.Name).Msg("session paused: cannot pause a pair")
				}
			}
		}
		return false, false
	}
	s.schedule(ps)
	if st != SessionSynced {
		s.splitBlocked = false
		return false, false
	}
	if !rec.AutoSplit || s.splitBlocked {
		return false, false
	}
	res, err := s.m.split(activeRefs(ps), 0, splitPlain, splitByAuto)
	switch {
	case err == nil:
		s.setReason("")
		s.finish(SessionSplit, fmt.Sprintf("auto-split: host I/O paused %.2f ms", res.PauseMS))
		s.m.log.Info().Str("session", rec.Name).Float64("pause_ms", res.PauseMS).Msg("session auto-split")
		return true, false
	case errors.Is(err, ErrSplitTimeout) || errors.Is(err, ErrNotSynced):
		s.setReason("auto-split deferred: " + err.Error())
		return false, true
	default:
		s.splitBlocked = true
		s.setReason("auto-split failed (split by hand): " + err.Error())
		s.m.log.Error().Err(err).Str("session", rec.Name).Msg("session auto-split failed")
		return false, false
	}
}

// activeRefs names the session's pairs that are not split nor cancelled,
// by pair ID.
func activeRefs(ps []sessionPair) []pairRef {
	var refs []pairRef
	for _, p := range ps {
		if p.active() {
			refs = append(refs, byID(p.st.ID))
		}
	}
	return refs
}

// schedule resumes held pairs while fewer than MaxActive of the session's
// pairs copy, and forgets held pairs that are no longer paused. Called
// with ops held.
func (s *session) schedule(ps []sessionPair) {
	rec := s.record()
	if len(rec.Held) == 0 {
		return
	}
	if rec.StartAt.After(time.Now()) { // schedule.go: not before the start time
		return
	}
	limit := rec.MaxActive
	if limit <= 0 {
		limit = len(ps)
	}
	running := 0
	for _, p := range ps {
		if !p.held && (p.state == StateQueued || p.state == StateCopying || p.state == StateInterrupted) {
			running++
		}
	}
	var keep []string
	for _, p := range ps {
		if !p.held {
			continue
		}
		if running < limit {
			if err := s.m.resume(byID(p.st.ID)); err == nil {
				running++
				continue
			} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrState) {
				s.m.log.Warn().Err(err).Str("session", rec.Name).Msg("cannot resume a held pair")
				keep = append(keep, p.st.ID)
			}
			continue
		}
		keep = append(keep, p.st.ID)
	}
	if !slices.Equal(keep, rec.Held) {
		rec.Held = keep
		if err := s.save(rec); err != nil {
			s.m.log.Warn().Err(err).Msg("session: held pairs not persisted")
		}
	}
}

// holdPastLimit pauses and holds the session's running pairs past its
// MaxActive (the last ones in the session's order first), after
// `session set --max-active` lowered it. Called with ops held.
func (s *session) holdPastLimit(ps []sessionPair) error {
	rec := s.record()
	if rec.MaxActive <= 0 {
		return nil
	}
	var running []string
	for _, p := range ps {
		if !p.held && (p.state == StateQueued || p.state == StateCopying || p.state == StateInterrupted) {
			running = append(running, p.st.ID)
		}
	}
	var errs []error
	for i := len(running) - 1; i >= rec.MaxActive; i-- {
		id := running[i]
		if err := s.m.pause(byID(id)); err != nil {
			errs = append(errs, err)
			continue
		}
		rec.Held = append(rec.Held, id)
	}
	if err := s.save(rec); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// finish records a final state once.
func (s *session) finish(st SessionState, reason string) {
	rec := s.record()
	if rec.Final != "" {
		return
	}
	rec.Final, rec.Reason, rec.Held = st.String(), reason, nil
	if err := s.save(rec); err != nil {
		s.m.log.Warn().Err(err).Msg("session: final state not persisted")
	}
}
