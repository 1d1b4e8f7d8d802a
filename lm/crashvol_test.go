package lm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/rs/zerolog"
)

// Power-loss tests on crashable data volumes (issue 7, layer (a) for the
// data volumes): the data volumes are volume.Crashable (one CrashSet: every
// data volume loses its unsynced writes at the same instant), the meta
// volume is the real meta store treated as after kill -9 (every commit is synced,
// so every commit made survives). The meta volume's own power loss is
// tested on metavol/crashfs (TestPowerLossMigration, dcl's
// TestMetaPowerLoss); the VM power cut is in scripts/.
//
// A world (cvWorld) is two source LUNs migrated onto two target LUNs
// again and again (create pairs, copy, dual-write, checkpoints,
// consistent split of both, pairs again) under host writers that record
// every write and which of them are acknowledged durable (a Sync that
// started after the write completed returned success, and no sync of the
// LUN failed, in any thread of the host, since the write was issued). A
// chain of lives: each life opens a Manager on the files the last crash
// left (recovery runs), carries on, and is cut at a random volume
// operation; after each crash the world is reopened and checked; the
// last life finishes a migration and split without a crash and checks
// everything.

const (
	cvLUNSize  = 512 << 10
	cvRegion   = 64 << 10
	cvBlocks   = cvLUNSize / blk
	cvWriters  = 2 // per source LUN
	cvSources  = 2
	cvMaxPause = 2 * time.Second
)

// cvCrashPoints is the number of crash points of TestVolumePowerLoss:
// LMTGT_STRESS_VOLUME_CRASHPOINTS (make stress) or the CI default.
func cvCrashPoints(t *testing.T, ci int) int {
	if s := os.Getenv("LMTGT_STRESS_VOLUME_CRASHPOINTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("LMTGT_STRESS_VOLUME_CRASHPOINTS=%q: want a positive number", s)
		}
		return n
	}
	if testing.Short() {
		return ci / 4
	}
	return ci
}

// cvSeed is the seed of a world test: LMTGT_VOLUME_SEED replays a logged
// one (the writers' blocks, the crash points, the partial crash images);
// goroutine scheduling, and so which write meets which sync or failure,
// stays random.
func cvSeed(t *testing.T) int64 {
	t.Helper()
	if s := os.Getenv("LMTGT_VOLUME_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("LMTGT_VOLUME_SEED=%q: want a number", s)
		}
		return n
	}
	return time.Now().UnixNano()
}

// cvBlockHist is what one block may hold: ops[i] is the seq of the i-th
// write to it (0: zeros); ops[acked:] may be on the LUN, nothing older.
type cvBlockHist struct {
	ops   []uint64
	acked int
}

// cvWorld is the state of a chain of lives, kept by the test.
type cvWorld struct {
	t    *testing.T
	dir  string
	rnd  *rand.Rand
	opts Options
	seq  atomic.Uint64

	src, tgt []metavol.LUN // by index; IDs never change
	// volA/volB: the two data volumes of pair i; src[i] is on volA[i]
	// until an odd number of splits.
	volA, volB []string
	// hist[i][block]: written by exactly one writer, read by the checks
	// when no writer runs.
	hist [][]cvBlockHist
	// syncErrs[i] counts the failed syncs of source LUN i: the writers
	// of a LUN are threads of one host, and a sync error seen by any of
	// them makes every write not yet covered by a successful sync
	// uncertain (it may be among what a failed writeback lost; the error
	// is reported once per LUN, as Linux reports it once per file).
	// The host issues one sync of a LUN at a time (syncMu[i]), so that
	// the error is seen before the next sync's result is judged.
	syncErrs []atomic.Int64
	syncMu   []sync.Mutex

	// The current life.
	set *volume.CrashSet
	db  *metavol.DB
	m   *Manager
	// wrap, if set, wraps the crashable volume of every data volume
	// (error loops put a Faulty there).
	wrap func(id string, v volume.Volume) volume.Volume
	// writeBudget bounds the writes of each writer per life (0: none),
	// so that error loops have a bounded number of steps.
	writeBudget int
	// label names the current run in failures.
	label string
	// switching: the controller switches and rolls back instead of
	// splitting (rollback_crashvol_test.go).
	switching bool
}

