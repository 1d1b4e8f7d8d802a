package lm

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
)

// The split journal (split.go, docs/design.md "Split journal"): inside the
// pause only the journal commits; the records it describes are written
// after the pause. A power cut between the two must come back exactly as
// if the records had been committed: every LUN on its swapped volume, the
// pairs in their final state, the DCLs of ended pairs gone, and every
// write acknowledged on the swapped routes (after the pause, before the
// records) in place. Without the roll-forward at Open the source LUNs
// come back on their old volumes and those writes are lost.

var errPowerCut = errors.New("test: power cut (meta volume as after kill -9)")

// jcEnv: an env whose data volumes are crashable (one power domain per
// life) and whose meta volume dies with them: after the cut every commit
// fails, so the meta volume keeps exactly the commits made before it.
type jcEnv struct {
	*env
	set  atomic.Pointer[volume.CrashSet]
	dead atomic.Bool
}

func newJCEnv(t *testing.T) *jcEnv {
	j := &jcEnv{}
	j.set.Store(volume.NewCrashSet(volume.CrashOptions{}))
	opts := Options{VerifyInterval: -1, WrapVolume: func(id string, v volume.Volume) volume.Volume {
		return j.set.Load().Wrap(v)
	}}
	j.env = newEnvMeta(t, opts, false, "", metavol.Options{BeforeCommit: func() error {
		if j.dead.Load() {
			return errPowerCut
		}
		return nil
	}})
	return j
}

// cut: the power goes now (data volumes lose what was not synced, the meta
// volume takes no further commit).
func (j *jcEnv) cut() {
	j.dead.Store(true)
	if err := j.set.Load().Crash(); err != nil {
		j.t.Errorf("power cut: %v", err)
	}
}

// restart ends the crashed life (errors expected) and opens a new one on
// what the cut left: recovery runs.
func (j *jcEnv) restart() {
	j.t.Helper()
	if j.m != nil {
		j.m.Close() // errors expected: the volumes lost power
		j.m = nil
	}
	j.db.Close()
	j.db = nil
	j.dead.Store(false)
	j.set.Store(volume.NewCrashSet(volume.CrashOptions{}))
	j.open()
}

// jcPairs makes n synced pairs sN → tN of size bytes, each source filled
// and synced (the model is what must survive).
func jcPairs(j *jcEnv, n int, size int64) (srcs, tgts []metavol.LUN, models []map[int64]uint64) {
	j.t.Helper()
	for i := range n {
		s, tg := j.lun(fmt.Sprintf("s%d", i), size), j.lun(fmt.Sprintf("t%d", i), size)
		h := j.handle(s)
		model := fill(j.t, h, size, 3, 1)
		if err := h.Sync(); err != nil {
			j.t.Fatal(err)
		}
		if _, err := j.m.CreatePair(PairRequest{Source: s.Name, Target: tg.Name, Speed: SpeedHighest}); err != nil {
			j.t.Fatal(err)
		}
		srcs, tgts, models = append(srcs, s), append(tgts, tg), append(models, model)
	}
	for _, s := range srcs {
		j.waitState(s.Name, StateSynced, 30*time.Second)
	}
	return srcs, tgts, models
}

// jcWrite writes block bl of every source through its (swapped) route and
// syncs it: acknowledged, into the model.
func jcWrite(j *jcEnv, srcs []metavol.LUN, models []map[int64]uint64, bl int64, seq uint64) {
	for i, s := range srcs {
		h, err := j.m.LUN(s.ID)
		if err != nil {
			j.t.Error(err)
			return
		}
		m := map[int64]uint64{}
		if err := hostWrite(j.t, h, m, bl, seq); err != nil {
			j.t.Errorf("%s: write after the pause: %v", s.Name, err)
			continue
		}
		if err := h.Sync(); err != nil {
			j.t.Errorf("%s: sync after the pause: %v", s.Name, err)
			continue
		}
		models[i][bl] = seq
	}
}

