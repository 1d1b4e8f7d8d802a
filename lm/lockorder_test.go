package lm

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// TestLockOrder drives every pair operation at once: host writes and
// syncs on every source LUN, status reads, pair create, the copy, a
// target failure (fault, interrupted, retry), pause, resume, set, a
// consistent split and a cancel. Built with -tags lockrank (Makefile
// test-go), every lock of the package checks the order written in doc.go
// and a violation panics; without the tag it is a plain -race test of the
// same mix. Either way every acknowledged write must be on the LUN after
// the split (the model).
func TestLockOrder(t *testing.T) {
	if !lockRankOn {
		t.Log("lock ranks not checked: run with -tags lockrank")
	}
	const (
		npairs = 3
		size   = 4 * mib
		blocks = size / blk
	)
	e := newEnv(t, Options{}, true)
	hs := make([]volume.Volume, npairs)
	models := make([]map[int64]uint64, npairs)
	for i := range npairs {
		src := e.lun(fmt.Sprintf("src%d", i), size)
		e.lun(fmt.Sprintf("tgt%d", i), size)
		hs[i] = e.handle(src)
		models[i] = fill(t, hs[i], size, 3, 1)
	}

	// Host I/O: one writer per LUN (it owns the LUN's model), a sync
	// every 16 writes; and a status reader.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mmu sync.Mutex
	errs := make(chan error, npairs+1)
	for i := range npairs {
		b := make([]byte, blk)
		n := uint64(1)
		loopUntil(&wg, stop, func() bool {
			n++
			bl := int64(n*7919) % blocks
			pattern(b, bl, n)
			if _, err := hs[i].WriteAt(b, bl*blk); err != nil {
				errs <- fmt.Errorf("lun %d: write block %d: %w", i, bl, err)
				return false
			}
			mmu.Lock()
			models[i][bl] = n
			mmu.Unlock()
			if n%16 == 0 {
				if err := hs[i].Sync(); err != nil {
					errs <- fmt.Errorf("lun %d: sync: %w", i, err)
					return false
				}
			}
			return true
		})
	}
	loopUntil(&wg, stop, func() bool {
		e.m.Pairs()
		e.m.Pair("src0")
		return true
	})

	for i := range npairs {
		if _, err := e.m.CreatePair(PairRequest{Source: fmt.Sprintf("src%d", i), Target: fmt.Sprintf("tgt%d", i), Speed: SpeedHigh}); err != nil {
			t.Fatal(err)
		}
	}
	// A target failure on pair 1: interrupted, then back to copying when
	// it heals.
	f := e.faultyOf("tgt1")
	f.FailWrites(errors.New("injected target failure"))
	e.waitState("src1", StateInterrupted, 30*time.Second)
	f.Heal()

	// Pause, set, resume pair 0 while it copies or is in sync.
	for range 3 {
		if err := e.m.Pause("src0"); err != nil {
			t.Fatal(err)
		}
		hi := SpeedHighest
		if _, err := e.m.Set("src0", SetRequest{Speed: &hi}); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Resume("src0"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range npairs {
		e.waitState(fmt.Sprintf("src%d", i), StateSynced, 60*time.Second)
	}
	// A consistent split of pairs 0 and 1 under host writes (deferred
	// splits are retried), and a cancel of pair 2.
	waitFor(t, 60*time.Second, "the split of src0 and src1", func() bool {
		_, err := e.m.Split([]string{"src0", "src1"}, time.Second)
		if err != nil && !errors.Is(err, ErrSplitTimeout) && !errors.Is(err, ErrNotSynced) {
			t.Fatalf("split: %v", err)
		}
		return err == nil
	})
	if err := e.m.Cancel("src2"); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range npairs {
		checkModel(t, fmt.Sprintf("src%d", i), hs[i], size, models[i])
	}
}

// TestLockRankChecker shows that the checker of -tags lockrank catches a
// lock taken against the order: pair.persist after pair.mu.
func TestLockRankChecker(t *testing.T) {
	if !lockRankOn {
		t.Skip("lock ranks are checked only with -tags lockrank")
	}
	var p pair
	got := func() (msg string) {
		defer func() { msg = fmt.Sprint(recover()) }()
		p.mu.Lock()
		defer p.mu.Unlock()
		p.persist.Lock() // against the order: panics before it blocks
		p.persist.Unlock()
		return ""
	}()
	if !strings.Contains(got, "takes pair.persist while it holds pair.mu") {
		t.Fatalf("taking persist under mu: got %q, want a lock order panic", got)
	}
	// In the order, nothing is said.
	p.persist.Lock()
	p.mu.Lock()
	p.mu.Unlock()
	p.persist.Unlock()
}
