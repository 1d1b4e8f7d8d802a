package lm

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Every latency falls in the bucket whose bounds hold it.
func TestLatencyBuckets(t *testing.T) {
	for d := time.Duration(0); d < 20*time.Second; d = d*9/8 + 137 {
		i := latBucket(d)
		if i < latBuckets-1 && d >= latUpper(i) {
			t.Fatalf("%v in bucket %d whose upper bound is %v", d, i, latUpper(i))
		}
		if i > 0 && d < latUpper(i-1) {
			t.Fatalf("%v in bucket %d, below the bound of bucket %d (%v)", d, i, i-1, latUpper(i-1))
		}
	}
	var h hostLatency
	for range 990 {
		h.observe(100 * time.Microsecond)
	}
	for range 10 {
		h.observe(5 * time.Millisecond)
	}
	var zero, cur latCounts
	h.snapshot(&cur)
	p99, n := quantile(0.99, [2]*latCounts{&cur, &zero})
	if n != 1000 || p99 < 100*time.Microsecond || p99 > 130*time.Microsecond {
		t.Errorf("p99 of 990×100µs + 10×5ms = %v over %d, want ~100µs over 1000", p99, n)
	}
	h.observe(5 * time.Millisecond)
	h.snapshot(&cur)
	if p99, _ := quantile(0.99, [2]*latCounts{&cur, &zero}); p99 < 5*time.Millisecond || p99 > 6*time.Millisecond {
		t.Errorf("p99 with 11 of 1001 at 5 ms = %v, want ~5 ms", p99)
	}
}

// The control law: no host I/O lets go; over the bound it slows down in
// proportion, never below the floor; under it, it speeds up and lets go
// at the limit; it never exceeds the speed level and cap.
func TestGuardDecide(t *testing.T) {
	const bound = 2 * time.Millisecond
	var g guard
	if r, why := g.decide(bound, 50_000_000, 0, 0, 40e6); r != 0 || !strings.Contains(why, "no host I/O") {
		t.Fatalf("no host I/O: rate %d (%s), want 0 (full speed)", r, why)
	}
	if r, _ := g.decide(bound, 50_000_000, time.Millisecond, 1000, 40e6); r != 0 {
		t.Fatalf("p99 under the bound at full speed: rate %d, want 0", r)
	}
	// Over the bound: starts from the measured rate (40 MB/s) and cuts.
	r, why := g.decide(bound, 50_000_000, 8*time.Millisecond, 1000, 40e6)
	if r != 10_000_000 || !strings.Contains(why, "held back: host p99 8.0 ms > 2.0 ms") {
		t.Fatalf("p99 4x the bound: rate %d (%s), want 10 MB/s and the reason", r, why)
	}
	for range 20 {
		g.rate = r
		r, _ = g.decide(bound, 50_000_000, 8*time.Millisecond, 1000, 40e6)
	}
	if r != 1_000_000 {
		t.Fatalf("held over the bound: rate %d, want the floor 1 MB/s", r)
	}
	// A cap of 200 MB/s: the floor is 2 % of it.
	g.rate = 5_000_000
	if r, _ := g.decide(bound, 200_000_000, 8*time.Millisecond, 1000, 0); r != 4_000_000 {
		t.Fatalf("floor with a 200 MB/s limit: %d, want 4 MB/s", r)
	}
	// Under 80 % of the bound it speeds up until the limit, then lets go.
	g.rate = 1_000_000
	for i := 0; ; i++ {
		r, _ := g.decide(bound, 50_000_000, time.Millisecond, 1000, 0)
		if r > 50_000_000 {
			t.Fatalf("rate %d above the limit", r)
		}
		if r == 0 {
			break
		}
		if r <= g.rate || i > 50 {
			t.Fatalf("step %d: rate %d after %d: not speeding up", i, r, g.rate)
		}
		g.rate = r
	}
	// Between 80 % and 100 % of the bound it holds.
	g.rate = 7_000_000
	if r, _ := g.decide(bound, 50_000_000, 1900*time.Microsecond, 1000, 0); r != 7_000_000 {
		t.Fatalf("p99 just under the bound: %d, want held at 7 MB/s", r)
	}
	// No limit (highest): the floor is 1 MB/s, the ceiling guardTopBps.
	g.rate = 0
	if r, _ := g.decide(bound, 0, 20*time.Millisecond, 1000, 800e6); r != 80_000_000 {
		t.Fatalf("highest, p99 10x the bound: %d, want 800 MB/s cut to a tenth", r)
	}
}

