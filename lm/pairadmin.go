package lm

import (
	"errors"
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// CreatePair starts migrating the source LUN onto the target LUN. Nothing
// changes when it fails, except in the one case createPairs describes (a
// status and an error: the pair exists).
func (m *Manager) CreatePair(req PairRequest) (PairStatus, error) {
	if req.DryRun {
		return m.dryRunPair(req)
	}
	// The estimate reads the source, with no lock held: between a first
	// plan (a refused request costs no read) and the real one (a pair it
	// cannot estimate is created without an estimate).
	m.admin.Lock()
	_, err := m.planPair(req, "")
	m.admin.Unlock()
	if err != nil {
		return PairStatus{}, err
	}
	est, eerr := Estimate{}, checkPairRequest(&req)
	if eerr == nil {
		est, eerr = m.estimatePair(req, sampleTime, time.Now())
	}
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.settled("pair " + req.Source); err != nil {
		return PairStatus{}, err
	}
	pl, err := m.planPair(req, "")
	if err != nil {
		return PairStatus{}, err
	}
	if eerr == nil {
		keepEstimate(&pl.rec, est)
	}
	unfence, err := m.fencePlans([]pairPlan{pl}, req.Preempt, req.AllowUnfenced) // an imported source (fence.go)
	if err != nil {
		return PairStatus{}, err
	}
	ps, err := m.createPairs("pair "+req.Source, []pairPlan{pl}, nil)
	if ps == nil {
		unfence()
		return PairStatus{}, err
	}
	p := ps[0]
	p.zlog.Debug().Str("target_lun", p.tgt.name).Str("speed", string(req.Speed)).Msg("pair created")
	m.startPair(p)
	return p.status(), err
}

// pairPlan is a checked pair request: its record and LUNs.
type pairPlan struct {
	rec    metavol.Pair
	se, te *lunEntry
}

// planPair checks a pair request and builds its record; nothing changes.
// A non-empty held makes the pair paused with that reason instead of
// queued (a session's pair waiting for a copy slot of its session,
// resumed by the session with Resume). Called with admin held.
func (m *Manager) planPair(req PairRequest, held string) (pairPlan, error) {
	if m.isClosed() {
		return pairPlan{}, fmt.Errorf("pair %s: manager closed: %w", req.Source, ErrState)
	}
	if err := checkPairRequest(&req); err != nil {
		return pairPlan{}, err
	}
	se, sl, err := m.entryByName(req.Source)
	if err != nil {
		return pairPlan{}, fmt.Errorf("pair %s: source %w", req.Source, err)
	}
	te, tl, err := m.entryByName(req.Target)
	if err != nil {
		return pairPlan{}, fmt.Errorf("pair %s: target %w", req.Source, err)
	}
	if tl.Size < sl.Size {
		return pairPlan{}, refuseAs(ErrInvalid, "pair %s: target LUN %s (%s) is smaller than the source (%s)",
			req.Source, req.Target, sizeText(tl.Size), sizeText(sl.Size))
	}
	if tl.BlockSize != sl.BlockSize {
		return pairPlan{}, refuseAs(ErrInvalid, "pair %s: block sizes differ: source %d, target LUN %s %d",
			req.Source, sl.BlockSize, req.Target, tl.BlockSize)
	}
	for _, x := range []metavol.LUN{sl, tl} {
		if err := m.refuseOffline("pair create", x); err != nil {
			return pairPlan{}, fmt.Errorf("pair %s: %w", req.Source, err)
		}
		if p := m.pairOf(x.ID); p != nil {
			return pairPlan{}, fmt.Errorf("pair %s: LUN %s is already in pair %s (%s → %s): %w",
				req.Source, x.Name, p.id, p.src.name, p.tgt.name, ErrInPair)
		}
	}
	if err := m.db.View(func(tx *metavol.Tx) error { return refuseMappedPairTarget(tx, req.Source, tl) }); err != nil {
		return pairPlan{}, err
	}
	for _, x := range []struct {
		role string
		e    *lunEntry
	}{{"source", se}, {"target", te}} {
		if err := m.openVolume(x.e.vol); err != nil {
			return pairPlan{}, fmt.Errorf("pair %s: %s LUN %s: %w", req.Source, x.role, x.e.name, err)
		}
		if o, _ := x.e.vol.get(); o != nil && o.raw.Size() < sl.Size {
			return pairPlan{}, fmt.Errorf("pair %s: %s LUN %s: data volume holds %s, need %s: %w",
				req.Source, x.role, x.e.name, sizeText(o.raw.Size()), sizeText(sl.Size), ErrUnavailable)
		}
	}

	now := time.Now().UTC()
	rec := metavol.Pair{
		ID:               metavol.NewID(),
		SourceLUN:        sl.ID,
		TargetLUN:        tl.ID,
		State:            StateQueued.String(),
		Reason:           "created",
		Speed:            string(req.Speed),
		MaxMBps:          req.MaxMBps,
		MaxHostLatencyNS: int64(req.MaxHostLatency),
		AutoSplit:        req.AutoSplit,
		Verify:           req.Verify,
		ChunkSize:        m.copyChunk(se, te), // rbd.go: a whole RBD object per copy write
		RegionSize:       m.opts.RegionSize,
		VehicleWanted:    req.Vehicle,
		Created:          now,
		Updated:          now,
		Priority:         req.Priority,
		Windows:          windowStrings(req.Windows),
		MaxElapsedNS:     int64(req.MaxElapsed),
	}
	if startState(req.StartAt, now) == StateScheduled { // schedule.go
		rec.StartAt = req.StartAt.UTC()
		rec.State, rec.Reason = StateScheduled.String(), "scheduled to start at "+req.StartAt.Local().Format(time.RFC3339)
	}
	if held != "" {
		rec.State, rec.Reason = StatePaused.String(), held
	}
	return pairPlan{rec: rec, se: se, te: te}, nil
}

// createPairs makes planned pairs real, all or nothing, also across a
// crash: their DCLs are opened, then, with the I/O gates of all their
// LUNs closed and drained, every pair record (and the session record, if
// any) is written in one meta volume transaction and the routes change.
// A drain that times out or a refused transaction changes nothing.
//
// A transaction that reports an error may still have been written (a
// failed sync after the write): the records are then deleted; if that
// fails too and the records are still there, the memory follows the meta
// volume: the pairs are attached and returned with an error that says so
// (they show in `migration list` and can be cancelled; they come back at
// a restart like any pair), never a hidden record that returns later.
//
// The caller starts the returned pairs (and the session's runner). Called
// with admin held.
func (m *Manager) createPairs(what string, plans []pairPlan, sess *metavol.Session) ([]*pair, error) {
	ps := make([]*pair, 0, len(plans))
	drop := func() {
		for _, p := range ps {
			m.dcl.Drop(p.id)
		}
	}
	for i, pl := range plans {
		p, err := m.newPair(pl.rec, pl.se, pl.te)
		if err != nil {
			drop()
			return nil, err
		}
		ps = append(ps, p)
		if err := m.createStep(fmt.Sprintf("pair %d ready", i+1)); err != nil {
			drop()
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	entries := make([]*lunEntry, 0, 2*len(ps))
	for _, p := range ps {
		entries = append(entries, p.src, p.tgt)
	}
	var kept error
	err := m.withGates(entries, func() error {
		err := m.db.Update(func(tx *metavol.Tx) error {
			for _, p := range ps {
				if err := tx.PutPair(p.mu.rec); err != nil {
					return err
				}
			}
			if sess != nil {
				return tx.PutSession(*sess)
			}
			return nil
		})
		if err == nil {
			err = m.createStep("committed")
		}
		if err != nil {
			cerr := m.undoCreate(ps, sess)
			if cerr == nil {
				return fmt.Errorf("%s: persist: %w", what, err)
			}
			if !m.createVisible(ps, sess) {
				return fmt.Errorf("%s: persist: %w (removing what it may have written failed too: %v)", what, err, cerr)
			}
			kept = fmt.Errorf("%s: the meta volume reported an error (%w) but holds the records, which could not be removed (%v): "+
				"the pair(s) exist and run; cancel them if unwanted", what, err, cerr)
			m.log.Error().Err(kept).Msg("pair create")
		}
		for _, p := range ps {
			p.src.pair = p
			p.tgt.targetOf = p
		}
		return nil
	})
	if err != nil {
		drop()
		if errors.Is(err, ErrSplitTimeout) { // from the drain: nothing was written
			err = fmt.Errorf("%s: attach: %w", what, err)
		}
		return nil, err
	}
	m.mu.Lock()
	for _, p := range ps {
		m.mu.pairs[p.id] = p
	}
	m.mu.Unlock()
	return ps, kept
}

// undoCreate deletes the records a failed createPairs may have written.
func (m *Manager) undoCreate(ps []*pair, sess *metavol.Session) error {
	var err error
	for range 3 {
		if err = m.createStep("undo"); err != nil {
			continue
		}
		err = m.db.Update(func(tx *metavol.Tx) error {
			for _, p := range ps {
				if err := tx.DeletePair(p.id); err != nil && !errors.Is(err, metavol.ErrNotFound) {
					return err
				}
			}
			if sess != nil {
				if err := tx.DeleteSession(sess.ID); err != nil && !errors.Is(err, metavol.ErrNotFound) {
					return err
				}
			}
			return nil
		})
		if err == nil {
			return nil
		}
	}
	return err
}

// createVisible reports whether the meta volume holds the records of a
// failed createPairs (or cannot say).
func (m *Manager) createVisible(ps []*pair, sess *metavol.Session) bool {
	found := true
	m.db.View(func(tx *metavol.Tx) error {
		_, err := tx.GetPair(ps[0].id)
		found = !errors.Is(err, metavol.ErrNotFound)
		return nil
	})
	return found
}

// createStep is the test hook of createPairs (nil in production).
func (m *Manager) createStep(step string) error {
	if h := m.hooks.createStep; h != nil {
		return h(step)
	}
	return nil
}

// detach takes the pair out of its LUNs' routes (createPairs put it there). If the I/O does not drain, the pair stays
// attached (and listed) and the error says so.
func (m *Manager) detach(p *pair) error {
	err := m.withGates([]*lunEntry{p.src, p.tgt}, func() error {
		if p.src.pair == p {
			p.src.pair = nil
		}
		if p.tgt.targetOf == p {
			p.tgt.targetOf = nil
		}
		return nil
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.mu.pairs, p.id)
	m.mu.Unlock()
	return nil
}

// activePair finds the active pair named source: by its source LUN's
// name, else its target LUN's name, else its pair ID (sessionref.go).
func (m *Manager) activePair(source string) (*pair, error) {
	m.mu.Lock()
	for _, p := range m.mu.pairs {
		if p.src.name == source {
			m.mu.Unlock()
			return p, nil
		}
	}
	for _, p := range m.mu.pairs {
		if p.tgt.name == source {
			m.mu.Unlock()
			return p, nil
		}
	}
	if p := m.mu.pairs[source]; p != nil {
		m.mu.Unlock()
		return p, nil
	}
	u := m.unloadedLocked(source)
	m.mu.Unlock()
	if u != nil {
		return nil, fmt.Errorf("migration of %s: %s: %w", source, u.reason(), ErrOffline)
	}
	return nil, m.noActivePair(source)
}

// pause stops the copy; host writes then go to the source only and are
// recorded in the DCL. It returns once the copier has stopped.
func (m *Manager) pause(ref pairRef) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.settled("pair " + ref.String() + ": pause"); err != nil {
		return err
	}
	p, err := m.findPair(ref)
	if err != nil {
		return err
	}
	if err := p.transition(StatePaused, "paused by admin"); err != nil {
		return err
	}
	p.waitCopyStopped()
	p.checkpoint(true)
	return nil
}

// resume continues a paused pair: the copy goes on from the cursor and
// the DCL (what changed while paused) is re-copied.
func (m *Manager) resume(ref pairRef) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.settled("pair " + ref.String() + ": resume"); err != nil {
		return err
	}
	p, err := m.findPair(ref)
	if err != nil {
		return err
	}
	if p.getState() != StatePaused {
		return fmt.Errorf("pair %s: resume: it is %s, not paused: %w", p.name(), p.getState(), ErrState)
	}
	p.mu.Lock()
	maxEl, el := time.Duration(p.mu.rec.MaxElapsedNS), p.copyElapsedLocked(time.Now())
	p.mu.Unlock()
	if maxEl > 0 && el >= maxEl { // schedule_window.go
		return refuse(ErrState, pairObject(p.name()), "max elapsed %v reached (copied for %v): raise or remove it first (migration set --max-elapsed)", maxEl, el.Round(time.Second))
	}
	if !m.queue.hasRoom() { // queue.go: the server's max active is reached
		limit, active, _ := m.queue.counts()
		return p.transition(StateQueued, fmt.Sprintf("resumed by admin: queued, %d of max active %d pairs copying", active, limit))
	}
	return p.transition(StateCopying, "resumed by admin")
}

// cancelPair ends a pair: the copy stops, the target is left as it was, the
// source untouched, the DCL dropped and the pair record deleted. A faulty
// pair (final) is removed the same way, and so is a pair that could not
// be loaded (its LUNs come back online).
func (m *Manager) cancelPair(ref pairRef) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.settled("pair " + ref.String() + ": cancel"); err != nil {
		return err
	}
	p, err := m.findPair(ref)
	if errors.Is(err, ErrOffline) {
		return m.cancelUnloaded(ref.key())
	}
	if err != nil {
		return err
	}
	if err := p.refuseCancelSwitched(); err != nil { // rollback.go
		return err
	}
	if st := p.getState(); st != StateFaulty && st != StateCancelled {
		if err := p.transition(StateCancelled, "cancelled by admin"); err != nil {
			return err
		}
	}
	if err := m.removePair(p); err != nil {
		return err
	}
	m.releaseFence(p.src.vol, p.src.name) // an imported source's fence (fence.go)
	return nil
}

// removePair stops and detaches a pair in a final state and forgets it:
// its record is deleted in the transaction that deletes its DCL (DESIGN §5 step 3: never one without the other). If the host
// I/O does not drain, the pair stays attached (its writes still
// dual-written and marked) so that the cancel can be repeated. If that
// transaction fails, the record (cancelled) and the DCL stay, and the
// next start deletes both.
func (m *Manager) removePair(p *pair) error {
	p.stopRun()
	if err := m.detach(p); err != nil {
		return fmt.Errorf("pair %s: detach: %w (cancel again later)", p.name(), err)
	}
	garbage, err := m.dcl.Forget([]string{p.id}, func() (rest []string, err error) {
		err = m.db.Update(func(tx *metavol.Tx) error {
			var err error
			if rest, err = tx.DeleteDCLs([]string{p.id}); err != nil {
				return err
			}
			return tx.DeletePair(p.id)
		})
		return rest, err
	})
	if err != nil {
		return fmt.Errorf("pair %s: %w", p.name(), err)
	}
	if len(garbage) > 0 {
		if err := m.dcl.Purge(garbage); err != nil {
			p.zlog.Warn().Err(err).Msg("cancel: DCL pages left (swept at the next start)")
		}
	}
	p.zlog.Info().Msg("pair removed")
	return nil
}

// set changes a pair's throttle while it runs.
func (m *Manager) set(ref pairRef, req SetRequest) (PairStatus, error) {
	if err := checkSetRequest(pairObject(ref.String()), &req); err != nil {
		return PairStatus{}, err
	}
	if req.MaxActive != nil {
		return PairStatus{}, refuse(ErrInvalid, pairObject(ref.String()), "max active is a session's or the server's limit (session set --max-active, config set max-active), not a pair's")
	}
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.settled("pair " + ref.String() + ": set"); err != nil {
		return PairStatus{}, err
	}
	p, err := m.findPair(ref)
	if err != nil {
		return PairStatus{}, err
	}
	p.persist.Lock()
	defer p.persist.Unlock()
	p.mu.Lock()
	rec := p.recordLocked()
	p.mu.Unlock()
	if req.AutoSplit != nil && rec.Session != "" {
		return PairStatus{}, refuse(ErrInvalid, pairObject(ref.String()), "the pair belongs to session %s, which splits its pairs together: set auto-split on the session (session set --auto-split)", m.sessionName(rec.Session))
	}
	req.apply(setFields{Speed: &rec.Speed, MaxMBps: &rec.MaxMBps, Priority: &rec.Priority, AutoSplit: &rec.AutoSplit,
		Verify: &rec.Verify, Windows: &rec.Windows, MaxElapsedNS: &rec.MaxElapsedNS, MaxHostLatencyNS: &rec.MaxHostLatencyNS})
	if err := m.db.Update(func(tx *metavol.Tx) error { return tx.PutPair(rec) }); err != nil {
		return PairStatus{}, fmt.Errorf("pair %s: %w", p.name(), err)
	}
	p.mu.Lock()
	p.mu.rec = rec
	p.mu.sched.windows = nil // parsed again
	p.mu.Unlock()
	p.applySchedule(time.Now()) // schedule_window.go: the window's rate or the pair's own
	m.wakeSchedule()
	if req.Priority != nil {
		m.queue.rekey(p, p.queueKey()) // queue.go
	}
	if req.AutoSplit != nil && *req.AutoSplit && p.getState() == StateSynced && rec.Session == "" {
		m.goAutoSplit(p) // already synced: split now
	}
	return p.status(), nil
}
