package lm

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// TestRecoveredInterruptedPairKeepsRetrying: a pair that was interrupted
// when the daemon stopped, and whose target is still unavailable after the
// restart, retries for RetryBudget like any interrupted pair. It used to
// go faulty (final) at its first failed probe: the budget was counted
// from the zero time, as the retry start is only set by a transition to
// interrupted (found by TestVolumePowerLoss: pairs interrupted by the power cut
// went faulty in the next life).
func TestRecoveredInterruptedPairKeepsRetrying(t *testing.T) {
	e := newEnv(t, Options{RetryMin: 5 * time.Millisecond, RetryMax: 5 * time.Millisecond}, true)
	size := int64(2 * mib)
	l, _ := syncedPair(t, e, "src", "tgt", size)
	e.faultyOf("tgt").FailWrites(syscall.EIO)
	if err := writeBlock(e.handle(l), 3, 99); err != nil {
		t.Fatalf("host write with a failing target: %v", err)
	}
	e.waitState("src", StateInterrupted, 10*time.Second)
	path := volumePath(t, e.db, "tgt")
	e.close()
	// The target is still away when the daemon comes back.
	if err := renameFile(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	e.open()
	p, err := e.m.activePair("src")
	if err != nil {
		t.Fatal(err)
	}
	attempts := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.mu.retryAttempt
	}
	waitFor(t, 20*time.Second, "three retries or a final state", func() bool {
		return attempts() >= 3 || p.getState().Final()
	})
	if st := p.getState(); st != StateInterrupted {
		p.mu.Lock()
		reason := p.mu.rec.Reason
		p.mu.Unlock()
		t.Fatalf("after %d failed probes since the restart the pair is %s (%s), want interrupted (retry budget %v)",
			attempts(), st, reason, e.m.opts.RetryBudget)
	}
	if err := renameFile(path+".away", path); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 20*time.Second)
}

// TestVolumeErrorAtEveryStep fails the k-th write (WriteAt or Unmap) and,
// separately, the k-th sync of one data volume (the source's, then the
// target's) during a migration and consistent split, for every k until the
// run has fewer such operations (pebble's TestErrors style). A failed sync
// also loses what was written since the volume's last sync, as after a
// failed writeback. After each run: the split was done (all pairs, no
// hang), each source equals its target, every acknowledged write is there,
// and after a power cut and a restart it still is and the split holds.
// Writes before a failed host sync are not counted as acknowledged by a
// later sync (the host cannot know what the failed writeback lost).
func TestVolumeErrorAtEveryStep(t *testing.T) {
	budget := 15 // host writes per writer and run
	if os.Getenv("LMTGT_STRESS_VOLUME_CRASHPOINTS") != "" {
		budget = 60
	}
	boom := fmt.Errorf("injected: %w", syscall.EIO)
	var fmu sync.Mutex
	faulty := map[string]*volume.Faulty{}
	wrap := func(id string, v volume.Volume) volume.Volume {
		f := volume.NewFaulty(v)
		fmu.Lock()
		faulty[id] = f
		fmu.Unlock()
		return f
	}
	seed := cvSeed(t)
	t.Logf("seed %d (LMTGT_VOLUME_SEED replays it)", seed)
	// LMTGT_VOLUME_ERRORS="source sync" (a leg and a kind) runs only
	// those steps, to loop on one.
	only := os.Getenv("LMTGT_VOLUME_ERRORS")
	w := newCVWorld(t, seed, wrap)
	w.writeBudget = budget
	w.kill(false)
	runs := 0
	for _, leg := range []string{"source", "target"} {
		for _, kind := range []string{"write", "sync"} {
			if only != "" && only != leg+" "+kind {
				continue
			}
			k := int64(0)
			for ; ; k++ {
				what := fmt.Sprintf("%s %s %d", leg, kind, k)
				w.label = what
				w.open(volume.CrashOptions{})
				// The volume that is s0's source (or target) in
				// this run: the pairs go back and forth.
				vol := w.volA[0]
				if w.checkSplits(what) != (leg == "target") {
					vol = w.volB[0]
				}
				fmu.Lock()
				f := faulty[vol]
				fmu.Unlock()
				if kind == "write" {
					f.FailWriteNumber(k, boom)
				} else {
					f.FailSyncNumber(k, boom)
				}
				before := w.checkSplits(what)
				w.life(true)
				fired := f.InjectedWriteFailures()+f.InjectedSyncFailures() > 0
				if w.checkSplits(what) == before {
					t.Fatalf("%s: the final split did not switch the LUNs", what)
				}
				// Power cut after the split, restart: still there.
				if err := w.set.Crash(); err != nil {
					t.Fatal(err)
				}
				w.kill(false)
				w.open(volume.CrashOptions{})
				w.check(what + ": after a power cut following the split")
				w.kill(runs%20 == 19)
				runs++
				if !fired {
					break
				}
			}
			t.Logf("%s %s: failed each of the first %d", leg, kind, k)
		}
	}
	t.Logf("%d runs", runs)
}

