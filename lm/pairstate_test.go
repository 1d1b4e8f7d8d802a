package lm

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// The write mode each state gives, with and without a waiting fault.
func TestWriteModeIn(t *testing.T) {
	all := []PairState{StateQueued, StateCopying, StateSynced, StatePaused, StateInterrupted,
		StateSplitting, StateSplit, StateCancelled, StateFaulty}
	for _, prev := range []writeMode{writeDual, writeSourceOnly} {
		for _, fault := range []string{"", "target failed: x"} {
			if fault != "" && prev == writeDual {
				continue // a fault always comes with source-only (recordFault)
			}
			v := pairView{state: StateCopying, mode: prev, fault: fault}
			for _, to := range all {
				want := prev // splitting, split, cancelled keep the mode
				switch to {
				case StatePaused, StateInterrupted, StateFaulty:
					want = writeSourceOnly
				case StateQueued, StateCopying, StateSynced:
					want = writeDual
					if fault != "" {
						want = writeSourceOnly
					}
				}
				if got := v.modeIn(to); got != want {
					t.Errorf("from %s (fault %q) to %s: mode %s, want %s", prev, fault, to, got, want)
				}
			}
		}
	}
	for st, want := range map[PairState]writeMode{StateQueued: writeDual, StateSynced: writeDual,
		StatePaused: writeSourceOnly, StateInterrupted: writeSourceOnly, StateFaulty: writeSourceOnly} {
		if v := initialView(st); v.mode != want || v.fault != "" || v.state != st {
			t.Errorf("loaded in %s: %+v, want mode %s and no fault", st, *v, want)
		}
	}
	if writeDual.String() != "dual" || writeSourceOnly.String() != "source-only" || writeMode(9).String() != "writeMode(9)" {
		t.Errorf("writeMode names: %s %s %s", writeDual, writeSourceOnly, writeMode(9))
	}
}

// Faults (as host writes and the volume checks record them) race the run
// goroutine's interrupted → copying and an admin's pause and resume;
// every snapshot a reader sees agrees with itself: a waiting fault or a
// paused, interrupted or faulty pair always writes the source only.
// (Before pairView, recordFault set sourceOnly and then the fault while
// applyLocked computed sourceOnly from the fault: a transition between
// the two left a fault with dual writes.)
func TestPairViewAgrees(t *testing.T) {
	e := newEnv(t, Options{RetryBudget: time.Hour}, false)
	const size = 4 * mib
	l := e.lun("src", size)
	e.lun("tgt", size)
	fill(t, e.handle(l), size, 2, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	p, err := e.m.activePair("src")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seen, bad atomic.Int64
	loopUntil(&wg, stop, func() bool { // a reader
		v := p.view()
		seen.Add(1)
		if (v.fault != "" || v.state == StatePaused || v.state == StateInterrupted || v.state == StateFaulty) && !v.sourceOnly() {
			if bad.Add(1) == 1 {
				t.Errorf("snapshot %+v writes both legs", *v)
			}
		}
		return true
	})
	i := 0
	loopUntil(&wg, stop, func() bool { // faults
		p.setFault("injected")
		if i++; i%2 == 0 {
			p.setSourceFault("injected")
		}
		return true
	})
	interrupted := 0
	for i := 0; i < 50; i++ {
		if err := e.m.Pause("src"); err != nil && !errors.Is(err, ErrState) {
			t.Fatal(err)
		}
		if err := e.m.Resume("src"); err != nil && !errors.Is(err, ErrState) {
			t.Fatal(err)
		}
		if p.getState() == StateInterrupted {
			interrupted++
		}
	}
	waitFor(t, 30*time.Second, "the pair interrupted by the faults", func() bool {
		return p.getState() == StateInterrupted
	})
	close(stop)
	wg.Wait()
	// The faults stop: the pair recovers (its fault handled) and syncs.
	st := e.waitState("src", StateSynced, 60*time.Second)
	if v := p.view(); v.fault != "" || v.sourceOnly() {
		t.Fatalf("synced with %+v, want dual writes and no fault", *v)
	}
	t.Logf("%d snapshots read, %d pause/resume rounds found the pair interrupted, final %s", seen.Load(), interrupted, st.State)
}

// A fault recorded while interrupted → copying is being committed (after
// a probe) is not dropped with the one that was handled: the pair goes
// copying with it, writing the source only, and is interrupted again.
func TestFaultDuringRecoveryStays(t *testing.T) {
	var armed atomic.Pointer[pair]
	e := newEnvMeta(t, Options{RetryBudget: time.Hour}, true, "", metavol.Options{
		BeforeCommit: func() error {
			// The recovery's commit: interrupted, its fault dropped.
			if p := armed.Load(); p != nil {
				if v := p.view(); v.state == StateInterrupted && v.fault == "" && armed.CompareAndSwap(p, nil) {
					p.setFault("during the commit")
				}
			}
			return nil
		},
	})
	const size = 2 * mib
	l := e.lun("src", size)
	e.lun("tgt", size)
	fill(t, e.handle(l), size, 2, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 30*time.Second)
	p, err := e.m.activePair("src")
	if err != nil {
		t.Fatal(err)
	}
	// The target fails: the run goroutine's probes fail, the pair stays
	// interrupted; the test recovers it itself.
	f := e.faultyOf("tgt")
	f.FailWrites(errors.New("injected"))
	p.setFault("first")
	e.waitState("src", StateInterrupted, 30*time.Second)
	if v := p.view(); v.fault != "target failed: first" || !v.sourceOnly() {
		t.Fatalf("interrupted: %+v", *v)
	}
	armed.Store(p)
	if err := p.recovered("test: recovered"); err != nil {
		t.Fatal(err)
	}
	// The hook sets the new fault inside the recovery's commit. On a
	// loaded machine the run goroutine's own probe of the failing target
	// may get there first (between the fault's drop and the commit): the
	// same case, with the probe's fault instead of the hook's.
	want := "target failed: during the commit"
	if armed.Swap(nil) != nil {
		want = ""
	}
	// Copying with the new fault, or interrupted again by it already.
	v := p.view()
	if (v.state != StateCopying && v.state != StateInterrupted) || v.fault == "" || (want != "" && v.fault != want) || !v.sourceOnly() {
		t.Fatalf("after the recovery: %+v, want copying or interrupted with the new fault (%q), writing the source only", *v, want)
	}
	e.waitState("src", StateInterrupted, 30*time.Second)
	f.Heal()
	e.waitState("src", StateSynced, 60*time.Second)
}
