package target

import (
	"encoding/binary"
	"testing"
)

// TestMaskAndReadOnly: REPORT LUNS and I/O follow the mapping mask; a
// read-only mapping answers writes with DATA PROTECT and sets MODE
// SENSE's WP bit.
func TestMaskAndReadOnly(t *testing.T) {
	s, _ := twoLUNTarget(t, true, true)
	a := openNexus(t, s, "iqn.2024-01.org.lmtgt:a", 1)
	b := openNexus(t, s, "iqn.2024-01.org.lmtgt:b", 2)
	ca := exec(a, 0, reportLUNsCDB(64), nil, 64)
	cb := exec(b, 0, reportLUNsCDB(64), nil, 64)
	mustGood(t, ca)
	mustGood(t, cb)
	if got := binary.BigEndian.Uint32(data(ca)); got != 16 {
		t.Fatalf("REPORT LUNS for a (mapped): list length %d, want 16 (LUN 0 and 1)", got)
	}
	if got := binary.BigEndian.Uint32(data(cb)); got != 8 {
		t.Fatalf("REPORT LUNS for b (masked from LUN 1): list length %d, want 8", got)
	}
	mustSense(t, exec(b, 1, cdb16(0x88, 0, 1, 0), nil, 512), keyIllegalRequest, ascLUNNotSupported)

	mustSense(t, exec(a, 1, cdb16(0x8a, 0, 1, 0), make([]byte, 512), 0), keyDataProtect, ascWriteProtected)
	mustSense(t, exec(a, 1, unmapCDB(24), unmapParams([2]uint64{0, 8}), 0), keyDataProtect, ascWriteProtected)
	mustGood(t, exec(a, 1, cdb16(0x88, 0, 1, 0), nil, 512))
	ms := exec(a, 1, []byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
	mustGood(t, ms)
	if data(ms)[2]&0x80 == 0 {
		t.Fatalf("MODE SENSE(6) of a read-only mapping: device-specific parameter %#x, want WP set", data(ms)[2])
	}
	ms = exec(a, 0, []byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
	mustGood(t, ms)
	if data(ms)[2]&0x80 != 0 {
		t.Fatal("MODE SENSE(6) of a writable mapping has WP set")
	}
}

// TestMaskChangeLive: masking a LUN away from an initiator whose session
// is open takes effect at its next command (LOGICAL UNIT NOT SUPPORTED)
// and raises REPORTED LUNS DATA HAS CHANGED on the LUNs it still sees.
func TestMaskChangeLive(t *testing.T) {
	v0, v1 := newTestVolume(t, "m0", 4<<20), newTestVolume(t, "m1", 4<<20)
	l0, l1 := testLUN("M0", 0, v0, 512), testLUN("M1", 1, v1, 512)
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{l0, l1}})
	b := openNexus(t, s, "iqn.2024-01.org.lmtgt:b", 1)
	mustGood(t, exec(b, 1, cdb16(0x88, 0, 1, 0), nil, 512))

	l1.Initiators = []string{"iqn.2024-01.org.lmtgt:a"}
	if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: []LUN{l0, l1}}}); err != nil {
		t.Fatal(err)
	}
	mustSense(t, exec(b, 1, cdb16(0x88, 0, 1, 0), nil, 512), keyIllegalRequest, ascLUNNotSupported)
	mustSense(t, exec(b, 0, cdb16(0x88, 0, 1, 0), nil, 512), keyUnitAttention, ascReportedLUNsDataChanged)
	c := exec(b, 0, reportLUNsCDB(64), nil, 64)
	mustGood(t, c)
	if got := binary.BigEndian.Uint32(data(c)); got != 8 {
		t.Fatalf("REPORT LUNS after masking LUN 1 away: list length %d, want 8", got)
	}
}