// jcCheck: after the restart every source LUN is on volume want[i], holds
// its model, and its pair is in state (or gone from the meta volume's DCLs
// when ended).
func jcCheck(j *jcEnv, what string, srcs []metavol.LUN, want []string, models []map[int64]uint64, size int64, state PairState, switched bool) {
	j.t.Helper()
	for i, s := range srcs {
		if got := lunRecord(j.t, j.db, s.Name).VolumeID; got != want[i] {
			j.t.Fatalf("%s: %s is on %s, want %s (the swap committed in the pause was not rolled forward)", what, s.Name, got, want[i])
		}
		if state != StateSplit {
			// The intent marks of the writes in flight at the cut come
			// back as DCL regions: re-copied, then the state again.
			j.waitState(s.Name, state, 30*time.Second)
		}
		st, err := j.m.Pair(s.Name)
		if err != nil || st.State != state.String() {
			j.t.Fatalf("%s: pair of %s: %+v, %v; want %s", what, s.Name, st, err, state)
		}
		hasDCL, rec := dclOf(j.t, j.db, st.ID)
		if rec == nil || rec.State != state.String() || rec.Switched != switched || rec.Cursor != size {
			j.t.Fatalf("%s: pair record of %s: %+v; want %s, switched %v, cursor %d", what, s.Name, rec, state, switched, size)
		}
		if state == StateSplit && hasDCL {
			j.t.Fatalf("%s: the split pair of %s still has DCL keys", what, s.Name)
		}
		checkModel(j.t, what+": "+s.Name, j.handle(s), size, models[i])
	}
	if err := j.db.View(func(tx *metavol.Tx) error {
		jr, err := tx.SplitJournal()
		if jr != nil {
			j.t.Errorf("%s: the split journal is still there after the start", what)
		}
		return err
	}); err != nil {
		j.t.Fatal(err)
	}
}

func volumesOf(t testing.TB, db *metavol.DB, ls []metavol.LUN) []string {
	var v []string
	for _, l := range ls {
		v = append(v, lunRecord(t, db, l.Name).VolumeID)
	}
	return v
}

// A consistent split of 3 pairs cut by a power loss (a) right after the
// journal's commit, inside the pause, and (b) after the pause, once writes
// to the swapped routes were acknowledged, before the records are written.
func TestSplitJournalPowerCut(t *testing.T) {
	for _, at := range []string{"journaled", "reopened"} {
		t.Run(at, func(t *testing.T) {
			const size, n = 2 << 20, 3
			j := newJCEnv(t)
			srcs, tgts, models := jcPairs(j, n, size)
			newVols := volumesOf(t, j.db, tgts)
			names := make([]string, n)
			for i, s := range srcs {
				names[i] = s.Name
			}
			ran := false
			hook := func() {
				ran = true
				if at == "reopened" {
					jcWrite(j, srcs, models, 7, 100)
				}
				j.cut()
			}
			if at == "journaled" {
				j.m.hooks.splitJournaled = hook
			} else {
				j.m.hooks.splitReopened = hook
			}
			_, err := j.m.Split(names, 10*time.Second)
			if !ran {
				t.Fatalf("the %s hook did not run: %v", at, err)
			}
			j.restart()
			jcCheck(j, "split cut "+at, srcs, newVols, models, size, StateSplit, false)
		})
	}
}

// The same for split --keep-source and for the rollback after it: the
// pairs stay attached (switched, then synced again), their DCLs stay.
func TestSplitJournalPowerCutKeepSourceRollback(t *testing.T) {
	const size, n = 2 << 20, 2
	j := newJCEnv(t)
	srcs, tgts, models := jcPairs(j, n, size)
	oldVols, newVols := volumesOf(t, j.db, srcs), volumesOf(t, j.db, tgts)
	names := []string{srcs[0].Name, srcs[1].Name}

	j.m.hooks.splitReopened = func() {
		jcWrite(j, srcs, models, 11, 200)
		j.cut()
	}
	j.m.SplitKeepSource(names, 10*time.Second, false)
	j.restart()
	jcCheck(j, "keep-source cut after the pause", srcs, newVols, models, size, StateSwitched, true)

	for _, s := range srcs {
		j.waitState(s.Name, StateSwitched, 30*time.Second)
	}
	j.m.hooks.splitReopened = func() {
		jcWrite(j, srcs, models, 13, 300)
		j.cut()
	}
	j.m.Rollback(names, 10*time.Second)
	j.restart()
	jcCheck(j, "rollback cut after the pause", srcs, oldVols, models, size, StateSynced, false)
}

