package target

import (
	"bytes"
	"hash/fnv"
)

// Identity is an adopted SCSI identity: what an imported LUN presents
// instead of lmtgt's own (lun import --identity adopt). The LUN's Serial
// carries the adopted VPD 0x80 serial.
type Identity struct {
	Vendor, Product, Revision string // standard INQUIRY
	// Designators are VPD 0x83 designation descriptors (header included)
	// of the logical unit, presented in place of lmtgt's NAA and T10 ones.
	Designators []byte
}

func (a *Identity) equal(b *Identity) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Vendor == b.Vendor && a.Product == b.Product && a.Revision == b.Revision &&
		bytes.Equal(a.Designators, b.Designators)
}

// presented is the identity a LUN shows to hosts: standard INQUIRY
// vendor/product/revision, VPD 0x80 serial, and the VPD 0x83 designators
// of the logical unit. It is the one owner of that rule: the standard
// INQUIRY data (newGotgtLU), VPD 0x80 and VPD 0x83 all read it. The
// target port and target device designators of VPD 0x83 are always
// lmtgt's (they name this server's port, not the LUN).
type presented struct {
	vendor, product, revision string
	serial                    string
	luDesignators             []byte
}

// identityOf computes a LUN's presented identity: the adopted one when
// the LUN has one, else lmtgt's own (vendor LMTGT, the LUN's NAA and a T10
// vendor ID designator built from the serial).
func identityOf(l LUN) presented {
	serial := l.Serial
	if serial == "" {
		serial = l.ID
	}
	if a := l.Adopted; a != nil {
		return presented{vendor: a.Vendor, product: a.Product, revision: a.Revision, serial: serial,
			luDesignators: a.Designators}
	}
	p := presented{vendor: vendorID, product: productID, revision: productRev, serial: serial}
	desc := func(proto, codeSet, assocType byte, id []byte) {
		p.luDesignators = append(p.luDesignators, proto<<4|codeSet, assocType, 0, byte(len(id)))
		p.luDesignators = append(p.luDesignators, id...)
	}
	naa := l.NAA
	if naa == ([16]byte{}) {
		naa = fallbackNAA(l.ID)
	}
	desc(0, 1, 0x03, naa[:]) // binary, LU, NAA
	t10 := append(padded(vendorID, 8), []byte(serial)...)
	desc(0, 2, 0x01, t10) // ASCII, LU, T10 vendor ID
	return p
}

// fallbackNAA derives a stable NAA type 6 identifier from the LUN ID when
// the configuration gives none (tests, demo).
func fallbackNAA(id string) [16]byte {
	var n [16]byte
	h := lunHash(id) >> 4
	h2 := lunHash(id+"#") >> 4
	put64(n[0:], uint64(0x6)<<60|h>>4)
	put64(n[8:], h2)
	return n
}

// lunHash is a stable 64-bit hash of a LUN ID (FNV-1a).
func lunHash(lunID string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(lunID))
	return h.Sum64()
}
