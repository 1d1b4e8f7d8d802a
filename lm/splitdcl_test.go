package lm

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// dclOf says whether the meta volume holds DCL keys of the pair and
// whether it holds the pair's record (and in which state).
func dclOf(t testing.TB, db *metavol.DB, pairID string) (hasDCL bool, rec *metavol.Pair) {
	t.Helper()
	if err := db.View(func(tx *metavol.Tx) error {
		ids, err := tx.DCLPairIDs()
		if err != nil {
			return err
		}
		hasDCL = slices.Contains(ids, pairID)
		r, err := tx.GetPair(pairID)
		if err == nil {
			rec = &r
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return hasDCL, rec
}

// The DCL of a split pair is deleted in the transaction that swaps the
// data volumes (DESIGN §5 step 3): right after that commit, before
// anything else runs, the meta volume holds the swap and no DCL header of
// the pair (its pages, garbage without it, are purged after the pause:
// none is left once Split returns), so a kill -9 between the swap and a later DCL drop is no
// longer a distinct state. (It used to be dropped after the pause, in a
// transaction of its own.)
func TestSplitDropsDCLInTheSwap(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 4 << 20
	src, dst, model, st := offlinePair(e, size)
	// A dual write leaves a durable mark: the pair has DCL pages.
	if err := hostWrite(t, e.handle(src), model, 5, 9); err != nil {
		t.Fatal(err)
	}
	if has, _ := dclOf(t, e.db, st.ID); !has {
		t.Fatal("before the split: the pair has no DCL keys (nothing to prove)")
	}
	checked := false
	e.m.hooks.splitCommitted = func() {
		checked = true
		// The header, which makes the DCL exist, goes with the swap; the
		// pages are garbage from then on, purged after the pause.
		_, rec := dclOf(t, e.db, st.ID)
		if err := e.db.View(func(tx *metavol.Tx) error {
			_, err := tx.GetDCLInfo(st.ID)
			return err
		}); !errors.Is(err, metavol.ErrNotFound) {
			t.Errorf("right after the swap commit the pair's DCL header: %v, want not found", err)
		}
		if rec == nil || rec.State != "split" {
			t.Errorf("right after the swap commit the pair record is %+v, want split", rec)
		}
		var l metavol.LUN
		if err := e.db.View(func(tx *metavol.Tx) error {
			var err error
			l, err = tx.GetLUN(src.ID)
			return err
		}); err != nil {
			t.Error(err)
		} else if l.VolumeID != dst.VolumeID {
			t.Errorf("right after the swap commit the source LUN is on %s, want %s", l.VolumeID, dst.VolumeID)
		}
	}
	if _, err := e.m.Split([]string{"src"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("the splitCommitted hook did not run")
	}
	if has, _ := dclOf(t, e.db, st.ID); has {
		t.Fatal("after the split the pair's DCL keys are in the meta volume")
	}
	checkModel(t, "source after the split", e.handle(src), size, model)
}

// Cancel deletes the pair's record and DCL in one transaction: at every
// commit made after the cancel started, the meta volume holds both or
// neither. (It used to drop the DCL in one commit and delete the record
// in the next.)
func TestCancelDropsDCLWithTheRecord(t *testing.T) {
	var (
		db       atomic.Pointer[metavol.DB]
		pairID   atomic.Pointer[string]
		watching atomic.Bool
		mu       sync.Mutex
		states   []string
	)
	e := newEnvMeta(t, Options{}, false, "", metavol.Options{BeforeCommit: func() error {
		if watching.Load() {
			has, rec := dclOf(t, db.Load(), *pairID.Load())
			if has != (rec != nil) {
				t.Errorf("a commit during the cancel found DCL %v and record %v: one without the other", has, rec != nil)
			}
			mu.Lock()
			states = append(states, map[bool]string{true: "both", false: "neither"}[has])
			mu.Unlock()
		}
		return nil
	}})
	db.Store(e.db)
	src, _, model, st := offlinePair(e, 4<<20)
	pairID.Store(&st.ID)
	if err := hostWrite(t, e.handle(src), model, 3, 7); err != nil {
		t.Fatal(err)
	}
	if has, rec := dclOf(t, e.db, st.ID); !has || rec == nil {
		t.Fatalf("before the cancel: DCL %v, record %v", has, rec != nil)
	}
	watching.Store(true)
	err := e.m.Cancel("src")
	watching.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	if has, rec := dclOf(t, e.db, st.ID); has || rec != nil {
		t.Fatalf("after the cancel: DCL %v, record %v, want neither", has, rec != nil)
	}
	mu.Lock()
	t.Logf("states seen before each commit: %v", states)
	mu.Unlock()
}

// `migration show` and `migration list` answer while a split runs (no
// pair lock is held across its syncs, its pause or its commits) and show
// the pairs splitting. Asked here from inside the pause.
func TestStatusDuringSplit(t *testing.T) {
	e := newEnv(t, Options{}, false)
	offlinePair(e, 4<<20)
	asked := false
	e.m.hooks.splitDrained = func() {
		asked = true
		got := make(chan PairStatus, 1)
		go func() { // ends when Pair returns (at once, or after the split)
			st, err := e.m.Pair("src")
			if err != nil {
				t.Error(err)
			}
			e.m.Pairs()
			got <- st
		}()
		select {
		case st := <-got:
			if st.State != "splitting" {
				t.Errorf("migration show during the split: %s, want splitting", st.State)
			}
		case <-time.After(20 * time.Second):
			t.Error("migration show did not answer within 20s while the split held its pause")
		}
	}
	if _, err := e.m.Split([]string{"src"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if !asked {
		t.Fatal("the splitDrained hook did not run")
	}
}
