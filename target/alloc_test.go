package target

import "testing"

// TestReadWriteDoNotAllocate guards the hot path: READ/WRITE serve the
// transport's buffers without per-command heap allocation.
func TestReadWriteDoNotAllocate(t *testing.T) {
	s, _ := oneLUN(t, 4<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	rd := cdb10(0x28, 8, 8, 0)
	wr := cdb10(0x2a, 8, 8, 0)
	buf := make([]byte, 4096)
	c := exec(n, 0, rd, nil, 4096)
	mustGood(t, c)
	for _, tc := range []struct {
		name string
		cdb  []byte
		out  []byte
	}{{"read", rd, nil}, {"write", wr, buf}} {
		allocs := testing.AllocsPerRun(200, func() {
			c.CDB, c.DataOut, c.DataIn = tc.cdb, tc.out, c.DataIn[:0]
			n.Execute(c)
		})
		mustGood(t, c)
		if allocs > 0 {
			t.Errorf("%s: %.1f allocations per command, want 0", tc.name, allocs)
		}
	}
}

// BenchmarkExecuteRead4K measures a 4 KiB READ(10) through Execute
// (including the pread of a sparse file).
func BenchmarkExecuteRead4K(b *testing.B) {
	nx := benchNexus(b)
	c := exec(nx, 0, cdb10(0x28, 8, 8, 0), nil, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.DataIn = c.DataIn[:0]
		nx.Execute(c)
	}
}

// BenchmarkExecuteWrite4K measures a 4 KiB WRITE(10) through Execute
// (including the pwrite to a sparse file).
func BenchmarkExecuteWrite4K(b *testing.B) {
	nx := benchNexus(b)
	c := exec(nx, 0, cdb10(0x2a, 8, 8, 0), make([]byte, 4096), 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nx.Execute(c)
	}
}
