package lm

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameLen is the longest iSCSI name in bytes (RFC 7143 §4.2.7.1).
const MaxNameLen = 223

// ValidateISCSIName checks the syntax of an iSCSI name (RFC 7143 §4.2.7,
// RFC 3722): "iqn.YYYY-MM.reversed.domain[:anything]" in lower case,
// "eui." + 16 hex digits, or "naa." + 16 or 32 hex digits. lmtgt accepts
// the ASCII subset of the stringprep profile (letters, digits, '-', '.',
// ':') and refuses upper case in iqn names instead of folding it, so that a
// name is matched exactly as it was typed.
func ValidateISCSIName(name string) error {
	if name == "" {
		return fmt.Errorf("empty iSCSI name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("iSCSI name is %d bytes, longer than %d", len(name), MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("iSCSI name is not valid UTF-8")
	}
	low := strings.ToLower(name)
	switch {
	case strings.HasPrefix(low, "iqn."):
		return validateIQN(name)
	case strings.HasPrefix(low, "eui."):
		return validateHexName(name, "eui.", 16)
	case strings.HasPrefix(low, "naa."):
		return validateHexName(name, "naa.", 16, 32)
	}
	return fmt.Errorf("must start with iqn., eui. or naa. (example: iqn.2026-11.org.example:disk1)")
}

func validateHexName(name, prefix string, lengths ...int) error {
	if name[:4] != prefix {
		return fmt.Errorf("the prefix %q must be lower case", prefix)
	}
	h := name[4:]
	ok := false
	for _, l := range lengths {
		ok = ok || len(h) == l
	}
	if !ok {
		return fmt.Errorf("%s names need %v hex digits after %q, got %d", strings.TrimSuffix(prefix, "."), lengths, prefix, len(h))
	}
	for _, r := range h {
		if !isHex(r) {
			return fmt.Errorf("%q is not a hex digit", r)
		}
	}
	return nil
}

func isHex(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F'
}

func validateIQN(name string) error {
	const example = " (example: iqn.2026-11.org.example:disk1)"
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == ':':
		case r >= 'A' && r <= 'Z':
			return fmt.Errorf("iqn names must be lower case (found %q)", r)
		default:
			return fmt.Errorf("%q is not allowed in an iqn name (letters, digits, '-', '.', ':')", r)
		}
	}
	if name[:4] != "iqn." {
		return fmt.Errorf("the prefix \"iqn.\" must be lower case")
	}
	rest := name[4:]
	// Date: YYYY-MM.
	if len(rest) < 8 || rest[4] != '-' || rest[7] != '.' {
		return fmt.Errorf("iqn names start with iqn.YYYY-MM. then a reversed domain name" + example)
	}
	for _, i := range []int{0, 1, 2, 3, 5, 6} {
		if rest[i] < '0' || rest[i] > '9' {
			return fmt.Errorf("iqn date %q is not YYYY-MM"+example, rest[:7])
		}
	}
	month := int(rest[5]-'0')*10 + int(rest[6]-'0')
	if month < 1 || month > 12 {
		return fmt.Errorf("iqn date %q has no month %02d", rest[:7], month)
	}
	if rest[:4] < "1980" {
		return fmt.Errorf("iqn date %q is before the domain could have been owned", rest[:7])
	}
	naming := rest[8:]
	domain, _, _ := strings.Cut(naming, ":")
	if domain == "" {
		return fmt.Errorf("iqn name has no reversed domain name after the date" + example)
	}
	for _, label := range strings.Split(domain, ".") {
		if label == "" {
			return fmt.Errorf("iqn domain %q has an empty label", domain)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("iqn domain label %q starts or ends with '-'", label)
		}
	}
	return nil
}

// CHAP secret limits. RFC 7143 §12.1.3 asks for secrets of at least 96
// bits when the link is not encrypted, and implementations must accept up
// to 128 bits (16 bytes of random data); initiators such as Windows refuse
// secrets outside 12..16 characters. lmtgt accepts 1..255 bytes, refuses an
// initiator secret reused as the target's (mutual) secret (RFC 7143
// §12.1.3: "MUST NOT"), and warns below 12 bytes.
const (
	MinRecommendedSecret = 12
	MaxSecret            = 255
)

// validateCHAPPart checks one user/secret pair; what names it in errors.
func validateCHAPPart(what, user, secret string) error {
	if user == "" {
		return fmt.Errorf("%s user is empty", what)
	}
	if secret == "" {
		return fmt.Errorf("%s secret is empty", what)
	}
	if len(user) > MaxSecret || len(secret) > MaxSecret {
		return fmt.Errorf("%s user and secret must be at most %d bytes", what, MaxSecret)
	}
	for _, s := range []string{user, secret} {
		for _, r := range s {
			if r < 0x20 || r == 0x7f || r > 0x7e {
				return fmt.Errorf("%s user and secret must be printable ASCII", what)
			}
		}
	}
	return nil
}
