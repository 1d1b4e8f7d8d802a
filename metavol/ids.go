package metavol

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

// NAAOUI is the 24-bit company identifier in every NAA type 6 identifier
// lmtgt makes (VPD page 0x83). 0x026C74 lies in the IEEE 802 "locally
// administered, AAI" space (second-lowest bit of the first octet set, next
// two bits clear: administratively assigned, for local use), so it can
// never collide with a company's registered OUI; the low two octets spell
// "lt" in ASCII.
const NAAOUI = 0x026C74

func randomBytes(n int) []byte {
	b := make([]byte, n)
	// crypto/rand.Read never returns an error (Go 1.24+): it crashes the
	// program if the kernel's random source fails, which cannot happen on
	// Linux with getrandom.
	rand.Read(b)
	return b
}

// NewID returns a random record ID: 16 lowercase hex characters (64 bits).
func NewID() string { return hex.EncodeToString(randomBytes(8)) }

// NewNAA returns a new NAA type 6 ("IEEE Registered Extended") identifier as
// 32 lowercase hex digits (16 bytes): NAA nibble 6, the 24-bit NAAOUI, then
// 100 random bits (36-bit vendor specific identifier and 64-bit vendor
// specific identifier extension).
func NewNAA() string {
	r := hex.EncodeToString(randomBytes(13))[:25]
	return fmt.Sprintf("6%06x%s", NAAOUI, r)
}

// NewSerial returns a new unit serial number for VPD page 0x80: 16
// uppercase hex characters (ASCII, no spaces).
func NewSerial() string { return strings.ToUpper(hex.EncodeToString(randomBytes(8))) }
