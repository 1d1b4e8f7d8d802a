package lm

import (
	"context"
	"errors"
	"fmt"
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
	// srcSyncErr: a sync of the source that was not a host's failed (the
	// checkpoint's, the lazy clear's); the next host sync reports it
	// (write.go).
	srcSyncErr atomic.Pointer[error]
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

var errStopped = errors.New("copy stopped")
