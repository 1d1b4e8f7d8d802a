package pdu

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// CHAPMD5 is CHAP_A=5 (RFC 1994 MD5), the only algorithm lmtgt uses.
const CHAPMD5 = "5"

// ErrCHAPValue marks a CHAP binary value that cannot be decoded.
var ErrCHAPValue = errors.New("malformed chap value")

// CHAPResponse computes MD5(id || secret || challenge) (RFC 1994 §4.1).
func CHAPResponse(id byte, secret string, challenge []byte) [md5.Size]byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	var out [md5.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// DecodeCHAPBinary decodes a CHAP binary value: 0x/0X hex or 0b/0B base64
// (RFC 7143 §6.1 binary-value).
func DecodeCHAPBinary(v string) ([]byte, error) {
	if len(v) < 3 {
		return nil, fmt.Errorf("chap value %q too short: %w", v, ErrCHAPValue)
	}
	switch v[:2] {
	case "0x", "0X":
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("chap hex value: %w", ErrCHAPValue)
		}
		return b, nil
	case "0b", "0B":
		b, err := base64.StdEncoding.DecodeString(v[2:])
		if err != nil {
			return nil, fmt.Errorf("chap base64 value: %w", ErrCHAPValue)
		}
		return b, nil
	}
	return nil, fmt.Errorf("chap value %.20q is neither hex nor base64: %w", v, ErrCHAPValue)
}

// EncodeHex renders b as a CHAP hex binary value.
func EncodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }
