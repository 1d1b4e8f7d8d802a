package lm

import (
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

var errInjected = errors.New("injected I/O error")

// syncedPair makes src (with some data) and tgt, pairs them and waits for
// synced.
func syncedPair(t *testing.T, e *env, src, tgt string, size int64) (metavol.LUN, map[int64]uint64) {
	t.Helper()
	l := e.lun(src, size)
	e.lun(tgt, size)
	model := fill(t, e.handle(l), size, 5, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: src, Target: tgt, Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState(src, StateSynced, 20*time.Second)
	return l, model
}

func writeBlock(h interface {
	WriteAt([]byte, int64) (int, error)
}, bl int64, seq uint64) error {
	b := make([]byte, blk)
	pattern(b, bl, seq)
	_, err := h.WriteAt(b, bl*blk)
	return err
}

func TestSourceFailure(t *testing.T) {
	e := newEnv(t, Options{}, true)
	size := int64(16 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	h := e.handle(l)
	fs := e.faultyOf("src")
	fs.FailWrites(errInjected)
	for bl := int64(0); bl < 64; bl++ {
		if err := writeBlock(h, bl*37, 77); err == nil {
			t.Fatalf("write %d acknowledged while the source fails", bl)
		} else if !errors.Is(err, errInjected) {
			t.Fatalf("source failure error: %v", err)
		}
	}
	if err := h.Unmap(0, mib); err == nil {
		t.Fatal("unmap acknowledged while the source fails")
	}
	fs.Heal()
	for bl := int64(0); bl < 64; bl++ {
		if err := writeBlock(h, bl*41+1, 88); err != nil {
			t.Fatal(err)
		}
		model[bl*41+1] = 88
	}
	// The target got the failed writes; the DCL re-copy brings it back to
	// the source.
	e.waitState("src", StateSynced, 10*time.Second)
	waitFor(t, 10*time.Second, "DCL empty", func() bool {
		st, _ := e.m.Pair("src")
		return st.DCLBytes == 0 && st.State == "synced"
	})
	checkModel(t, "source", e.rawVolume("src"), size, model)
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source LUN after split", h, size, model)
}

func TestTargetFailureInterruptAndHeal(t *testing.T) {
	e := newEnv(t, Options{}, true)
	size := int64(8 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	h := e.handle(l)
	ft := e.faultyOf("tgt")
	ft.FailWrites(syscall.ENOSPC)
	for i := int64(0); i < 200; i++ {
		bl := (i * 97) % (size / blk)
		if err := writeBlock(h, bl, uint64(100+i)); err != nil {
			t.Fatalf("host write failed on a target failure: %v", err)
		}
		model[bl] = uint64(100 + i)
	}
	if err := h.Sync(); err != nil {
		t.Fatalf("sync failed on a target failure: %v", err)
	}
	st := e.waitState("src", StateInterrupted, 10*time.Second)
	if st.DCLBytes == 0 || !strings.Contains(st.Reason, "no space") {
		t.Fatalf("interrupted status %+v", st)
	}
	if _, err := e.m.Split([]string{"src"}, 0); !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("split of an interrupted pair: %v", err)
	}
	ft.Heal()
	e.waitState("src", StateSynced, 10*time.Second)
	checkModel(t, "source", e.rawVolume("src"), size, model)
	sameContent(t, "target == source", e.rawVolume("src"), e.rawVolume("tgt"), size)

	// A target failure in the middle of the initial copy.
	l2 := e.lun("s2", size)
	e.lun("t2", size)
	m2 := fill(t, e.handle(l2), size, 2, 3)
	// The target volume of t2 fails after a few writes.
	e.faultyOf("t2").FailWritesAfter(20, syscall.EIO)
	if _, err := e.m.CreatePair(PairRequest{Source: "s2", Target: "t2", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState("s2", StateInterrupted, 10*time.Second)
	for i := int64(0); i < 50; i++ {
		bl := (i * 13) % (size / blk)
		if err := writeBlock(e.handle(l2), bl, uint64(500+i)); err != nil {
			t.Fatal(err)
		}
		m2[bl] = uint64(500 + i)
	}
	e.faultyOf("t2").Heal()
	e.waitState("s2", StateSynced, 20*time.Second)
	checkModel(t, "s2", e.rawVolume("s2"), size, m2)
	sameContent(t, "t2 == s2", e.rawVolume("s2"), e.rawVolume("t2"), size)
}

func TestRetryBudgetFaulty(t *testing.T) {
	e := newEnv(t, Options{RetryBudget: 100 * time.Millisecond}, true)
	size := int64(8 * mib)
	l, _ := syncedPair(t, e, "src", "tgt", size)
	e.faultyOf("tgt").FailWrites(errInjected)
	if err := writeBlock(e.handle(l), 3, 9); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateFaulty, 10*time.Second)
	if err := e.m.Resume("src"); !errors.Is(err, ErrState) {
		t.Fatalf("resume faulty: %v", err)
	}
	// Host writes still work (source only), cancel removes the pair.
	if err := writeBlock(e.handle(l), 4, 9); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.handle(l).WriteAt(make([]byte, blk), 0); err != nil {
		t.Fatal(err)
	}
}

func TestPauseResumeCopiesNothingTwice(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(16 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	h := e.handle(l)
	model := fill(t, h, size, 2, 1) // 8 MiB of data
	dataAlloc := int64(len(model)) * blk
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedLow, MaxMBps: 30}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "copy half way", func() bool {
		st, _ := e.m.Pair("src")
		return st.DoneBytes >= 4*mib
	})
	// Throttle hard: pause must not wait for the throttle.
	one := int64(1)
	if _, err := e.m.Set("src", SetRequest{MaxMBps: &one}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := e.m.Pause("src"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("pause of a copy throttled to 1 MB/s took %v", d)
	}
	st1, _ := e.m.Pair("src")
	if st1.State != "paused" {
		t.Fatalf("state %s", st1.State)
	}
	if err := e.m.Pause("src"); !errors.Is(err, ErrState) {
		t.Fatalf("pause twice: %v", err)
	}
	// Writes while paused: some below the cursor (go to the DCL), some above.
	written := 0
	for i := int64(0); i < 40; i++ {
		bl := i * (size / blk / 40)
		if err := writeBlock(h, bl, 9); err != nil {
			t.Fatal(err)
		}
		model[bl] = 9
		written++
	}
	st2, _ := e.m.Pair("src")
	if st2.DataBytes != st1.DataBytes {
		t.Fatalf("copy went on while paused: %d -> %d", st1.DataBytes, st2.DataBytes)
	}
	if st2.DCLBytes == 0 {
		t.Fatal("writes below the cursor while paused are not in the DCL")
	}
	dcl := st2.DCLBytes
	if err := e.m.Resume("src"); err != nil {
		t.Fatal(err)
	}
	hi := SpeedHighest
	if _, err := e.m.Set("src", SetRequest{Speed: &hi, MaxMBps: new(int64)}); err != nil {
		t.Fatal(err)
	}
	st := e.waitState("src", StateSynced, 30*time.Second)
	t.Logf("data %d, DataBytes %d, Recopied %d (DCL at pause %d)", dataAlloc, st.DataBytes, st.RecopiedBytes, dcl)
	if st.DataBytes > dataAlloc+int64(written)*blk {
		t.Fatalf("initial copy moved %d bytes for %d bytes of data: something was copied twice", st.DataBytes, dataAlloc)
	}
	if st.RecopiedBytes > dcl {
		t.Fatalf("re-copied %d bytes, DCL held %d", st.RecopiedBytes, dcl)
	}
	sameContent(t, "target == source", e.rawVolume("src"), e.rawVolume("tgt"), size)
	checkModel(t, "source", h, size, model)
}

func TestConsistentSplitOf8(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 3}, false)
	const n = 8
	size := int64(2 * mib)
	var srcs []metavol.LUN
	var names []string
	writers := make([]*writer, n)
	fills := make([]map[int64]uint64, n)
	for i := 0; i < n; i++ {
		name := "s" + string(rune('0'+i))
		l := e.lun(name, size)
		e.lun("t"+string(rune('0'+i)), size)
		fills[i] = fill(t, e.handle(l), size, 1, 1)
		writers[i] = &writer{model: map[int64]uint64{}}
		srcs = append(srcs, l)
		names = append(names, name)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		// Writers on blocks 1.. of each LUN; block 0 is for the sequence.
		hostWriters(t, offsetWriter{e.handle(srcs[i]), blk}, 2, size/blk-1, stop, writers[i], &wg)
	}
	for i := 0; i < n; i++ {
		if _, err := e.m.CreatePair(PairRequest{Source: names[i], Target: "t" + names[i][1:], Speed: SpeedHighest}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		e.waitState(names[i], StateSynced, 30*time.Second)
	}
	// One sequential writer across the 8 LUNs: seq k goes to LUN k%8 block 0.
	var seqMu sync.Mutex
	lastAck := uint64(0)
	wg.Add(1)
	go func() {
		defer wg.Done()
		b := make([]byte, blk)
		for k := uint64(1); ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			pattern(b, 0, k)
			if _, err := e.handle(srcs[k%n]).WriteAt(b, 0); err != nil {
				t.Errorf("sequence write %d: %v", k, err)
				return
			}
			seqMu.Lock()
			lastAck = k
			seqMu.Unlock()
		}
	}()
	waitFor(t, 10*time.Second, "sequence writes", func() bool { seqMu.Lock(); defer seqMu.Unlock(); return lastAck > 100 })
	res, err := e.m.Split(names, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "writes after the split", func() bool { seqMu.Lock(); defer seqMu.Unlock(); return lastAck > 300 })
	close(stop)
	wg.Wait()
	t.Logf("8 pairs split in one pause of %.3f ms", res.PauseMS)
	if len(res.Pairs) != n {
		t.Fatalf("split result %+v", res)
	}
	// The target LUNs hold one point in time: a prefix of the sequence.
	var got [n]uint64
	b := make([]byte, blk)
	var maxSeq uint64
	for i := 0; i < n; i++ {
		tl := e.handle(metavol.LUN{ID: lunRecord(t, e.db, "t"+names[i][1:]).ID})
		if _, err := tl.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		got[i] = leU64(b[8:])
		maxSeq = max(maxSeq, got[i])
	}
	for i := 0; i < n; i++ {
		// The latest seq ≤ maxSeq with seq%8 == i.
		want := maxSeq - (maxSeq+uint64(n)-uint64(i))%uint64(n)
		if got[i] != want {
			t.Fatalf("inconsistent split: target LUNs hold sequence %v (max %d), LUN %d should hold %d", got, maxSeq, i, want)
		}
	}
	for i := 0; i < n; i++ {
		checkModelFrom(t, names[i], e.handle(srcs[i]), size, fills[i], writers[i].model, 1)
		st, _ := e.m.Pair(names[i])
		if st.State != "split" || st.SplitPauseMS != res.PauseMS {
			t.Fatalf("pair %s after split: %+v", names[i], st)
		}
	}
}

type offsetWriter struct {
	v interface {
		WriteAt([]byte, int64) (int, error)
	}
	off int64
}

func (o offsetWriter) WriteAt(b []byte, off int64) (int, error) { return o.v.WriteAt(b, off+o.off) }

func leU64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// checkModelFrom checks blocks from first on against a model whose block
// numbers are relative to first (offsetWriter) merged with the fill model.
func checkModelFrom(t *testing.T, what string, v interface {
	ReadAt([]byte, int64) (int, error)
}, size int64, fillModel, model map[int64]uint64, first int64) {
	t.Helper()
	b := make([]byte, blk)
	want := make([]byte, blk)
	for bl := first; bl*blk < size; bl++ {
		if _, err := v.ReadAt(b, bl*blk); err != nil {
			t.Fatal(err)
		}
		// hostWriters patterns the block number it was given (relative).
		rel := bl - first
		seq, ok := model[rel]
		fseq, fok := fillModel[bl]
		switch {
		case ok:
			pattern(want, rel, seq)
		case fok:
			pattern(want, bl, fseq)
		default:
			clear(want)
		}
		if string(b) != string(want) {
			t.Fatalf("%s: block %d differs from the acknowledged writes", what, bl)
		}
	}
}

func TestSplitTimeoutLeavesEverything(t *testing.T) {
	e := newEnv(t, Options{}, true)
	size := int64(8 * mib)
	l, _ := syncedPair(t, e, "src", "tgt", size)
	fs := e.faultyOf("src")
	before := fs.Writes()
	fs.Delay(500 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- writeBlock(e.handle(l), 1, 5) }()
	waitFor(t, 5*time.Second, "write in flight", func() bool { return fs.Writes() > before })
	_, err := e.m.Split([]string{"src"}, 50*time.Millisecond)
	if !errors.Is(err, ErrSplitTimeout) {
		t.Fatalf("split with a stuck write: %v", err)
	}
	st, _ := e.m.Pair("src")
	if st.State != "synced" || !strings.Contains(st.Reason, "deferred") {
		t.Fatalf("after deferred split: %+v", st)
	}
	if after := lunRecord(t, e.db, l.Name); after.VolumeID != l.VolumeID {
		t.Fatal("volume IDs changed by a deferred split")
	}
	// Host I/O goes on during and after the refused split.
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fs.Delay(0)
	if err := writeBlock(e.handle(l), 2, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRefusesDifference(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(8 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	fill(t, e.handle(l), size, 3, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Verify: true}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 10*time.Second)
	// Corrupt the target behind lm's back in region 5.
	raw := e.rawVolume("tgt")
	if _, err := raw.WriteAt([]byte("corrupt"), 5*mib+100); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Split([]string{"src"}, 0)
	if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "region 5 ") {
		t.Fatalf("verify: %v", err)
	}
	if st, _ := e.m.Pair("src"); st.State != "synced" {
		t.Fatalf("state after a failed verify %s", st.State)
	}
	// Repair and split with verify.
	b := make([]byte, 7)
	e.rawVolume("src").ReadAt(b, 5*mib+100)
	raw.WriteAt(b, 5*mib+100)
	if _, err := e.m.Split([]string{"src"}, 0); err != nil {
		t.Fatal(err)
	}
}

func TestAutoSplitAndQueue(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 1}, false)
	size := int64(4 * mib)
	for _, n := range []string{"a", "b", "c"} {
		l := e.lun("s"+n, size)
		e.lun("t"+n, size)
		fill(t, e.handle(l), size, 2, 1)
	}
	for _, n := range []string{"a", "b", "c"} {
		if _, err := e.m.CreatePair(PairRequest{Source: "s" + n, Target: "t" + n, Speed: SpeedHigh, MaxMBps: 40, AutoSplit: true}); err != nil {
			t.Fatal(err)
		}
	}
	// With one slot, at most one pair copies at a time.
	sawQueued := false
	waitFor(t, 30*time.Second, "all pairs auto-split", func() bool {
		copying, split := 0, 0
		for _, p := range e.m.Pairs() {
			switch p.State {
			case "copying":
				copying++
			case "queued":
				sawQueued = true
			case "split":
				split++
			}
		}
		if copying > 1 {
			t.Fatalf("%d pairs copying with MaxActive 1", copying)
		}
		return split == 3
	})
	if !sawQueued {
		t.Fatal("no pair was ever queued")
	}
}

func TestRestartResumes(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(16 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	model := fill(t, e.handle(l), size, 2, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedLow, MaxMBps: 20}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "copy started", func() bool {
		st, _ := e.m.Pair("src")
		return st.DoneBytes >= 2*mib
	})
	for i := int64(0); i < 30; i++ {
		bl := i * 211 % (size / blk)
		if err := writeBlock(e.handle(l), bl, 42); err != nil {
			t.Fatal(err)
		}
		model[bl] = 42
	}
	e.reopen()
	st, err := e.m.Pair("src")
	if err != nil || (st.State != "copying" && st.State != "synced") || st.DoneBytes < 2*mib {
		t.Fatalf("after restart %+v %v", st, err)
	}
	hi := SpeedHighest
	e.m.Set("src", SetRequest{Speed: &hi, MaxMBps: new(int64)})
	e.waitState("src", StateSynced, 30*time.Second)
	checkModel(t, "source", e.handle(l), size, model)
	sameContent(t, "target == source", e.rawVolume("src"), e.rawVolume("tgt"), size)

	// A paused pair stays paused; a missing target volume interrupts.
	if err := e.m.Pause("src"); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if st, _ := e.m.Pair("src"); st.State != "paused" {
		t.Fatalf("paused pair after restart: %s", st.State)
	}
	if err := e.m.Resume("src"); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 10*time.Second)
	path := volumePath(t, e.db, "tgt")
	e.close()
	if err := renameFile(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	e.open()
	st = e.waitState("src", StateInterrupted, 5*time.Second)
	if !strings.Contains(st.Reason, "unavailable") {
		t.Fatalf("reason %q", st.Reason)
	}
	if err := writeBlock(e.handle(l), 9, 43); err != nil {
		t.Fatal(err)
	}
	model[9] = 43
	if err := renameFile(path+".away", path); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 10*time.Second)
	checkModel(t, "source", e.handle(l), size, model)
	sameContent(t, "target == source", e.rawVolume("src"), e.rawVolume("tgt"), size)
}

