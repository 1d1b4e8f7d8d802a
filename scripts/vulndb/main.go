// Command vulndb builds a Go vulnerability database in the layout
// govulncheck reads with -db file:///DIR (the "v1" schema of
// vuln.go.dev) from a directory of OSV entries: the data/osv directory of
// the golang.org/x/vulndb module, which the module proxy serves where
// vuln.go.dev is not reachable (scripts/govulncheck.sh).
//
//	DIR/index/db.json       {"modified": TIME}
//	DIR/index/modules.json  [{"path": MODULE, "vulns": [{"id", "modified", "fixed"}]}]
//	DIR/index/vulns.json    [{"id", "modified", "aliases"}]
//	DIR/ID/GO-YYYY-NNNN.json  the OSV entry as it is
//
// "fixed" is the highest version that fixes the entry for the module, or
// absent when a range of it has no fix: govulncheck skips an entry when
// the module's version is not below "fixed", so a range left open must
// never be hidden behind the fix of another.
//
// Usage: go run ./scripts/vulndb -src OSV_DIR -out DIR [-modified TIME]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// entry is the part of an OSV entry the indexes need.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Module struct {
			Path string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Type   string              `json:"type"`
			Events []map[string]string `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vulnMeta struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

func main() {
	src := flag.String("src", "", "directory of OSV entries (GO-*.json)")
	out := flag.String("out", "", "database directory to write (replaced)")
	mod := flag.String("modified", "", "database time (RFC 3339) for entries without one (default: the newest file time)")
	flag.Parse()
	if *src == "" || *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: vulndb -src OSV_DIR -out DIR [-modified TIME]")
		os.Exit(2)
	}
	if err := build(*src, *out, *mod); err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
}

func build(src, out, modified string) error {
	files, err := filepath.Glob(filepath.Join(src, "GO-*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("%s: no GO-*.json OSV entries", src)
	}
	// Entries in x/vulndb carry a zero "modified" (set when published);
	// the database then gets one time: -modified, else the newest file.
	var dbTime time.Time
	if modified != "" {
		if dbTime, err = time.Parse(time.RFC3339, modified); err != nil {
			return fmt.Errorf("-modified %q: %w", modified, err)
		}
	}
	tmp := out + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	for _, d := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			return err
		}
	}
	modules := map[string]*moduleMeta{}
	var vulns []vulnMeta
	var entries []entry
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if e.ID == "" || e.ID+".json" != filepath.Base(f) {
			return fmt.Errorf("%s: id %q does not match the file name", f, e.ID)
		}
		if modified == "" {
			if fi, err := os.Stat(f); err == nil && fi.ModTime().After(dbTime) {
				dbTime = fi.ModTime().UTC().Truncate(time.Second)
			}
		}
		if err := os.WriteFile(filepath.Join(tmp, "ID", e.ID+".json"), b, 0o644); err != nil {
			return err
		}
		entries = append(entries, e)
	}
	for _, e := range entries {
		m := e.Modified
		if m.IsZero() {
			m = dbTime
		}
		vulns = append(vulns, vulnMeta{ID: e.ID, Modified: m, Aliases: e.Aliases})
		fixed := map[string]string{} // module -> highest fix
		open := map[string]bool{}    // module -> a range without a fix
		for _, a := range e.Affected {
			p := a.Module.Path
			if _, ok := fixed[p]; !ok {
				fixed[p] = ""
			}
			if len(a.Ranges) == 0 {
				open[p] = true
			}
			for _, r := range a.Ranges {
				last := ""
				for _, ev := range r.Events {
					for k, v := range ev {
						last = k
						if k == "fixed" && semverLess(fixed[p], v) {
							fixed[p] = v
						}
					}
				}
				if last != "fixed" {
					open[p] = true
				}
			}
		}
		for p, fx := range fixed {
			if open[p] {
				fx = ""
			}
			mm := modules[p]
			if mm == nil {
				mm = &moduleMeta{Path: p}
				modules[p] = mm
			}
			mm.Vulns = append(mm.Vulns, moduleVuln{ID: e.ID, Modified: m, Fixed: fx})
		}
	}
	var mods []*moduleMeta
	for _, m := range modules {
		sort.Slice(m.Vulns, func(i, j int) bool { return m.Vulns[i].ID < m.Vulns[j].ID })
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	sort.Slice(vulns, func(i, j int) bool { return vulns[i].ID < vulns[j].ID })
	for name, v := range map[string]any{
		"db.json":      map[string]time.Time{"modified": dbTime},
		"modules.json": mods,
		"vulns.json":   vulns,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, "index", name), b, 0o644); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Printf("vulndb: %d entries, %d modules, modified %s -> %s\n", len(entries), len(mods), dbTime.Format(time.RFC3339), out)
	return nil
}

// semverLess reports a < b for OSV versions (no "v"; "" is lowest):
// major.minor.patch, then a pre-release sorts before its release.
func semverLess(a, b string) bool {
	if a == "" {
		return b != ""
	}
	if b == "" {
		return false
	}
	an, apre, _ := strings.Cut(a, "-")
	bn, bpre, _ := strings.Cut(b, "-")
	as, bs := strings.Split(an, "."), strings.Split(bn, ".")
	for i := 0; i < 3; i++ {
		x, y := num(as, i), num(bs, i)
		if x != y {
			return x < y
		}
	}
	switch {
	case apre == bpre:
		return false
	case apre == "":
		return false
	case bpre == "":
		return true
	}
	return prereleaseLess(apre, bpre)
}

func num(parts []string, i int) int {
	if i >= len(parts) {
		return 0
	}
	n, _ := strconv.Atoi(parts[i])
	return n
}

// prereleaseLess compares dot-separated pre-release identifiers
// (numeric ones numerically), as SemVer 2.0.0 says.
func prereleaseLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		x, xerr := strconv.Atoi(as[i])
		y, yerr := strconv.Atoi(bs[i])
		switch {
		case xerr == nil && yerr == nil:
			return x < y
		case xerr == nil:
			return true
		case yerr == nil:
			return false
		}
		return as[i] < bs[i]
	}
	return len(as) < len(bs)
}
