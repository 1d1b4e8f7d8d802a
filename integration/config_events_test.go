package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigApplyEvents: every change a `config apply` makes is in the
// event log, naming its object, what was done and who asked, as the same
// change made with its own command is (the log had one "config apply
// config" event: nothing named the LUN it created or the target whose
// CHAP it changed).
func TestConfigApplyEvents(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("ev", "1MiB", 512)
	file := filepath.Join(t.TempDir(), "c.yaml")
	orig := string(d.exportFile(file))
	changed := strings.Replace(orig, "luns:\n", "luns:\n  - name: evnew\n    size: 2097152\n", 1)
	changed = strings.Replace(changed, "    allow_all: true\n", "    allow_all: true\n    chap:\n      user: evuser\n      secret: ev-secret-123\n", 1)
	if changed == orig || !strings.Contains(changed, "evuser") {
		t.Fatalf("could not edit the export:\n%s", orig)
	}
	if err := os.WriteFile(file, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	d.OK("config", "apply", file)
	evs := d.events("--type", "admin")
	find := func(object, reason string) bool {
		for _, e := range evs {
			if e.Action == "config apply" && e.Object == object && e.OK && strings.Contains(e.Reason, reason) && strings.Contains(e.Who, "uid") {
				return true
			}
		}
		return false
	}
	if !find("lun evnew", "create: 2 MiB") {
		t.Errorf("no event of the LUN the apply created:\n%s", strings.Join(eventLines(evs), "\n"))
	}
	if !find("target "+iqn, "chap user evuser") {
		t.Errorf("no event of the CHAP change of %s:\n%s", iqn, strings.Join(eventLines(evs), "\n"))
	}
}
