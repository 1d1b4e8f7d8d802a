package target

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

const testIQN = "iqn.2024-01.org.lmtgt:test"

// newTestVolume creates a real sparse file volume in t.TempDir().
func newTestVolume(t *testing.T, name string, size int64) *volume.File {
	t.Helper()
	v, err := volume.Create(filepath.Join(t.TempDir(), name), size, volume.Options{})
	if err != nil {
		t.Fatalf("create volume: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

func testLUN(id string, num uint64, v volume.Volume, bs uint32) LUN {
	var naa [16]byte
	naa[0] = 0x60
	copy(naa[8:], id)
	return LUN{Number: num, ID: id, Name: "lun-" + id, NAA: naa, Serial: "SER" + id, BlockSize: bs, Volume: v}
}

func newTestServer(t *testing.T, store ReservationStore, targets ...Target) *Server {
	t.Helper()
	s, err := New(Options{Log: zerolog.Nop(), Reservations: store})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := s.Apply(targets); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return s
}

// oneLUN builds a server with one target and one LUN (number 0) over a
// fresh sparse file.
func oneLUN(t *testing.T, size int64, bs uint32) (*Server, *volume.File) {
	t.Helper()
	v := newTestVolume(t, "lun0", size)
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("L0", 0, v, bs)}})
	return s, v
}

func openNexus(t *testing.T, s *Server, initiator string, isid byte) iscsi.Nexus {
	t.Helper()
	n, err := s.OpenNexus(iscsi.NexusInfo{Target: testIQN, Initiator: initiator, ISID: [6]byte{0x80, 0, 0, 0, 0, isid}, TSIH: uint16(isid), TPGT: 1})
	if err != nil {
		t.Fatalf("open nexus: %v", err)
	}
	t.Cleanup(n.Close)
	return n
}

// exec runs one command: out is the Data-Out, in the expected read length.
func exec(n iscsi.Nexus, lun uint64, cdb []byte, out []byte, in int) *iscsi.Command {
	c := &iscsi.Command{LUN: lun, CDB: cdb, DataOut: out, DataIn: make([]byte, 0, in),
		ExpectedReadLength: uint32(in), ExpectedWriteLength: uint32(len(out))}
	n.Execute(c)
	return c
}

func data(c *iscsi.Command) []byte { return c.DataIn[:c.DataInLen] }

// mustGood fails unless c completed with GOOD.
func mustGood(t *testing.T, c *iscsi.Command) {
	t.Helper()
	if c.Status != statusGood {
		t.Fatalf("cdb %x: status 0x%02x sense %x, want GOOD", c.CDB, c.Status, c.Sense)
	}
}

// mustSense fails unless c completed with CHECK CONDITION key/asc.
func mustSense(t *testing.T, c *iscsi.Command, key byte, code asc) {
	t.Helper()
	if c.Status != statusCheckCondition {
		t.Fatalf("cdb %x: status 0x%02x, want CHECK CONDITION %x/%04x", c.CDB, c.Status, key, code)
	}
	k, a, ok := senseKeyASC(c.Sense)
	if !ok || k != key || a != code {
		t.Fatalf("cdb %x: sense %x (key %x asc %04x), want key %x asc %04x", c.CDB, c.Sense, k, a, key, code)
	}
}

func mustConflict(t *testing.T, c *iscsi.Command) {
	t.Helper()
	if c.Status != statusReservationConflict {
		t.Fatalf("cdb %x: status 0x%02x sense %x, want RESERVATION CONFLICT", c.CDB, c.Status, c.Sense)
	}
}

// ---- CDB builders ----

func cdb10(op byte, lba uint32, n uint16, flags byte) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

func cdb16(op byte, lba uint64, n uint32, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func cdb12(op byte, lba uint32, n uint32) []byte {
	c := make([]byte, 12)
	c[0] = op
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint32(c[6:], n)
	return c
}

func cdb6(op byte, lba uint32, n byte) []byte {
	return []byte{op, byte(lba>>16) & 0x1f, byte(lba >> 8), byte(lba), n, 0}
}

func inquiryCDB(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{0x12, 0, page, byte(alloc >> 8), byte(alloc), 0}
	if evpd {
		c[1] = 1
	}
	return c
}

func rc16CDB(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x9e, 0x10
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

func lbaStatusCDB(lba uint64, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x9e, 0x12
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

func reportLUNsCDB(alloc uint32) []byte {
	c := make([]byte, 12)
	c[0] = 0xa0
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

func unmapParams(ext ...[2]uint64) []byte {
	p := make([]byte, 8+16*len(ext))
	binary.BigEndian.PutUint16(p[0:], uint16(len(p)-2))
	binary.BigEndian.PutUint16(p[2:], uint16(16*len(ext)))
	for i, e := range ext {
		binary.BigEndian.PutUint64(p[8+16*i:], e[0])
		binary.BigEndian.PutUint32(p[16+16*i:], uint32(e[1]))
	}
	return p
}

func unmapCDB(plen int) []byte {
	c := make([]byte, 10)
	c[0] = 0x42
	binary.BigEndian.PutUint16(c[7:], uint16(plen))
	return c
}

func cawCDB(lba uint64, n byte) []byte {
	c := make([]byte, 16)
	c[0] = 0x89
	binary.BigEndian.PutUint64(c[2:], lba)
	c[13] = n
	return c
}

func prinCDB(sa byte, alloc uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = 0x5e, sa
	binary.BigEndian.PutUint16(c[7:], alloc)
	return c
}

func proutCDB(sa byte, typ prType) ([]byte, func(key, saKey uint64) []byte) {
	c := make([]byte, 10)
	c[0], c[1], c[2] = 0x5f, sa, byte(typ)
	binary.BigEndian.PutUint32(c[5:], 24)
	return c, func(key, saKey uint64) []byte {
		p := make([]byte, 24)
		binary.BigEndian.PutUint64(p, key)
		binary.BigEndian.PutUint64(p[8:], saKey)
		return p
	}
}

// prout runs a PERSISTENT RESERVE OUT.
func prout(n iscsi.Nexus, sa byte, typ prType, key, saKey uint64) *iscsi.Command {
	c, p := proutCDB(sa, typ)
	return exec(n, 0, c, p(key, saKey), 0)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// allocatedBytes is the file's allocated size (st_blocks * 512).
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Blocks * 512
}

// syncCounter wraps a real volume and counts Sync calls.
type syncCounter struct {
	volume.Volume
	syncs atomic.Int64
}

func (s *syncCounter) Sync() error {
	s.syncs.Add(1)
	return s.Volume.Sync()
}

// panicky wraps a real volume and panics on reads when armed.
type panicky struct {
	volume.Volume
	armed atomic.Bool
}

func (p *panicky) ReadAt(b []byte, off int64) (int, error) {
	if p.armed.Load() {
		panic("test panic in ReadAt")
	}
	return p.Volume.ReadAt(b, off)
}

func hexdiff(a, b []byte) string {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d", i)
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("length %d vs %d", len(a), len(b))
	}
	return "equal"
}

var _ = bytes.Equal
