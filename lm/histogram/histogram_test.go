package histogram

import (
	"sync"
	"testing"
	"time"
)

func TestObserveBuckets(t *testing.T) {
	h := New([]time.Duration{time.Millisecond, 10 * time.Millisecond})
	for _, d := range []time.Duration{-1, 0, time.Millisecond, time.Millisecond + 1, 10 * time.Millisecond, time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if want := []uint64{3, 2, 1}; !equal(s.Counts, want) {
		t.Fatalf("counts %v, want %v", s.Counts, want)
	}
	if want := []uint64{3, 5}; !equal(s.Cumulative(), want) {
		t.Fatalf("cumulative %v, want %v", s.Cumulative(), want)
	}
	if s.Count != 6 {
		t.Fatalf("count %d, want 6", s.Count)
	}
	if want := 2*time.Millisecond + 1 + 10*time.Millisecond + time.Second; s.Sum != want {
		t.Fatalf("sum %v, want %v", s.Sum, want)
	}
}

func TestObserveConcurrent(t *testing.T) {
	h := New(LatencyBounds())
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				h.Observe(time.Duration(i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if s := h.Snapshot(); s.Count != 4000 {
		t.Fatalf("count %d, want 4000", s.Count)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	h := New(LatencyBounds())
	if n := testing.AllocsPerRun(100, func() { h.Observe(3 * time.Millisecond) }); n != 0 {
		t.Fatalf("%.1f allocations per Observe, want 0", n)
	}
}

func TestNewRefusesBadBounds(t *testing.T) {
	for _, b := range [][]time.Duration{nil, {2, 1}, {1, 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%v) did not panic", b)
				}
			}()
			New(b)
		}()
	}
	for _, b := range [][]time.Duration{LatencyBounds(), PauseBounds()} {
		New(b)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
