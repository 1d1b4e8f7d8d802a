package iscsi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Identity is the SCSI identity a LUN presents: what `lun import
// --identity adopt` copies onto the lmtgt LUN that imports it.
type Identity struct {
	Vendor, Product, Revision string // standard INQUIRY, trailing blanks removed
	Serial                    string // VPD 0x80 as the LUN sends it (padding kept), trailing NULs removed
	// Designators are the VPD 0x83 designation descriptors (4-byte header
	// and designator each) whose association is the logical unit; the
	// target port and target device ones are left out.
	Designators []byte
}

// Identity reads the LUN's standard INQUIRY data and VPD pages 0x80 and
// 0x83. A LUN without page 0x80 has an empty Serial; one without page
// 0x83 no designators.
func (v *Volume) Identity() (Identity, error) {
	var id Identity
	inq := make([]byte, 96)
	if _, err := v.c.exec(Command{CDB: cdbInquiry(0, false, uint16(len(inq))), Data: inq, Read: true}); err != nil {
		return id, fmt.Errorf("identity of %s: standard inquiry: %w", v.name, err)
	}
	field := func(b []byte) string { return strings.TrimRight(string(b), " \x00") }
	id.Vendor, id.Product, id.Revision = field(inq[8:16]), field(inq[16:32]), field(inq[32:36])
	pages := v.vpdPages()
	if pages[0x80] {
		b := make([]byte, 255)
		if _, err := v.c.exec(Command{CDB: cdbInquiry(0x80, true, uint16(len(b))), Data: b, Read: true}); err != nil {
			return id, fmt.Errorf("identity of %s: vpd 0x80: %w", v.name, err)
		}
		n := min(int(binary.BigEndian.Uint16(b[2:4])), len(b)-4)
		id.Serial = strings.TrimRight(string(b[4:4+n]), "\x00")
	}
	if pages[0x83] {
		b := make([]byte, 1024)
		if _, err := v.c.exec(Command{CDB: cdbInquiry(0x83, true, uint16(len(b))), Data: b, Read: true}); err != nil {
			return id, fmt.Errorf("identity of %s: vpd 0x83: %w", v.name, err)
		}
		id.Designators = LUDesignators(b)
	}
	return id, nil
}

// LUDesignators returns the designation descriptors of a VPD 0x83 page
// (header included) whose association (byte 1 bits 5-4) is 00b: the
// logical unit. A truncated last descriptor is dropped.
func LUDesignators(page []byte) []byte {
	if len(page) < 4 {
		return nil
	}
	n := min(int(binary.BigEndian.Uint16(page[2:4])), len(page)-4)
	body := page[4 : 4+n]
	var out []byte
	for len(body) >= 4 {
		l := 4 + int(body[3])
		if l > len(body) {
			break
		}
		if body[1]&0x30 == 0 {
			out = append(out, body[:l]...)
		}
		body = body[l:]
	}
	return out
}