func cvOptions() Options {
	return Options{
		Log:                zerolog.Nop(),
		RegionSize:         cvRegion,
		ChunkSize:          cvRegion,
		InFlight:           2,
		CheckpointInterval: 10 * time.Millisecond,
		CheckpointBytes:    2 * cvRegion,
		ClearInterval:      10 * time.Millisecond,
		RetryMin:           2 * time.Millisecond,
		RetryMax:           20 * time.Millisecond,
		DrainTimeout:       5 * time.Second,
	}
}

// newCVWorld creates the LUNs (sources half filled, synced) on a Manager
// whose volumes are crashable but not armed.
func newCVWorld(t *testing.T, seed int64, wrap func(id string, v volume.Volume) volume.Volume) *cvWorld {
	w := &cvWorld{t: t, dir: t.TempDir(), rnd: rand.New(rand.NewSource(seed)), opts: cvOptions(), wrap: wrap}
	w.opts.DataDir = w.dir
	w.opts.Log = testLogger(t)
	w.seq.Store(1)
	w.open(volume.CrashOptions{})
	for i := 0; i < cvSources; i++ {
		s, err := w.m.CreateLUN(CreateLUNRequest{Name: fmt.Sprintf("s%d", i), Size: cvLUNSize})
		if err != nil {
			t.Fatal(err)
		}
		tg, err := w.m.CreateLUN(CreateLUNRequest{Name: fmt.Sprintf("t%d", i), Size: cvLUNSize})
		if err != nil {
			t.Fatal(err)
		}
		w.src, w.tgt = append(w.src, s), append(w.tgt, tg)
		w.volA, w.volB = append(w.volA, s.VolumeID), append(w.volB, tg.VolumeID)
		h := w.handle(s)
		hist := make([]cvBlockHist, cvBlocks)
		b := make([]byte, blk)
		for bl := int64(0); bl < cvBlocks; bl++ {
			hist[bl].ops = []uint64{0}
			if bl%8 < 4 { // data in runs, holes between (and a hole in the last chunks)
				continue
			}
			pattern(b, bl, 1)
			if _, err := h.WriteAt(b, bl*blk); err != nil {
				t.Fatal(err)
			}
			hist[bl].ops = []uint64{1}
		}
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
		w.hist = append(w.hist, hist)
	}
	w.syncErrs = make([]atomic.Int64, cvSources)
	w.syncMu = make([]sync.Mutex, cvSources)
	return w
}

// open starts a life: a CrashSet, the meta volume, a Manager (recovery).
func (w *cvWorld) open(co volume.CrashOptions) {
	w.t.Helper()
	set := volume.NewCrashSet(co)
	w.set = set
	opts := w.opts
	opts.WrapVolume = func(id string, v volume.Volume) volume.Volume {
		var c volume.Volume = set.Wrap(v)
		if w.wrap != nil {
			c = w.wrap(id, c)
		}
		return c
	}
	if w.db == nil {
		db, err := metavol.Open(filepath.Join(w.dir, "meta"), metavol.Options{Log: zerolog.Nop()})
		if err != nil {
			w.t.Fatal(err)
		}
		w.db = db
	}
	m, err := Open(w.db, opts)
	if err != nil {
		w.t.Fatalf("reopen after a crash: %v", err)
	}
	w.m = m
}

// kill ends a life abruptly after the power cut: the Manager is stopped
// (its goroutines exit with errors, as every data volume fails), its
// errors ignored; the meta volume keeps what it committed, as after kill
// -9 (the meta store syncs every commit). Between lives of one world the meta
// volume stays open (what is committed is what a kill -9 leaves; the meta store's
// own crash recovery is not what this tests, and reopening it each time
// would cost most of the run); closeDB closes it (and the next life
// reopens it from its files).
func (w *cvWorld) kill(closeDB bool) {
	w.t.Helper()
	done := make(chan struct{})
	go func() {
		w.m.Close() // errors expected: the volumes lost power
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		w.t.Fatal("Manager.Close hangs after a power cut")
	}
	w.m = nil
	if closeDB {
		w.db.Close()
		w.db = nil
	}
	if err := w.set.Err(); err != nil {
		w.t.Fatalf("writing the durable images back: %v", err)
	}
}

