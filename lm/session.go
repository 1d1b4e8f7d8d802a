package lm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// Migration sessions (DESIGN §1, §6; EMC patent US 7,080,225): a named
// group of pairs that is started, throttled, paused, resumed, cancelled and
// split together. A session only orchestrates its pairs through the
// Manager's pair operations (createPair, Pause, Resume, Cancel, Set, Split)
// and aggregates their status; it never changes how a pair works.
//
// Decisions:
//   - MaxActive (pairs of the session copying at once): the pairs past the
//     first MaxActive are created paused ("held", listed in the session
//     record); the session's runner resumes the next held pair, in the
//     order they were given, when one of its pairs is no longer copying
//     (synced). The Manager-wide MaxActive still applies on top.
//   - PauseSession pauses every copying or synced pair; a pair that is
//     queued for a Manager slot or interrupted at that moment is paused
//     by the runner as soon as it copies again. ResumeSession puts every
//     paused pair back in the held list and resumes as many as MaxActive
//     allows.
//   - AutoSplit: the runner splits all the session's pairs in one
//     consistent split (Manager.Split) once every pair is synced; a
//     deferred split is retried with backoff; any other failure (verify)
//     stops auto-split and shows as the session's reason.
//   - A cancelled pair's record is deleted by Manager.Cancel, so a pair of
//     the session that has no record any more reads as cancelled.
//   - CreateSession is all or nothing, also across a crash: every pair
//     record (held ones paused) and the session record are written in one
//     meta volume transaction, with the I/O gates of all the LUNs closed
//     (Manager.createPairs); before it nothing exists, after it all does.

// SessionState is a session's global state, aggregated from its pairs.
type SessionState int

// Session states.
const (
	SessionScheduled       SessionState = iota // created, nothing copied yet
	SessionCopying                             // some pair copies
	SessionSynced                              // every pair synced
	SessionPaused                              // paused by the admin
	SessionPartiallyFaulty                     // some pair interrupted or faulty
	SessionSplit                               // every pair split (final)
	SessionCancelled                           // cancelled (final)
)

var sessionStateNames = [...]string{
	SessionScheduled:       "scheduled",
	SessionCopying:         "copying",
	SessionSynced:          "synced",
	SessionPaused:          "paused",
	SessionPartiallyFaulty: "partially-faulty",
	SessionSplit:           "split",
	SessionCancelled:       "cancelled",
}

func (s SessionState) String() string {
	if s >= 0 && int(s) < len(sessionStateNames) {
		return sessionStateNames[s]
	}
	return fmt.Sprintf("SessionState(%d)", int(s))
}

// Final reports whether the session is over (split or cancelled).
func (s SessionState) Final() bool { return s == SessionSplit || s == SessionCancelled }

// sessionPairView is what the aggregation needs of one pair.
type sessionPairView struct {
	State PairState
	Held  bool // paused by the session, waiting for one of its copy slots
}

// aggregateState is the session's global state (the only place it is
// decided): any interrupted or faulty pair makes it partially-faulty; with
// every pair final it is split (all split) or cancelled; with every
// remaining pair synced it is synced; a paused session or a pair paused by
// the admin makes it paused; a copying or synced pair makes it copying;
// else nothing started yet: scheduled.
func aggregateState(paused bool, pairs []sessionPairView) SessionState {
	var split, cancelled, bad, synced, copying, adminPaused int
	for _, p := range pairs {
		switch p.State {
		case StateSplit:
			split++
		case StateCancelled:
			cancelled++
		case StateFaulty, StateInterrupted:
			bad++
		case StateSynced, StateSplitting:
			synced++
		case StateCopying:
			copying++
		case StatePaused:
			if !p.Held {
				adminPaused++
			}
		}
	}
	live := len(pairs) - split - cancelled
	switch {
	case len(pairs) == 0:
		return SessionCancelled
	case bad > 0:
		return SessionPartiallyFaulty
	case live == 0 && cancelled == 0:
		return SessionSplit
	case live == 0:
		return SessionCancelled
	case synced == live:
		return SessionSynced
	case paused || adminPaused > 0:
		return SessionPaused
	case copying > 0 || synced > 0:
		return SessionCopying
	}
	return SessionScheduled
}

