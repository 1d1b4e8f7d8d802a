package lm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmtgt/lmtgt/dcl"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/rs/zerolog"
)

// Transfer vehicles.
const (
	VehicleAuto          = "auto"
	VehicleGeneric       = "generic"
	VehicleCopyFileRange = "copy_file_range"
)

// pair is one attached migration pair: its state, DCL, range lock, copy
// cursor and run goroutine.
type pair struct {
	m      *Manager
	id     string
	src    *lunEntry
	tgt    *lunEntry
	srcVol *dataVol // fixed while the pair exists
	tgtVol *dataVol
	log    *dcl.Log
	locks  rangeLock
	size   int64 // bytes to copy: the source LUN's size
	region int64
	chunk  int64
	bucket *bucket
	zlog   zerolog.Logger

	// issued is the in-memory copy cursor: every chunk below it has been
	// copied or is being copied under the exclusive range lock. Host
	// writes below it need a durable mark first.
	issued atomic.Int64
	// ckpt mirrors the persisted copy checkpoint (mu.rec.Cursor).
	ckpt atomic.Int64
	// syncMu orders the syncs of the legs (see syncLegs).
	syncMu sync.RWMutex
	// sourceOnly: paused, interrupted or faulty; writes go to the source
	// only and mark the DCL.
	sourceOnly atomic.Bool
	// fault is the reason of the first failure ("target failed: ...",
	// "source read error: ...") not yet handled by the run goroutine.
	fault atomic.Pointer[string]
	state atomic.Int32 // mirror of mu.state for lock-free reads

	// Counters (also persisted in the record at checkpoints).
	done        atomic.Int64 // contiguous prefix finished by the initial copy
	dataBytes   atomic.Int64
	recopyBytes atomic.Int64
	vehicle     atomic.Pointer[string]

	wake   chan struct{} // run goroutine: something changed
	stop   context.CancelFunc
	exited chan struct{}
	// copyMu is held by the run goroutine while it copies; Pause takes it
	// to wait until the copy has stopped.
	copyMu sync.Mutex

	rate rateSampler

	// cmu guards completed: initial-copy jobs finished above the done
	// cursor (start → end), kept across pause/resume so that nothing is
	// copied twice.
	cmu       sync.Mutex
	completed map[int64]int64

	// persist serialises the changes of the record and the state: held
	// from reading the record to applying what was committed, across the
	// meta volume commit (and the split's syncs and pause). Only writers
	// of the record take it (transition, checkpoint, Set, Split); status
	// reads and the host path never do. Lock order: doc.go.
	persist sync.Mutex

	// mu guards the record and the state in memory. Never held across
	// I/O (a sync, a commit) nor on the host I/O path: status reads take
	// it, so they answer at once even during a split.
	mu struct {
		sync.Mutex
		rec   metavol.Pair
		state PairState
		// lastCkpt is when and at what cursor the checkpoint was persisted.
		lastCkptAt     time.Time
		lastCkptCursor int64
		retryStart     time.Time
		retryAttempt   int
	}
}

func (p *pair) getState() PairState { return PairState(p.state.Load()) }

func (p *pair) name() string { return p.src.name }

func (p *pair) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// transition moves the pair to state to, persisting it (with the reason)
// before it takes effect.
func (p *pair) transition(to PairState, reason string) error {
	p.persist.Lock()
	defer p.persist.Unlock()
	return p.transitionPersisting(to, reason)
}

// transitionFrom is transition for the run goroutine, which decides on a
// state it read earlier: it takes effect only if the pair is still in
// from (an admin's pause between the read and the transition must not be
// undone by the copier's queued → copying or synced → copying), and
// otherwise returns ErrState and changes nothing.
func (p *pair) transitionFrom(from, to PairState, reason string) error {
	p.persist.Lock()
	defer p.persist.Unlock()
	if cur := p.getState(); cur != from {
		return fmt.Errorf("pair %s: %s → %s: the pair is %s now: %w", p.name(), from, to, cur, ErrState)
	}
	return p.transitionPersisting(to, reason)
}

