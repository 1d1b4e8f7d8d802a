package target

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

const (
	iqnA = "iqn.2024-01.org.lmtgt:a"
	iqnB = "iqn.2024-01.org.lmtgt:b"
	iqnC = "iqn.2024-01.org.lmtgt:c"
)

func openNexusOn(t *testing.T, s *Server, iqn, initiator string, isid byte) iscsi.Nexus {
	t.Helper()
	n, err := s.OpenNexus(iscsi.NexusInfo{Target: iqn, Initiator: initiator, ISID: [6]byte{0x80, 0, 0, 0, 0, isid}, TSIH: uint16(isid), TPGT: 1})
	if err != nil {
		t.Fatalf("open nexus on %s: %v", iqn, err)
	}
	t.Cleanup(n.Close)
	return n
}

func rtpgCDB(format byte, alloc uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1] = 0xa3, format<<5|0x0a
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

// aluaConfig is three targets: A (group 1, port 1) and B (group 2, port 7)
// both map LUN L0 at number 0, C (group 2, port 9) maps only L1. L0 has
// the given states.
type aluaConfig struct {
	l0, l1 LUN
}

func newALUAConfig(t *testing.T) *aluaConfig {
	return &aluaConfig{
		l0: testLUN("L0", 0, newTestVolume(t, "l0", 1<<20), 512),
		l1: testLUN("L1", 0, newTestVolume(t, "l1", 1<<20), 512),
	}
}

func (ac *aluaConfig) targets(l0 GroupStates, groupB uint16) []Target {
	l0lun := ac.l0
	l0lun.ALUA = l0
	return []Target{
		{IQN: iqnA, AllowAll: true, Group: 1, RelPort: 1, LUNs: []LUN{l0lun}},
		{IQN: iqnB, AllowAll: true, Group: groupB, RelPort: 7, LUNs: []LUN{l0lun}},
		{IQN: iqnC, AllowAll: true, Group: 2, RelPort: 9, LUNs: []LUN{ac.l1}},
	}
}

// TestALUAInquiry: standard INQUIRY reports implicit ALUA (TPGS 01b) and
// VPD 0x83 carries the relative target port and the target port group of
// the port the command came through, both ahead of the SCSI name strings.
func TestALUAInquiry(t *testing.T) {
	ac := newALUAConfig(t)
	s := newTestServer(t, nil, ac.targets(nil, 2)...)
	for _, tc := range []struct {
		iqn         string
		port, group uint16
	}{{iqnA, 1, 1}, {iqnB, 7, 2}} {
		n := openNexusOn(t, s, tc.iqn, "iqn.host", 1)
		c := exec(n, 0, inquiryCDB(false, 0, 96), nil, 96)
		mustGood(t, c)
		if tpgs := data(c)[5] >> 4 & 3; tpgs != 1 {
			t.Fatalf("%s: TPGS %d, want 1 (implicit)", tc.iqn, tpgs)
		}
		c = exec(n, 0, inquiryCDB(true, 0x83, 512), nil, 512)
		mustGood(t, c)
		page := data(c)
		var rel, tpg, firstName = -1, -1, -1
		for off := 4; off+4 <= len(page); off += 4 + int(page[off+3]) {
			d := page[off:]
			switch d[1] & 0x0f {
			case 4:
				rel = int(binary.BigEndian.Uint16(d[6:]))
				if d[0]&0x0f != 1 || d[1]&0x30 != 0x10 || d[3] != 4 {
					t.Fatalf("%s: relative port designator header %x", tc.iqn, d[:4])
				}
			case 5:
				tpg = int(binary.BigEndian.Uint16(d[6:]))
				if d[0]&0x0f != 1 || d[1]&0x30 != 0x10 || d[3] != 4 {
					t.Fatalf("%s: target port group designator header %x", tc.iqn, d[:4])
				}
				if firstName >= 0 {
					t.Fatalf("%s: target port group designator after a SCSI name string", tc.iqn)
				}
			case 8:
				if firstName < 0 {
					firstName = off
				}
			}
		}
		if rel != int(tc.port) || tpg != int(tc.group) {
			t.Fatalf("%s: VPD 0x83 relative port %d group %d, want %d and %d", tc.iqn, rel, tpg, tc.port, tc.group)
		}
	}
}