// SessionRequest asks for a new session. Each pair names its source and
// target LUN (and optionally its Vehicle); the session's Speed, MaxMBps and
// Verify apply to every pair, and AutoSplit is the session's.
type SessionRequest struct {
	Name      string
	Pairs     []PairRequest
	Speed     Speed // default SpeedMedium
	MaxMBps   int64
	MaxActive int // pairs of the session copying at once; 0 = no limit
	AutoSplit bool
	Verify    bool
}

// SessionStatus is a session as shown by `session show`.
type SessionStatus struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	State     string `json:"state"`
	Reason    string `json:"reason"`
	Speed     Speed  `json:"speed"`
	MaxMBps   int64  `json:"max_mbps"`
	MaxActive int    `json:"max_active"`
	AutoSplit bool   `json:"auto_split"`
	Verify    bool   `json:"verify"`
	Paused    bool   `json:"paused"`
	// Sums over the pairs; ETA from the remaining bytes and the rate.
	CopiedBytes  int64   `json:"copied_bytes"`
	TotalBytes   int64   `json:"total_bytes"`
	DCLBytes     int64   `json:"dcl_bytes"`
	RateBps      int64   `json:"rate_bps"`
	ETASeconds   int64   `json:"eta_seconds"`
	SplitPauseMS float64 `json:"split_pause_ms"`
	// Counts is the number of pairs per pair state.
	Counts  map[string]int `json:"counts"`
	Pairs   []PairStatus   `json:"pairs"`
	Created time.Time      `json:"created"`
}

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
	s.rec = rec
	s.mu.Unlock()
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

