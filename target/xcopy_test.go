package target

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

// naaOf returns the NAA designation descriptor of LUN num as seen by n,
// padded to 20 bytes.
func naaOf(t *testing.T, s *Server, initiator string, isid byte, num uint64) []byte {
	t.Helper()
	n := openNexus(t, s, initiator, isid)
	c := exec(n, num, inquiryCDB(true, 0x83, 255), nil, 255)
	mustGood(t, c)
	b := data(c)
	for off := 4; off+4 <= len(b); {
		l := int(b[off+3])
		if b[off+1]&0x3f == 3 {
			out := make([]byte, 20)
			copy(out, b[off:off+4+l])
			return out
		}
		off += 4 + l
	}
	t.Fatalf("LUN %d: no NAA designator in %x", num, b)
	return nil
}

// xcopyList builds a LID1 parameter list with CSCD descriptors for desigs
// and block -> block segments {src, dst, blocks, srcLBA, dstLBA}.
func xcopyList(listID, usage byte, desigs [][]byte, bs uint32, segs ...[5]uint64) []byte {
	p := make([]byte, 16, 16+32*len(desigs)+28*len(segs))
	p[0], p[1] = listID, usage<<3
	binary.BigEndian.PutUint16(p[2:], uint16(32*len(desigs)))
	binary.BigEndian.PutUint32(p[8:], uint32(28*len(segs)))
	for _, d := range desigs {
		td := make([]byte, 32)
		td[0] = 0xe4
		copy(td[4:24], d)
		td[29], td[30], td[31] = byte(bs>>16), byte(bs>>8), byte(bs)
		p = append(p, td...)
	}
	for _, s := range segs {
		sd := make([]byte, 28)
		sd[0] = 0x02
		binary.BigEndian.PutUint16(sd[2:], 24)
		binary.BigEndian.PutUint16(sd[4:], uint16(s[0]))
		binary.BigEndian.PutUint16(sd[6:], uint16(s[1]))
		binary.BigEndian.PutUint16(sd[10:], uint16(s[2]))
		binary.BigEndian.PutUint64(sd[12:], s[3])
		binary.BigEndian.PutUint64(sd[20:], s[4])
		p = append(p, sd...)
	}
	return p
}

func xcopyCDB(plen int) []byte {
	cdb := make([]byte, 16)
	cdb[0] = 0x83
	binary.BigEndian.PutUint32(cdb[10:], uint32(plen))
	return cdb
}

// twoLUNTarget is testIQN with LUN 0 and LUN 1 (masked to initiator
// "iqn.2024-01.org.lmtgt:a" when masked), plus another target "other"
// with LUN L9.
func twoLUNTarget(t *testing.T, masked, readOnly1 bool) (*Server, [3][]byte) {
	t.Helper()
	v0, v1, v9 := newTestVolume(t, "l0", 4<<20), newTestVolume(t, "l1", 4<<20), newTestVolume(t, "l9", 4<<20)
	l1 := testLUN("L1", 1, v1, 512)
	if masked {
		l1.Initiators = []string{"iqn.2024-01.org.lmtgt:a"}
	}
	l1.ReadOnly = readOnly1
	s := newTestServer(t, nil,
		Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("L0", 0, v0, 512), l1}},
		Target{IQN: "iqn.2024-01.org.lmtgt:other", AllowAll: true, LUNs: []LUN{testLUN("L9", 0, v9, 512)}},
	)
	var d [3][]byte
	d[0] = naaOf(t, s, "iqn.2024-01.org.lmtgt:a", 90, 0)
	d[1] = naaOf(t, s, "iqn.2024-01.org.lmtgt:a", 91, 1)
	n, err := s.OpenNexus(iscsi.NexusInfo{Target: "iqn.2024-01.org.lmtgt:other", Initiator: "iqn.2024-01.org.lmtgt:a", ISID: [6]byte{0x80, 0, 0, 0, 0, 92}, TSIH: 92, TPGT: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	c := exec(n, 0, inquiryCDB(true, 0x83, 255), nil, 255)
	mustGood(t, c)
	d[2] = make([]byte, 20)
	copy(d[2], data(c)[4:4+4+16])
	return s, d
}

// TestXcopyCopiesBetweenLUNs: an EXTENDED COPY from LUN 0 to LUN 1 writes
// the blocks into LUN 1's volume; RECEIVE COPY RESULTS reports it by list
// ID on the same I_T nexus only.
func TestXcopyCopiesBetweenLUNs(t *testing.T) {
	s, d := twoLUNTarget(t, false, false)
	n := openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 1)
	want := pattern(64<<10, 7)
	mustGood(t, exec(n, 0, cdb16(0x8a, 100, 128, 0), want, 0))
	p := xcopyList(5, 0, [][]byte{d[0], d[1]}, 512, [5]uint64{0, 1, 128, 100, 300})
	mustGood(t, exec(n, 0, xcopyCDB(len(p)), p, 0))
	c := exec(n, 1, cdb16(0x88, 300, 128, 0), nil, 64<<10)
	mustGood(t, c)
	if !bytes.Equal(data(c), want) {
		t.Fatalf("LUN 1 after EXTENDED COPY: %s", hexdiff(want, data(c)))
	}
	rcr := []byte{0x84, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}
	c = exec(n, 0, rcr, nil, 64)
	mustGood(t, c)
	if b := data(c); len(b) < 12 || b[4] != 1 || binary.BigEndian.Uint16(b[5:]) != 1 || binary.BigEndian.Uint32(b[8:]) != 64 {
		t.Fatalf("COPY STATUS of list 5: %x, want completed, 1 segment, 64 KiB", b)
	}
	other := openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 2)
	mustSense(t, exec(other, 0, rcr, nil, 64), keyIllegalRequest, ascInvalidFieldInCDB)
}