// TestSourceSyncFailureReachesTheHost: when a sync of the source that the
// host did not issue fails (the lazy clear's, the checkpoint's), the
// host's next sync fails too. It used to succeed: after a failed
// writeback the kernel drops the pages and the next fsync succeeds, so
// the host took writes that were gone for durable (found by
// TestVolumeErrorAtEveryStep).
func TestSourceSyncFailureReachesTheHost(t *testing.T) {
	e := newEnv(t, Options{}, true)
	l, _ := syncedPair(t, e, "src", "tgt", 4*mib)
	h := e.handle(l)
	fs := e.faultyOf("src")
	if err := writeBlock(h, 5, 500); err != nil {
		t.Fatal(err)
	}
	// The next sync of the source fails: the lazy clear's (the write
	// put an intent mark; the clearer syncs both legs before clearing).
	fs.FailSyncNumber(0, syscall.EIO)
	waitFor(t, 20*time.Second, "the clearer's sync of the source", func() bool { return fs.InjectedSyncFailures() == 1 })
	if err := h.Sync(); err == nil {
		t.Fatal("host sync succeeded after a failed sync of the source: the write before it may be lost")
	} else if !errors.Is(err, syscall.EIO) {
		t.Fatalf("host sync: %v, want EIO", err)
	}
	// Reported once: later syncs succeed.
	if err := h.Sync(); err != nil {
		t.Fatalf("second host sync: %v", err)
	}
}

// newSyncedFaultyWorld is a cvWorld whose data volumes are Faulty over
// Crashable (a failed sync loses the unsynced writes), with both pairs
// synced and their DCLs empty; synced waits for that again. The source
// of pair 0 is on volA[0]: faulty(w.volA[0]) fails it.
func newSyncedFaultyWorld(t *testing.T) (w *cvWorld, faulty func(id string) *volume.Faulty, synced func(source string)) {
	t.Helper()
	var fmu sync.Mutex
	fs := map[string]*volume.Faulty{}
	wrap := func(id string, v volume.Volume) volume.Volume {
		f := volume.NewFaulty(v)
		fmu.Lock()
		fs[id] = f
		fmu.Unlock()
		return f
	}
	faulty = func(id string) *volume.Faulty {
		fmu.Lock()
		defer fmu.Unlock()
		return fs[id]
	}
	w = newCVWorld(t, 1, wrap)
	t.Cleanup(func() { w.kill(true) })
	if err := w.ensurePairs(); err != nil {
		t.Fatal(err)
	}
	synced = func(name string) {
		t.Helper()
		waitFor(t, 30*time.Second, "pair "+name+" synced with an empty DCL", func() bool {
			p, err := w.m.activePair(name)
			if err != nil {
				t.Fatal(err)
			}
			d, _, _ := p.log.Counts()
			return p.getState() == StateSynced && d == 0
		})
	}
	for i := range w.src {
		synced(w.src[i].Name)
	}
	return w, faulty, synced
}

// splitBoth splits both pairs of w once they are synced again.
func splitBoth(t *testing.T, w *cvWorld) {
	t.Helper()
	names := []string{w.src[0].Name, w.src[1].Name}
	waitFor(t, 20*time.Second, "the split", func() bool {
		_, err := w.m.Split(names, cvMaxPause)
		if err != nil && !errors.Is(err, ErrNotSynced) && !errors.Is(err, ErrSplitTimeout) {
			t.Fatalf("split: %v", err)
		}
		return err == nil
	})
}

