package lm

import (
	"context"
	"errors"
	"fmt"
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
	// VehicleRemote is what runs when a leg is a remote (iSCSI) data
	// volume: the read/write copy through lmtgt's initiator, chosen by
	// auto (--vehicle generic runs the same copy under its own name).
	VehicleRemote = "remote-iscsi"
)

// pair is one attached migration pair: its state, DCL, range lock, copy
// cursor and run goroutine.
//
// Its state has one owner: the pairView published in cur, written only
// under mu by the named transitions of pairstate.go (which persist first)
// and by recordFault; everyone else reads one snapshot (p.view()).
type pair struct {
	m   *Manager
	id  string
	src *lunEntry
	tgt *lunEntry
	// vols are the two legs (see legVols): swapped only at a split
	// --keep-source and a rollback.
	vols   atomic.Pointer[legVols]
	log    *dcl.Log
	locks  rangeLock
	size   int64 // bytes to copy: the source LUN's size
	region int64
	chunk  int64
	bucket *bucket
	zlog   zerolog.Logger
	// guard is the host-latency guard's last decision (latency.go); nil
	// while no copy runs.
	guard atomic.Pointer[guardView]

	// cur is the state, write mode and fault as one immutable value
	// (pairstate.go). Stored only with mu held; loaded anywhere, once per
	// decision, so that the three never disagree.
	cur atomic.Pointer[pairView]

	// issued is the in-memory copy cursor: every chunk below it has been
	// copied or is being copied under the exclusive range lock. Host
	// writes below it need a durable mark first.
	issued atomic.Int64
	// syncMu orders the syncs of the legs (see syncLegs).
	syncMu rwMutex[rankSync]

	// Counters (also persisted in the record at checkpoints).
	done        atomic.Int64 // contiguous prefix finished by the initial copy
	dataBytes   atomic.Int64
	recopyBytes atomic.Int64
	skipBytes   atomic.Int64 // passed by the initial copy without a transfer

	wake   chan struct{} // run goroutine: something changed
	stop   context.CancelFunc
	exited chan struct{}
	// persist serialises the changes of the record and the state: held
	// from reading the record to applying what was committed, across the
	// meta volume commit (and the split's syncs and pause). Only writers
	// of the record take it (transition, checkpoint, Set, Split); status
	// reads and the host path never do. Lock order: doc.go.
	persist mutex[rankPersist]

	// mu guards the record and the state in memory, the copier's
	// bookkeeping and the rate sampler. Never held across I/O (a sync, a
	// commit, a log line) and never waits for another lock but
	// sessionSet.mu: status reads take it, so they answer at once even
	// during a split; the host path takes it only to record a fault.
	mu struct {
		mutex[rankPairMu]
		rec metavol.Pair
		// vehicle is the transfer vehicle of this run of the copy
		// (recordLocked writes it into the record).
		vehicle string
		// completed: initial-copy jobs finished above the done cursor
		// (start → end), kept across pause/resume so that nothing is
		// copied twice.
		completed map[int64]int64
		rate      rateSampler
		alloc     allocLook // status's last walk of the source's extents
		// lastCkpt is when and at what cursor the checkpoint was persisted.
		lastCkptAt     time.Time
		lastCkptCursor int64
		// copyStopped is closed when the copy that runs now stops;
		// nil while none runs (copying, waitCopyStopped).
		copyStopped  chan struct{}
		retryStart   time.Time
		retryAttempt int
		// sched is the pair's windows and copying time
		// (schedule_window.go).
		sched pairSchedule
	}
}

func (p *pair) name() string { return p.src.name }

// legVols are the two data volumes of a pair: src the primary leg (the
// source LUN's data volume: hosts read it, its write failure fails the
// host command, copies read it), tgt the secondary (the one the copies
// and the DCL re-copies write). Fixed while the pair exists, except that
// a split --keep-source and a rollback swap them (a new legVols stored
// with both LUNs' gates closed and drained, persist held and the copier
// idle, in the step that swaps the LUNs' routes): while a pair is
// switched its primary is the new volume and the old one is mirrored
// back to. One load gives both legs of one orientation.
type legVols struct{ src, tgt *dataVol }