// CreateSession creates a session and all its pairs, all or nothing (also
// across a crash): if a pair is refused nothing is created and the error
// names the refused pair and why.
func (m *Manager) CreateSession(req SessionRequest) (SessionStatus, error) {
	if m.isClosed() {
		return SessionStatus{}, fmt.Errorf("session %s: manager closed: %w", req.Name, ErrState)
	}
	if !lunNameRE.MatchString(req.Name) {
		return SessionStatus{}, fmt.Errorf("session name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit: %w", req.Name, ErrInvalid)
	}
	if len(req.Pairs) == 0 {
		return SessionStatus{}, fmt.Errorf("session %s: no pairs: %w", req.Name, ErrInvalid)
	}
	if req.Speed == "" {
		req.Speed = SpeedMedium
	}
	if _, err := rateOf(req.Speed); err != nil {
		return SessionStatus{}, fmt.Errorf("session %s: %w", req.Name, err)
	}
	if req.MaxMBps < 0 {
		return SessionStatus{}, fmt.Errorf("session %s: max MB/s %d is negative: %w", req.Name, req.MaxMBps, ErrInvalid)
	}
	if req.MaxActive < 0 {
		return SessionStatus{}, fmt.Errorf("session %s: max active %d is negative: %w", req.Name, req.MaxActive, ErrInvalid)
	}
	used := map[string]string{}
	for i, p := range req.Pairs {
		if p.Source == "" || p.Target == "" {
			return SessionStatus{}, fmt.Errorf("session %s: pair %d: source and target LUN names are required: %w", req.Name, i+1, ErrInvalid)
		}
		for _, l := range []string{p.Source, p.Target} {
			if prev, ok := used[l]; ok {
				return SessionStatus{}, fmt.Errorf("session %s: LUN %s is named twice (pairs %s and %d): %w", req.Name, l, prev, i+1, ErrInvalid)
			}
			used[l] = fmt.Sprint(i + 1)
		}
	}

	m.sess.create.Lock()
	defer m.sess.create.Unlock()
	if _, err := m.sessionByName(req.Name); err == nil {
		return SessionStatus{}, fmt.Errorf("session %s: %w", req.Name, ErrExists)
	}
	now := time.Now().UTC()
	rec := metavol.Session{
		ID: metavol.NewID(), Name: req.Name, Speed: string(req.Speed), MaxMBps: req.MaxMBps,
		MaxActive: req.MaxActive, AutoSplit: req.AutoSplit, Verify: req.Verify,
		Created: now, Updated: now,
	}
	m.admin.Lock()
	plans := make([]pairPlan, 0, len(req.Pairs))
	for i, pr := range req.Pairs {
		held := ""
		if req.MaxActive > 0 && i >= req.MaxActive {
			held = fmt.Sprintf("waiting for a copy slot of session %s (max active %d)", req.Name, req.MaxActive)
		}
		pl, err := m.planPair(PairRequest{
			Source: pr.Source, Target: pr.Target, Speed: req.Speed, MaxMBps: req.MaxMBps,
			Verify: req.Verify, Vehicle: pr.Vehicle,
		}, held)
		if err != nil {
			m.admin.Unlock()
			return SessionStatus{}, fmt.Errorf("session %s: pair %d (%s → %s) refused: %w", req.Name, i+1, pr.Source, pr.Target, err)
		}
		plans = append(plans, pl)
		rec.PairIDs = append(rec.PairIDs, pl.rec.ID)
		rec.Sources = append(rec.Sources, pr.Source)
		rec.Targets = append(rec.Targets, pr.Target)
		if held != "" {
			rec.Held = append(rec.Held, pl.rec.ID)
		}
	}
	unfence, err := m.fencePlans(plans, false, false) // imported sources (fence.go)
	if err != nil {
		m.admin.Unlock()
		return SessionStatus{}, fmt.Errorf("session %s: %w", req.Name, err)
	}
	ps, err := m.createPairs("session "+req.Name, plans, &rec)
	if ps == nil {
		unfence()
	}
	m.admin.Unlock()
	if ps == nil {
		if errors.Is(err, metavol.ErrExists) {
			return SessionStatus{}, fmt.Errorf("session %s: %w (%w)", req.Name, ErrExists, err)
		}
		return SessionStatus{}, err
	}
	s := &session{m: m, rec: rec}
	m.sess.mu.Lock()
	m.sess.byName[rec.Name] = s
	m.sess.mu.Unlock()
	for _, p := range ps {
		m.startPair(p)
	}
	m.log.Info().Str("session", rec.Name).Int("pairs", len(rec.PairIDs)).Int("max_active", rec.MaxActive).
		Bool("auto_split", rec.AutoSplit).Msg("session created")
	m.startSession(s)
	return s.status(), err
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

// Sessions lists the sessions by name.
func (m *Manager) Sessions() []SessionStatus {
	m.sess.mu.Lock()
	ss := make([]*session, 0, len(m.sess.byName))
	for _, s := range m.sess.byName {
		ss = append(ss, s)
	}
	m.sess.mu.Unlock()
	out := make([]SessionStatus, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Session is the status of the session called name.
func (m *Manager) Session(name string) (SessionStatus, error) {
	s, err := m.sessionByName(name)
	if err != nil {
		return SessionStatus{}, err
	}
	return s.status(), nil
}

// status aggregates the session's pairs.
func (s *session) status() SessionStatus {
	ps := s.pairs()
	rec := s.record()
	st := s.state(ps)
	s.mu.Lock()
	reason := s.reason
	s.mu.Unlock()
	if reason == "" {
		reason = rec.Reason
	}
	out := SessionStatus{
		ID: rec.ID, Name: rec.Name, State: st.String(), Reason: reason,
		Speed: Speed(rec.Speed), MaxMBps: rec.MaxMBps, MaxActive: rec.MaxActive,
		AutoSplit: rec.AutoSplit, Verify: rec.Verify, Paused: rec.Paused,
		Counts: map[string]int{}, Pairs: make([]PairStatus, 0, len(ps)), Created: rec.Created,
	}
	for _, p := range ps {
		ps := p.st
		if p.held {
			ps.Reason = fmt.Sprintf("waiting for a copy slot of session %s (max active %d)", rec.Name, rec.MaxActive)
		}
		out.Counts[ps.State]++
		out.CopiedBytes += ps.CopiedBytes
		out.TotalBytes += ps.TotalBytes
		out.DCLBytes += ps.DCLBytes
		out.RateBps += ps.RateBps
		out.SplitPauseMS = max(out.SplitPauseMS, ps.SplitPauseMS)
		out.Pairs = append(out.Pairs, ps)
	}
	if rem := out.TotalBytes - out.CopiedBytes + out.DCLBytes; out.RateBps > 0 && rem > 0 && !st.Final() {
		out.ETASeconds = int64(float64(rem)/float64(out.RateBps) + 0.5)
	}
	return out
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
			if p.state == StateCopying || p.state == StateSynced {
				if err := s.m.Pause(p.st.Source); err != nil {
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
	srcs := activeSources(ps)
	res, err := s.m.Split(srcs, 0)
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

func activeSources(ps []sessionPair) []string {
	var srcs []string
	for _, p := range ps {
		if p.active() {
			srcs = append(srcs, p.st.Source)
		}
	}
	return srcs
}

// schedule resumes held pairs while fewer than MaxActive of the session's
// pairs copy, and forgets held pairs that are no longer paused. Called
// with ops held.
func (s *session) schedule(ps []sessionPair) {
	rec := s.record()
	if len(rec.Held) == 0 {
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
			if err := s.m.Resume(p.st.Source); err == nil {
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

// opSession runs fn on the named session under its ops lock.
func (m *Manager) opSession(name string, fn func(s *session, ps []sessionPair, st SessionState) error) (*session, error) {
	if m.isClosed() {
		return nil, fmt.Errorf("session %s: manager closed: %w", name, ErrState)
	}
	s, err := m.sessionByName(name)
	if err != nil {
		return nil, err
	}
	s.ops.Lock()
	defer s.ops.Unlock()
	ps := s.pairs()
	return s, fn(s, ps, s.state(ps))
}

// PauseSession pauses every pair of the session (DESIGN §6: copying|synced
// → paused); host writes then go to the sources only and are logged.
func (m *Manager) PauseSession(name string) (SessionStatus, error) {
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st.Final() {
			return fmt.Errorf("session %s is %s: nothing to pause: %w", name, st, ErrState)
		}
		rec := s.record()
		rec.Paused = true
		if err := s.save(rec); err != nil {
			return err
		}
		var errs []error
		for _, p := range ps {
			if p.state == StateQueued || p.state == StateCopying || p.state == StateSynced {
				if err := m.Pause(p.st.Source); err != nil && !errors.Is(err, ErrState) {
					errs = append(errs, err)
				}
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("session %s: pause: %w", name, errors.Join(errs...))
		}
		return nil
	})
	if err != nil {
		return SessionStatus{}, err
	}
	m.log.Info().Str("session", name).Msg("session paused")
	return s.status(), nil
}

// ResumeSession resumes a paused session: its paused pairs copy again
// (what changed while paused is re-copied), MaxActive at a time.
func (m *Manager) ResumeSession(name string) (SessionStatus, error) {
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st.Final() {
			return fmt.Errorf("session %s is %s: nothing to resume: %w", name, st, ErrState)
		}
		rec := s.record()
		var paused []string
		for _, p := range ps {
			if p.state == StatePaused {
				paused = append(paused, p.st.ID)
			}
		}
		if !rec.Paused && len(paused) == len(rec.Held) {
			return fmt.Errorf("session %s: resume: it is %s, not paused: %w", name, st, ErrState)
		}
		rec.Paused = false
		rec.Held = paused
		if err := s.save(rec); err != nil {
			return err
		}
		s.schedule(s.pairs())
		return nil
	})
	if err != nil {
		return SessionStatus{}, err
	}
	m.log.Info().Str("session", name).Msg("session resumed")
	return s.status(), nil
}

// SetSession changes the speed and/or cap of every pair of the session.
func (m *Manager) SetSession(name string, req SetRequest) (SessionStatus, error) {
	if req.Speed != nil {
		if _, err := rateOf(*req.Speed); err != nil {
			return SessionStatus{}, fmt.Errorf("session %s: %w", name, err)
		}
	}
	if req.MaxMBps != nil && *req.MaxMBps < 0 {
		return SessionStatus{}, fmt.Errorf("session %s: max MB/s %d is negative: %w", name, *req.MaxMBps, ErrInvalid)
	}
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st.Final() {
			return fmt.Errorf("session %s is %s: nothing to throttle: %w", name, st, ErrState)
		}
		rec := s.record()
		if req.Speed != nil {
			rec.Speed = string(*req.Speed)
		}
		if req.MaxMBps != nil {
			rec.MaxMBps = *req.MaxMBps
		}
		if err := s.save(rec); err != nil {
			return err
		}
		var errs []error
		for _, p := range ps {
			if !p.active() {
				continue
			}
			if _, err := m.Set(p.st.Source, req); err != nil && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("session %s: set: %w", name, errors.Join(errs...))
		}
		return nil
	})
	if err != nil {
		return SessionStatus{}, err
	}
	return s.status(), nil
}

// SplitSession splits every pair of the session in one consistent split
// (Manager.Split): all must be synced, the host I/O pause is bounded by
// maxPause (0: DefaultMaxPause).
func (m *Manager) SplitSession(name string, maxPause time.Duration) (SplitResult, error) {
	var res SplitResult
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st.Final() {
			return fmt.Errorf("session %s is %s: nothing to split: %w", name, st, ErrState)
		}
		var err error
		res, err = m.Split(activeSources(ps), maxPause)
		if err != nil {
			return fmt.Errorf("session %s: %w", name, err)
		}
		s.setReason("")
		s.finish(SessionSplit, fmt.Sprintf("split: host I/O paused %.2f ms", res.PauseMS))
		return nil
	})
	if err != nil {
		return SplitResult{}, err
	}
	s.stopRun()
	m.log.Info().Str("session", name).Float64("pause_ms", res.PauseMS).Msg("session split")
	return res, nil
}

// CancelSession cancels every pair of the session that is not split (the
// targets are left as they were, the sources untouched).
func (m *Manager) CancelSession(name string) (SessionStatus, error) {
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st == SessionSplit {
			return fmt.Errorf("session %s is split: nothing to cancel: %w", name, ErrState)
		}
		var errs []error
		for _, p := range ps {
			if !p.active() {
				continue
			}
			if err := m.Cancel(p.st.Source); err != nil && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("session %s: cancel (repeat it later): %w", name, errors.Join(errs...))
		}
		s.finish(SessionCancelled, "cancelled by admin")
		return nil
	})
	if err != nil {
		return SessionStatus{}, err
	}
	s.stopRun()
	m.log.Info().Str("session", name).Msg("session cancelled")
	return s.status(), nil
}

// DeleteSession forgets a session that is split or cancelled (its split
// pairs' records stay, like those of single migrations).
func (m *Manager) DeleteSession(name string) error {
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if !st.Final() {
			return fmt.Errorf("session %s is %s: cancel or split it first: %w", name, st, ErrState)
		}
		rec := s.record()
		if err := m.db.Update(func(tx *metavol.Tx) error { return tx.DeleteSession(rec.ID) }); err != nil {
			return mapMetaErr("session", name, err)
		}
		m.sess.mu.Lock()
		delete(m.sess.byName, name)
		m.sess.mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	s.stopRun()
	m.log.Info().Str("session", name).Msg("session deleted")
	return nil
}