// Issue 7, finding 7: a source read error of the copy was reported as
// "target failed". It is now a source error: the pair goes interrupted
// with the reason "source read error: ...", retries (each probe reads the
// source again) and copies on once the source reads again.
func TestSourceReadErrorIsTheSources(t *testing.T) {
	e := newEnv(t, Options{}, true)
	size := int64(8 * mib)
	src := e.lun("src", size)
	e.lun("tgt", size)
	model := fill(t, e.handle(src), size, 1, 1)
	e.faultyOf("src").FailReads(syscall.EIO)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	st := e.waitState("src", StateInterrupted, 10*time.Second)
	if !strings.HasPrefix(st.Reason, "source read error: copy: source read at ") || !strings.Contains(st.Reason, "input/output error") ||
		strings.Contains(st.Reason, "target") {
		t.Fatalf("reason %q, want a source read error", st.Reason)
	}
	var rec metavol.Pair
	e.db.View(func(tx *metavol.Tx) error { rec, _ = tx.GetPair(st.ID); return nil })
	if rec.State != StateInterrupted.String() || rec.Reason != st.Reason {
		t.Fatalf("persisted %s %q, want interrupted %q", rec.State, rec.Reason, st.Reason)
	}
	e.faultyOf("src").Heal()
	e.waitState("src", StateSynced, 20*time.Second)
	checkModel(t, "target", e.rawVolume("tgt"), size, model)
}
