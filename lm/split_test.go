package lm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/rs/zerolog"
)

const splitCrashEnv = "LM_SPLITCRASH_DIR"

// TestSplitCrashChild is run by TestSplitCrashAfterCommit: it syncs a
// pair, then dies (as kill -9 would: no Close) right after the split's
// transaction and before the in-memory swap.
func TestSplitCrashChild(t *testing.T) {
	dir := os.Getenv(splitCrashEnv)
	if dir == "" {
		t.Skip("only run as a child of TestSplitCrashAfterCommit")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "split crash child:", err)
		os.Exit(2)
	}
	db, err := metavol.Open(filepath.Join(dir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		fail(err)
	}
	m, err := Open(db, Options{DataDir: dir, Log: zerolog.Nop()})
	if err != nil {
		fail(err)
	}
	size := int64(2 * mib)
	src, err := m.CreateLUN(CreateLUNRequest{Name: "src", Size: size})
	if err != nil {
		fail(err)
	}
	tgt, err := m.CreateLUN(CreateLUNRequest{Name: "tgt", Size: size})
	if err != nil {
		fail(err)
	}
	h, _ := m.LUN(src.ID)
	for bl := int64(0); bl < size/blk; bl += 3 {
		if err := writeBlock(h, bl, 1); err != nil {
			fail(err)
		}
	}
	if _, err := m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		fail(err)
	}
	var st PairStatus
	if !poll(20*time.Second, func() bool {
		var err error
		if st, err = m.Pair("src"); err != nil {
			fail(err)
		}
		return st.State == "synced"
	}) {
		fail(fmt.Errorf("not synced: %+v", st))
	}
	for bl := int64(1); bl < size/blk; bl += 7 { // dual-write
		if err := writeBlock(h, bl, 2); err != nil {
			fail(err)
		}
	}
	if err := h.Sync(); err != nil {
		fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vols"), []byte(src.VolumeID+" "+tgt.VolumeID), 0o600); err != nil {
		fail(err)
	}
	m.hooks.splitCommitted = func() { os.Exit(3) }
	_, err = m.Split([]string{"src"}, time.Second)
	fail(fmt.Errorf("split returned %v", err))
}

// A crash right after the split's commit: after the restart the source
// LUN reads the new volume, the target LUN the old one, and the pair is
// split.
func TestSplitCrashAfterCommit(t *testing.T) {
	if os.Getenv(splitCrashEnv) != "" {
		t.Skip("child")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(exe, "-test.run=^TestSplitCrashChild$")
	cmd.Env = append(os.Environ(), splitCrashEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "vols"))
	if err != nil {
		t.Fatal(err)
	}
	var srcVol, tgtVol string
	fmt.Sscan(string(b), &srcVol, &tgtVol)

	db, err := metavol.Open(filepath.Join(dir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m, err := Open(db, Options{DataDir: dir, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var sl, tl metavol.LUN
	db.View(func(tx *metavol.Tx) error {
		sl, _ = tx.LUNByName("src")
		tl, _ = tx.LUNByName("tgt")
		return nil
	})
	if sl.VolumeID != tgtVol || tl.VolumeID != srcVol {
		t.Fatalf("after the restart src is on %s, tgt on %s; want %s and %s", sl.VolumeID, tl.VolumeID, tgtVol, srcVol)
	}
	st, err := m.Pair("src")
	if err != nil || st.State != "split" {
		t.Fatalf("pair after the restart: %+v, %v", st, err)
	}
	if _, _, ok := m.LUNPair(sl.ID); ok {
		t.Fatal("the source LUN is still in a pair")
	}
	size := int64(2 * mib)
	model := map[int64]uint64{}
	for bl := int64(0); bl < size/blk; bl += 3 {
		model[bl] = 1
	}
	for bl := int64(1); bl < size/blk; bl += 7 {
		model[bl] = 2
	}
	sh, _ := m.LUN(sl.ID)
	th, _ := m.LUN(tl.ID)
	checkModel(t, "source LUN (new volume)", sh, size, model)
	checkModel(t, "target LUN (old volume)", th, size, model)
	if err := writeBlock(sh, 5, 9); err != nil {
		t.Fatal(err)
	}
	if err := writeBlock(th, 5, 8); err != nil {
		t.Fatalf("the target LUN is writable after the split: %v", err)
	}
	model[5] = 9
	checkModel(t, "source LUN after a write", sh, size, model)
}

// A target write that fails while the split drains the I/O refuses the
// split: the pair is interrupted, resyncs, and splits later.
func TestSplitTargetFailsDuringDrain(t *testing.T) {
	e := newEnv(t, Options{}, true)
	size := int64(4 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	h := e.handle(l)
	fs, ft := e.faultyOf("src"), e.faultyOf("tgt")
	before := fs.Writes()
	fs.Delay(200 * time.Millisecond)
	ft.FailWritesAfter(0, errInjected) // the next target write fails
	done := make(chan error, 1)
	go func() { done <- writeBlock(h, 7, 3) }()
	model[7] = 3
	waitFor(t, 5*time.Second, "write in flight", func() bool { return fs.Writes() > before })
	_, err := e.m.Split([]string{"src"}, 2*time.Second)
	if !errors.Is(err, ErrNotSynced) {
		t.Fatalf("split with a target write failing in the drain: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("host write with a failing target: %v", err)
	}
	if st, _ := e.m.Pair("src"); st.State != "interrupted" {
		t.Fatalf("after the refused split: %+v", st)
	}
	if after := lunRecord(t, e.db, l.Name); after.VolumeID != l.VolumeID {
		t.Fatal("volume IDs changed by a refused split")
	}
	fs.Delay(0)
	ft.Heal()
	e.waitState("src", StateSynced, 10*time.Second)
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source LUN after the split", h, size, model)
}

// A pair found in "splitting" after a restart (the split's transaction
// never ran) is synced again and splits.
func TestRecoverSplitting(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(2 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	st, _ := e.m.Pair("src")
	// Keep the DB open; edit the record as a crash mid-split leaves it.
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Update(func(tx *metavol.Tx) error {
		p, err := tx.GetPair(st.ID)
		if err != nil {
			return err
		}
		p.State = StateSplitting.String()
		return tx.PutPair(p)
	}); err != nil {
		t.Fatal(err)
	}
	e.m = nil
	e.close()
	e.open()
	got := e.waitState("src", StateSynced, 5*time.Second)
	if !strings.Contains(got.Reason, "restart") {
		t.Fatalf("reason %q", got.Reason)
	}
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source LUN after the split", e.handle(l), size, model)
}
