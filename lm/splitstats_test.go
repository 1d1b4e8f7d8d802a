package lm

import (
	"errors"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// TestSplitStatsAndLivePairs: a deferred split is counted as a deferral
// and observes no pause; a split that swaps observes its pause once; a
// split pair leaves LivePairs (Pairs keeps it as history).
func TestSplitStatsAndLivePairs(t *testing.T) {
	e := newEnv(t, Options{}, true)
	size := int64(8 * mib)
	l, _ := syncedPair(t, e, "src", "tgt", size)
	if s := e.m.SplitStats(); s.Deferrals != 0 || s.Pauses.Count != 0 {
		t.Fatalf("split stats before any split: %+v", s)
	}
	live := e.m.LivePairs()
	if len(live) != 1 || live[0].Source != "src" || live[0].Target != "tgt" || live[0].State != "synced" {
		t.Fatalf("live pairs while synced: %+v", live)
	}
	st, _ := e.m.Pair("src")
	if p := live[0]; p.ID != st.ID || p.SizeBytes != size || p.DoneBytes != size || p.CopiedBytes != st.DataBytes ||
		p.CopiedBytes <= 0 || p.RecopiedBytes != st.RecopiedBytes || p.DCLBytes != 0 {
		t.Fatalf("live pair counters %+v, status %+v", p, st)
	}

	// A write stuck in the source makes the split miss its budget.
	fs := e.faultyOf("src")
	before := fs.Writes()
	fs.Delay(500 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- writeBlock(e.handle(l), 1, 5) }()
	waitFor(t, 5*time.Second, "write in flight", func() bool { return fs.Writes() > before })
	if _, err := e.m.Split([]string{"src"}, 50*time.Millisecond); !errors.Is(err, ErrSplitTimeout) {
		t.Fatalf("split with a stuck write: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fs.Delay(0)
	if s := e.m.SplitStats(); s.Deferrals != 1 || s.Pauses.Count != 0 {
		t.Fatalf("split stats after a deferred split: deferrals %d, pauses %d; want 1, 0", s.Deferrals, s.Pauses.Count)
	}

	res, err := e.m.Split([]string{"src"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := e.m.SplitStats()
	if s.Deferrals != 1 || s.Pauses.Count != 1 || s.Pauses.Sum != res.Pause {
		t.Fatalf("split stats after the split: deferrals %d, pauses %d (sum %v); want 1, 1 (sum %v)",
			s.Deferrals, s.Pauses.Count, s.Pauses.Sum, res.Pause)
	}
	if live := e.m.LivePairs(); len(live) != 0 {
		t.Fatalf("live pairs after the split: %+v", live)
	}
	if all := e.m.Pairs(); len(all) != 1 || all[0].State != "split" {
		t.Fatalf("pairs after the split: %+v", all)
	}
}

// TestLivePairsOffline: a pair whose record cannot be loaded is live (it
// fences its LUNs) and listed with state PairOffline and the record's
// counters; once cancelled it is gone.
func TestLivePairsOffline(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 4 << 20
	_, _, _, st := offlinePair(e, size)
	e.offline(func(db *metavol.DB) { setPairState(t, db, st.ID, "bogus") })
	live := e.m.LivePairs()
	if len(live) != 1 {
		t.Fatalf("live pairs with one unloadable pair: %+v", live)
	}
	if p := live[0]; p.ID != st.ID || p.State != PairOffline || p.Source != "src" || p.Target != "dst" ||
		p.SizeBytes != size || p.DoneBytes != size || p.CopiedBytes != st.DataBytes {
		t.Fatalf("unloadable pair %+v, was %+v", p, st)
	}
	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	if live := e.m.LivePairs(); len(live) != 0 {
		t.Fatalf("live pairs after the cancel: %+v", live)
	}
}
