package iscsi

import (
	"bytes"
	"testing"
)

// TestLUDesignators keeps the logical-unit designators of a VPD 0x83 page
// and drops the target port and target device ones and a truncated tail.
func TestLUDesignators(t *testing.T) {
	lu1 := []byte{0x01, 0x03, 0, 8, 0x50, 1, 2, 3, 4, 5, 6, 7} // NAA, LU
	port := []byte{0x51, 0x94, 0, 4, 0, 0, 0, 1}               // relative port, target port
	lu2 := []byte{0x02, 0x01, 0, 4, 'I', 'E', 'T', ' '}        // T10, LU
	dev := []byte{0x53, 0xa8, 0, 4, 'i', 'q', 'n', 0}          // SCSI name, target device
	body := bytes.Join([][]byte{lu1, port, lu2, dev, {0x01, 0x03, 0, 16, 1}}, nil)
	page := append([]byte{0, 0x83, 0, byte(len(body))}, body...)
	if got, want := LUDesignators(page), append(append([]byte{}, lu1...), lu2...); !bytes.Equal(got, want) {
		t.Fatalf("LUDesignators = %x, want %x", got, want)
	}
	if got := LUDesignators(page[:3]); got != nil {
		t.Fatalf("short page: %x", got)
	}
}

// TestIdentityTgt reads Linux tgt's identity: vendor IET, its serial as
// sent (padding kept) and its NAA and T10 logical-unit designators.
func TestIdentityTgt(t *testing.T) {
	g := startTgt(t, tgtOpts{size: 8 << 20})
	v := openT(t, g.url("", ""), fastCfg())
	id, err := v.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if id.Vendor != "IET" || id.Product != "VIRTUAL-DISK" || id.Revision == "" {
		t.Fatalf("identity %+v", id)
	}
	if len(id.Serial) < 6 || !bytes.HasSuffix([]byte(id.Serial), []byte("beaf11")) {
		t.Fatalf("serial %q", id.Serial)
	}
	naa, t10 := 0, 0
	for p := id.Designators; len(p) >= 4; p = p[4+int(p[3]):] {
		if p[1]&0x30 != 0 {
			t.Fatalf("non-LU designator kept: %x", p[:4+int(p[3])])
		}
		switch p[1] & 0x0f {
		case 3:
			naa++
		case 1:
			t10++
		}
	}
	if naa == 0 || t10 == 0 {
		t.Fatalf("designators %x: want NAA and T10", id.Designators)
	}
}
