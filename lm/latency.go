package lm

import (
	"context"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// The host-latency guard (issue 11, "a throttle that protects the hosts").
//
// Measure: the SCSI layer times every host READ/WRITE of a LUN and hands
// the service time to the LUN's handle (lunEntry.ObserveHostLatency),
// which adds one to a bucket of hostLatency: fixed log buckets, atomic
// counters, no allocation and no lock per command.
//
// Control: while a pair copies, its guard goroutine (owned by copyAll)
// wakes every guardTick, takes the counts of the source and target LUNs
// since the last tick and computes their p99. With a bound set (the
// pair's max_host_latency, else the server's) it sets the pair's copy
// rate: a copy starts at guardStartFloors times the floor until the first
// tick has looked at the hosts; then multiplicative decrease in
// proportion to how far p99 is above the bound (down to a sixteenth per
// tick), an eighth more plus the floor per tick while p99 is below 80 %
// of the bound (slowly: the page cache writes back what a fast copy
// dirtied long after it), hold in between. The rate
// never goes below the floor (1 MB/s or 2 % of the limit, so that the
// copy always progresses) nor above the speed level and cap; a tick with
// fewer than guardMinOps host commands means no host I/O to protect: the
// guard lets go (full speed). The rate reaches the copier's token bucket
// through guardedRate (throttle.go).

const (
	// latBuckets: 4 linear buckets of 1.024 µs, then 4 per power of two
	// up to 2^24 µs (about 17 s); the last one takes everything above.
	latBuckets = 4 + 4*22
	// guardTick is the controller's period.
	guardTick = 250 * time.Millisecond
	// guardMinOps host commands in a tick make "host I/O".
	guardMinOps = 8
	// guardFloorBps is the lowest copy rate the guard sets (also at
	// least guardFloorShare of the limit).
	guardFloorBps   = 1_000_000
	guardFloorShare = 50 // 2 %
	// guardTopBps stands for "no limit" (speed highest, no cap): the
	// guard's ceiling there; reaching it lets go.
	guardTopBps = 4_000_000_000
	// guardStartFloors: the rate of a guarded copy before its first
	// look at the hosts, in floors.
	guardStartFloors = 8
)

// hostLatency is a LUN's histogram of host command service times.
type hostLatency struct {
	n [latBuckets]atomic.Uint64
}

// latBucket is the bucket of d.
func latBucket(d time.Duration) int {
	if d < 0 {
		d = 0
	}
	us := uint64(d) >> 10
	if us < 4 {
		return int(us)
	}
	e := bits.Len64(us) - 1 // ≥ 2
	i := 4 + (e-2)*4 + int((us>>(e-2))&3)
	return min(i, latBuckets-1)
}

// latUpper is the upper bound of bucket i.
func latUpper(i int) time.Duration {
	if i < 4 {
		return time.Duration(uint64(i+1) << 10)
	}
	e, sub := (i-4)/4+2, (i-4)%4
	return time.Duration(uint64(4+sub+1) << (e - 2) << 10)
}

func (h *hostLatency) observe(d time.Duration) { h.n[latBucket(d)].Add(1) }

// latCounts is a snapshot of a histogram's counters.
type latCounts [latBuckets]uint64

func (h *hostLatency) snapshot(out *latCounts) {
	for i := range h.n {
		out[i] = h.n[i].Load()
	}
}

// quantile returns the upper bound of the bucket holding quantile q of
// the commands counted in cur minus prev (summed over the pairs of
// windows given), and how many there were.
func quantile(q float64, windows ...[2]*latCounts) (time.Duration, uint64) {
	var diff latCounts
	var total uint64
	for _, w := range windows {
		for i := range diff {
			d := w[0][i] - w[1][i]
			diff[i] += d
			total += d
		}
	}
	if total == 0 {
		return 0, 0
	}
	want := uint64(q*float64(total) + 0.999999)
	var cum uint64
	for i, c := range diff {
		cum += c
		if cum >= want {
			return latUpper(i), total
		}
	}
	return latUpper(latBuckets - 1), total
}

// ObserveHostLatency records the service time of one host command of
// this LUN (target.HostLatencyObserver).
func (e *lunEntry) ObserveHostLatency(d time.Duration) { e.lat.observe(d) }

// guardView is what the guard last decided, for status.
type guardView struct {
	bound time.Duration // 0: no guard
	rate  int64         // the rate it holds the copy to; 0: not held back
	p99   time.Duration // host p99 over the last tick (0: no host I/O)
	ops   uint64        // host commands in the last tick
	why   string
}

// hostLatencyBound is the pair's bound: its own, else the server's; 0
// when none (a negative own bound switches the server's off).
func (p *pair) hostLatencyBound() time.Duration {
	p.mu.Lock()
	own := time.Duration(p.mu.rec.MaxHostLatencyNS)
	p.mu.Unlock()
	switch {
	case own > 0:
		return own
	case own < 0:
		return 0
	}
	return max(p.m.opts.MaxHostLatency, 0)
}

// limitBps is the rate the speed level and cap allow (0: unlimited).
func (p *pair) limitBps() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.scheduledRateLocked() // schedule_window.go: the window's or the pair's own
}

