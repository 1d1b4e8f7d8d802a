package lm

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// The admin operations on sessions (create, show, pause, resume, set,
// split, cancel, delete).

// CreateSession creates a session and all its pairs, all or nothing (also
// across a crash): if a pair is refused nothing is created and the error
// names the refused pair and why.
func (m *Manager) CreateSession(req SessionRequest) (SessionStatus, error) {
	obj := sessionObject(req.Name)
	if req.Name == "" {
		return SessionStatus{}, refuse(ErrInvalid, "session", "a name is required")
	}
	if len(req.Pairs) == 0 {
		return SessionStatus{}, refuse(ErrInvalid, obj, "no pairs: at least one pair (source and target LUN) is required")
	}
	sp, err := checkSpeed(obj, req.Speed)
	if err != nil {
		return SessionStatus{}, err
	}
	req.Speed = sp
	if req.MaxMBps < 0 {
		return SessionStatus{}, refuse(ErrInvalid, obj, "max MB/s %d is negative", req.MaxMBps)
	}
	if req.MaxActive < 0 {
		return SessionStatus{}, refuse(ErrInvalid, obj, "max active %d is negative (0: every pair copies at once)", req.MaxActive)
	}
	if err := checkHostLatency(obj, req.MaxHostLatency); err != nil {
		return SessionStatus{}, err
	}
	for i, p := range req.Pairs {
		if p.Source == "" || p.Target == "" {
			return SessionStatus{}, refuse(ErrInvalid, obj, "pair %d: both a source and a target LUN are required", i+1)
		}
	}
	if m.isClosed() {
		return SessionStatus{}, fmt.Errorf("session %s: manager closed: %w", req.Name, ErrState)
	}
	if !lunNameRE.MatchString(req.Name) {
		return SessionStatus{}, refuseAs(ErrInvalid, "session name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", req.Name)
	}
	used := map[string]string{}
	for i, p := range req.Pairs {
		for _, l := range []string{p.Source, p.Target} {
			if prev, ok := used[l]; ok {
				return SessionStatus{}, refuse(ErrInvalid, obj, "LUN %s is named twice (pairs %s and %d)", l, prev, i+1)
			}
			used[l] = fmt.Sprint(i + 1)
		}
	}

	var ests []*Estimate // read the sources before any lock (estimate.go)
	if !req.DryRun {
		ests = m.estimateSession(req)
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
		MaxHostLatencyNS: int64(req.MaxHostLatency),
		Created:          now, Updated: now, Priority: req.Priority,
		Windows: windowStrings(req.Windows), MaxElapsedNS: int64(req.MaxElapsed),
	}
	if startState(req.StartAt, now) == StateScheduled { // schedule.go
		rec.StartAt = req.StartAt.UTC()
	}
	m.admin.Lock()
	if err := m.settled("session " + req.Name); err != nil {
		m.admin.Unlock()
		return SessionStatus{}, err
	}
	plans := make([]pairPlan, 0, len(req.Pairs))
	for i, pr := range req.Pairs {
		held := ""
		if req.MaxActive > 0 && i >= req.MaxActive {
			held = fmt.Sprintf("waiting for a copy slot of session %s (max active %d)", req.Name, req.MaxActive)
		}
		pl, err := m.planPair(PairRequest{
			Source: pr.Source, Target: pr.Target, Speed: req.Speed, MaxMBps: req.MaxMBps,
			Verify: req.Verify, Vehicle: pr.Vehicle, Priority: req.Priority, StartAt: req.StartAt,
			Windows: req.Windows, MaxElapsed: req.MaxElapsed, MaxHostLatency: req.MaxHostLatency,
		}, held)
		if err != nil {
			m.admin.Unlock()
			return SessionStatus{}, fmt.Errorf("session %s: pair %d (%s → %s) refused: %w", req.Name, i+1, pr.Source, pr.Target, err)
		}
		pl.rec.Session = rec.ID
		if i < len(ests) && ests[i] != nil {
			keepEstimate(&pl.rec, *ests[i])
		}
		plans = append(plans, pl)
		rec.PairIDs = append(rec.PairIDs, pl.rec.ID)
		rec.Sources = append(rec.Sources, pr.Source)
		rec.Targets = append(rec.Targets, pr.Target)
		if held != "" {
			rec.Held = append(rec.Held, pl.rec.ID)
		}
	}
	if req.DryRun {
		m.admin.Unlock()
		return m.dryRunSession(req, plans)
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
	m.events.sessionEvent(rec, "created", fmt.Sprintf("%d pairs, speed %s", len(rec.PairIDs), rec.Speed), "admin")
	m.log.Debug().Str("session", rec.Name).Int("pairs", len(rec.PairIDs)).Int("max_active", rec.MaxActive).
		Bool("auto_split", rec.AutoSplit).Msg("session created")
	m.startSession(s)
	return s.status(), err
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
		MaxHostLatency: time.Duration(rec.MaxHostLatencyNS),
		AutoSplit:      rec.AutoSplit, Verify: rec.Verify, Paused: rec.Paused,
		Counts: map[string]int{}, Pairs: make([]PairStatus, 0, len(ps)), Created: rec.Created,
		Priority: recPriority(rec.Priority), StartAt: rec.StartAt, Forced: rec.Forced,
		Windows: rec.Windows, MaxElapsed: time.Duration(rec.MaxElapsedNS),
	}
	for _, p := range ps {
		ps := p.st
		if p.held {
			ps.Reason = fmt.Sprintf("waiting for a copy slot of session %s (max active %d)", rec.Name, rec.MaxActive)
		}
		out.Counts[ps.State]++
		out.CopiedBytes += ps.CopiedBytes
		out.SkippedBytes += ps.SkippedBytes
		out.DoneBytes += ps.DoneBytes
		out.TotalBytes += ps.TotalBytes
		out.DCLBytes += ps.DCLBytes
		out.RateBps += ps.RateBps
		out.SplitPauseMS = max(out.SplitPauseMS, ps.SplitPauseMS)
		out.Pairs = append(out.Pairs, ps)
	}
	// ETA: the allocated bytes still to copy over the rate really moved.
	var rem int64
	for _, ps := range out.Pairs {
		rem += ps.RemainingBytes
	}
	if out.RateBps > 0 && rem > 0 && !st.Final() {
		out.ETASeconds = int64(float64(rem)/float64(out.RateBps) + 0.5)
	}
	return out
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
			// A switched pair (split --keep-source) pauses too: its
			// mirroring back stops, host writes are marked in its DCL and
			// re-copied new → old on resume, when it is switched again.
			if p.state == StateQueued || p.state == StateCopying || p.state == StateSynced || p.state == StateSwitched {
				if err := m.pause(byID(p.st.ID)); err != nil && !errors.Is(err, ErrState) {
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
	if err := checkSetRequest(sessionObject(name), &req); err != nil {
		return SessionStatus{}, err
	}
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st.Final() {
			return fmt.Errorf("session %s is %s: nothing to throttle: %w", name, st, ErrState)
		}
		rec := s.record()
		req.apply(setFields{Speed: &rec.Speed, MaxMBps: &rec.MaxMBps, Priority: &rec.Priority, AutoSplit: &rec.AutoSplit,
			Verify: &rec.Verify, Windows: &rec.Windows, MaxElapsedNS: &rec.MaxElapsedNS, MaxHostLatencyNS: &rec.MaxHostLatencyNS,
			MaxActive: &rec.MaxActive})
		if req.AutoSplit != nil {
			s.splitBlocked = false
		}
		if err := s.save(rec); err != nil {
			return err
		}
		// The pairs' own settings (auto-split and max active are the
		// session's).
		preq := SetRequest{Speed: req.Speed, MaxMBps: req.MaxMBps, Priority: req.Priority, Verify: req.Verify,
			Windows: req.Windows, MaxElapsed: req.MaxElapsed, MaxHostLatency: req.MaxHostLatency}
		var errs []error
		for _, p := range ps {
			if !p.active() || preq.empty() {
				continue
			}
			if _, err := m.set(byID(p.st.ID), preq); err != nil && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
		}
		if req.MaxActive != nil {
			if err := s.holdPastLimit(s.pairs()); err != nil {
				errs = append(errs, err)
			}
			s.schedule(s.pairs())
		}
		m.sess.changed() // the runner: auto-split may apply now
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
		res, err = m.split(activeRefs(ps), maxPause, splitPlain, splitByAdmin)
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
			if err := m.cancelPair(byID(p.st.ID)); err != nil && !errors.Is(err, ErrNotFound) {
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
		// The records of its split pairs stay, no longer in a session.
		if err := m.db.Update(func(tx *metavol.Tx) error {
			for _, id := range rec.PairIDs {
				pr, err := tx.GetPair(id)
				if errors.Is(err, metavol.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if pr.Session == rec.ID {
					pr.Session = ""
					if err := tx.PutPair(pr); err != nil {
						return err
					}
				}
			}
			return tx.DeleteSession(rec.ID)
		}); err != nil {
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