// rtpgWant builds the expected REPORT TARGET PORT GROUPS descriptors.
func rtpgWant(groups ...[]uint16) []byte { // each: group, state, ports...
	var b []byte
	for _, g := range groups {
		d := make([]byte, 8)
		d[0] = byte(g[1])
		d[1] = 0x8f
		binary.BigEndian.PutUint16(d[2:], g[0])
		d[7] = byte(len(g) - 2)
		for _, p := range g[2:] {
			d = append(d, 0, 0, byte(p>>8), byte(p))
		}
		b = append(b, d...)
	}
	return b
}

// TestRTPGBytes: REPORT TARGET PORT GROUPS lists the groups that hold the
// LUN (not C's, which does not map it) with the LUN's state there and
// their ports, in both parameter data formats, truncated to the
// allocation length; other formats are refused; the same answer comes
// through every port, even one in standby.
func TestRTPGBytes(t *testing.T) {
	ac := newALUAConfig(t)
	s := newTestServer(t, nil, ac.targets(GroupStates{2: Standby}, 2)...)
	desc := rtpgWant([]uint16{1, 0, 1}, []uint16{2, 2, 7})
	for _, iqn := range []string{iqnA, iqnB} {
		n := openNexusOn(t, s, iqn, "iqn.host", 1)
		c := exec(n, 0, rtpgCDB(0, 1024), nil, 1024)
		mustGood(t, c)
		want := append([]byte{0, 0, 0, byte(len(desc))}, desc...)
		if !bytes.Equal(data(c), want) {
			t.Fatalf("%s: RTPG\n got %x\nwant %x", iqn, data(c), want)
		}
		c = exec(n, 0, rtpgCDB(1, 1024), nil, 1024)
		mustGood(t, c)
		want = append([]byte{0, 0, 0, byte(len(desc) + 4), 0x10, 0, 0, 0}, desc...)
		if !bytes.Equal(data(c), want) {
			t.Fatalf("%s: RTPG extended\n got %x\nwant %x", iqn, data(c), want)
		}
		c = exec(n, 0, rtpgCDB(0, 6), nil, 1024)
		mustGood(t, c)
		if !bytes.Equal(data(c), []byte{0, 0, 0, byte(len(desc)), 0, 0x8f}) || c.TransferLength != 6 {
			t.Fatalf("%s: RTPG alloc 6: %x (transfer length %d)", iqn, data(c), c.TransferLength)
		}
		mustSense(t, exec(n, 0, rtpgCDB(2, 1024), nil, 1024), keyIllegalRequest, ascInvalidFieldInCDB)
	}
	// L1 is held by C only.
	n := openNexusOn(t, s, iqnC, "iqn.host", 1)
	c := exec(n, 0, rtpgCDB(0, 1024), nil, 1024)
	mustGood(t, c)
	desc = rtpgWant([]uint16{2, 0, 9})
	if want := append([]byte{0, 0, 0, byte(len(desc))}, desc...); !bytes.Equal(data(c), want) {
		t.Fatalf("C: RTPG\n got %x\nwant %x", data(c), want)
	}
	// REPORT SUPPORTED OPERATION CODES knows RTPG; SET TARGET PORT GROUPS
	// (implicit ALUA only) is an unsupported opcode.
	rsoc := make([]byte, 12)
	rsoc[0], rsoc[1], rsoc[2], rsoc[3], rsoc[5] = 0xa3, 0x0c, 0x02, 0xa3, 0x0a
	binary.BigEndian.PutUint32(rsoc[6:], 64)
	c = exec(n, 0, rsoc, nil, 64)
	mustGood(t, c)
	if data(c)[1]&0x07 != 0x03 {
		t.Fatalf("RSOC for RTPG: support %x, want 3", data(c)[1])
	}
	stpg := make([]byte, 12)
	stpg[0], stpg[1] = 0xa4, 0x0a
	binary.BigEndian.PutUint32(stpg[6:], 8)
	mustSense(t, exec(n, 0, stpg, make([]byte, 8), 0), keyIllegalRequest, ascInvalidOpcode)
}

