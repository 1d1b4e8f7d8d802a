package lm

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
)

var errMetaInjected = errors.New("injected meta volume commit failure")

// returnsWithin runs f and fails the test if it does not return within d.
func returnsWithin[T any](t *testing.T, d time.Duration, what string, f func() (T, error)) (T, error) {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	done := make(chan res, 1)
	go func() {
		v, err := f()
		done <- res{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(d):
		t.Fatalf("%s hung (no return within %v)", what, d)
		var zero T
		return zero, nil
	}
}

// TestMetaCommitErrors fails the k-th meta volume commit (admin records,
// pair states, checkpoints, DCL group commits: metavol.Options.BeforeCommit)
// of a migration (create pair, copy, dual-write with host writes,
// checkpoints, split) for k = 1, 2, ... until a run has no failure to
// inject, in the style of pebble's TestErrors. After each k: no
// acknowledged write lost (the LUN's content against a model of
// acknowledged writes, before and after a restart), the split all or
// nothing (done, or the pair is still there and splits later), no panic,
// no hang.
func TestMetaCommitErrors(t *testing.T) {
	for k := int64(1); ; k++ {
		if k > 5000 {
			t.Fatal("the failure was still injected after 5000 commits")
		}
		var injected bool
		t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) { injected = metaErrorsRun(t, k) })
		if t.Failed() {
			return
		}
		if !injected {
			t.Logf("k=%d: the run made fewer than %d commits; done", k, k)
			return
		}
	}
}

// metaErrorsRun is one migration with the k-th commit after the setup
// failing; it reports whether the failure was injected.
func metaErrorsRun(t *testing.T, k int64) bool {
	var n atomic.Int64
	var armed atomic.Bool
	mo := metavol.Options{BeforeCommit: func() error {
		if armed.Load() && n.Add(1) == k {
			return errMetaInjected
		}
		return nil
	}}
	e := newEnvMeta(t, Options{
		CheckpointBytes:    mib,
		CheckpointInterval: 20 * time.Millisecond,
		ClearInterval:      20 * time.Millisecond,
	}, false, "", mo)
	const size = 4 * mib
	const regionBlocks = mib / blk
	src := e.lun("src", size)
	e.lun("tgt", size)
	hs := e.handle(src)
	model := fill(t, hs, size, 2, 1)
	// Blocks whose write failed: their content may be the old or the new
	// pattern (checked by checkLoose).
	loose := map[int64]uint64{}
	armed.Store(true)

	// Create the pair; a refused create changes nothing and is retried.
	for {
		_, err := returnsWithin(t, time.Minute, "create pair", func() (PairStatus, error) {
			return e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest})
		})
		if err == nil {
			break
		}
		if !errors.Is(err, errMetaInjected) {
			t.Fatalf("create pair: %v", err)
		}
		if _, perr := e.m.Pair("src"); !errors.Is(perr, ErrNotFound) {
			t.Fatalf("a refused create left a pair: %v", perr)
		}
	}
	synced := func(what string) {
		t.Helper()
		waitFor(t, time.Minute, what, func() bool {
			st, err := e.m.Pair("src")
			return err == nil && st.State == StateSynced.String() && !strings.HasPrefix(st.Reason, "target failed")
		})
	}

	// Host writes during the copy and in dual-write, on regions that need
	// new marks.
	b := make([]byte, blk)
	write := func(bl int64, seq uint64) {
		pattern(b, bl, seq)
		if _, err := hs.WriteAt(b, bl*blk); err != nil {
			if !errors.Is(err, errMetaInjected) {
				t.Fatalf("write block %d: %v", bl, err)
			}
			loose[bl] = seq
			return
		}
		model[bl] = seq
		delete(loose, bl)
	}
	for r := int64(0); r < 4; r++ {
		write(r*regionBlocks+3, 2)
	}
	synced("the pair in sync after the copy")
	for r := int64(0); r < 4; r++ {
		write(r*regionBlocks+5, 3)
	}
	synced("the pair in sync after the dual-write")

	// The split: all or nothing; a failed one leaves the pair, which
	// splits later.
	for {
		_, err := returnsWithin(t, time.Minute, "split", func() (SplitResult, error) {
			return e.m.Split([]string{"src"}, 0)
		})
		if err == nil {
			break
		}
		if !errors.Is(err, errMetaInjected) {
			t.Fatalf("split: %v", err)
		}
		st, perr := e.m.Pair("src")
		if perr != nil || st.State == StateSplit.String() {
			t.Fatalf("a failed split: pair %+v, %v", st, perr)
		}
		synced("the pair in sync after a failed split")
	}
	if st, err := e.m.Pair("src"); err == nil && st.State != StateSplit.String() {
		t.Fatalf("after the split the pair is %s", st.State)
	}
	checkLoose(t, "source LUN after the split", e.handle(src), size, model, loose)
	armed.Store(false)
	_, _ = returnsWithin(t, time.Minute, "restart", func() (struct{}, error) { e.reopen(); return struct{}{}, nil })
	checkLoose(t, "source LUN after the split and a restart", e.handle(src), size, model, loose)
	return n.Load() >= k
}

// checkLoose is checkModel where each loose block may hold the model's
// content or the pattern of its failed write.
func checkLoose(t *testing.T, what string, v volume.Volume, size int64, model, loose map[int64]uint64) {
	t.Helper()
	m := make(map[int64]uint64, len(model))
	for bl, seq := range model {
		m[bl] = seq
	}
	got := make([]byte, blk)
	want := make([]byte, blk)
	for bl, seq := range loose {
		if _, err := v.ReadAt(got, bl*blk); err != nil {
			t.Fatal(err)
		}
		pattern(want, bl, seq)
		if string(got) == string(want) {
			m[bl] = seq
		}
	}
	checkModel(t, what, v, size, m)
}
