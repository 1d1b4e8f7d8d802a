package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target"
)

// Enumerated flag values are checked by the CLI before anything is sent
// or opened, so that a typo is a usage error (exit 2) with the allowed
// values and, when one is close, "did you mean". The daemon checks them
// again (lm/pairrules.go); this is only the earlier, friendlier check.

// enumValues lists the values a flag of this name takes anywhere in the
// CLI, nil for a flag that is not an enumeration. A new enum flag is added
// here (and keeps the same meaning on every command that has it; -o is
// checked only where it is the shared outputFlag, so a command may give
// its own -o other formats and check them itself).
func enumValues(flag string) []string {
	switch flag {
	case "output":
		return []string{"table", "json"}
	case "speed":
		return []string{"low", "medium", "high", "highest"}
	case "vehicle":
		return []string{"auto", "generic", "copy_file_range"}
	case "identity":
		return []string{"adopt", "own"}
	case "log-level":
		return []string{"trace", "debug", "info", "warn", "error"}
	case "log-format":
		return []string{"console", "json", "auto"}
	}
	return nil
}

// aluaStates are the names of the access states `alua state` sets
// (target.ParseAccessState also takes aliases such as "active").
func aluaStates() []string {
	var out []string
	for _, s := range target.AccessStates() {
		out = append(out, s.String())
	}
	return out
}

// checkEnum refuses value unless it is one of values: what names the flag
// or argument ("--speed", "STATE").
func checkEnum(what, value string, values []string) error {
	for _, v := range values {
		if value == v {
			return nil
		}
	}
	return usageErr("%s %q: want %s%s", what, value, orList(values), didYouMean(value, values, "%s"))
}

// checkEnumFlags is the Before of every leaf command: each enumerated
// flag the command has and the user set must hold an allowed value.
func checkEnumFlags(c *cli.Context) error {
	if c.Command == nil {
		return nil
	}
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		values := enumValues(name)
		if values == nil || !c.IsSet(name) {
			continue
		}
		if name == "output" && f != cli.Flag(outputFlag) {
			continue // a command's own -o (config export -o yaml): its own values
		}
		v := c.String(name)
		if name == "log-level" {
			v = strings.ToLower(v)
		}
		what := "--" + name
		if name == "output" {
			what = "-o" // as the docs and everyone write it
		}
		if err := checkEnum(what, v, values); err != nil {
			return err
		}
	}
	return nil
}

// orList writes "a, b or c".
func orList(vs []string) string {
	if len(vs) < 2 {
		return strings.Join(vs, "")
	}
	return strings.Join(vs[:len(vs)-1], ", ") + " or " + vs[len(vs)-1]
}

// didYouMean returns " (did you mean X?)" for the candidates closest to
// s (edit distance at most half of s, and at most 3, or s a prefix of
// one), "" when none is close; format renders a candidate ("--%s" for a flag).
func didYouMean(s string, candidates []string, format string) string {
	best, bestD := []string(nil), 3
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if len(s) >= 2 && strings.HasPrefix(c, s) && d > 1 {
			d = 1 // "hi" for "high": a prefix is as good as one typo
		}
		if d > min(3, max(1, len(s)/2)) {
			// Not close: at most half the word may change ("yaml" is
			// three edits from "table"; "migrate" three from "migration").
			continue
		}
		switch {
		case d < bestD:
			best, bestD = []string{c}, d
		case d == bestD:
			best = append(best, c)
		}
	}
	if len(best) == 0 || len(s) < 2 && bestD > 0 {
		return ""
	}
	sort.Strings(best)
	for i, b := range best {
		best[i] = fmt.Sprintf(format, b)
	}
	return " (did you mean " + orList(best) + "?)"
}

// editDistance is the optimal string alignment distance of a and b
// (bytes): Levenshtein's insertions, deletions and substitutions, and a
// swap of two adjacent letters as one edit ("lnu" is one from "lun").
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// commandNames lists the names and aliases of cmds (for "did you mean").
func commandNames(cmds []*cli.Command) []string {
	var out []string
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		out = append(out, c.Names()...)
	}
	return out
}

// flagNames lists the long names of flags (for "did you mean").
func flagNames(flags []cli.Flag) []string {
	var out []string
	for _, f := range flags {
		for _, n := range f.Names() {
			if len(n) > 1 {
				out = append(out, n)
			}
		}
	}
	return out
}