// TestALUASensePerState: through a port whose state is standby,
// unavailable or transitioning, media access gets NOT READY with the
// state's ASC while the commands hosts need to probe the path keep
// working; active/non-optimized and the other group's active/optimized
// port serve I/O.
func TestALUASensePerState(t *testing.T) {
	ac := newALUAConfig(t)
	s := newTestServer(t, nil, ac.targets(nil, 2)...)
	na := openNexusOn(t, s, iqnA, "iqn.host", 1)
	nb := openNexusOn(t, s, iqnB, "iqn.host", 2)
	write := exec(na, 0, cdb10(0x2a, 0, 1, 0), pattern(512, 3), 0)
	mustGood(t, write)

	media := [][]byte{
		cdb10(0x28, 0, 1, 0),      // READ(10)
		cdb16(0x88, 0, 1, 0),      // READ(16)
		cdb10(0x2a, 0, 1, 0),      // WRITE(10)
		{0, 0, 0, 0, 0, 0},        // TEST UNIT READY
		cdb10(0x35, 0, 0, 0),      // SYNCHRONIZE CACHE(10)
		lbaStatusCDB(0, 32),       // GET LBA STATUS
		unmapCDB(24),              // UNMAP
		{0x16, 0, 0, 0, 0, 0},     // RESERVE(6)
		{0x1b, 0, 0, 0, 1, 0},     // START STOP UNIT
		cdb10(0x2f, 0, 1, 0),      // VERIFY(10)
		cdb16(0x93, 0, 1, 0),      // WRITE SAME(16)
		cdb16(0x89, 0, 0, 0)[:16], // COMPARE AND WRITE
	}
	probes := [][]byte{
		inquiryCDB(false, 0, 96),
		inquiryCDB(true, 0x83, 255),
		reportLUNsCDB(64),
		{0x03, 0, 0, 0, 18, 0}, // REQUEST SENSE
		cdb10(0x25, 0, 0, 0),   // READ CAPACITY(10)
		rc16CDB(32),
		prinCDB(0, 64), // PR IN READ KEYS
		{0x1a, 0, 0x3f, 0, 255, 0},
		rtpgCDB(0, 256),
	}
	for _, st := range []AccessState{Standby, Unavailable, Transitioning} {
		if err := s.Apply(ac.targets(GroupStates{2: st}, 2)); err != nil {
			t.Fatal(err)
		}
		// Consume the unit attention the change raised.
		mustSense(t, exec(nb, 0, cdb10(0x28, 0, 1, 0), nil, 512), keyUnitAttention, ascAsymmetricAccessChanged)
		mustSense(t, exec(na, 0, cdb10(0x28, 0, 1, 0), nil, 512), keyUnitAttention, ascAsymmetricAccessChanged)
		for _, cdb := range media {
			var out []byte
			if cdb[0] == 0x2a || cdb[0] == 0x93 {
				out = make([]byte, 512)
			}
			if cdb[0] == 0x42 {
				out = unmapParams([2]uint64{0, 1})
			}
			if cdb[0] == 0x89 {
				continue // a CAW of 0 blocks; covered by the others
			}
			mustSense(t, exec(nb, 0, cdb, out, 512), keyNotReady, st.notReady())
		}
		for _, cdb := range probes {
			mustGood(t, exec(nb, 0, cdb, nil, 512))
		}
		// PR OUT REGISTER works through a non-active port.
		mustGood(t, prout(nb, 0x00, 0, 0, 0x1234))
		mustGood(t, prout(nb, 0x00, 0, 0x1234, 0))
		// Group 1 (port A) is still active/optimized.
		c := exec(na, 0, cdb10(0x28, 0, 1, 0), nil, 512)
		mustGood(t, c)
		if !bytes.Equal(data(c), pattern(512, 3)) {
			t.Fatalf("%s: read through the active port returned other data", st)
		}
	}
	want := map[AccessState]asc{Standby: 0x040b, Unavailable: 0x040c, Transitioning: 0x040a}
	for st, code := range want {
		if st.notReady() != code {
			t.Fatalf("%s: ASC %04x, want %04x", st, st.notReady(), code)
		}
	}

	// active/non-optimized serves I/O.
	if err := s.Apply(ac.targets(GroupStates{2: ActiveNonOptimized}, 2)); err != nil {
		t.Fatal(err)
	}
	mustSense(t, exec(nb, 0, cdb10(0x28, 0, 1, 0), nil, 512), keyUnitAttention, ascAsymmetricAccessChanged)
	c := exec(nb, 0, cdb10(0x28, 0, 1, 0), nil, 512)
	mustGood(t, c)
	if !bytes.Equal(data(c), pattern(512, 3)) {
		t.Fatal("active/non-optimized read returned other data")
	}
	mustGood(t, exec(nb, 0, cdb10(0x2a, 0, 1, 0), pattern(512, 4), 0))
}

