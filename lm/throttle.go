package lm

import (
	"context"
	"errors"
	"sync"
	"time"
)

// rateOf returns the byte rate of a speed level, 0 = unlimited.
func rateOf(s Speed) (int64, error) {
	switch s {
	case SpeedLow:
		return 10_000_000, nil
	case SpeedMedium, "":
		return 50_000_000, nil
	case SpeedHigh:
		return 200_000_000, nil
	case SpeedHighest:
		return 0, nil
	}
	return 0, invalidf("speed %q (want low, medium, high or highest)", s)
}

// effectiveRate combines a speed level and an absolute cap in MB/s (0 = none).
func effectiveRate(s Speed, maxMBps int64) int64 {
	r, _ := RateLimit(s, maxMBps)
	return r
}

// What limits a pair's copy rate (RateLimit).
const (
	LimitedBySpeed = "speed"    // the speed level (a cap, if any, is higher: it has no effect)
	LimitedByCap   = "max_mbps" // the absolute cap
)

// RateLimit is the copy rate in bytes/s (10^6 bytes = 1 MB) that a speed
// level and an absolute cap in MB/s (0 = none) allow together: the lower
// of the two, and which one that is ("" and 0 when nothing limits, i.e.
// speed highest and no cap). The copier's token bucket runs at this rate.
func RateLimit(s Speed, maxMBps int64) (bps int64, limitedBy string) {
	r, _ := rateOf(s)
	by := ""
	if r > 0 {
		by = LimitedBySpeed
	}
	if maxMBps > 0 {
		if c := maxMBps * 1_000_000; r == 0 || c < r {
			r, by = c, LimitedByCap
		}
	}
	return r, by
}

// guardedRate is the token bucket's rate: the limit of the speed level
// and cap (0: unlimited), lowered to the host-latency guard's rate when
// the guard holds the copy back (guard 0: it does not; latency.go).
func guardedRate(limit, guard int64) int64 {
	if guard > 0 && (limit == 0 || guard < limit) {
		return guard
	}
	return limit
}

// bucket is a token bucket of bytes whose rate can change while callers
// wait. A rate of 0 means unlimited.
type bucket struct {
	mu struct {
		sync.Mutex
		rate   int64 // bytes/s, 0 = unlimited
		tokens float64
		last   time.Time
	}
	changed chan struct{} // closed and replaced when the rate changes
}

func newBucket(rate int64) *bucket {
	b := &bucket{changed: make(chan struct{})}
	b.mu.rate = rate
	b.mu.last = time.Now()
	return b
}

func (b *bucket) setRate(rate int64) {
	b.mu.Lock()
	b.mu.rate = rate
	if b.mu.tokens < 0 {
		b.mu.tokens = 0
	}
	b.mu.last = time.Now()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *bucket) rate() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.rate
}

// errThrottleStopped: wait gave up because stop said so.
var errThrottleStopped = errors.New("throttle wait abandoned")

// throttlePoll is how often a waiting caller re-checks its stop condition.
const throttlePoll = 20 * time.Millisecond

// wait takes n bytes worth of tokens, sleeping as long as the rate asks.
// The burst is a tenth of a second of rate (at least n). It gives up (and
// takes nothing) when ctx ends or stop, if not nil, returns true.
func (b *bucket) wait(ctx context.Context, n int64, stop func() bool) error {
	for {
		b.mu.Lock()
		rate := b.mu.rate
		if rate == 0 {
			b.mu.Unlock()
			return nil
		}
		now := time.Now()
		b.mu.tokens += now.Sub(b.mu.last).Seconds() * float64(rate)
		b.mu.last = now
		burst := max(float64(rate)/10, float64(n))
		if b.mu.tokens > burst {
			b.mu.tokens = burst
		}
		if b.mu.tokens >= float64(n) {
			b.mu.tokens -= float64(n)
			b.mu.Unlock()
			return nil
		}
		need := time.Duration((float64(n) - b.mu.tokens) / float64(rate) * float64(time.Second))
		ch := b.changed
		b.mu.Unlock()
		if stop != nil {
			if stop() {
				return errThrottleStopped
			}
			need = min(need, throttlePoll)
		}
		t := time.NewTimer(need)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-ch:
			t.Stop()
		case <-t.C:
		}
	}
}

// waitBudget takes n bytes from the server-wide bandwidth budget
// (Options.MaxTotalMBps, SetLimits), after the pair's own bucket: all the
// copies together stay under it. The budget's burst is a tenth of a
// second of its rate, so over any few seconds the total is within a few
// percent of it; the pairs share it in the order they ask (each re-asks
// every throttlePoll at most, so none starves).
func (p *pair) waitBudget(ctx context.Context, n int64, stop func() bool) error {
	return p.m.budget.wait(ctx, n, stop)
}
