package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
)

// outputFlag is the -o flag of every client command.
var outputFlag = &cli.StringFlag{
	Name:    "output",
	Aliases: []string{"o"},
	Value:   "table",
	Usage:   "output format: table or json",
}

// jsonOutput reports whether -o json was asked, refusing unknown formats.
func jsonOutput(c *cli.Context) (bool, error) {
	switch f := c.String("output"); f {
	case "table", "":
		return false, nil
	case "json":
		return true, nil
	default:
		return false, checkEnum("-o", f, enumValues("output"))
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJSONLine prints v as one compact JSON object on one line: what
// --watch -o json prints per refresh (JSON lines).
func printJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// table prints rows aligned in columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// fields prints "key: value" lines aligned.
func fields(w io.Writer, kv [][2]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, p := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sizeStr(n int64) string { return client.FormatSize(n) }

// rateStr prints a rate in decimal units (1 MB/s = 10^6 bytes/s), the
// unit of --speed and --max-mbps; "-" for none.
func rateStr(bps int64) string {
	if bps <= 0 {
		return "-"
	}
	units := []string{"B/s", "kB/s", "MB/s", "GB/s", "TB/s"}
	f := float64(bps)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	v := strconv.FormatFloat(f, 'f', 1, 64)
	v = strings.TrimSuffix(v, ".0")
	return v + " " + units[i]
}

// limitStr describes the copy rate limit of a pair or session: the speed
// level, the cap, the rate they allow together and which one limits, so
// that a cap above the level is not shown as if it did something.
func limitStr(speed string, maxMBps, limitBps int64, limitedBy string) string {
	s := speed
	if maxMBps > 0 {
		s += fmt.Sprintf(", max %d MB/s", maxMBps)
	}
	return s + ": " + limitNote(maxMBps, limitBps, limitedBy)
}

func etaStr(sec int64) string {
	if sec <= 0 {
		return "-"
	}
	d := time.Duration(sec) * time.Second
	h := int(d.Hours())
	m := int(d.Minutes()) % 60
	s := int(d.Seconds()) % 60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}

func percent(done, total int64) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(done)/float64(total))
}

// progressBar draws "[#####.....]" of width cells for done/total.
func progressBar(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(float64(width) * float64(done) / float64(total))
	}
	filled = max(0, min(width, filled))
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}