// runGuard starts the pair's guard for a run of the copy and returns its
// stop (which waits for it and gives the bucket back its limit). Its
// ticker also refreshes the look at the source's extents that status
// uses for the bytes still to copy (pairstatus.go).
func (p *pair) runGuard(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	g := &guard{p: p}
	g.start() // before the copy takes its first tokens
	p.lookAllocated()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(guardTick)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				g.tick()
				if i%int(allocRefresh/guardTick) == 0 {
					p.lookAllocated()
				}
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		p.guard.Store(nil)
		p.bucket.setRate(guardedRate(p.limitBps(), 0))
	}
}

// guard is one run of the controller; only its goroutine touches it.
type guard struct {
	p          *pair
	prevS      latCounts
	prevT      latCounts
	prevMoved  int64
	prevAt     time.Time
	rate       int64 // 0: not holding the copy back
	appliedFor [2]int64
}

func (g *guard) start() {
	if bound := g.p.hostLatencyBound(); bound > 0 {
		limit := g.p.limitBps()
		ceiling := limit
		if ceiling <= 0 {
			ceiling = guardTopBps
		}
		g.rate = min(ceiling, guardStartFloors*guardFloor(limit))
		g.p.guard.Store(&guardView{bound: bound, rate: g.rate, why: "held back: starting, host p99 not measured yet"})
		g.appliedFor = [2]int64{limit, g.rate}
		g.p.bucket.setRate(guardedRate(limit, g.rate))
	}
	g.p.src.lat.snapshot(&g.prevS)
	g.p.tgt.lat.snapshot(&g.prevT)
	g.prevMoved = g.p.dataBytes.Load() + g.p.recopyBytes.Load()
	g.prevAt = time.Now()
}

func (g *guard) tick() {
	p := g.p
	var curS, curT latCounts
	p.src.lat.snapshot(&curS)
	p.tgt.lat.snapshot(&curT)
	moved := p.dataBytes.Load() + p.recopyBytes.Load()
	now := time.Now()
	movedBps := float64(moved-g.prevMoved) / max(now.Sub(g.prevAt).Seconds(), 1e-3)
	p99, ops := quantile(0.99, [2]*latCounts{&curS, &g.prevS}, [2]*latCounts{&curT, &g.prevT})
	g.prevS, g.prevT, g.prevMoved, g.prevAt = curS, curT, moved, now

	bound := p.hostLatencyBound()
	limit := p.limitBps()
	v := &guardView{bound: bound, p99: p99, ops: ops}
	if ops < guardMinOps {
		v.p99 = 0
	}
	g.rate, v.why = g.decide(bound, limit, v.p99, ops, movedBps)
	v.rate = g.rate
	p.guard.Store(v)
	if g.appliedFor != [2]int64{limit, g.rate} {
		g.appliedFor = [2]int64{limit, g.rate}
		p.bucket.setRate(guardedRate(limit, g.rate))
	}
}

