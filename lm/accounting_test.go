package lm

import (
	"testing"
	"time"
)

// The copy of a thin LUN counts what it really moves (issue 13): a sparse
// 1 TiB source holding 1 GiB of data reports 1 GiB copied and the rest
// skipped (holes, plus one allocated all-zero chunk), while the progress
// (done) still covers the whole LUN. Before the accounting fix,
// copied_bytes was the progress: 1 TiB.
func TestCopyAccountingSparse1TiB(t *testing.T) {
	const (
		tib  = int64(1) << 40
		gib  = int64(1) << 30
		data = gib
	)
	e := newEnv(t, Options{}, false)
	l := e.lun("src", tib)
	e.lun("tgt", tib)
	h := e.handle(l)
	// 1024 chunks of 1 MiB of data, one every GiB, and one allocated
	// chunk of zeros (written, so it is an extent, but not transferred).
	b := make([]byte, mib)
	for i := int64(0); i < data/mib; i++ {
		pattern(b, i, 1)
		if _, err := h.WriteAt(b, i*gib); err != nil {
			t.Fatal(err)
		}
	}
	zero := make([]byte, mib)
	if _, err := h.WriteAt(zero, 5*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	// While it copies, what remains is measured in allocated bytes, not
	// in the LUN's logical rest (once the copy has looked at the extents).
	var st PairStatus
	if !poll(time.Minute, func() bool {
		st, _ = e.m.Pair("src")
		return (st.State == StateCopying.String() && st.RemainingBytes <= data+mib) || st.State == StateSynced.String()
	}) {
		t.Errorf("copying: remaining %d bytes, want at most the %d allocated: %+v", st.RemainingBytes, data+mib, st)
	}
	st = e.waitState("src", StateSynced, 5*time.Minute)
	t.Logf("synced: copied %d, skipped %d, done %d of %d", st.CopiedBytes, st.SkippedBytes, st.DoneBytes, st.TotalBytes)
	if st.CopiedBytes != data {
		t.Errorf("copied_bytes %d, want %d (the data really moved)", st.CopiedBytes, data)
	}
	if st.SkippedBytes != tib-data {
		t.Errorf("skipped_bytes %d, want %d (holes and the zero chunk)", st.SkippedBytes, tib-data)
	}
	if st.DoneBytes != tib || st.TotalBytes != tib {
		t.Errorf("done %d of %d, want the whole LUN (%d)", st.DoneBytes, st.TotalBytes, tib)
	}
	if st.RemainingBytes != 0 || st.ETASeconds != 0 {
		t.Errorf("synced with %d bytes remaining, ETA %ds", st.RemainingBytes, st.ETASeconds)
	}
	// Spot check the data on the target.
	tv := e.rawVolume("tgt")
	got := make([]byte, mib)
	for _, i := range []int64{0, 511, 1023} {
		if _, err := tv.ReadAt(got, i*gib); err != nil {
			t.Fatal(err)
		}
		pattern(b, i, 1)
		if string(got) != string(b) {
			t.Fatalf("target chunk at %d GiB differs from the source", i)
		}
	}
}
