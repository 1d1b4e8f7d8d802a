package lm

import (
	"math"
	"strconv"
	"strings"
)

// sizeText writes a byte count as people read sizes in messages and plan
// lines: "512 B", "4 MiB", "1.5 GiB"; a count that no binary unit with at
// most two decimals states exactly also gets its bytes ("976.56 KiB
// (1000000 bytes)"), so a refusal never rounds the reason away.
func sizeText(n int64) string {
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	f, i := float64(n), 0
	for math.Abs(f) >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".") + " " + units[i]
	// Exact when n*100 is a whole number of units (two decimals say it).
	scale := int64(1) << (10 * i)
	if n > math.MaxInt64/100 || n < math.MinInt64/100 || (n*100)%scale != 0 {
		s += " (" + strconv.FormatInt(n, 10) + " bytes)"
	}
	return s
}

// maxMBpsText writes a pair's --max-mbps cap: "20 MB/s", or "no cap" for
// 0 (a plan line "max 0 MB/s" read as a copy that does not move).
func maxMBpsText(n int64) string {
	if n == 0 {
		return "no cap"
	}
	return strconv.FormatInt(n, 10) + " MB/s"
}
