// Package histogram is a fixed-bucket duration histogram that can be
// observed from any goroutine without a lock and without allocating: one
// bucket search over a few bounds and two atomic adds per observation.
// lm observes split pauses with it and target the latency of host
// commands per LUN; target/metrics turns a Snapshot into a Prometheus
// histogram at scrape time.
//
// Never: import anything but the standard library (lm and target both
// import it); allocate or lock in Observe.
package histogram

import (
	"sync/atomic"
	"time"
)

// Histogram counts durations into buckets with fixed upper bounds. The
// zero value is not usable: use New.
type Histogram struct {
	bounds []time.Duration // upper bounds (inclusive), ascending; read-only
	counts []atomic.Uint64 // len(bounds)+1: the last is above every bound
	sum    atomic.Int64    // nanoseconds
}

// New returns a histogram with the given ascending upper bounds.
// It panics if the bounds are empty or not strictly ascending (a
// programming error: bounds are constants of the caller).
func New(bounds []time.Duration) *Histogram {
	if len(bounds) == 0 {
		panic("histogram: no bounds")
	}
	for i := 1; i < len(bounds); i++ {
		if bounds[i] <= bounds[i-1] {
			panic("histogram: bounds not ascending")
		}
	}
	return &Histogram{
		bounds: append([]time.Duration(nil), bounds...),
		counts: make([]atomic.Uint64, len(bounds)+1),
	}
}

// Observe counts one duration (a negative one counts as 0).
func (h *Histogram) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Snapshot is a histogram read at one moment. Counts are per bucket (not
// cumulative): Counts[i] for durations in (Bounds[i-1], Bounds[i]], the
// last for durations above every bound. Count is their sum.
type Snapshot struct {
	Bounds []time.Duration
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

// Snapshot reads the buckets. Observations that run concurrently may be
// in Sum and not yet in a bucket or the other way round; Count always
// equals the sum of the buckets read.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Bounds: h.bounds, Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// Cumulative returns, for each bound, the number of observations at or
// below it (the Prometheus "le" buckets, +Inf excluded: that is Count).
func (s Snapshot) Cumulative() []uint64 {
	out := make([]uint64, len(s.Bounds))
	var acc uint64
	for i := range s.Bounds {
		acc += s.Counts[i]
		out[i] = acc
	}
	return out
}

// LatencyBounds are the bounds for host command latency: 10 µs to 10 s
// in 1-2.5-5 steps (19 buckets).
func LatencyBounds() []time.Duration {
	return []time.Duration{
		10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
		100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
		10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
	}
}

// PauseBounds are the bounds for split pauses: 100 µs to 1 s (the pause
// budget is 100 ms by default).
func PauseBounds() []time.Duration {
	return []time.Duration{
		100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
		10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second,
	}
}
