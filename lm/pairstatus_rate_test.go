package lm

import (
	"testing"
	"time"
)

// TestSyncedPairShowsNoRate: once a pair is synced nothing is copied, so
// its status shows no rate and no ETA, as a paused pair does; the rate
// sampler's last window of the copy is history (a `migration show` right
// after the sync showed "rate: 9.4 MB/s" for a pair that moved nothing).
func TestSyncedPairShowsNoRate(t *testing.T) {
	const mib = int64(1) << 20
	e := newEnv(t, Options{}, false)
	l := e.lun("src", 32*mib)
	e.lun("tgt", 32*mib)
	h := e.handle(l)
	b := make([]byte, mib)
	for i := int64(0); i < 24; i++ {
		pattern(b, i, 1)
		if _, err := h.WriteAt(b, i*mib); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedMedium, MaxMBps: 12, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	// Sample while it copies, so the sampler has windows of the copy.
	var st PairStatus
	if !poll(time.Minute, func() bool {
		st, _ = e.m.Pair("src")
		return st.State == StateSynced.String() || st.State == StateCopying.String() && st.RateBps > 0
	}) {
		t.Fatalf("no rate while copying: %+v", st)
	}
	e.waitState("src", StateSynced, time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); <-tick.C {
		st, err := e.m.Pair("src")
		if err != nil {
			t.Fatal(err)
		}
		if st.State != StateSynced.String() {
			t.Fatalf("pair left synced: %+v", st)
		}
		if st.RateBps != 0 || st.ETASeconds != 0 {
			t.Fatalf("synced pair shows rate %d B/s, ETA %ds (nothing is copied)", st.RateBps, st.ETASeconds)
		}
	}
}

// TestSummaryAverageIsCopyRate: a pair's final figures give the average
// rate of its copy (bytes over the time it was copying), not bytes over
// its whole life: a pair that copied for about a second and then waited
// synced for its split showed a fraction of the rate it copied at.
func TestSummaryAverageIsCopyRate(t *testing.T) {
	const mib = int64(1) << 20
	e := newEnv(t, Options{}, false)
	l := e.lun("src", 16*mib)
	e.lun("tgt", 16*mib)
	h := e.handle(l)
	b := make([]byte, mib)
	for i := int64(0); i < 12; i++ {
		pattern(b, i, 1)
		if _, err := h.WriteAt(b, i*mib); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedMedium, MaxMBps: 12, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Minute)
	toSynced := time.Since(start)
	// Wait synced for twice the copy's time (nothing is copied).
	idle := time.NewTimer(2 * toSynced)
	<-idle.C
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	hs, err := e.m.PairHistories("src")
	if err != nil || len(hs) != 1 || hs[0].Final == nil {
		t.Fatalf("history: %+v %v", hs, err)
	}
	f := hs[0].Final
	bytes := float64(f.DataBytes + f.RecopiedBytes)
	if min := bytes / toSynced.Seconds(); f.AvgBytesPerS < min {
		t.Errorf("average %.0f B/s over a life of %v, want at least %.0f B/s: the copy took at most %v", f.AvgBytesPerS, time.Duration(f.DurationNS), min, toSynced)
	}
	if f.CopyNS <= 0 || f.CopyNS > int64(toSynced) || f.CopyNS > f.DurationNS {
		t.Errorf("copy time %v, want above 0 and at most %v (to synced) and %v (the life)", time.Duration(f.CopyNS), toSynced, time.Duration(f.DurationNS))
	}
}
