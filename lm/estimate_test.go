package lm

import (
	"errors"
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
		if got := sessionDuration(c.ds, c.slots); got != c.want {
			t.Errorf("sessionDuration(%v, %d) = %v, want %v", c.ds, c.slots, got, c.want)
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