// TestALUAUnitAttention: a state change queues ASYMMETRIC ACCESS STATE
// CHANGED on every nexus of the LUN (through every port, once), none on
// a target that does not map it and none when nothing changed; moving a
// target to another group also queues INQUIRY DATA HAS CHANGED on that
// target's nexuses. Sessions stay up throughout.
func TestALUAUnitAttention(t *testing.T) {
	ac := newALUAConfig(t)
	s := newTestServer(t, nil, ac.targets(nil, 2)...)
	na := openNexusOn(t, s, iqnA, "iqn.host", 1)
	na2 := openNexusOn(t, s, iqnA, "iqn.other", 1)
	nb := openNexusOn(t, s, iqnB, "iqn.host", 2)
	nc := openNexusOn(t, s, iqnC, "iqn.host", 3)
	tur := []byte{0, 0, 0, 0, 0, 0}
	for _, n := range []iscsi.Nexus{na, na2, nb, nc} {
		mustGood(t, exec(n, 0, tur, nil, 0))
	}

	// The same configuration again: nothing to report.
	if err := s.Apply(ac.targets(nil, 2)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []iscsi.Nexus{na, na2, nb, nc} {
		mustGood(t, exec(n, 0, tur, nil, 0))
	}

	// Group 1 goes non-optimized: every nexus of L0 hears of it, C's not.
	if err := s.Apply(ac.targets(GroupStates{1: ActiveNonOptimized}, 2)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []iscsi.Nexus{na, na2, nb} {
		mustSense(t, exec(n, 0, tur, nil, 0), keyUnitAttention, ascAsymmetricAccessChanged)
		mustGood(t, exec(n, 0, tur, nil, 0))
	}
	mustGood(t, exec(nc, 0, tur, nil, 0))

	// INQUIRY does not consume it; RTPG after it reports the new state.
	if err := s.Apply(ac.targets(GroupStates{1: ActiveNonOptimized, 2: Standby}, 2)); err != nil {
		t.Fatal(err)
	}
	mustGood(t, exec(na, 0, inquiryCDB(false, 0, 36), nil, 36))
	mustSense(t, exec(na, 0, rtpgCDB(0, 256), nil, 256), keyUnitAttention, ascAsymmetricAccessChanged)
	c := exec(na, 0, rtpgCDB(0, 256), nil, 256)
	mustGood(t, c)
	if want := rtpgWant([]uint16{1, 1, 1}, []uint16{2, 2, 7}); !bytes.Equal(data(c)[4:], want) {
		t.Fatalf("RTPG after the change: %x, want %x", data(c)[4:], want)
	}
	for _, n := range []iscsi.Nexus{na2, nb} {
		mustSense(t, exec(n, 0, tur, nil, 0), keyUnitAttention, ascAsymmetricAccessChanged)
	}
	mustGood(t, exec(nc, 0, tur, nil, 0))

	// B moves to group 3 (where L0 is active/optimized): B's nexus gets
	// INQUIRY DATA HAS CHANGED and the state change; A's only the latter.
	if err := s.Apply(ac.targets(GroupStates{1: ActiveNonOptimized, 2: Standby}, 3)); err != nil {
		t.Fatal(err)
	}
	mustSense(t, exec(nb, 0, tur, nil, 0), keyUnitAttention, ascInquiryDataChanged)
	mustSense(t, exec(nb, 0, tur, nil, 0), keyUnitAttention, ascAsymmetricAccessChanged)
	mustGood(t, exec(nb, 0, cdb10(0x28, 0, 1, 0), nil, 512))
	mustSense(t, exec(na, 0, tur, nil, 0), keyUnitAttention, ascAsymmetricAccessChanged)
	mustGood(t, exec(na, 0, tur, nil, 0))
	// C's port is still in group 2, but L1 has no state there: no change.
	mustGood(t, exec(nc, 0, tur, nil, 0))
}

// TestALUAValidation: two targets with one relative port ID, a LUN with
// different states in two targets, and a state for group 0 are refused
// and change nothing; targets without IDs get distinct ones.
func TestALUAValidation(t *testing.T) {
	ac := newALUAConfig(t)
	s := newTestServer(t, nil, ac.targets(GroupStates{2: Standby}, 2)...)
	bad := ac.targets(nil, 2)
	bad[1].RelPort = 1
	if err := s.Apply(bad); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("duplicate port: %v", err)
	}
	bad = ac.targets(GroupStates{2: Standby}, 2)
	bad[1].LUNs[0].ALUA = GroupStates{2: Unavailable}
	if err := s.Apply(bad); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("different states for one LUN: %v", err)
	}
	if err := s.Apply(ac.targets(GroupStates{0: Standby}, 2)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("group 0: %v", err)
	}
	nb := openNexusOn(t, s, iqnB, "iqn.host", 1)
	mustSense(t, exec(nb, 0, cdb10(0x28, 0, 1, 0), nil, 512), keyNotReady, ascALUAStandby)

	ports := portsOf([]Target{{IQN: "iqn.z"}, {IQN: "iqn.y", RelPort: 1}, {IQN: "iqn.x"}})
	if ports["iqn.y"] != [2]uint16{1, 1} || ports["iqn.x"] != [2]uint16{1, 2} || ports["iqn.z"] != [2]uint16{1, 3} {
		t.Fatalf("assigned ports %v", ports)
	}
	for _, name := range []string{"standby", "active-optimized", "active-nonoptimized", "unavailable", "transitioning"} {
		st, err := ParseAccessState(name)
		if err != nil || st.String() != name {
			t.Fatalf("parse %q: %v %v", name, st, err)
		}
	}
	if _, err := ParseAccessState("offline"); !errors.Is(err, ErrInvalidALUA) {
		t.Fatalf("offline: %v", err)
	}
	if CheckGroupID(0) == nil || CheckGroupID(65536) == nil || CheckPortID(0) == nil || CheckGroupID(65535) != nil {
		t.Fatal("ID range checks")
	}
}

