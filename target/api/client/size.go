package client

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first.
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"pib", 1 << 50},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"pb", 1e15},
	// Single letters are binary, as in dd, qemu-img and truncate.
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"p", 1 << 50},
	{"b", 1},
}

// ParseSize parses a size: plain bytes ("4096"), binary units ("512MiB",
// "1GiB", "1G", "1g", "10T"), decimal units ("1GB" = 10^9), and decimals
// ("1.5GiB", rounded down to a byte). Negative sizes and overflow are errors.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	low := strings.ToLower(in)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(low, u.suffix) {
			mult = u.mult
			low = strings.TrimSpace(strings.TrimSuffix(low, u.suffix))
			break
		}
	}
	if low == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	// Only plain decimal numbers: a sign, an exponent ("1e9"), hex or
	// digit separators are refused rather than half-understood.
	switch {
	case strings.HasPrefix(low, "-"):
		return 0, fmt.Errorf("size %q: negative", s)
	case strings.HasPrefix(low, "+"):
		return 0, fmt.Errorf("size %q: no sign allowed (write %s)", s, strings.TrimPrefix(in, "+"))
	case !plainNumber(low):
		return 0, fmt.Errorf("size %q: not a size: want digits with an optional fraction and unit, no exponent (examples: 1GiB, 512MiB, 1G, 1.5GiB, 4096)", s)
	}
	if n, err := strconv.ParseInt(low, 10, 64); err == nil {
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(low, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(v), nil
}

// plainNumber reports whether s is digits, optionally with one '.' and
// more digits ("4096", "1.5").
func plainNumber(s string) bool {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || (dot && frac == "") {
		return false
	}
	for _, r := range whole + frac {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// FormatSize prints bytes with a binary unit: "1 GiB", "1.5 GiB", "512 B".
func FormatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	i := 0
	for math.Abs(f) >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + " " + units[i]
}