// TestVolumeErrorSeenByAnotherThread replays, step by step, the
// interleaving behind a rare failure of TestVolumeErrorAtEveryStep
// ("final split source sync 6: ... the acknowledged write (seq 2254) is
// lost"): thread A of the host writes a block; a sync of the source that
// no host issued (the lazy clear's) fails and loses it; thread B's sync
// is told (EIO); only then does A's write return, and A's next sync
// succeeds. lm did what it promises: the failure was reported once, to
// the first host sync after it. The write is gone from both legs (the
// source lost it, the re-copy of its marked region brought that to the
// target), and the host must not count it as acknowledged: it was issued
// before the report. The world's writers used to read the error epoch
// after the write returned, and so counted it as acknowledged.
func TestVolumeErrorSeenByAnotherThread(t *testing.T) {
	w, faulty, synced := newSyncedFaultyWorld(t)
	h := w.handle(w.src[0])
	a, b := &cvThread{w: w, i: 0}, &cvThread{w: w, i: 0}
	fs := faulty(w.volA[0])

	// No sync of the source runs now (synced, nothing marked): the next
	// one is the lazy clear's after A's write marks its region.
	fs.FailSyncNumber(0, syscall.EIO)
	const bl = 4 // holds seq 1, durably; below the copy cursor: marked
	wr, seq := a.issue(bl)
	buf := make([]byte, blk)
	pattern(buf, bl, seq)
	// A's write reaches both legs...
	if _, err := h.WriteAt(buf, bl*blk); err != nil {
		t.Fatal(err)
	}
	// ...a sync of the source no host issued fails and loses it...
	waitFor(t, 20*time.Second, "the lazy clear's sync of the source", func() bool { return fs.InjectedSyncFailures() == 1 })
	// ...B's sync is told...
	if err := b.sync(h); !errors.Is(err, syscall.EIO) {
		t.Fatalf("thread B's sync after a failed sync of the source: %v, want EIO", err)
	}
	// ...and only now does A see its write complete; its sync succeeds.
	a.completed(wr)
	if err := a.sync(h); err != nil {
		t.Fatalf("thread A's sync: %v", err)
	}
	if got := w.hist[0][bl].ops[w.hist[0][bl].acked]; got == seq {
		t.Errorf("the host counts seq %d, issued before a sync error was reported to it, as acknowledged", seq)
	}
	// The pair re-copies the region and is split as in the final life;
	// every acknowledged write must be on the LUN (the target's data).
	synced(w.src[0].Name)
	splitBoth(t, w)
	// lm did report a real loss: the block is back to what it held.
	got := make([]byte, blk)
	if _, err := w.handle(w.src[0]).ReadAt(got, bl*blk); err != nil {
		t.Fatal(err)
	}
	if s, err := cvDecode(got, bl); err != nil || s != 1 {
		t.Errorf("block %d after the split: seq %d (%v), want 1: the failed sync of the source lost seq %d", bl, s, err, seq)
	}
	for i := range w.src {
		w.checkLUN("after the split", i, w.handle(w.src[i]))
		sameContent(t, fmt.Sprintf("after the split: s%d == t%d", i, i), w.handle(w.src[i]), w.handle(w.tgt[i]), cvLUNSize)
	}
}

// TestSourceSyncErrorOutlivesThePair: a failed sync of the source that
// no host issued (the lazy clear's) is reported to the host's next sync
// of the LUN even when the pair ends (split, cancel) before that sync.
// The write it lost is gone from the LUN (split: the re-copy of its
// region brought the source's older data to the target, which the split
// made the LUN's data; cancel: the LUN is back on the source alone). The
// error was kept on the pair and went with it, so the host's sync after
// the split or cancel succeeded and the host took the lost write for
// durable.
func TestSourceSyncErrorOutlivesThePair(t *testing.T) {
	for _, end := range []string{"split", "cancel"} {
		t.Run(end, func(t *testing.T) {
			w, faulty, synced := newSyncedFaultyWorld(t)
			h := w.handle(w.src[0])
			faulty(w.volA[0]).FailSyncNumber(0, syscall.EIO)
			const bl = 4 // holds seq 1, durably; below the copy cursor: marked
			if err := writeBlock(h, bl, 2); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "the lazy clear's failed sync of the source, kept for the host", func() bool {
				return h.(*lunEntry).syncErr.Load() != nil
			})
			switch end {
			case "split":
				synced(w.src[0].Name) // the marked region re-copied
				splitBoth(t, w)
			case "cancel":
				if err := w.m.Cancel(w.src[0].Name); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, blk)
			if _, err := h.ReadAt(got, bl*blk); err != nil {
				t.Fatal(err)
			}
			if s, err := cvDecode(got, bl); err != nil || s != 1 {
				t.Fatalf("block %d after the %s: seq %d (%v), want 1 (the failed sync lost seq 2)", bl, end, s, err)
			}
			if err := h.Sync(); err == nil {
				t.Fatalf("the host's first sync after the %s succeeded, but a failed sync of the source before it lost a write the host had completed", end)
			} else if !errors.Is(err, syscall.EIO) {
				t.Fatalf("the host's first sync after the %s: %v, want EIO", end, err)
			}
			if err := h.Sync(); err != nil { // reported once
				t.Fatalf("second host sync: %v", err)
			}
		})
	}
}
