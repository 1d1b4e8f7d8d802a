package iscsi

import (
	"bytes"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
)

// TestTgtDataInBuffersReused: large reads do not allocate a fresh buffer
// for every Data-In segment, and what they read is the LUN's data. Data-In
// segments are read straight into the caller's buffer (before that, from
// a pool, and before the pool every 1 MiB read allocated and zeroed four
// 256 KiB segments, half the initiator's CPU time per 1 MiB read).
// TestTgtZeroAllocsPerCommand checks the exact count.
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
	for i := range 4 { // warm up
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
	// Copying through fresh segment buffers is at least 1 MiB per read.
	if per >= 512<<10 {
		t.Fatalf("%d bytes allocated per 1 MiB read: the Data-In segment buffers are not reused", per)
	}
}

// TestTgtNextDataHint: on a thin-provisioned LUN NextData asks GET LBA
// STATUS, and answers from the last data extent it was told about without
// another round trip (the copier asks for every chunk); an Unmap forgets
// that extent, and holes are still found.
func TestTgtNextDataHint(t *testing.T) {
	const size = 16 << 20
	g := startTgt(t, tgtOpts{size: size})
	g.Adm("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--params", "thin_provisioning=1")
	f, err := os.OpenFile(g.backing, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 4<<20), 4<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v := openT(t, g.url("", ""), Config{})
	next := func(off int64) (int64, int64, error) {
		t.Helper()
		s, e, err := v.NextData(off)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("NextData(%d): %v", off, err)
		}
		return s, e, err
	}
	if s, e, _ := next(0); s != 4<<20 || e != 8<<20 {
		t.Fatalf("NextData(0) = [%d,%d), want the data at [4 MiB, 8 MiB)", s, e)
	}
	c0 := v.Client().Stats().Commands
	if s, e, _ := next(5 << 20); s != 5<<20 || e != 8<<20 {
		t.Fatalf("NextData(5 MiB) = [%d,%d), want [5 MiB, 8 MiB)", s, e)
	}
	if c := v.Client().Stats().Commands; c != c0 {
		t.Fatalf("NextData inside the known data extent sent %d commands, want none", c-c0)
	}
	if _, _, err := next(8 << 20); !errors.Is(err, io.EOF) {
		t.Fatalf("NextData(8 MiB) past the last data: %v, want io.EOF", err)
	}
	if err := v.Unmap(4<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	c1 := v.Client().Stats().Commands
	next(6 << 20)
	if c := v.Client().Stats().Commands; c == c1 {
		t.Fatal("NextData after an Unmap answered from the old extent without asking the target")
	}
}

// TestTgtLargeReadInPieces: a read larger than readPiece goes to the
// target as pieces in flight together (Linux tgt serves 512 KiB reads at
// depth 16 faster than 1 MiB reads at depth 8), lands whole and in order
// in the caller's buffer, and a piece the target refuses is read again
// alone under the ordinary retry rules, whose error the caller gets.
// Before, a 1 MiB read was one command.
func TestTgtLargeReadInPieces(t *testing.T) {
	const size = 16 << 20
	g := startTgt(t, tgtOpts{size: size})
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*11 + i>>13)
	}
	if err := os.WriteFile(g.backing, want, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgA := fastCfg()
	cfgA.Initiator = "iqn.2026-11.org.lmtgt.test:pieces"
	v := openT(t, g.url("", ""), cfgA)
	for _, c := range []struct {
		off    int64
		n      int
		pieces int64
	}{
		{1 << 20, 1 << 20, 2},
		{3<<20 + 4096, 1<<20 + 4096, 3}, // the last piece is one block
		{5 << 20, readPiece, 1},         // not larger than a piece: whole
		{8 << 20, 8 << 20, 16},          // the most a command may carry (maxCommandBytes)
	} {
		buf := make([]byte, c.n)
		c0 := v.Client().Stats().Commands
		if _, err := v.ReadAt(buf, c.off); err != nil {
			t.Fatalf("read [%d,+%d): %v", c.off, c.n, err)
		}
		if n := v.Client().Stats().Commands - c0; n != c.pieces {
			t.Errorf("read [%d,+%d) sent %d commands, want %d pieces", c.off, c.n, n, c.pieces)
		}
		if !bytes.Equal(buf, want[c.off:c.off+int64(c.n)]) {
			t.Fatalf("read [%d,+%d): wrong data", c.off, c.n)
		}
	}

	// Another initiator takes EXCLUSIVE ACCESS: every piece ends in
	// RESERVATION CONFLICT, is read again alone, and the read fails with
	// that status (no hang, no partial success).
	cfgH := fastCfg()
	cfgH.Initiator = "iqn.2026-11.org.lmtgt.test:holder"
	h := openT(t, g.url("", ""), cfgH)
	const key = 0xc3
	if err := h.Client().PRRegister(key); err != nil {
		t.Fatal(err)
	}
	if err := h.Client().PRReserve(key, PRExclusiveAccess); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	c0 := v.Client().Stats().Commands
	if _, err := v.ReadAt(buf, 0); !IsReservationConflict(err) {
		t.Fatalf("read under another initiator's EXCLUSIVE ACCESS: %v, want RESERVATION CONFLICT", err)
	}
	if n := v.Client().Stats().Commands - c0; n != 3 {
		t.Errorf("refused 1 MiB read sent %d commands, want 3 (two pieces, the first read again alone)", n)
	}
	if err := h.Client().PRRelease(key, PRExclusiveAccess); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want[:1<<20]) {
		t.Fatalf("read after the release: %v (data equal: %v)", err, bytes.Equal(buf, want[:1<<20]))
	}
}
