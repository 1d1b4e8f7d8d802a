package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestBuild writes two OSV entries and checks the indexes govulncheck
// reads: a module's "fixed" is its highest fix, and absent when one of
// its ranges is still open (else govulncheck would skip the entry for a
// version past the fix of another range).
func TestBuild(t *testing.T) {
	src, out := t.TempDir(), filepath.Join(t.TempDir(), "db")
	for id, body := range map[string]string{
		"GO-2026-0001": `{"id":"GO-2026-0001","modified":"0001-01-01T00:00:00Z","aliases":["CVE-1"],"affected":[
			{"package":{"name":"example.com/a"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.0"}]},
			                                        {"type":"SEMVER","events":[{"introduced":"1.3.0"},{"fixed":"1.10.0"}]}]},
			{"package":{"name":"example.com/b"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"2.0.0"}]},
			                                        {"type":"SEMVER","events":[{"introduced":"3.0.0"}]}]}]}`,
		"GO-2026-0002": `{"id":"GO-2026-0002","modified":"0001-01-01T00:00:00Z","affected":[
			{"package":{"name":"example.com/a"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.0-rc.10"}]}]}]}`,
	} {
		if err := os.WriteFile(filepath.Join(src, id+".json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := build(src, out, "2026-11-05T23:49:57Z"); err != nil {
		t.Fatal(err)
	}
	var mods []moduleMeta
	b, err := os.ReadFile(filepath.Join(out, "index", "modules.json"))
	if err != nil || json.Unmarshal(b, &mods) != nil {
		t.Fatalf("modules.json: %v %s", err, b)
	}
	got := map[string]string{}
	for _, m := range mods {
		for _, v := range m.Vulns {
			got[m.Path+" "+v.ID] = v.Fixed
			if v.Modified.Format("2006-01-02") != "2026-11-05" {
				t.Errorf("%s %s: modified %v", m.Path, v.ID, v.Modified)
			}
		}
	}
	want := map[string]string{
		"example.com/a GO-2026-0001": "1.10.0", // 1.10 > 1.2 (numerically)
		"example.com/b GO-2026-0001": "",       // a range without a fix
		"example.com/a GO-2026-0002": "1.2.0-rc.10",
	}
	if len(got) != len(want) {
		t.Errorf("modules index %v, want %v", got, want)
	}
	for k, v := range want {
		if f, ok := got[k]; !ok || f != v {
			t.Errorf("%s: fixed %q (present %v), want %q", k, f, ok, v)
		}
	}
	for _, f := range []string{"index/db.json", "index/vulns.json", "ID/GO-2026-0001.json", "ID/GO-2026-0002.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	for _, c := range []struct {
		a, b string
		less bool
	}{{"1.2.0", "1.10.0", true}, {"1.2.0-rc.2", "1.2.0-rc.10", true}, {"1.2.0-rc.1", "1.2.0", true}, {"1.2.0", "1.2.0-rc.1", false}, {"", "0.0.1", true}} {
		if got := semverLess(c.a, c.b); got != c.less {
			t.Errorf("semverLess(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
