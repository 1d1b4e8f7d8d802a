package lm

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// A split whose records could not be written after the pause (both
// commits failed, the server still running) leaves its journal: memory
// routes the LUNs on the swapped volumes while their records still name
// the old ones. An admin operation in that window must not act on the
// stale records, nor be undone by the later roll-forward.

// failRecords splits srcs (mode: split or keep-source) with the meta
// volume refusing every commit after the pause, so the records are not
// written and the journal stays; then the meta volume works again.
func failRecords(j *jcEnv, keep bool, srcs ...string) {
	j.t.Helper()
	j.m.hooks.splitReopened = func() { j.dead.Store(true) }
	var err error
	if keep {
		_, err = j.m.SplitKeepSource(srcs, 10*time.Second, false)
	} else {
		_, err = j.m.Split(srcs, 10*time.Second)
	}
	j.m.hooks.splitReopened = nil
	j.dead.Store(false)
	if err == nil {
		j.t.Fatal("a split whose records could not be written reported no error")
	}
}

// A LUN grown after such a split keeps its new size and the data written
// beyond the old end through a restart (the roll-forward used to set the
// journal's size back: the grown part was cut off the LUN).
func TestSplitJournalLeftThenResize(t *testing.T) {
	const size = 2 << 20
	j := newJCEnv(t)
	srcs, tgts, models := jcPairs(j, 1, size)
	newVol := lunRecord(t, j.db, tgts[0].Name).VolumeID
	failRecords(j, false, srcs[0].Name)
	if _, err := j.m.ResizeLUN(srcs[0].Name, 2*size); err != nil {
		t.Fatalf("resize after the split: %v", err)
	}
	bl := int64(size/blk) + 3 // beyond the old end
	jcWrite(j, srcs, models, bl, 900)
	j.restart()
	l := lunRecord(t, j.db, srcs[0].Name)
	if l.VolumeID != newVol || l.Size != 2*size {
		t.Fatalf("after a restart %s is on %s, %d bytes; want %s, %d bytes (the resize was undone by the roll-forward)",
			srcs[0].Name, l.VolumeID, l.Size, newVol, 2*size)
	}
	checkModel(t, srcs[0].Name+" after the resize and a restart", j.handle(srcs[0]), 2*size, models[0])
}

// Commit and retire after a keep-source split whose records were not
// written: the retire must delete the old volume (now the target LUN's),
// never the one the source LUN serves (the stale target record named it).
func TestSplitJournalLeftThenCommitRetire(t *testing.T) {
	const size = 2 << 20
	j := newJCEnv(t)
	srcs, tgts, models := jcPairs(j, 1, size)
	newVol := lunRecord(t, j.db, tgts[0].Name).VolumeID
	failRecords(j, true, srcs[0].Name)
	if _, err := j.m.Commit([]string{srcs[0].Name}); err != nil {
		t.Fatalf("commit after the keep-source split: %v", err)
	}
	res, err := j.m.Retire(srcs[0].Name, RetireOptions{})
	if err != nil {
		t.Fatalf("retire after the commit: %v", err)
	}
	if res.Volume == newVol {
		t.Fatalf("retire deleted volume %s, the one %s serves", res.Volume, srcs[0].Name)
	}
	checkModel(t, srcs[0].Name+" after commit and retire", j.handle(srcs[0]), size, models[0])
	jcWrite(j, srcs, models, 5, 901)
	j.restart()
	if got := lunRecord(t, j.db, srcs[0].Name).VolumeID; got != newVol {
		t.Fatalf("after a restart %s is on %s, want %s", srcs[0].Name, got, newVol)
	}
	checkModel(t, srcs[0].Name+" after commit, retire and a restart", j.handle(srcs[0]), size, models[0])
	if st, err := j.m.Pair(srcs[0].Name); err == nil && st.State != StateSplit.String() {
		t.Fatalf("after a restart the committed pair of %s is %s again", srcs[0].Name, st.State)
	}
}

// A keep-source pair whose split records were not written keeps running;
// its run goroutine then writes newer records (here: faulty, its old
// volume failing). Settling the journal afterwards (any admin operation)
// must not set the pair's record back to the journal's synced/switched:
// memory says faulty, and so must the meta volume.
func TestSplitJournalLeftKeepsNewerPairRecord(t *testing.T) {
	const size = 2 << 20
	var dead atomic.Bool
	e := newEnvMeta(t, Options{VerifyInterval: -1, RetryBudget: 100 * time.Millisecond}, true, "", metavol.Options{BeforeCommit: func() error {
		if dead.Load() {
			return errPowerCut
		}
		return nil
	}})
	src, _, _, st := offlinePair(e, size)
	oldVol := lunRecord(t, e.db, src.Name).VolumeID
	e.m.hooks.splitReopened = func() { dead.Store(true) }
	_, err := e.m.SplitKeepSource([]string{src.Name}, 10*time.Second, false)
	e.m.hooks.splitReopened = nil
	dead.Store(false)
	if err == nil {
		t.Fatal("a split whose records could not be written reported no error")
	}
	// The old volume is now the target leg: it fails, the pair goes faulty.
	e.fmu.Lock()
	f := e.faulty[oldVol]
	e.fmu.Unlock()
	f.FailWrites(errors.New("test: old volume fails"))
	if err := hostWrite(t, e.handle(src), map[int64]uint64{}, 7, 77); err != nil {
		t.Fatalf("host write with the old volume failing: %v", err)
	}
	e.waitState(src.Name, StateFaulty, 30*time.Second)
	// Any admin operation settles the journal (here a refused pause).
	_ = e.m.Pause(src.Name)
	if _, rec := dclOf(t, e.db, st.ID); rec == nil || rec.State != StateFaulty.String() {
		t.Fatalf("pair record after the journal was settled: %+v, want faulty (as in memory)", rec)
	}
	if got, want := lunRecord(t, e.db, src.Name).VolumeID, lunRecord(t, e.db, "dst").VolumeID; got == oldVol || got == want {
		t.Fatalf("LUN records after the journal was settled: src on %s, dst on %s; want swapped (src not on %s)", got, want, oldVol)
	}
}
