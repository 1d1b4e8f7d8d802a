package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// families are lmtgt's own metric family names with their types, as a
// scrape of a snapshot with something in every family reports them.
func families(t *testing.T) map[string]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(func() (Snapshot, error) { return goldenSnapshot(), nil }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, mf := range mfs {
		out[mf.GetName()] = strings.ToLower(mf.GetType().String())
	}
	var n int
	ch := make(chan *prometheus.Desc, 64)
	newCollector(nil).Describe(ch)
	close(ch)
	for range ch {
		n++
	}
	if n != len(out) {
		t.Fatalf("the golden snapshot fills %d families of %d described: give it something in each", len(out), n)
	}
	return out
}

// metricNames are the lmtgt_ names in s.
func metricNames(s string) []string {
	return regexp.MustCompile(`lmtgt_[a-z0-9_]+`).FindAllString(s, -1)
}

// TestMetricsDocumented: docs/metrics.md has a table row for every
// family, with its type, and names no family that does not exist.
func TestMetricsDocumented(t *testing.T) {
	fams := families(t)
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name, typ := range fams {
		row := fmt.Sprintf("| `%s` | %s |", name, typ)
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/metrics.md: no row %q", row)
		}
	}
	for _, name := range metricNames(string(doc)) {
		if _, ok := fams[baseFamily(name, fams)]; !ok {
			t.Errorf("docs/metrics.md names %s, which lmtgt does not export", name)
		}
	}
}

// baseFamily maps a series name (histogram _bucket, _sum, _count) to its
// family.
func baseFamily(name string, fams map[string]string) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(name, suf); ok && fams[b] == "histogram" {
			return b
		}
	}
	return name
}

// TestGrafanaDashboard: docs/grafana-lmtgt.json is valid JSON, every
// panel queries something, every query names only exported families, and
// (with promtool) every query parses as PromQL.
func TestGrafanaDashboard(t *testing.T) {
	fams := families(t)
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "grafana-lmtgt.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-lmtgt.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without title, uid or panels: %+v", dash)
	}
	var exprs []string
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if q.Expr == "" {
				t.Errorf("panel %q: empty query", p.Title)
			}
			for _, name := range metricNames(q.Expr) {
				b := baseFamily(name, fams)
				if _, ok := fams[b]; !ok {
					t.Errorf("panel %q queries %s, which lmtgt does not export", p.Title, name)
				}
				used[b] = true
			}
			exprs = append(exprs, q.Expr)
		}
	}
	// The dashboard shows what the issue asks for.
	for _, f := range []string{"lmtgt_lun_io_ops_total", "lmtgt_lun_io_duration_seconds", "lmtgt_migration_copied_bytes_total", "lmtgt_migration_dcl_bytes", "lmtgt_split_pause_seconds"} {
		if !used[f] {
			t.Errorf("the dashboard does not show %s", f)
		}
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool not installed: the queries' PromQL is not checked")
		return
	}
	// promtool parses every query as a recording rule, Grafana's
	// variables replaced by what they expand to.
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__range", "6h", "$lun", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n- name: grafana\n  rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(vars.Replace(e)) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "  - record: grafana:query%d\n    expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules (the dashboard's queries): %v\n%s\n%s", err, out, rules.String())
	}
}
