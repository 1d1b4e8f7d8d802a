package iscsi

// LUN addressing (SAM-5 §4.7): the 8-byte LUN field of a PDU.

// badLUN is what undecodable LUN fields map to; no backend maps it, so the
// command gets LOGICAL UNIT NOT SUPPORTED.
const badLUN = ^uint64(0)

// DecodeLUN turns a SAM 8-byte LUN into a LUN number. Peripheral device
// addressing (method 00, bus 0) gives 0..255, flat space addressing (method
// 01) gives 0..16383. Other methods and nonzero second-level bytes give
// badLUN.
func DecodeLUN(b [8]byte) uint64 {
	for _, x := range b[2:] {
		if x != 0 {
			return badLUN
		}
	}
	switch b[0] >> 6 {
	case 0: // peripheral device addressing
		if b[0]&0x3f != 0 { // bus identifier
			return badLUN
		}
		return uint64(b[1])
	case 1: // flat space addressing
		return uint64(b[0]&0x3f)<<8 | uint64(b[1])
	}
	return badLUN
}

// EncodeLUN is the inverse of DecodeLUN: peripheral addressing below 256,
// flat space addressing up to 16383. Larger numbers cannot be encoded and
// give an all-ones field.
func EncodeLUN(n uint64) [8]byte {
	var b [8]byte
	switch {
	case n < 256:
		b[1] = byte(n)
	case n < 1<<14:
		b[0] = 0x40 | byte(n>>8)
		b[1] = byte(n)
	default:
		for i := range b {
			b[i] = 0xff
		}
	}
	return b
}