// A copying pair with a bound follows the host latency its LUNs report:
// held back to the floor while the host commands are slow, back to its
// limit when the host goes quiet, the reason shown in its status.
func TestGuardHoldsBackCopy(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(64 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	h := e.handle(l)
	fill(t, h, size, 1, 1)
	// 10 MB/s (low): about 6 s for 64 MiB, time enough to look.
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedLow,
		MaxHostLatency: 2 * time.Millisecond, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	obs := h.(interface{ ObserveHostLatency(time.Duration) })
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() { // the "host": 64 slow commands a millisecond until told to stop
		defer close(fed)
		pace := time.NewTicker(time.Millisecond)
		defer pace.Stop()
		for {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			for range 64 {
				obs.ObserveHostLatency(10 * time.Millisecond)
			}
		}
	}()
	var st PairStatus
	ok := poll(20*time.Second, func() bool {
		st, _ = e.m.Pair("src")
		return st.State == "copying" && st.EffectiveBps == 1_000_000 && strings.HasPrefix(st.Throttle, "held back: host p99 10.")
	})
	close(stop)
	<-fed
	if !ok {
		t.Fatalf("slow host: not held back to the floor: %+v", st)
	}
	if st.HostP99 < 10*time.Millisecond || st.HostLatencyBound != 2*time.Millisecond {
		t.Errorf("status: host p99 %v bound %v", st.HostP99, st.HostLatencyBound)
	}
	if !poll(20*time.Second, func() bool {
		st, _ = e.m.Pair("src")
		return st.State != "copying" || (st.EffectiveBps == 10_000_000 && strings.Contains(st.Throttle, "no host I/O"))
	}) {
		t.Fatalf("quiet host: the copy did not get its speed back: %+v", st)
	}
	e.waitState("src", StateSynced, time.Minute)
}

// The bound in force: a pair's own, else the server's; off switches the
// server's off; set changes it at run time; sessions pass theirs to
// their pairs; all survive a restart.
func TestHostLatencyBoundSettings(t *testing.T) {
	e := newEnv(t, Options{MaxHostLatency: 5 * time.Millisecond}, false)
	for _, n := range []string{"a", "a2", "b", "b2", "c", "c2"} {
		e.lun(n, 4*mib)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "a", Target: "a2", Speed: SpeedLow}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateSession(SessionRequest{Name: "s", Speed: SpeedLow, MaxHostLatency: 3 * time.Millisecond,
		Pairs: []PairRequest{{Source: "b", Target: "b2"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "c", Target: "c2", MaxHostLatency: 50 * time.Microsecond}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a 50µs bound: %v, want refused as invalid", err)
	}
	bound := func(src string) (own, inForce time.Duration) {
		t.Helper()
		st, err := e.m.Pair(src)
		if err != nil {
			t.Fatal(err)
		}
		return st.MaxHostLatency, st.HostLatencyBound
	}
	if own, in := bound("a"); own != 0 || in != 5*time.Millisecond {
		t.Errorf("a: own %v, in force %v; want 0 and the server's 5ms", own, in)
	}
	if own, in := bound("b"); own != 3*time.Millisecond || in != 3*time.Millisecond {
		t.Errorf("b (session): own %v, in force %v; want 3ms", own, in)
	}
	off := time.Duration(-1)
	if _, err := e.m.Set("a", SetRequest{MaxHostLatency: &off}); err != nil {
		t.Fatal(err)
	}
	if _, in := bound("a"); in != 0 {
		t.Errorf("a set off: bound in force %v, want none", in)
	}
	two := 2 * time.Millisecond
	if _, err := e.m.SetSession("s", SetRequest{MaxHostLatency: &two}); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if own, in := bound("a"); own != -1 || in != 0 {
		t.Errorf("a after a restart: own %v in force %v, want off", own, in)
	}
	if own, in := bound("b"); own != two || in != two {
		t.Errorf("b after session set and a restart: own %v in force %v, want 2ms", own, in)
	}
	if st, err := e.m.Session("s"); err != nil || st.MaxHostLatency != two {
		t.Errorf("session after a restart: %v (%v), want 2ms", st.MaxHostLatency, err)
	}
}
