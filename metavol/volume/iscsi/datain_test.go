package iscsi

import (
	"bytes"
	"os"
	"runtime"
	"testing"
)

// TestTgtDataInBuffersReused: large reads do not allocate a fresh buffer
// for every Data-In segment (the segment buffers come back to the
// session's pool once copied into the caller's buffer), and what they
// read is the LUN's data. Before the pool, every 1 MiB read allocated and
// zeroed four 256 KiB segments (1 MiB), which cost half the initiator's
// CPU time per 1 MiB read (TestBenchVsQemuImg, "initiator cpu").
func TestTgtDataInBuffersReused(t *testing.T) {
	const size = 16 << 20
	g := startTgt(t, tgtOpts{size: size})
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(g.backing, want, 0o644); err != nil {
		t.Fatal(err)
	}
	v := openT(t, g.url("", ""), Config{})
	if seg := v.Client().Params().OurMRDSL; seg >= 1<<20 {
		t.Fatalf("our MaxRecvDataSegmentLength %d: the test needs several Data-In segments per 1 MiB read", seg)
	}
	buf := make([]byte, 1<<20)
	read := func(i int) {
		off := int64(i%(size>>20)) << 20
		if _, err := v.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("read at %d: wrong data", off)
		}
	}
	for i := range 4 { // fill the pool
		read(i)
	}
	const n = 32
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range n {
		read(i)
	}
	runtime.ReadMemStats(&m1)
	per := (m1.TotalAlloc - m0.TotalAlloc) / n
	t.Logf("%d bytes allocated per 1 MiB read (%d GC cycles)", per, m1.NumGC-m0.NumGC)
	// A GC cycle empties the pool (one refill of the segments in flight),
	// and under the race detector sync.Pool drops a quarter of what is
	// put back (about 256 KiB per read here); without the pool it is at
	// least 1 MiB per read, whatever the GC.
	if per >= 512<<10 {
		t.Fatalf("%d bytes allocated per 1 MiB read: the Data-In segment buffers are not reused", per)
	}
}