func (w *cvWorld) handle(l metavol.LUN) volume.Volume {
	w.t.Helper()
	h, err := w.m.LUN(l.ID)
	if err != nil {
		w.t.Fatal(err)
	}
	return h
}

// check verifies, on a freshly opened life, that every source LUN holds
// for every block an acknowledged write or a later one, and that the
// consistent splits were all or nothing.
func (w *cvWorld) check(what string) (swapped bool) {
	w.t.Helper()
	swapped = w.checkSplits(what)
	for i, l := range w.src {
		w.checkLUN(what, i, w.handle(l))
	}
	return swapped
}

// checkSplits: both sources are on their volB or both on their volA (the
// split of both was one transaction), and each target on the other one.
func (w *cvWorld) checkSplits(what string) (swapped bool) {
	w.t.Helper()
	var sw []bool
	if err := w.db.View(func(tx *metavol.Tx) error {
		for i := range w.src {
			s, err := tx.GetLUN(w.src[i].ID)
			if err != nil {
				return err
			}
			tg, err := tx.GetLUN(w.tgt[i].ID)
			if err != nil {
				return err
			}
			switch {
			case s.VolumeID == w.volA[i] && tg.VolumeID == w.volB[i]:
				sw = append(sw, false)
			case s.VolumeID == w.volB[i] && tg.VolumeID == w.volA[i]:
				sw = append(sw, true)
			default:
				return fmt.Errorf("pair %d: source on %s, target on %s: not the pair's volumes %s/%s",
					i, s.VolumeID, tg.VolumeID, w.volA[i], w.volB[i])
			}
		}
		return nil
	}); err != nil {
		w.t.Fatalf("%s: %v", what, err)
	}
	for i := range sw {
		if sw[i] != sw[0] {
			w.t.Fatalf("%s: consistent split not all or nothing: pair 0 swapped=%v, pair %d swapped=%v", what, sw[0], i, sw[i])
		}
	}
	return sw[0]
}

// decode returns the seq a block holds (0 for zeros) or an error if it is
// not a whole write of this block.
func cvDecode(b []byte, bl int64) (uint64, error) {
	if volume.IsZero(b) {
		return 0, nil
	}
	gotBl, seq := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
	for i := 0; i+16 <= len(b); i += 16 {
		if binary.LittleEndian.Uint64(b[i:]) != gotBl || binary.LittleEndian.Uint64(b[i+8:]) != seq {
			return 0, fmt.Errorf("torn or foreign data")
		}
	}
	if gotBl != uint64(bl) {
		return 0, fmt.Errorf("data of block %d", gotBl)
	}
	return seq, nil
}

func (w *cvWorld) checkLUN(what string, i int, h volume.Volume) {
	w.t.Helper()
	b := make([]byte, blk)
	for bl := int64(0); bl < cvBlocks; bl++ {
		if _, err := h.ReadAt(b, bl*blk); err != nil {
			w.t.Fatalf("%s: s%d: read block %d: %v", what, i, bl, err)
		}
		hb := &w.hist[i][bl]
		seq, err := cvDecode(b, bl)
		if err != nil {
			w.t.Fatalf("%s: s%d block %d: %v (acknowledged seq %d)", what, i, bl, err, hb.ops[hb.acked])
		}
		ok := false
		for _, s := range hb.ops[hb.acked:] {
			ok = ok || s == seq
		}
		if !ok {
			w.t.Fatalf("%s: s%d block %d holds seq %d: the acknowledged write (seq %d) is lost; writes to it since: %v",
				what, i, bl, seq, hb.ops[hb.acked], hb.ops[hb.acked:])
		}
		// The block holds ops[j]: anything older can never come back.
		for j := hb.acked; j < len(hb.ops); j++ {
			if hb.ops[j] == seq {
				hb.ops, hb.acked = append([]uint64(nil), hb.ops[j:]...), 0
				break
			}
		}
	}
}