// TestALUAFullStatusPort: PERSISTENT RESERVE IN READ FULL STATUS reports
// each registrant's own relative target port ID (the port of the target
// it registered through), not a constant.
func TestALUAFullStatusPort(t *testing.T) {
	ac := newALUAConfig(t)
	s := newTestServer(t, nil, ac.targets(nil, 2)...)
	na := openNexusOn(t, s, iqnA, "iqn.host-a", 1)
	nb := openNexusOn(t, s, iqnB, "iqn.host-b", 2)
	mustGood(t, prout(na, 0x00, 0, 0, 0xa))
	mustGood(t, prout(nb, 0x00, 0, 0, 0xb))
	c := exec(na, 0, prinCDB(0x03, 1024), nil, 1024)
	mustGood(t, c)
	b := data(c)
	ports := map[uint64]uint16{}
	for off := 8; off+24 <= len(b); {
		d := b[off:]
		ports[binary.BigEndian.Uint64(d)] = binary.BigEndian.Uint16(d[18:])
		off += 24 + int(binary.BigEndian.Uint32(d[20:]))
	}
	if ports[0xa] != 1 || ports[0xb] != 7 || len(ports) != 2 {
		t.Fatalf("READ FULL STATUS relative ports by key: %v, want a:1 b:7", ports)
	}
}
