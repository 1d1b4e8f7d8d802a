package lm

import (
	"strings"
	"testing"
)

func TestValidateISCSIName(t *testing.T) {
	good := []string{
		"iqn.2026-11.org.lmtgt:demo",
		"iqn.1994-05.com.redhat:2a3b4c5d",
		"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-ls",
		"iqn.2001-04.com.example",
		"iqn.2001-04.com.example:storage.disk2.sys1.xyz",
		"eui.02004567A425678D",
		"naa.52004567BA64678D",
		"naa.52004567ba64678d0123456789abcdef",
	}
	for _, n := range good {
		if err := ValidateISCSIName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	bad := []string{
		"", "demo", "iqn.", "iqn.2026.org.x", "iqn.2026-13.org.x", "iqn.2026-00.org.x",
		"iqn.20a6-11.org.x", "iqn.2026-11.", "iqn.2026-11.:x", "iqn.2026-11.org..x",
		"iqn.2026-11.org.X", "IQN.2026-11.org.x", "iqn.2026-11.org.x:a b", "iqn.2026-11.org.x:a_b",
		"iqn.2026-11.-org.x", "eui.0200", "eui.02004567A425678G", "EUI.02004567A425678D",
		"naa.123", "iqn.1970-01.org.x", "iqn.2026-11.org.x:" + strings.Repeat("a", 300),
	}
	for _, n := range bad {
		if err := ValidateISCSIName(n); err == nil {
			t.Errorf("%q: accepted, want an error", n)
		}
	}
}

func FuzzValidateISCSIName(f *testing.F) {
	for _, s := range []string{"iqn.2026-11.org.lmtgt:demo", "eui.02004567A425678D", "naa.1", "iqn.2026-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = ValidateISCSIName(s) // must not panic
	})
}

func TestValidateCHAPPart(t *testing.T) {
	if err := validateCHAPPart("initiator", "user", "secretsecret"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"", "x"}, {"u", ""}, {"u", "bad\nsecret"}, {"u", strings.Repeat("s", 256)}} {
		if err := validateCHAPPart("initiator", c[0], c[1]); err == nil {
			t.Errorf("%q/%q accepted", c[0], c[1])
		}
	}
}
