package target

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

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

// TestReadZeroCopy: a READ offered FileOK is answered with a reference
// into the LUN's file (the bytes the copy would have given), counted in
// the LUN's statistics as a copied READ is, without allocating; one not
// offered it is copied.
func TestReadZeroCopy(t *testing.T) {
	s, v := oneLUN(t, 4<<20, 512)
	want := pattern(128<<10, 5)
	if _, err := v.WriteAt(want, 8*512); err != nil {
		t.Fatal(err)
	}
	n := openNexus(t, s, "iqn.test:a", 1)
	rd := cdb10(0x28, 8, 256, 0)
	c := &iscsi.Command{LUN: 0, CDB: rd, DataIn: make([]byte, 0, len(want)), ExpectedReadLength: uint32(len(want)), FileOK: true}
	n.Execute(c)
	mustGood(t, c)
	f := c.DataInFile
	if f.Owner == nil || c.DataInLen != len(want) || f.Len != int64(len(want)) || f.Off != 8*512 {
		t.Fatalf("DataInFile %+v, DataInLen %d", f, c.DataInLen)
	}
	got := make([]byte, f.Len)
	if _, err := unix.Pread(f.Fd, got, f.Off); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("bytes through the reference differ (%v)", err)
	}
	if v.Refs() != 1 {
		t.Fatalf("%d references out, want 1", v.Refs())
	}
	f.Owner.Release()
	allocs := testing.AllocsPerRun(200, func() {
		c.DataIn, c.DataInFile = c.DataIn[:0], iscsi.FileData{}
		n.Execute(c)
		c.DataInFile.Owner.Release()
	})
	if allocs > 0 {
		t.Errorf("zero-copy read: %.1f allocations per command, want 0", allocs)
	}
	c2 := exec(n, 0, rd, nil, len(want)) // not offered: copied
	mustGood(t, c2)
	if c2.DataInFile.Owner != nil || !bytes.Equal(data(c2), want) {
		t.Fatal("a READ not offered FileOK did not get the bytes copied")
	}
	if v.Refs() != 0 {
		t.Fatalf("%d references out after every release", v.Refs())
	}
	st := s.Stats().LUNs[0]
	if reads := uint64(1 + 201 + 1); st.Reads != reads || st.ReadBytes != reads*uint64(len(want)) {
		t.Fatalf("reads %d (%d bytes), want %d of %d bytes: counted as copied reads are", st.Reads, st.ReadBytes, reads, len(want))
	}
}
