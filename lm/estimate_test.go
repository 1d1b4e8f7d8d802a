package lm

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A session's pairs copy max-active at a time, in order, each on the
// first free slot.
func TestSessionDuration(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		ds    []time.Duration
		slots int
		want  time.Duration
	}{
		{nil, 2, 0},
		{[]time.Duration{3 * s, 1 * s, 1 * s}, 0, 3 * s},
		{[]time.Duration{3 * s, 1 * s, 1 * s}, 1, 5 * s},
		{[]time.Duration{3 * s, 1 * s, 1 * s, 2 * s}, 2, 4 * s},
	} {
		var t0 time.Time
		got := sessionEnd(t0, len(c.ds), c.slots, func(i int, _ time.Time) time.Duration { return c.ds[i] }).Sub(t0)
		if got != c.want {
			t.Errorf("sessionEnd of %v on %d slots: %v, want %v", c.ds, c.slots, got, c.want)
		}
	}
}

// A session dry run checks every pair as the create does (the same
// refusal), estimates each from its allocated bytes and the rate, and
// creates nothing; the real session keeps each pair's estimate.
func TestSessionDryRun(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 4}, false)
	const size = 16 * mib
	for _, n := range []string{"a", "b"} {
		l := e.lun(n, size)
		e.lun(n+"2", size)
		fill(t, e.handle(l), size, 4, 1) // a quarter of the runs hold data
	}
	e.lun("tiny", mib)
	req := SessionRequest{Name: "w", Speed: SpeedHighest, MaxMBps: 10, MaxActive: 1, DryRun: true,
		Pairs: []PairRequest{{Source: "a", Target: "a2"}, {Source: "b", Target: "b2"}}}

	bad := req
	bad.Pairs = []PairRequest{{Source: "a", Target: "a2"}, {Source: "b", Target: "tiny"}}
	_, dryErr := e.m.CreateSession(bad)
	bad.DryRun = false
	_, realErr := e.m.CreateSession(bad)
	if dryErr == nil || realErr == nil || dryErr.Error() != realErr.Error() || !errors.Is(dryErr, ErrInvalid) {
		t.Fatalf("refusals differ: dry run %v, create %v", dryErr, realErr)
	}

	st, err := e.m.CreateSession(req)
	if err != nil {
		t.Fatal(err)
	}
	if !st.DryRun || len(st.Pairs) != 2 {
		t.Fatalf("dry run answer %+v", st)
	}
	const alloc = size / 4
	for _, p := range st.Pairs {
		if p.Estimate == nil || p.Estimate.Bytes != alloc || p.Estimate.RateBps != 10_000_000 {
			t.Fatalf("pair %s: estimate %+v, want %d bytes at 10 MB/s", p.Source, p.Estimate, alloc)
		}
	}
	one := time.Duration(float64(alloc) / 10e6 * float64(time.Second))
	if st.EstimateBytes != 2*alloc || st.EstimateDuration != 2*one {
		t.Errorf("session estimate %v for %d bytes, want %v (max-active 1) for %d", st.EstimateDuration, st.EstimateBytes, 2*one, 2*alloc)
	}
	if len(e.m.Sessions()) != 0 || len(e.m.Pairs()) != 0 {
		t.Fatalf("the dry run created something: %v %v", e.m.Sessions(), e.m.Pairs())
	}

	req.DryRun = false
	req.MaxMBps = 0
	if _, err := e.m.CreateSession(req); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		p := e.waitState(n, StateSynced, 30*time.Second)
		if p.EstimateBytes != alloc || p.ActualDuration <= 0 {
			t.Errorf("pair %s keeps estimate %v for %d bytes, actual %v", n, p.EstimateDuration, p.EstimateBytes, p.ActualDuration)
		}
	}
}