// transitionPersisting is transition with persist held: mu is taken only
// to read the record and to apply the committed one, never across the
// commit.
func (p *pair) transitionPersisting(to PairState, reason string) error {
	p.mu.Lock()
	from := p.mu.state
	if err := checkTransition(p.name(), from, to); err != nil {
		p.mu.Unlock()
		return err
	}
	rec := p.recordLocked()
	p.mu.Unlock()
	rec.State = to.String()
	rec.Reason = reason
	if err := p.m.db.Update(func(tx *metavol.Tx) error { return tx.PutPair(rec) }); err != nil {
		return fmt.Errorf("pair %s: persist %s → %s: %w", p.name(), from, to, err)
	}
	p.mu.Lock()
	p.applyLocked(rec, to)
	p.mu.Unlock()
	p.zlog.Info().Str("from", from.String()).Str("to", to.String()).Str("reason", reason).Msg("pair state")
	return nil
}

// applyLocked makes a persisted state take effect.
func (p *pair) applyLocked(rec metavol.Pair, to PairState) {
	if to == StateInterrupted && p.mu.state != StateInterrupted {
		p.mu.retryStart = time.Now()
		p.mu.retryAttempt = 0
	}
	p.mu.rec = rec
	p.mu.state = to
	p.state.Store(int32(to))
	switch to {
	case StatePaused, StateInterrupted, StateFaulty:
		p.sourceOnly.Store(true)
	case StateCopying, StateSynced, StateQueued:
		p.sourceOnly.Store(p.fault.Load() != nil)
	}
	p.wakeUp()
	p.m.sess.changed() // wakes the session runners
}

// recordLocked is the record with the current counters.
func (p *pair) recordLocked() metavol.Pair {
	rec := p.mu.rec
	rec.DataBytes = p.dataBytes.Load()
	rec.RecopiedBytes = p.recopyBytes.Load()
	if v := p.vehicle.Load(); v != nil {
		rec.Vehicle = *v
	}
	rec.Updated = time.Now().UTC()
	return rec
}

// checkpoint persists the copy cursor (after syncing both legs, so that
// everything below it is durable on the target and the source data it
// was copied from is durable too) when it is due, or always if force.
func (p *pair) checkpoint(force bool) {
	done := p.done.Load()
	p.persist.Lock()
	defer p.persist.Unlock()
	p.mu.Lock()
	skip := p.mu.state.Final() || (!force && done-p.mu.lastCkptCursor < p.m.opts.CheckpointBytes &&
		time.Since(p.mu.lastCkptAt) < p.m.opts.CheckpointInterval)
	p.mu.Unlock()
	if skip {
		return
	}
	if serr, terr := p.syncLegs(true, true, true); serr != nil || terr != nil {
		if terr != nil {
			p.setFault("checkpoint: " + terr.Error())
		}
		p.zlog.Warn().Err(errors.Join(serr, terr)).Msg("checkpoint: sync failed; cursor not advanced")
		return
	}
	if err := p.verifyLegs("checkpoint"); err != nil {
		p.zlog.Warn().Err(err).Msg("checkpoint: cursor not advanced")
		return
	}
	p.mu.Lock()
	rec := p.recordLocked()
	p.mu.Unlock()
	if done > rec.Cursor {
		rec.Cursor = done
		rec.CopiedBytes = done
	}
	if err := p.m.db.Update(func(tx *metavol.Tx) error { return tx.PutPair(rec) }); err != nil {
		p.zlog.Warn().Err(err).Msg("checkpoint not persisted")
		return
	}
	p.mu.Lock()
	p.mu.rec = rec
	p.mu.lastCkptAt = time.Now()
	p.mu.lastCkptCursor = done
	p.mu.Unlock()
	p.ckpt.Store(rec.Cursor)
}

