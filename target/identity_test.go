package target

import (
	"bytes"
	"strings"
	"testing"
)

// vpd83LU returns the logical-unit designators (association 00b) of a VPD
// 0x83 page and whether a target port designator follows them.
func vpd83LU(d []byte) (lu []byte, port bool) {
	for p := d[4:]; len(p) >= 4; p = p[4+int(p[3]):] {
		if p[1]&0x30 == 0 {
			lu = append(lu, p[:4+int(p[3])]...)
		} else {
			port = true
		}
	}
	return lu, port
}

// TestAdoptedIdentity: a LUN with an adopted identity presents it in the
// standard INQUIRY data (vendor, product, revision), VPD 0x80 (the serial
// as given, padding kept) and VPD 0x83 (exactly the adopted logical-unit
// designators, then lmtgt's own target port ones); a LUN without one keeps
// lmtgt's own. Applying the adopted identity to a served LUN switches it.
func TestAdoptedIdentity(t *testing.T) {
	v := newTestVolume(t, "lun0", 4<<20)
	own := testLUN("L0", 0, v, 512)
	// tgt's designators: NAA type 6 (16 bytes), NAA type 5 (8), T10.
	adoptedDesc := []byte{
		0x01, 0x03, 0, 16, 0x60, 0x00, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4, 5, 6, 7, 8,
		0x01, 0x03, 0, 8, 0x50, 0x01, 0x40, 0x50, 0x00, 0x00, 0x00, 0x11,
		0x02, 0x01, 0, 16, 'I', 'E', 'T', ' ', ' ', ' ', ' ', ' ', '0', '0', '0', '1', '0', '0', '0', '1',
	}
	adopted := own
	adopted.Serial = "      beaf11"
	adopted.Adopted = &Identity{Vendor: "IET", Product: "VIRTUAL-DISK", Revision: "0001", Designators: adoptedDesc}

	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{own}})
	n := openNexus(t, s, "iqn.test:a", 1)
	check := func(want LUN) {
		t.Helper()
		c := exec(n, 0, inquiryCDB(false, 0, 255), nil, 255)
		mustGood(t, c)
		d := data(c)
		vendor, product, rev := vendorID, productID, productRev
		if a := want.Adopted; a != nil {
			vendor, product, rev = a.Vendor, a.Product, a.Revision
		}
		if v, p, r := strings.TrimRight(string(d[8:16]), " "), strings.TrimRight(string(d[16:32]), " "), strings.TrimRight(string(d[32:36]), " "); v != vendor || p != product || r != rev {
			t.Fatalf("standard INQUIRY %q %q %q, want %q %q %q", v, p, r, vendor, product, rev)
		}
		c = exec(n, 0, inquiryCDB(true, 0x80, 255), nil, 255)
		mustGood(t, c)
		if got := string(data(c)[4:]); got != want.Serial {
			t.Fatalf("VPD 0x80 %q, want %q", got, want.Serial)
		}
		c = exec(n, 0, inquiryCDB(true, 0x83, 255), nil, 255)
		mustGood(t, c)
		lu, port := vpd83LU(data(c))
		if !port {
			t.Fatal("VPD 0x83 lost the target port designators")
		}
		if want.Adopted != nil {
			if !bytes.Equal(lu, adoptedDesc) {
				t.Fatalf("VPD 0x83 LU designators %x, want the adopted %x", lu, adoptedDesc)
			}
		} else if !bytes.Contains(lu, want.NAA[:]) || bytes.Contains(lu, []byte("0001")) {
			t.Fatalf("VPD 0x83 LU designators %x: want lmtgt's NAA %x", lu, want.NAA)
		}
	}
	check(own)
	if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: []LUN{adopted}}}); err != nil {
		t.Fatal(err)
	}
	check(adopted)
	// Only the adopted identity changes (same serial, same NAA field).
	other := adopted
	other.Adopted = &Identity{Vendor: "OTHER", Product: "ARRAY", Revision: "9", Designators: adoptedDesc[:20]}
	adoptedDesc = adoptedDesc[:20]
	if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: []LUN{other}}}); err != nil {
		t.Fatal(err)
	}
	check(other)
}