// The copy is simulated through the windows: a window that halves the
// rate for its first 5 s makes a copy that needs 10 s at the pair's own
// rate take 12.5 s (25 MB at 5 MB/s, then 75 MB at 10 MB/s); all day, it
// doubles it. A start time ahead is waited for first, and the windows
// are read from there.
func TestEstimateThroughWindows(t *testing.T) {
	at := func(h, m, s int) time.Time { return time.Date(2026, 1, 5, h, m, s, 0, time.Local) }
	half := Window{Start: 10 * time.Hour, End: 10*time.Hour + 5*time.Second, Speed: SpeedLow, MaxMBps: 5}
	for _, c := range []struct {
		name          string
		windows       []Window
		startAt, now  time.Time
		want, wait    time.Duration
		crossed       int
		rate, average int64
	}{
		{"no window", nil, time.Time{}, at(10, 0, 0), 10 * time.Second, 0, 0, 10e6, 10e6},
		{"half for 5 s", []Window{half}, time.Time{}, at(10, 0, 0), 12500 * time.Millisecond, 0, 1, 5e6, 8e6},
		{"half all day", []Window{{Speed: SpeedLow, MaxMBps: 5}}, time.Time{}, at(10, 0, 0), 20 * time.Second, 0, 0, 5e6, 5e6},
		{"window passed", []Window{half}, time.Time{}, at(10, 0, 5), 10 * time.Second, 0, 0, 10e6, 10e6},
		{"start at the window", []Window{half}, at(10, 0, 0), at(9, 0, 0), 12500 * time.Millisecond, time.Hour, 1, 5e6, 8e6},
		{"start after the window", []Window{half}, at(10, 0, 5), at(10, 0, 0), 10 * time.Second, 5 * time.Second, 0, 10e6, 10e6},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := Estimate{Bytes: 100e6, LimitBps: 10e6, LimitedBy: LimitedByCap, ReadBps: 400e6, ownLimit: 10e6, windows: c.windows}
			e.schedule(c.startAt, c.now)
			e.describe()
			if e.Duration != c.want || e.Wait != c.wait || e.Boundaries != c.crossed || e.RateBps != c.rate || e.AverageBps != c.average {
				t.Fatalf("estimate %v (wait %v, %d boundaries, rate %d, average %d), want %v (wait %v, %d, %d, %d); basis %q",
					e.Duration, e.Wait, e.Boundaries, e.RateBps, e.AverageBps, c.want, c.wait, c.crossed, c.rate, c.average, e.Basis)
			}
			if !e.Finish.Equal(c.now.Add(c.wait + c.want)) {
				t.Fatalf("finish %v, want %v", e.Finish, c.now.Add(c.wait+c.want))
			}
			if c.crossed > 0 && !strings.Contains(e.Basis, "1 window boundaries crossed, 8.0 MB/s on average") {
				t.Fatalf("basis %q does not say the windows' effect", e.Basis)
			}
		})
	}
	// A session's second pair waits for the slot: it starts after the
	// window and copies at the full rate (12.5 s + 10 s).
	e := Estimate{Bytes: 100e6, LimitBps: 10e6, ownLimit: 10e6, windows: []Window{half}}
	end := sessionEnd(at(10, 0, 0), 2, 1, func(_ int, t time.Time) time.Duration { d, _, _ := e.copyFrom(t); return d })
	if got := end.Sub(at(10, 0, 0)); got != 22500*time.Millisecond {
		t.Fatalf("session of two pairs through the window: %v, want 22.5s", got)
	}
}

// A dry run reads the windows and the start time of the request: a
// window in force all day that halves the cap doubles the estimate, and
// a start time an hour ahead is waited for first; the session's estimate
// is its pairs' schedule from its start time.
func TestDryRunWindowsAndStart(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 4}, false)
	const size = 16 * mib
	for _, n := range []string{"a", "b"} {
		l := e.lun(n, size)
		e.lun(n+"2", size)
		fill(t, e.handle(l), size, 4, 1)
	}
	base := PairRequest{Source: "a", Target: "a2", Speed: SpeedHighest, MaxMBps: 10, DryRun: true}
	plain, err := e.m.CreatePair(base)
	if err != nil {
		t.Fatal(err)
	}
	win := base
	win.Windows = []Window{{Speed: SpeedLow, MaxMBps: 5}} // 00:00-00:00: all day
	win.StartAt = time.Now().Add(time.Hour)
	halved, err := e.m.CreatePair(win)
	if err != nil {
		t.Fatal(err)
	}
	p, h := plain.Estimate, halved.Estimate
	if p == nil || h == nil || p.RateBps != 10e6 || h.RateBps != 5e6 || h.Duration != 2*p.Duration || p.Duration == 0 {
		t.Fatalf("estimates %+v and with the window %+v: want the rate halved and the duration doubled", p, h)
	}
	if p.Wait != 0 || h.Wait < 59*time.Minute || h.Wait > time.Hour || !h.Start.Equal(win.StartAt) || !h.Finish.Equal(win.StartAt.Add(h.Duration)) {
		t.Fatalf("start: without %v (wait %v), with %v (wait %v, finish %v); want the hour waited first", p.Start, p.Wait, h.Start, h.Wait, h.Finish)
	}
	if !strings.HasPrefix(h.Basis, "window 00:00-00:00=low,max-mbps=5: max_mbps 5.0 MB/s") {
		t.Fatalf("basis %q does not name the window", h.Basis)
	}

	sreq := SessionRequest{Name: "w", Speed: SpeedHighest, MaxMBps: 10, MaxActive: 1, DryRun: true,
		Pairs: []PairRequest{{Source: "a", Target: "a2"}, {Source: "b", Target: "b2"}}}
	sreq.Windows, sreq.StartAt = win.Windows, win.StartAt
	st, err := e.m.CreateSession(sreq)
	if err != nil {
		t.Fatal(err)
	}
	if st.EstimateDuration != 2*h.Duration || st.EstimateWait < 59*time.Minute || st.EstimateWait > time.Hour {
		t.Fatalf("session estimate %v after %v, want %v after about an hour", st.EstimateDuration, st.EstimateWait, 2*h.Duration)
	}
	if len(e.m.Pairs()) != 0 || len(e.m.Sessions()) != 0 {
		t.Fatal("a dry run created something")
	}
}