// TestXcopyOverlapWithinLUN: a copy to a higher, overlapping range of the
// same LUN copies the original blocks (it runs backwards).
func TestXcopyOverlapWithinLUN(t *testing.T) {
	s, d := twoLUNTarget(t, false, false)
	n := openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 1)
	want := pattern(3<<20, 3) // three chunks: the copy crosses chunk boundaries
	mustGood(t, exec(n, 0, cdb16(0x8a, 0, 6144, 0), want, 0))
	p := xcopyList(1, 3, [][]byte{d[0]}, 512, [5]uint64{0, 0, 4096, 0, 1000})
	mustGood(t, exec(n, 0, xcopyCDB(len(p)), p, 0))
	c := exec(n, 0, cdb16(0x88, 1000, 4096, 0), nil, 2<<20)
	mustGood(t, c)
	if !bytes.Equal(data(c), want[:2<<20]) {
		t.Fatalf("overlapping copy: %s", hexdiff(want[:2<<20], data(c)))
	}
}

// TestXcopyReachability (CVE-2020-28374): a CSCD descriptor naming a LUN
// of another target, or a LUN masked from the initiator, is COPY ABORTED
// and nothing is written; a write-protected destination mapping is DATA
// PROTECT.
func TestXcopyReachability(t *testing.T) {
	s, d := twoLUNTarget(t, true, false)
	n := openNexus(t, s, "iqn.2024-01.org.lmtgt:b", 1) // LUN 1 is masked from b
	mustGood(t, exec(n, 0, cdb16(0x8a, 0, 8, 0), pattern(4096, 9), 0))
	for _, tc := range []struct {
		what   string
		desigs [][]byte
	}{
		{"into a LUN of another target", [][]byte{d[0], d[2]}},
		{"into a LUN masked from the initiator", [][]byte{d[0], d[1]}},
		{"from a LUN masked from the initiator", [][]byte{d[1], d[0]}},
	} {
		p := xcopyList(1, 0, tc.desigs, 512, [5]uint64{0, 1, 8, 0, 0})
		mustSense(t, exec(n, 0, xcopyCDB(len(p)), p, 0), keyCopyAborted, ascCopyTargetNotReachable)
	}
	a := openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 2) // a may reach LUN 1
	c := exec(a, 1, cdb16(0x88, 0, 8, 0), nil, 4096)
	mustGood(t, c)
	if !bytes.Equal(data(c), make([]byte, 4096)) {
		t.Fatal("a refused EXTENDED COPY changed the masked LUN")
	}

	s, d = twoLUNTarget(t, false, true)
	n = openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 1)
	p := xcopyList(1, 0, [][]byte{d[0], d[1]}, 512, [5]uint64{0, 1, 8, 0, 0})
	mustSense(t, exec(n, 0, xcopyCDB(len(p)), p, 0), keyDataProtect, ascWriteProtected)
	p = xcopyList(1, 0, [][]byte{d[1], d[0]}, 512, [5]uint64{0, 1, 8, 0, 0})
	mustGood(t, exec(n, 0, xcopyCDB(len(p)), p, 0)) // a read-only source may be read
}

// TestThirdPartyCopyVPD: VPD 0x8F lists EXTENDED COPY (LID1) and RECEIVE
// COPY RESULTS with the service actions served.
func TestThirdPartyCopyVPD(t *testing.T) {
	s, _ := oneLUN(t, 4<<20, 512)
	n := openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 1)
	c := exec(n, 0, inquiryCDB(true, 0x8f, 255), nil, 255)
	mustGood(t, c)
	want := []byte{0, 0x8f, 0, 12, 0, 1, 0, 8, 7, 0x83, 1, 0x00, 0x84, 2, 0x00, 0x03}
	if !bytes.Equal(data(c), want) {
		t.Fatalf("VPD 0x8F: %x, want %x", data(c), want)
	}
}

// TestXcopyReservation: a destination LUN reserved WRITE EXCLUSIVE by
// another nexus refuses the copy with RESERVATION CONFLICT, as a WRITE
// would be; RECEIVE COPY RESULTS is allowed under it.
func TestXcopyReservation(t *testing.T) {
	s, d := twoLUNTarget(t, false, false)
	holder := openNexus(t, s, "iqn.2024-01.org.lmtgt:holder", 1)
	reg, regParams := proutCDB(0x00, 0)
	mustGood(t, exec(holder, 1, reg, regParams(0, 0xabc), 0)) // REGISTER on LUN 1
	res, resParams := proutCDB(0x01, prWriteExclusive)
	mustGood(t, exec(holder, 1, res, resParams(0xabc, 0), 0)) // RESERVE LUN 1
	n := openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 2)
	p := xcopyList(1, 0, [][]byte{d[0], d[1]}, 512, [5]uint64{0, 1, 8, 0, 0})
	mustConflict(t, exec(n, 0, xcopyCDB(len(p)), p, 0))
	c := exec(n, 1, []byte{0x84, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil, 64)
	mustGood(t, c)
	if b := data(c); len(b) < 12 || b[4] != 0x02 || b[6] != 0 {
		t.Fatalf("COPY STATUS of the refused copy: %x, want completed with error, 0 segments", b)
	}
	p = xcopyList(2, 0, [][]byte{d[1], d[0]}, 512, [5]uint64{0, 1, 8, 0, 0})
	mustGood(t, exec(n, 0, xcopyCDB(len(p)), p, 0)) // reading it is allowed under WRITE EXCLUSIVE
}