// setFault records a target failure: writes switch to the source only at
// once, and the run goroutine moves the pair to interrupted with the
// reason "target failed: " + reason.
func (p *pair) setFault(reason string) { p.recordFault("target failed: " + reason) }

// setSourceFault records a failure of the source leg of the copy (a
// source read error): handled like a target failure (interrupted, the
// range stays in the DCL, retried with backoff, faulty after RetryBudget)
// but reported as "source read error: " + reason. Host writes go to the
// source only meanwhile, which is always safe.
func (p *pair) setSourceFault(reason string) { p.recordFault("source read error: " + reason) }

// recordFault keeps the first fault (its full reason) until the run goroutine
// handles it.
func (p *pair) recordFault(reason string) {
	p.sourceOnly.Store(true)
	if p.fault.CompareAndSwap(nil, &reason) {
		p.zlog.Warn().Str("reason", reason).Msg("pair fault")
	}
	p.wakeUp()
}

// CreatePair starts migrating the source LUN onto the target LUN. Nothing
// changes when it fails, except in the one case createPairs describes (a
// status and an error: the pair exists).
func (m *Manager) CreatePair(req PairRequest) (PairStatus, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	pl, err := m.planPair(req, "")
	if err != nil {
		return PairStatus{}, err
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
	p.zlog.Info().Str("target", p.tgt.name).Str("speed", string(req.Speed)).Msg("pair created")
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
	if req.Source == "" || req.Target == "" {
		return pairPlan{}, fmt.Errorf("pair: source and target LUN names are required: %w", ErrInvalid)
	}
	if req.Source == req.Target {
		return pairPlan{}, fmt.Errorf("pair %s: source and target are the same LUN: %w", req.Source, ErrInvalid)
	}
	if req.Speed == "" {
		req.Speed = SpeedMedium
	}
	if _, err := rateOf(req.Speed); err != nil {
		return pairPlan{}, fmt.Errorf("pair %s: %w", req.Source, err)
	}
	if req.MaxMBps < 0 {
		return pairPlan{}, fmt.Errorf("pair %s: max MB/s %d is negative: %w", req.Source, req.MaxMBps, ErrInvalid)
	}
	switch req.Vehicle {
	case "":
		req.Vehicle = VehicleAuto
	case VehicleAuto, VehicleGeneric, VehicleCopyFileRange:
	default:
		return pairPlan{}, fmt.Errorf("pair %s: vehicle %q (want auto, generic or copy_file_range): %w", req.Source, req.Vehicle, ErrInvalid)
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
		return pairPlan{}, fmt.Errorf("pair %s: target LUN %s (%d bytes) is smaller than the source (%d bytes): %w",
			req.Source, req.Target, tl.Size, sl.Size, ErrInvalid)
	}
	if tl.BlockSize != sl.BlockSize {
		return pairPlan{}, fmt.Errorf("pair %s: block sizes differ: source %d, target LUN %s %d: %w",
			req.Source, sl.BlockSize, req.Target, tl.BlockSize, ErrInvalid)
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
	if err := m.db.View(func(tx *metavol.Tx) error {
		ts, err := tx.Targets()
		if err != nil {
			return err
		}
		for _, t := range ts {
			for _, mp := range t.Mappings {
				if mp.LUNID == tl.ID {
					return fmt.Errorf("pair %s: target LUN %s is mapped to target %s as LUN %d: %w",
						req.Source, req.Target, t.IQN, mp.LUN, ErrMapped)
				}
			}
		}
		return nil
	}); err != nil {
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
			return pairPlan{}, fmt.Errorf("pair %s: %s LUN %s: data volume holds %d bytes, need %d: %w",
				req.Source, x.role, x.e.name, o.raw.Size(), sl.Size, ErrUnavailable)
		}
	}

	now := time.Now().UTC()
	rec := metavol.Pair{
		ID:            metavol.NewID(),
		SourceLUN:     sl.ID,
		TargetLUN:     tl.ID,
		State:         StateQueued.String(),
		Reason:        "created",
		Speed:         string(req.Speed),
		MaxMBps:       req.MaxMBps,
		AutoSplit:     req.AutoSplit,
		Verify:        req.Verify,
		ChunkSize:     m.opts.ChunkSize,
		RegionSize:    m.opts.RegionSize,
		VehicleWanted: req.Vehicle,
		Created:       now,
		Updated:       now,
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

// newPair builds the runtime of a pair record (its DCL is opened/loaded).
func (m *Manager) newPair(rec metavol.Pair, se, te *lunEntry) (*pair, error) {
	st, err := ParseState(rec.State)
	if err != nil {
		return nil, fmt.Errorf("pair %s: %w", rec.ID, err)
	}
	if rec.RegionSize <= 0 {
		rec.RegionSize = m.opts.RegionSize
	}
	if rec.ChunkSize <= 0 || rec.ChunkSize%rec.RegionSize != 0 {
		rec.ChunkSize = m.opts.ChunkSize
		if r := rec.ChunkSize % rec.RegionSize; r != 0 {
			rec.ChunkSize += rec.RegionSize - r
		}
	}
	p := &pair{
		m:         m,
		id:        rec.ID,
		src:       se,
		tgt:       te,
		srcVol:    se.vol,
		tgtVol:    te.vol,
		size:      se.size.Load(),
		chunk:     rec.ChunkSize,
		bucket:    newBucket(effectiveRate(Speed(rec.Speed), rec.MaxMBps)),
		zlog:      m.log.With().Str("pair", rec.ID).Str("lun", se.name).Logger(),
		wake:      make(chan struct{}, 1),
		exited:    make(chan struct{}),
		completed: map[int64]int64{},
	}
	flush := func() error {
		serr, terr := p.syncLegs(true, true, true)
		return errors.Join(serr, terr)
	}
	log, err := m.dcl.Open(rec.ID, p.size, rec.RegionSize, flush)
	if err != nil {
		return nil, fmt.Errorf("pair %s: %w", se.name, err)
	}
	p.log = log
	p.region = log.RegionSize()
	p.issued.Store(rec.Cursor)
	p.ckpt.Store(rec.Cursor)
	p.done.Store(rec.Cursor)
	p.dataBytes.Store(rec.DataBytes)
	p.recopyBytes.Store(rec.RecopiedBytes)
	if rec.Vehicle != "" {
		v := rec.Vehicle
		p.vehicle.Store(&v)
	}
	p.mu.rec = rec
	p.mu.state = st
	p.mu.lastCkptAt = time.Now()
	p.mu.lastCkptCursor = rec.Cursor
	p.state.Store(int32(st))
	p.sourceOnly.Store(st == StatePaused || st == StateInterrupted || st == StateFaulty)
	return p, nil
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

// startPair starts the pair's run goroutine (owned by the Manager).
func (m *Manager) startPair(p *pair) {
	// Close marks the Manager closed under mu before it waits for its
	// goroutines: a goroutine is either counted before that or not started.
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return
	}
	ctx, cancel := context.WithCancel(m.ctx)
	p.stop = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(p.exited)
		p.run(ctx)
	}()
}

// stopRun stops the run goroutine and waits for it.
func (p *pair) stopRun() {
	if p.stop != nil {
		p.stop()
		<-p.exited
	}
}

// activePair finds the active pair whose source LUN is named source.
func (m *Manager) activePair(source string) (*pair, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.mu.pairs {
		if p.src.name == source {
			return p, nil
		}
	}
	if u := m.unloadedLocked(source); u != nil {
		return nil, fmt.Errorf("migration of %s: %s: %w", source, u.reason(), ErrOffline)
	}
	return nil, fmt.Errorf("migration of %s: %w", source, ErrNotFound)
}

// Pause stops the copy; host writes then go to the source only and are
// recorded in the DCL. It returns once the copier has stopped.
func (m *Manager) Pause(source string) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	p, err := m.activePair(source)
	if err != nil {
		return err
	}
	if err := p.transition(StatePaused, "paused by admin"); err != nil {
		return err
	}
	p.copyMu.Lock()
	p.copyMu.Unlock()
	p.checkpoint(true)
	return nil
}

// Resume continues a paused pair: the copy goes on from the cursor and
// the DCL (what changed while paused) is re-copied.
func (m *Manager) Resume(source string) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	p, err := m.activePair(source)
	if err != nil {
		return err
	}
	if p.getState() != StatePaused {
		return fmt.Errorf("pair %s: resume: it is %s, not paused: %w", source, p.getState(), ErrState)
	}
	return p.transition(StateCopying, "resumed by admin")
}

