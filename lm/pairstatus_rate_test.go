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