// decide is the control law: the new guard rate (0: not held back) and
// why, from the bound, the limit (0: none), the host p99 of the tick (0:
// no host I/O), the number of host commands and the copy's rate.
func (g *guard) decide(bound time.Duration, limit int64, p99 time.Duration, ops uint64, movedBps float64) (int64, string) {
	if bound <= 0 {
		return 0, ""
	}
	if ops < guardMinOps {
		return 0, fmt.Sprintf("no host I/O: full speed, bound host p99 %s", fmtLat(bound))
	}
	ceiling := limit
	if ceiling <= 0 {
		ceiling = guardTopBps
	}
	floor := min(guardFloor(limit), ceiling)
	cur := g.rate
	if cur == 0 {
		// Start from what the copy really moves, not from the ceiling.
		cur = min(ceiling, max(floor, int64(movedBps)))
		if p99 <= bound {
			return 0, fmt.Sprintf("host p99 %s <= %s: full speed", fmtLat(p99), fmtLat(bound))
		}
	}
	switch {
	case p99 > bound:
		f := min(0.75, max(1.0/16, float64(bound)/float64(p99)))
		cur = int64(float64(cur) * f)
	case p99 < bound*8/10:
		cur += cur/8 + floor
	}
	cur = min(max(cur, floor), ceiling)
	if cur >= ceiling && p99 <= bound {
		return 0, fmt.Sprintf("host p99 %s <= %s: full speed", fmtLat(p99), fmtLat(bound))
	}
	if p99 > bound {
		return cur, fmt.Sprintf("held back: host p99 %s > %s", fmtLat(p99), fmtLat(bound))
	}
	return cur, fmt.Sprintf("held back: host p99 %s <= %s, speeding up", fmtLat(p99), fmtLat(bound))
}

// guardFloor is the lowest rate the guard sets under a limit (0: none).
func guardFloor(limit int64) int64 {
	return max(int64(guardFloorBps), limit/guardFloorShare)
}

// fmtLat prints a latency in ms with one decimal ("4.1 ms").
func fmtLat(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// guardRate is the rate the guard holds the copy to now (0: none).
func (p *pair) guardRate() int64 {
	if g := p.guard.Load(); g != nil {
		return g.rate
	}
	return 0
}

// guardStatus fills in the throttle fields of the pair's status.
func (p *pair) guardStatus(s *PairStatus) {
	if s.State != StateCopying.String() {
		// Only a copy has a rate; a queued, synced or paused pair
		// shows its bound alone.
		s.HostLatencyBound = p.hostLatencyBound()
		return
	}
	s.HostLatencyBound = p.hostLatencyBound()
	s.EffectiveBps = p.bucket.rate()
	if g := p.guard.Load(); g != nil && g.bound > 0 {
		s.HostP99 = g.p99
		s.Throttle = g.why
	}
}

// checkHostLatency refuses a host-latency bound outside 100µs..10s (0 and
// negative values mean "the server's" and "off").
func checkHostLatency(obj string, d time.Duration) error {
	if d > 0 && (d < 100*time.Microsecond || d > 10*time.Second) {
		return refuse(ErrInvalid, obj, "max host latency %v: want a duration between 100us and 10s (0: the server's, off: none)", d)
	}
	return nil
}

// ParseHostLatency parses a host-latency bound for obj: a Go duration
// between 100µs and 10s, "off" (none, even if the server has a default:
// returned as -1) or "" / "0" (the server's default).
func ParseHostLatency(obj, s string) (time.Duration, error) {
	switch s {
	case "", "0":
		return 0, nil
	case "off", "none":
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, refuse(ErrInvalid, obj, "max host latency %q: want a duration such as 2ms, or off", s)
	}
	return d, checkHostLatency(obj, d)
}

// HostLatencyString is d as ParseHostLatency reads it ("" for 0).
func HostLatencyString(d time.Duration) string {
	switch {
	case d == 0:
		return ""
	case d < 0:
		return "off"
	}
	return d.String()
}