// Cancel ends a pair: the copy stops, the target is left as it was, the
// source untouched, the DCL dropped and the pair record deleted. A faulty
// pair (final) is removed the same way, and so is a pair that could not
// be loaded (its LUNs come back online).
func (m *Manager) Cancel(source string) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	p, err := m.activePair(source)
	if errors.Is(err, ErrOffline) {
		return m.cancelUnloaded(source)
	}
	if err != nil {
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

// Set changes a pair's throttle while it runs.
func (m *Manager) Set(source string, req SetRequest) (PairStatus, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	p, err := m.activePair(source)
	if err != nil {
		return PairStatus{}, err
	}
	p.persist.Lock()
	defer p.persist.Unlock()
	p.mu.Lock()
	rec := p.recordLocked()
	p.mu.Unlock()
	if req.Speed != nil {
		if _, err := rateOf(*req.Speed); err != nil {
			return PairStatus{}, fmt.Errorf("pair %s: %w", source, err)
		}
		rec.Speed = string(*req.Speed)
	}
	if req.MaxMBps != nil {
		if *req.MaxMBps < 0 {
			return PairStatus{}, fmt.Errorf("pair %s: max MB/s %d is negative: %w", source, *req.MaxMBps, ErrInvalid)
		}
		rec.MaxMBps = *req.MaxMBps
	}
	if err := m.db.Update(func(tx *metavol.Tx) error { return tx.PutPair(rec) }); err != nil {
		return PairStatus{}, fmt.Errorf("pair %s: %w", source, err)
	}
	p.mu.Lock()
	p.mu.rec = rec
	p.mu.Unlock()
	p.bucket.setRate(effectiveRate(Speed(rec.Speed), rec.MaxMBps))
	return p.status(), nil
}

// Pairs lists the active pairs and the finished (split) ones, by source
// name then creation time.
func (m *Manager) Pairs() []PairStatus {
	m.mu.Lock()
	active := make([]*pair, 0, len(m.mu.pairs))
	for _, p := range m.mu.pairs {
		active = append(active, p)
	}
	m.mu.Unlock()
	seen := map[string]bool{}
	var out []PairStatus
	for _, p := range active {
		out = append(out, p.status())
		seen[p.id] = true
	}
	out = append(out, m.unloadedStatuses()...)
	for _, r := range m.finishedRecords() {
		if !seen[r.ID] {
			out = append(out, m.recordStatus(r))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Created.Before(out[j].Created)
	})
	return out
}

// Pair is the status of the migration of the LUN named source: the active
// pair, else the latest finished one.
func (m *Manager) Pair(source string) (PairStatus, error) {
	if p, err := m.activePair(source); err == nil {
		return p.status(), nil
	}
	m.mu.Lock()
	u := m.unloadedLocked(source)
	m.mu.Unlock()
	if u != nil {
		return m.unloadedStatus(u), nil
	}
	var best *PairStatus
	for _, r := range m.finishedRecords() {
		st := m.recordStatus(r)
		if st.Source == source && (best == nil || st.Created.After(best.Created)) {
			best = &st
		}
	}
	if best == nil {
		return PairStatus{}, fmt.Errorf("migration of %s: %w", source, ErrNotFound)
	}
	return *best, nil
}

func (m *Manager) finishedRecords() []metavol.Pair {
	var recs []metavol.Pair
	m.db.View(func(tx *metavol.Tx) error {
		all, err := tx.Pairs()
		for _, r := range all {
			if st, err := ParseState(r.State); err == nil && st.Final() {
				recs = append(recs, r)
			}
		}
		return err
	})
	return recs
}

func (m *Manager) lunName(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.mu.luns[id]; e != nil {
		return e.name
	}
	return id
}

func (m *Manager) recordStatus(r metavol.Pair) PairStatus {
	return PairStatus{
		ID:            r.ID,
		Source:        m.lunName(r.SourceLUN),
		Target:        m.lunName(r.TargetLUN),
		SourceID:      r.SourceLUN,
		TargetID:      r.TargetLUN,
		State:         r.State,
		Reason:        r.Reason,
		CopiedBytes:   r.CopiedBytes,
		CursorBytes:   r.Cursor,
		TotalBytes:    r.Cursor, // final records: the copy covered the LUN
		DataBytes:     r.DataBytes,
		RecopiedBytes: r.RecopiedBytes,
		Vehicle:       r.Vehicle,
		Speed:         Speed(r.Speed),
		MaxMBps:       r.MaxMBps,
		AutoSplit:     r.AutoSplit,
		Verify:        r.Verify,
		SplitPauseMS:  float64(r.SplitPauseNS) / 1e6,
		Created:       r.Created,
	}
}

// status is the pair as shown by `migration show`.
func (p *pair) status() PairStatus {
	p.mu.Lock()
	rec := p.recordLocked()
	st := p.mu.state
	p.mu.Unlock()
	s := p.m.recordStatus(rec)
	s.Source, s.Target = p.src.name, p.tgt.name
	s.State = st.String()
	if f := p.fault.Load(); f != nil && !st.Final() && st != StateInterrupted {
		s.Reason = *f
	}
	done := p.done.Load()
	s.CopiedBytes = done
	s.CursorBytes = p.issued.Load()
	s.TotalBytes = p.size
	d, _, _ := p.log.Counts()
	s.DCLBytes = d * p.region
	moved := p.dataBytes.Load() + p.recopyBytes.Load()
	rate, progress := p.rate.sample(moved, done)
	s.RateBps = int64(rate)
	remaining := p.size - done + s.DCLBytes
	if st == StateSynced {
		remaining = s.DCLBytes
	}
	if progress > 0 && remaining > 0 {
		s.ETASeconds = int64(float64(remaining)/progress + 0.5)
	}
	if st == StatePaused || st.Final() {
		// Nothing is copied: the sampler's last window is history.
		s.RateBps, s.ETASeconds = 0, 0
	}
	return s
}

// rateSampler turns counters into rates over windows of at least a second.
type rateSampler struct {
	mu       sync.Mutex
	t0       time.Time
	moved0   int64
	done0    int64
	rate     float64 // bytes transferred per second
	progress float64 // bytes of progress (done) per second
}

func (r *rateSampler) sample(moved, done int64) (rate, progress float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.t0.IsZero() {
		r.t0, r.moved0, r.done0 = now, moved, done
		return 0, 0
	}
	if dt := now.Sub(r.t0).Seconds(); dt >= 1 {
		r.rate = float64(moved-r.moved0) / dt
		r.progress = float64(max(done-r.done0, moved-r.moved0)) / dt
		r.t0, r.moved0, r.done0 = now, moved, done
	}
	return r.rate, r.progress
}

var errStopped = errors.New("copy stopped")