// A journal whose records could not be written after the pause (a failed
// commit, the server still running) is rolled forward by the next split
// before that split writes its own: the first split's swap is not lost
// when the second one's journal takes the key.
func TestSplitJournalLeftIsRolledForwardByTheNextSplit(t *testing.T) {
	const size = 2 << 20
	j := newJCEnv(t)
	srcs, tgts, models := jcPairs(j, 2, size)
	newVols := volumesOf(t, j.db, tgts)
	fail := true
	j.m.hooks.splitReopened = func() { j.dead.Store(fail) }
	if _, err := j.m.Split([]string{srcs[0].Name}, 10*time.Second); err == nil {
		t.Fatal("a split whose records could not be written reported no error")
	}
	j.dead.Store(false)
	fail = false
	if got := lunRecord(t, j.db, srcs[0].Name).VolumeID; got == newVols[0] {
		t.Fatal("the records were written although the commit failed (nothing to prove)")
	}
	if _, err := j.m.Split([]string{srcs[1].Name}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i, s := range srcs {
		if got := lunRecord(t, j.db, s.Name).VolumeID; got != newVols[i] {
			t.Fatalf("%s is on %s after the next split, want %s", s.Name, got, newVols[i])
		}
	}
	j.restart()
	jcCheck(j, "after a restart", srcs, newVols, models, size, StateSplit, false)
}

// A leg truncated inside the pause is found by the fstat re-check that
// runs while the journal commits: the split is refused and the journal
// deleted again, so neither the next split nor a restart rolls the
// refused swap forward.
func TestSplitJournalOfARefusedSwapIsDeleted(t *testing.T) {
	e := newEnv(t, Options{VerifyInterval: -1}, false)
	const size = 4 << 20
	src, _, model, _ := offlinePair(e, size)
	old := lunRecord(t, e.db, src.Name).VolumeID
	path := volumePath(t, e.db, "dst")
	e.m.hooks.splitDrained = func() {
		if err := os.Truncate(path, size/2); err != nil {
			t.Error(err)
		}
	}
	if _, err := e.m.Split([]string{"src"}, 10*time.Second); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("split with the target truncated inside the pause: %v, want refused", err)
	}
	if err := e.db.View(func(tx *metavol.Tx) error {
		j, err := tx.SplitJournal()
		if j != nil {
			t.Errorf("the journal of the refused swap is still there: %+v", j)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if got := lunRecord(t, e.db, src.Name).VolumeID; got != old {
		t.Fatalf("after a restart the source LUN is on %s, want its own volume %s: the refused swap was rolled forward", got, old)
	}
	checkModel(t, "source after the refused split and a restart", e.handle(src), size, model)
}

// A journal whose swap the routes do not show (a journal commit reported
// failed that landed all the same: the split was refused, nothing swapped,
// host writes went on to the old volume) is deleted by the next split,
// never rolled forward: that would move the LUN to the volume that missed
// those writes.
func TestSplitJournalOfASwapThatDidNotHappenIsDeleted(t *testing.T) {
	const size = 2 << 20
	j := newJCEnv(t)
	srcs, tgts, models := jcPairs(j, 2, size)
	oldVol, newVol := lunRecord(t, j.db, srcs[0].Name).VolumeID, lunRecord(t, j.db, tgts[0].Name).VolumeID
	st, err := j.m.Pair(srcs[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	var b metavol.Batch
	if err := b.PutSplitJournal(&metavol.SplitJournal{State: "split", Reason: "split by admin", DropDCL: true, Time: time.Now().UTC(),
		Pairs: []metavol.SplitJournalPair{{Pair: st.ID, Size: size,
			SourceLUN: srcs[0].ID, SourceVolume: newVol, SourceSize: size,
			TargetLUN: tgts[0].ID, TargetVolume: oldVol, TargetSize: size}}}); err != nil {
		t.Fatal(err)
	}
	if err := j.db.Update(func(tx *metavol.Tx) error { return tx.Apply(&b) }); err != nil {
		t.Fatal(err)
	}
	if _, err := j.m.Split([]string{srcs[1].Name}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := lunRecord(t, j.db, srcs[0].Name).VolumeID; got != oldVol {
		t.Fatalf("%s was moved to %s by a journal of a swap that did not happen", srcs[0].Name, got)
	}
	jcWrite(j, srcs[:1], models[:1], 17, 400)
	j.restart()
	if got := lunRecord(t, j.db, srcs[0].Name).VolumeID; got != oldVol {
		t.Fatalf("after a restart %s is on %s, want %s", srcs[0].Name, got, oldVol)
	}
	j.waitState(srcs[0].Name, StateSynced, 30*time.Second)
	checkModel(t, srcs[0].Name, j.handle(srcs[0]), size, models[0])
}