// life runs host writers and the migration controller until the power
// goes (or, with final, until one migration is split with the writers
// stopped and checked).
func (w *cvWorld) life(final bool) {
	w.t.Helper()
	if w.writeBudget > 0 {
		// Bounded writers: let them write during the copy and
		// dual-write, not before the pairs exist.
		if err := w.ensurePairs(); err != nil {
			w.t.Fatalf("%s: %v", w.label, err)
		}
	}
	stop := make(chan struct{})
	var wg, budgetSpent sync.WaitGroup
	for i := range w.src {
		h := w.handle(w.src[i])
		for k := 0; k < cvWriters; k++ {
			wg.Add(1)
			budgetSpent.Add(1)
			seed := w.rnd.Int63()
			go func() {
				defer wg.Done()
				w.writer(h, i, k, seed, stop, budgetSpent.Done)
			}()
		}
	}
	var once sync.Once
	stopWriters := func() {
		// Bounded writers write their whole budget first.
		budgetSpent.Wait()
		once.Do(func() { close(stop) })
		wg.Wait()
	}
	err := w.controller(final, stopWriters)
	stopWriters()
	if !final {
		if !w.set.Crashed() {
			w.t.Fatalf("controller ended without a crash: %v", err)
		}
		return
	}
	if err != nil {
		w.t.Fatalf("final life: %v", err)
	}
}

// cvWrite is a host write recorded by a cvThread.
type cvWrite struct {
	bl    int64
	op    int   // its index in hist[i][bl].ops
	epoch int64 // syncErrs[i] before the write was issued
}

// cvThread is one host thread writing source LUN i: it records each write
// in hist before issuing it and marks the writes a successful sync covers
// as acknowledged. Its blocks are its own (see writer).
type cvThread struct {
	w       *cvWorld
	i       int
	pending []cvWrite // completed since the last sync started
}

// issue records a write of block bl about to be issued: from now on its
// seq is a possible content of the block. The epoch is read before the
// write is issued, not after it returns: a failed sync that lost the
// write may be reported to another thread of the host in between, and a
// write done before that report is as uncertain as the others (a later
// successful sync does not make it durable).
func (c *cvThread) issue(bl int64) (cvWrite, uint64) {
	hb := &c.w.hist[c.i][bl]
	seq := c.w.seq.Add(1)
	hb.ops = append(hb.ops, seq)
	return cvWrite{bl: bl, op: len(hb.ops) - 1, epoch: c.w.syncErrs[c.i].Load()}, seq
}

// completed records that the write returned success: the thread's next
// sync acknowledges it unless a sync error of the LUN was seen since it
// was issued.
func (c *cvThread) completed(wr cvWrite) { c.pending = append(c.pending, wr) }

// sync syncs the LUN through h and, if it succeeds and no sync error of
// the LUN was seen since the writes were issued, acknowledges the writes
// completed before it.
func (c *cvThread) sync(h volume.Volume) error {
	w, i := c.w, c.i
	w.syncMu[i].Lock()
	defer w.syncMu[i].Unlock()
	errs := &w.syncErrs[i]
	e0 := errs.Load()
	defer func() { c.pending = c.pending[:0] }()
	if err := h.Sync(); err != nil {
		// Like a careful host (PostgreSQL since 2018): what was
		// written before a failed sync may be gone even if a later
		// sync succeeds; only a rewrite makes it durable again.
		errs.Add(1)
		return err
	}
	hist := w.hist[i]
	for _, p := range c.pending {
		if p.epoch == e0 && p.op > hist[p.bl].acked {
			hist[p.bl].acked = p.op
		}
	}
	return nil
}

