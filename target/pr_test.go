package target

import (
	"encoding/binary"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

func readKeys(t *testing.T, n iscsi.Nexus) (gen uint32, keys []uint64) {
	t.Helper()
	c := exec(n, 0, prinCDB(0, 1024), nil, 1024)
	mustGood(t, c)
	d := data(c)
	l := binary.BigEndian.Uint32(d[4:])
	for p := d[8 : 8+l]; len(p) >= 8; p = p[8:] {
		keys = append(keys, binary.BigEndian.Uint64(p))
	}
	return binary.BigEndian.Uint32(d), keys
}

func readReservation(t *testing.T, n iscsi.Nexus) (reserved bool, key uint64, typ prType) {
	t.Helper()
	c := exec(n, 0, prinCDB(1, 1024), nil, 1024)
	mustGood(t, c)
	d := data(c)
	if binary.BigEndian.Uint32(d[4:]) == 0 {
		return false, 0, 0
	}
	return true, binary.BigEndian.Uint64(d[8:]), prType(d[21] & 0x0f)
}

func readWrite(n iscsi.Nexus) (read, write *iscsi.Command) {
	return exec(n, 0, cdb10(0x28, 0, 1, 0), nil, 512), exec(n, 0, cdb10(0x2a, 0, 1, 0), make([]byte, 512), 0)
}

// TestPersistentReservationAccess checks the SPC-4 access table for every
// reservation type with a registered and an unregistered second nexus.
func TestPersistentReservationAccess(t *testing.T) {
	cases := []struct {
		typ                   prType
		regRead, regWrite     bool
		unregRead, unregWrite bool
	}{
		{prWriteExclusive, true, false, true, false},
		{prExclusiveAccess, false, false, false, false},
		{prWriteExclusiveRegs, true, true, true, false},
		{prExclusiveAccessRegs, true, true, false, false},
		{prWriteExclusiveAllReg, true, true, true, false},
		{prExclusiveAccessAllReg, true, true, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.typ.String(), func(t *testing.T) {
			s, _ := oneLUN(t, 1<<20, 512)
			a := openNexus(t, s, "iqn.test:a", 1)
			b := openNexus(t, s, "iqn.test:b", 2)
			mustGood(t, prout(a, 0x06, 0, 0, 0xaa))
			mustGood(t, prout(b, 0x06, 0, 0, 0xbb))
			mustGood(t, prout(a, 0x01, tc.typ, 0xaa, 0))
			reserved, key, typ := readReservation(t, b)
			wantKey := uint64(0xaa)
			if tc.typ.allRegistrants() {
				wantKey = 0
			}
			if !reserved || key != wantKey || typ != tc.typ {
				t.Fatalf("READ RESERVATION: %v %#x %v", reserved, key, typ)
			}
			r, w := readWrite(a)
			mustGood(t, r)
			mustGood(t, w)
			check := func(c *iscsi.Command, ok bool) {
				t.Helper()
				if ok {
					mustGood(t, c)
				} else {
					mustConflict(t, c)
				}
			}
			r, w = readWrite(b)
			check(r, tc.regRead)
			check(w, tc.regWrite)
			mustGood(t, exec(b, 0, inquiryCDB(false, 0, 96), nil, 96))
			mustGood(t, exec(b, 0, rc16CDB(32), nil, 32))
			mustGood(t, prout(b, 0x00, 0, 0xbb, 0)) // unregister
			r, w = readWrite(b)
			check(r, tc.unregRead)
			check(w, tc.unregWrite)
			// An unregistered nexus cannot reserve or release.
			mustConflict(t, prout(b, 0x01, tc.typ, 0xbb, 0))
			mustGood(t, prout(a, 0x02, tc.typ, 0xaa, 0))
			if reserved, _, _ := readReservation(t, a); reserved {
				t.Fatal("still reserved after RELEASE")
			}
			r, w = readWrite(b)
			mustGood(t, r)
			mustGood(t, w)
		})
	}
}

func TestPersistentReservationKeysAndPreempt(t *testing.T) {
	s, _ := oneLUN(t, 1<<20, 512)
	a := openNexus(t, s, "iqn.test:a", 1)
	b := openNexus(t, s, "iqn.test:b", 2)

	gen0, keys := readKeys(t, a)
	if len(keys) != 0 {
		t.Fatalf("fresh LUN has keys %x", keys)
	}
	mustConflict(t, prout(a, 0x00, 0, 0x11, 0x22)) // not registered, wrong key
	mustGood(t, prout(a, 0x00, 0, 0, 0xaa))
	mustGood(t, prout(b, 0x00, 0, 0, 0xbb))
	mustConflict(t, prout(a, 0x00, 0, 0x99, 0xab)) // wrong key
	mustGood(t, prout(a, 0x00, 0, 0xaa, 0xac))     // change key
	gen, keys := readKeys(t, b)
	if len(keys) != 2 || keys[0] != 0xac || keys[1] != 0xbb || gen != gen0+3 {
		t.Fatalf("READ KEYS gen %d keys %x", gen, keys)
	}
	// READ KEYS respects the allocation length.
	c := exec(a, 0, prinCDB(0, 12), nil, 1024)
	mustGood(t, c)
	if c.DataInLen != 12 || binary.BigEndian.Uint32(data(c)[4:]) != 16 {
		t.Fatalf("truncated READ KEYS: %d bytes %x", c.DataInLen, data(c))
	}

	mustGood(t, prout(a, 0x01, prExclusiveAccess, 0xac, 0))
	mustConflict(t, prout(b, 0x01, prExclusiveAccess, 0xbb, 0)) // held by a
	// RELEASE with the wrong type.
	mustSense(t, prout(a, 0x02, prWriteExclusive, 0xac, 0), keyIllegalRequest, ascInvalidReleaseOfPR)

	// b preempts a: a loses registration and reservation and sees a UA.
	mustGood(t, prout(b, 0x04, prWriteExclusive, 0xbb, 0xac))
	reserved, key, typ := readReservation(t, b)
	if !reserved || key != 0xbb || typ != prWriteExclusive {
		t.Fatalf("after PREEMPT: %v %#x %v", reserved, key, typ)
	}
	mustSense(t, exec(a, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), keyUnitAttention, ascRegistrationsPreempted)
	_, keys = readKeys(t, a)
	if len(keys) != 1 || keys[0] != 0xbb {
		t.Fatalf("keys after PREEMPT %x", keys)
	}
	r, w := readWrite(a)
	mustGood(t, r)
	mustConflict(t, w)

	// CLEAR by b removes everything; a (registered again) gets a UA.
	mustGood(t, prout(a, 0x06, 0, 0, 0xa1))
	mustGood(t, prout(b, 0x03, 0, 0xbb, 0))
	if _, keys = readKeys(t, b); len(keys) != 0 {
		t.Fatalf("keys after CLEAR %x", keys)
	}
	mustSense(t, exec(a, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), keyUnitAttention, ascReservationsPreempted)
	r, w = readWrite(a)
	mustGood(t, r)
	mustGood(t, w)

	// REPORT CAPABILITIES.
	c = exec(a, 0, prinCDB(2, 8), nil, 8)
	mustGood(t, c)
	if d := data(c); binary.BigEndian.Uint16(d) != 8 || d[3]&0x80 == 0 || d[4] != 0xea || d[5] != 0x01 {
		t.Fatalf("REPORT CAPABILITIES %x", d)
	}
	// Unsupported service action / parameter length.
	mustSense(t, exec(a, 0, prinCDB(9, 8), nil, 8), keyIllegalRequest, ascInvalidFieldInCDB)
	cdb, p := proutCDB(0x00, 0)
	cdb[8] = 20
	mustSense(t, exec(a, 0, cdb, p(0, 1)[:20], 0), keyIllegalRequest, ascParameterListLength)
}

func TestSPC2ReserveRelease(t *testing.T) {
	s, _ := oneLUN(t, 1<<20, 512)
	a := openNexus(t, s, "iqn.test:a", 1)
	b := openNexus(t, s, "iqn.test:b", 2)
	reserve6 := []byte{0x16, 0, 0, 0, 0, 0}
	release6 := []byte{0x17, 0, 0, 0, 0, 0}
	mustGood(t, exec(a, 0, reserve6, nil, 0))
	mustGood(t, exec(a, 0, reserve6, nil, 0))
	mustConflict(t, exec(b, 0, reserve6, nil, 0))
	mustGood(t, exec(b, 0, release6, nil, 0)) // no-op
	mustConflict(t, exec(b, 0, []byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255))
	mustGood(t, exec(b, 0, inquiryCDB(false, 0, 96), nil, 96))
	r, w := readWrite(a)
	mustGood(t, r)
	mustGood(t, w)
	mustGood(t, exec(a, 0, release6, nil, 0))
	mustGood(t, exec(b, 0, reserve6, nil, 0))
	// Nexus loss releases it.
	b.Close()
	mustGood(t, exec(a, 0, reserve6, nil, 0))
	// A LUN reset releases it too, and b' sees a unit attention.
	b2 := openNexus(t, s, "iqn.test:b", 3)
	mustConflict(t, exec(b2, 0, reserve6, nil, 0))
	if r := a.TaskManagement(iscsi.TMFLogicalUnitReset, 0); r != iscsi.TMFComplete {
		t.Fatalf("LUN reset: %d", r)
	}
	mustSense(t, exec(b2, 0, reserve6, nil, 0), keyUnitAttention, ascBusDeviceReset)
	mustGood(t, exec(b2, 0, reserve6, nil, 0))
	// The nexus that asked for the reset gets the unit attention too.
	mustSense(t, exec(a, 0, cdb10(0x25, 0, 0, 0), nil, 8), keyUnitAttention, ascBusDeviceReset)
	// With a PR registration, RESERVE(6) conflicts.
	mustGood(t, exec(b2, 0, release6, nil, 0))
	mustGood(t, prout(a, 0x06, 0, 0, 1))
	mustConflict(t, exec(b2, 0, reserve6, nil, 0))
}

// TestReservationsSurviveRestart saves through metavol and reloads in a
// new Server.
func TestReservationsSurviveRestart(t *testing.T) {
	db, err := metavol.Open(t.TempDir(), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("metavol: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	v := newTestVolume(t, "pr", 1<<20)
	cfg := Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("PR", 0, v, 512)}}

	s1 := newTestServer(t, db, cfg)
	a := openNexus(t, s1, "iqn.test:a", 1)
	mustGood(t, prout(a, 0x06, 0, 0, 0xa))
	mustGood(t, prout(a, 0x01, prWriteExclusive, 0xa, 0))
	a.Close()

	s2 := newTestServer(t, db, cfg)
	a2 := openNexus(t, s2, "iqn.test:a", 1) // same initiator port
	b := openNexus(t, s2, "iqn.test:b", 2)
	reserved, key, typ := readReservation(t, b)
	if !reserved || key != 0xa || typ != prWriteExclusive {
		t.Fatalf("after restart: reserved %v key %#x type %v", reserved, key, typ)
	}
	_, w := readWrite(b)
	mustConflict(t, w)
	_, w = readWrite(a2)
	mustGood(t, w)
	mustGood(t, prout(a2, 0x02, prWriteExclusive, 0xa, 0))
	mustGood(t, prout(a2, 0x00, 0, 0xa, 0))

	s3 := newTestServer(t, db, cfg)
	c := openNexus(t, s3, "iqn.test:c", 3)
	if _, keys := readKeys(t, c); len(keys) != 0 {
		t.Fatalf("keys after unregister and restart: %x", keys)
	}
}