// legs is the pair's current orientation.
func (p *pair) legs() *legVols { return p.vols.Load() }

// switched says whether the pair mirrors back (split --keep-source): its
// LUNs' data volumes are swapped and the secondary is the old volume.
func (p *pair) switched() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.rec.Switched
}

// inSync is the state a pair reaches when its secondary holds what its
// primary holds: synced, or switched for a pair that mirrors back.
func (p *pair) inSync() PairState {
	if p.switched() {
		return StateSwitched
	}
	return StateSynced
}

func (p *pair) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// recordLocked is the record with the current counters.
func (p *pair) recordLocked() metavol.Pair {
	rec := p.mu.rec
	rec.DataBytes = p.dataBytes.Load()
	rec.RecopiedBytes = p.recopyBytes.Load()
	rec.SkippedBytes = p.skipBytes.Load()
	if p.mu.vehicle != "" {
		rec.Vehicle = p.mu.vehicle
	}
	rec.Updated = time.Now().UTC()
	rec.CopyElapsedNS = int64(p.copyElapsedLocked(rec.Updated)) // schedule_window.go
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
	skip := p.view().state.Final() || (!force && done-p.mu.lastCkptCursor < p.m.opts.CheckpointBytes &&
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
}

// persistedCursor is the copy checkpoint of the record.
func (p *pair) persistedCursor() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.rec.Cursor
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
		m:      m,
		id:     rec.ID,
		src:    se,
		tgt:    te,
		size:   se.size.Load(),
		chunk:  rec.ChunkSize,
		bucket: newBucket(effectiveRate(Speed(rec.Speed), rec.MaxMBps)),
		zlog:   m.log.With().Str("pair", rec.ID).Str("lun", se.name).Logger(),
		wake:   make(chan struct{}, 1),
		exited: make(chan struct{}),
	}
	p.vols.Store(&legVols{src: se.vol, tgt: te.vol})
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
	p.done.Store(rec.Cursor)
	p.dataBytes.Store(rec.DataBytes)
	p.recopyBytes.Store(rec.RecopiedBytes)
	p.skipBytes.Store(rec.SkippedBytes)
	p.mu.rec = rec
	p.mu.vehicle = rec.Vehicle
	p.mu.completed = map[int64]int64{}
	p.mu.lastCkptAt = time.Now()
	p.mu.lastCkptCursor = rec.Cursor
	p.mu.sched.elapsed = time.Duration(rec.CopyElapsedNS)
	p.cur.Store(initialView(st))
	p.applySchedule(time.Now()) // schedule_window.go: the window in force
	return p, nil
}

// startPair starts the pair's run goroutine (owned by the Manager).
func (m *Manager) startPair(p *pair) {
	// Close marks the Manager closed under mu before it waits for its
	// goroutines: a goroutine is either counted before that or not started.
	p.mu.Lock()
	fresh := p.mu.rec.Updated.Equal(p.mu.rec.Created) // as created (or loaded never changed)
	rec := p.recordLocked()
	p.mu.Unlock()
	m.events.pairSeen(rec, p.src.name, p.tgt.name, fresh) // events.go: the history exists and ends in the record's state
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

// copying marks a run of the copy (copyAll) and returns its end, which
// wakes the waiters of waitCopyStopped. No lock is held while it copies.
func (p *pair) copying() (end func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.mu.copyStopped = ch
	p.startElapsedLocked(time.Now()) // schedule_window.go: max elapsed
	p.mu.Unlock()
	p.m.wakeSchedule()
	return func() {
		p.mu.Lock()
		p.mu.copyStopped = nil
		p.stopElapsedLocked(time.Now())
		p.mu.Unlock()
		close(ch)
	}
}

// waitCopyStopped returns once the copy running now (if any) has stopped:
// Pause's wait after the transition, which makes the copy stop.
func (p *pair) waitCopyStopped() {
	p.mu.Lock()
	ch := p.mu.copyStopped
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// stopRun stops the run goroutine and waits for it.
func (p *pair) stopRun() {
	if p.stop != nil {
		p.stop()
		<-p.exited
	}
}