// writer writes blocks it owns (block%cvWriters == k) in s(i) and syncs
// every few writes, recording the acknowledgements, until stop or an
// error (the power cut). It ends with a successful sync when stopped.
func (w *cvWorld) writer(h volume.Volume, i, k int, seed int64, stop chan struct{}, spent func()) {
	var once sync.Once
	defer once.Do(spent)
	if w.writeBudget == 0 {
		once.Do(spent) // unbounded: stops when told
	}
	rnd := rand.New(rand.NewSource(seed))
	b := make([]byte, blk)
	c := &cvThread{w: w, i: i}
	for n := 0; ; n++ {
		if w.writeBudget > 0 && n >= w.writeBudget {
			once.Do(spent)
			<-stop
		}
		select {
		case <-stop:
			if len(c.pending) > 0 {
				c.sync(h)
			}
			return
		default:
		}
		bl := rnd.Int63n(cvBlocks/cvWriters)*cvWriters + int64(k)
		wr, seq := c.issue(bl)
		pattern(b, bl, seq)
		if _, err := h.WriteAt(b, bl*blk); err != nil {
			if errors.Is(err, volume.ErrCrashed) || w.set.Crashed() {
				return
			}
			// An injected write error: the write may or may not
			// have reached a leg; it stays a possible content but is
			// never acknowledged. Try again later.
			continue
		}
		c.completed(wr)
		if rnd.Intn(4) == 0 && c.sync(h) != nil && w.set.Crashed() {
			return
		}
	}
}

// ensurePairs creates the pairs s(i)→t(i) that are not there.
func (w *cvWorld) ensurePairs() error {
	for i := range w.src {
		name := w.src[i].Name
		if st, err := w.m.Pair(name); err == nil {
			if s, _ := ParseState(st.State); !s.Final() {
				continue
			}
		}
		if _, err := w.m.CreatePair(PairRequest{Source: name, Target: w.tgt[i].Name, Speed: SpeedHighest}); err != nil {
			st, perr := w.m.Pair(name)
			return fmt.Errorf("create pair %s: %w (status %+v, %v)", name, err, st, perr)
		}
	}
	return nil
}

// sourceNames lists the names of the world's source LUNs (its pairs).
func (w *cvWorld) sourceNames() []string {
	names := make([]string, len(w.src))
	for i := range w.src {
		names[i] = w.src[i].Name
	}
	return names
}

// groupReady begins a round of a controller: the pairs of the source LUNs
// names are created where they are not (ensurePairs), then awaited in one
// of the states accept (waitGroupState). cut: the power was cut meanwhile
// (the controller's life is over: it returns nil, whatever err says).
func (w *cvWorld) groupReady(names []string, deadline time.Time, accept ...PairState) (st PairState, cut bool, err error) {
	if w.set.Crashed() {
		return 0, true, nil
	}
	if err := w.ensurePairs(); err != nil {
		return 0, w.set.Crashed(), err
	}
	st, err = w.waitGroupState(names, deadline, accept...)
	return st, w.set.Crashed(), err
}

// waitGroupState polls the pairs of the world's source LUNs names until
// each is in one of the states accept and all are in the same one (a
// consistent group), and returns that state. It returns at once, with no
// error, when the power is cut (the caller asks w.set.Crashed()); it fails
// when a pair cannot be read, when two pairs are in different accepted
// states, or when deadline passes first.
func (w *cvWorld) waitGroupState(names []string, deadline time.Time, accept ...PairState) (PairState, error) {
	var st0 PairState
	var last PairStatus
	var perr error
	ok := poll(time.Until(deadline), func() bool {
		if w.set.Crashed() {
			return true
		}
		for i, name := range names {
			st, err := w.m.Pair(name)
			if err != nil {
				perr = fmt.Errorf("pair %s: %w", name, err)
				return true
			}
			s, _ := ParseState(st.State)
			if !slices.Contains(accept, s) {
				last = st
				return false
			}
			if i == 0 {
				st0 = s
			} else if s != st0 {
				perr = fmt.Errorf("consistent group not in one state: %s is %s, %s is %s", names[0], st0, name, s)
				return true
			}
		}
		return true
	})
	switch {
	case w.set.Crashed():
		return 0, nil
	case perr != nil:
		return 0, perr
	case !ok:
		return 0, fmt.Errorf("pair %s not in %v by the deadline: %+v", last.Source, accept, last)
	}
	return st0, nil
}

