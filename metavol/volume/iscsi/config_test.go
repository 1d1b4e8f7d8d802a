package iscsi

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Config
	}{
		{"iscsi://127.0.0.1:3261/iqn.2026-11.x:y/1", Config{Portal: "127.0.0.1:3261", Target: "iqn.2026-11.x:y", LUN: 1}},
		{"iscsi://host/iqn.x/0", Config{Portal: "host:3260", Target: "iqn.x", LUN: 0}},
		{"iscsi://[::1]:99/iqn.x/300", Config{Portal: "[::1]:99", Target: "iqn.x", LUN: 300}},
		{"iscsi://[::1]/iqn.x/2", Config{Portal: "[::1]:3260", Target: "iqn.x", LUN: 2}},
		{"iscsi://u%s3cr%t@/x@h:1/iqn.x/4", Config{Portal: "h:1", Target: "iqn.x", LUN: 4, CHAPUser: "u", CHAPSecret: "s3cr%t@/x"}},
	} {
		got, err := ParseURL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"http://h/iqn.x/1", "iscsi://h/iqn.x", "iscsi://h//1", "iscsi://h/iqn.x/x", "iscsi://h/iqn.x/99999",
		"iscsi:///iqn.x/1", "iscsi://user@h/iqn.x/1", "iscsi://u%TOPSECRET@h/iqn.x/1/2",
	} {
		_, err := ParseURL(bad)
		if err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "TOPSECRET") {
			t.Errorf("ParseURL error shows the secret: %v", err)
		}
	}
	c := Config{Portal: "h:1", Target: "iqn.x", LUN: 3, CHAPUser: "u", CHAPSecret: "TOPSECRET"}
	if s := c.String(); strings.Contains(s, "TOPSECRET") || !strings.Contains(s, "iscsi://u%xxxxx@h:1/iqn.x/3") {
		t.Errorf("Config.String() = %q", s)
	}
	back, err := ParseURL(c.URL())
	if err != nil || back != c {
		t.Errorf("URL round trip: %+v %v", back, err)
	}
}

func TestEncodeLUN(t *testing.T) {
	if b := encodeLUN(5); b != [8]byte{0, 5} {
		t.Errorf("lun 5: % x", b)
	}
	if b := encodeLUN(300); b != [8]byte{0x41, 0x2c} {
		t.Errorf("lun 300: % x", b)
	}
}

func TestParseSense(t *testing.T) {
	fixed := make([]byte, 18)
	fixed[0], fixed[2], fixed[12], fixed[13] = 0x70, 0x05, 0x20, 0x00
	if k, a, q, ok := parseSense(fixed); !ok || k != 5 || a != 0x20 || q != 0 {
		t.Errorf("fixed sense: %x %x %x %v", k, a, q, ok)
	}
	desc := []byte{0x72, 0x06, 0x29, 0x01, 0, 0, 0, 0}
	if k, a, q, ok := parseSense(desc); !ok || k != 6 || a != 0x29 || q != 1 {
		t.Errorf("descriptor sense: %x %x %x %v", k, a, q, ok)
	}
	if _, _, _, ok := parseSense([]byte{0x10}); ok {
		t.Error("garbage sense accepted")
	}
}
