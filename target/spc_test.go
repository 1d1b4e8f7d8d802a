package target

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestInquiry(t *testing.T) {
	s, _ := oneLUN(t, 4<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	lun := testLUN("L0", 0, nil, 512)

	c := exec(n, 0, inquiryCDB(false, 0, 255), nil, 255)
	mustGood(t, c)
	d := data(c)
	if len(d) < 36 || d[0] != 0 || d[2] != 6 || d[3]&0x0f != 2 || int(d[4])+5 != len(d) {
		t.Fatalf("standard INQUIRY header %x (len %d)", d[:8], len(d))
	}
	if v, p := strings.TrimSpace(string(d[8:16])), strings.TrimSpace(string(d[16:32])); v != vendorID || p != productID {
		t.Fatalf("vendor %q product %q", v, p)
	}
	// Allocation length is honoured.
	c = exec(n, 0, inquiryCDB(false, 0, 10), nil, 255)
	mustGood(t, c)
	if c.DataInLen != 10 {
		t.Fatalf("INQUIRY alloc 10: DataInLen %d", c.DataInLen)
	}

	c = exec(n, 0, inquiryCDB(true, 0x00, 255), nil, 255)
	mustGood(t, c)
	if got := data(c)[4:]; !bytes.Equal(got, []byte{0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2}) {
		t.Fatalf("supported VPD pages %x", got)
	}

	c = exec(n, 0, inquiryCDB(true, 0x80, 255), nil, 255)
	mustGood(t, c)
	if got := string(data(c)[4:]); got != lun.Serial {
		t.Fatalf("unit serial %q, want %q", got, lun.Serial)
	}

	c = exec(n, 0, inquiryCDB(true, 0x83, 255), nil, 255)
	mustGood(t, c)
	d = data(c)
	if int(binary.BigEndian.Uint16(d[2:]))+4 != len(d) {
		t.Fatalf("VPD 83 length %d vs %d", binary.BigEndian.Uint16(d[2:]), len(d))
	}
	var naa []byte
	var relPort uint16
	for p := d[4:]; len(p) >= 4; p = p[4+int(p[3]):] {
		switch {
		case p[1]&0x3f == 0x03:
			naa = p[4 : 4+int(p[3])]
		case p[1]&0x3f == 0x14:
			relPort = binary.BigEndian.Uint16(p[6:8])
		}
	}
	if !bytes.Equal(naa, lun.NAA[:]) || naa[0]>>4 != 6 {
		t.Fatalf("NAA designator %x, want %x (type 6)", naa, lun.NAA)
	}
	if relPort != relTargetPortID {
		t.Fatalf("relative target port %d", relPort)
	}

	c = exec(n, 0, inquiryCDB(true, 0xb0, 255), nil, 255)
	mustGood(t, c)
	d = data(c)
	if d[3] != 0x3c || len(d) != 0x40 {
		t.Fatalf("VPD B0 page length %#x, %d bytes", d[3], len(d))
	}
	if binary.BigEndian.Uint32(d[20:]) == 0 || binary.BigEndian.Uint32(d[24:]) == 0 || d[5] == 0 {
		t.Fatalf("VPD B0 lacks unmap / compare-and-write limits: %x", d)
	}
	c = exec(n, 0, inquiryCDB(true, 0xb2, 255), nil, 255)
	mustGood(t, c)
	if d = data(c); d[5]&0xe4 != 0xe4 {
		t.Fatalf("VPD B2 flags %#x: want LBPU, LBPWS, LBPWS10, LBPRZ", d[5])
	}
	mustSense(t, exec(n, 0, inquiryCDB(true, 0x99, 255), nil, 255), keyIllegalRequest, ascInvalidFieldInCDB)
	mustSense(t, exec(n, 0, inquiryCDB(false, 0x80, 255), nil, 255), keyIllegalRequest, ascInvalidFieldInCDB)
}

func TestReadCapacity(t *testing.T) {
	for _, bs := range []uint32{512, 4096} {
		s, _ := oneLUN(t, 8<<20, bs)
		n := openNexus(t, s, "iqn.test:a", 1)
		blocks := uint64(8<<20) / uint64(bs)
		c := exec(n, 0, cdb10(0x25, 0, 0, 0), nil, 8)
		mustGood(t, c)
		if d := data(c); binary.BigEndian.Uint32(d) != uint32(blocks-1) || binary.BigEndian.Uint32(d[4:]) != bs {
			t.Fatalf("READ CAPACITY(10) %x", d)
		}
		c = exec(n, 0, rc16CDB(32), nil, 32)
		mustGood(t, c)
		d := data(c)
		if len(d) != 32 || binary.BigEndian.Uint64(d) != blocks-1 || binary.BigEndian.Uint32(d[8:]) != bs {
			t.Fatalf("READ CAPACITY(16) %x", d)
		}
		// LBPRZ only on 512-byte LUNs (QEMU 7.2 aborts on 4096 with it).
		if want := byte(0xc0); (bs == 512 && d[14]&0xc0 != want) || (bs == 4096 && d[14]&0xc0 != 0x80) {
			t.Fatalf("READ CAPACITY(16) %d-byte blocks: LBPME/LBPRZ bits %x", bs, d[14])
		}
		c = exec(n, 0, rc16CDB(12), nil, 32)
		mustGood(t, c)
		if c.DataInLen != 12 {
			t.Fatalf("READ CAPACITY(16) alloc 12: DataInLen %d", c.DataInLen)
		}
	}
}

func TestReportLUNsAndUnmappedLUNs(t *testing.T) {
	v1 := newTestVolume(t, "a", 1<<20)
	v2 := newTestVolume(t, "b", 1<<20)
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{
		testLUN("A", 1, v1, 512), testLUN("B", 300, v2, 512),
	}})
	n := openNexus(t, s, "iqn.test:a", 1)
	for _, lun := range []uint64{0, 1, 300, 7} {
		c := exec(n, lun, reportLUNsCDB(256), nil, 256)
		mustGood(t, c)
		want := []byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0}
		if !bytes.Equal(data(c), want) {
			t.Fatalf("REPORT LUNS via LUN %d: %x, want %x", lun, data(c), want)
		}
	}
	// Truncated to the allocation length.
	c := exec(n, 1, reportLUNsCDB(16), nil, 256)
	mustGood(t, c)
	if c.DataInLen != 16 {
		t.Fatalf("REPORT LUNS alloc 16: %d bytes", c.DataInLen)
	}
	// LUN 0 is not mapped: INQUIRY says "no device", the rest refuses.
	c = exec(n, 0, inquiryCDB(false, 0, 96), nil, 96)
	mustGood(t, c)
	if data(c)[0] != 0x7f {
		t.Fatalf("INQUIRY on unmapped LUN 0: byte 0 %#x, want 0x7f", data(c)[0])
	}
	mustSense(t, exec(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), keyIllegalRequest, ascLUNNotSupported)
	mustSense(t, exec(n, 7, cdb10(0x28, 0, 1, 0), nil, 512), keyIllegalRequest, ascLUNNotSupported)
	mustGood(t, exec(n, 300, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
	mustGood(t, exec(n, 300, cdb10(0x28, 0, 1, 0), nil, 512))
}

func TestModeSenseAndMisc(t *testing.T) {
	s, _ := oneLUN(t, 4<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	c := exec(n, 0, []byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
	mustGood(t, c)
	d := data(c)
	if int(d[0])+1 != len(d) || d[3] != 8 {
		t.Fatalf("MODE SENSE(6) all pages: header %x, %d bytes", d[:4], len(d))
	}
	if d[2]&0x10 == 0 {
		t.Fatal("MODE SENSE: DPOFUA not set")
	}
	c = exec(n, 0, []byte{0x1a, 0, 0x3f, 0, 4, 0}, nil, 255)
	mustGood(t, c)
	if c.DataInLen != 4 {
		t.Fatalf("MODE SENSE(6) alloc 4: %d bytes", c.DataInLen)
	}
	mustGood(t, exec(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
	c = exec(n, 0, []byte{0x03, 0, 0, 0, 252, 0}, nil, 252)
	mustGood(t, c)
	if data(c)[2] != keyNoSense {
		t.Fatalf("REQUEST SENSE: %x", data(c))
	}
	mustGood(t, exec(n, 0, []byte{0x1b, 0, 0, 0, 1, 0}, nil, 0))
	mustGood(t, exec(n, 0, []byte{0x1e, 0, 0, 0, 1, 0}, nil, 0))
	// REPORT SUPPORTED OPERATION CODES lists READ(10).
	rsoc := make([]byte, 12)
	rsoc[0], rsoc[1] = 0xa3, 0x0c
	binary.BigEndian.PutUint32(rsoc[6:], 4096)
	c = exec(n, 0, rsoc, nil, 4096)
	mustGood(t, c)
	found := false
	for d := data(c)[4:]; len(d) >= 8; d = d[8:] {
		if d[0] == 0x28 {
			found = true
		}
	}
	if !found {
		t.Fatal("REPORT SUPPORTED OPERATION CODES does not list READ(10)")
	}
	mustSense(t, exec(n, 0, []byte{0xff, 0, 0, 0, 0, 0}, nil, 0), keyIllegalRequest, ascInvalidOpcode)
}