// controller: pairs s(i)→t(i), waits for both synced, splits both in one
// consistent split, again. With final it stops the writers before the
// split and checks the result; else it runs until the power is cut.
func (w *cvWorld) controller(final bool, stopWriters func()) error {
	if w.switching {
		return w.switchController(final, stopWriters)
	}
	names := w.sourceNames()
	deadline := time.Now().Add(60 * time.Second) // no hang
	for {
		if !final {
			deadline = time.Now().Add(60 * time.Second)
		}
		_, cut, err := w.groupReady(names, deadline, StateSynced)
		if cut {
			return nil
		}
		if err != nil {
			return err
		}
		if final {
			stopWriters()
		}
		if _, err := w.m.Split(names, cvMaxPause); err != nil {
			if w.set.Crashed() {
				return nil
			}
			if final && !errors.Is(err, ErrSplitTimeout) && !errors.Is(err, ErrNotSynced) {
				return fmt.Errorf("split: %w", err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("split still refused after 60s: %w", err)
			}
			// Deferred, or refused (a failure since the pairs were
			// synced: they re-copy and get synced again): again.
			continue
		}
		if final {
			w.checkSplits("final split " + w.label)
			for i := range w.src {
				w.checkLUN("final split "+w.label, i, w.handle(w.src[i]))
				sameContent(w.t, fmt.Sprintf("%s: after the split: s%d == t%d", w.label, i, i), w.handle(w.src[i]), w.handle(w.tgt[i]), cvLUNSize)
			}
			return nil
		}
	}
}

// TestVolumePowerLoss cuts the power of every data volume at once at random
// volume operations (writes, unmaps and syncs of all volumes counted
// together) during copies, dual-write, checkpoints, consistent splits and
// the recovery after the previous cut; after each cut it reopens and
// checks that no acknowledged write is lost and that every consistent
// split was all or nothing; at the end a migration is finished and split
// and the LUNs compared.
func TestVolumePowerLoss(t *testing.T) {
	points := cvCrashPoints(t, 400)
	// A full migration and split take some 700-1500 operations.
	r := cvLives(t, "cvWorld", points, 50, 1500, false)
	t.Logf("%d crash points over %d volume operations; %d lives changed the split state", r.crashes, r.ops, r.flips)
}

// cvLivesResult counts what cvLives did.
type cvLivesResult struct {
	crashes int64 // lives cut
	ops     int64 // volume operations of the cut lives
	flips   int64 // lives after which the LUNs ran on the other volumes
}

// cvLives runs chains of lives of fresh worlds (named kind in failures;
// switching ones with switching) until points lives were cut: each world
// lives up to chain lives (a world ages: DCL, records), each cut at a
// random volume operation, half the time early in the life (recovery, the
// copy's start: below 400), else below kMax (past a whole cycle); after
// each cut the world is reopened and checked, and its last life runs to
// the end without a cut. The random draws come from one seed
// (LMTGT_VOLUME_SEED replays it).
func cvLives(t *testing.T, kind string, points, chain int, kMax int64, switching bool) cvLivesResult {
	t.Helper()
	seed := cvSeed(t)
	t.Logf("seed %d (LMTGT_VOLUME_SEED replays it), %d crash points", seed, points)
	rnd := rand.New(rand.NewSource(seed))
	var r cvLivesResult
	for done := 0; done < points; {
		ws := rnd.Int63()
		w := newCVWorld(t, ws, nil)
		w.switching = switching
		w.kill(true) // nothing armed: a clean stop
		n := min(chain, points-done)
		prev := false
		for c := 0; c < n; c++ {
			w.label = fmt.Sprintf("%s %d, life %d", kind, ws, c)
			w.open(volume.CrashOptions{Partial: rnd.Intn(2) == 0, Seed: rnd.Int63()})
			swapped := w.check(fmt.Sprintf("%s %d after crash %d", kind, ws, c))
			if c > 0 && swapped != prev {
				r.flips++
			}
			prev = swapped
			k := rnd.Int63n(kMax)
			if rnd.Intn(2) == 0 {
				k = rnd.Int63n(400)
			}
			w.set.CrashAt(k)
			w.life(false)
			r.ops += w.set.Ops()
			r.crashes++
			w.kill(c%10 == 9)
		}
		w.open(volume.CrashOptions{})
		w.label = fmt.Sprintf("%s %d final", kind, ws)
		w.check(w.label + " (after reopen)")
		w.life(true)
		w.kill(true)
		done += n
	}
	return r
}
