package integration

import (
	"encoding/json"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"strings"
	"testing"
)

// TestMigrationCLI covers the CLI surface of a migration (the migration
// behaviour itself is covered by the migration_* tests): create, the table
// and JSON views, --watch until synced (one line per refresh when stdout is
// not a terminal), set, pause/resume, split output, and the LUN views.
func TestMigrationCLI(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("msrc", "8MiB", 512)
	d.OK("lun", "create", "mdst", "--size", "12MiB")
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x4d 0 2M")

	out := d.OK("migration", "create", "--source", "msrc", "--target", "mdst", "--speed", "low", "--max-mbps", "1")
	if !strings.Contains(out, "migration msrc -> mdst created") || !strings.Contains(out, "lmtgt migration show msrc --watch") {
		t.Errorf("migration create output: %q", out)
	}
	var src, dst wire.LUN
	d.JSON(&src, "lun", "show", "msrc")
	d.JSON(&dst, "lun", "show", "mdst")
	if src.Migration == nil || src.Migration.Role != "source" || src.Migration.Peer != "mdst" ||
		dst.Migration == nil || dst.Migration.Role != "target" || dst.Migration.Peer != "msrc" {
		t.Errorf("lun show during a migration: %+v %+v", src.Migration, dst.Migration)
	}
	if out := d.OK("lun", "list"); !strings.Contains(out, "-> mdst") || !strings.Contains(out, "<- msrc") {
		t.Errorf("lun list does not show the pair:\n%s", out)
	}
	d.Fail(1, []string{"lun mdst", "target of pair"}, "target", "map", iqn, "mdst")
	d.Fail(1, []string{"mdst", "in a migration pair"}, "lun", "delete", "mdst")

	out = d.OK("migration", "pause", "msrc")
	if !strings.Contains(out, "state paused") {
		t.Errorf("pause output: %q", out)
	}
	d.OK("migration", "resume", "msrc")
	out = d.OK("migration", "set", "msrc", "--speed", "highest", "--max-mbps", "0")
	if !strings.Contains(out, "speed highest, no cap") {
		t.Errorf("set output: %q", out)
	}
	// --watch returns once synced, printing progress lines.
	out = d.OK("migration", "show", "msrc", "--watch", "--interval", "100ms")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "[") || !strings.Contains(last, "synced") || !strings.Contains(last, "100.0%") {
		t.Errorf("--watch: last line %q", last)
	}
	var m map[string]any
	d.JSON(&m, "migration", "show", "msrc")
	for _, k := range []string{"state", "reason", "copied_bytes", "total_bytes", "dcl_bytes", "rate_bps", "vehicle", "split_pause_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("migration show -o json lacks %q: %v", k, m)
		}
	}
	if m["state"] != "synced" || m["speed"] != "highest" {
		t.Errorf("migration show -o json: %v", m)
	}
	var list []json.RawMessage
	d.JSON(&list, "migration", "list")
	if len(list) != 1 {
		t.Errorf("migration list -o json: %d pairs", len(list))
	}
	out = d.OK("migration", "split", "msrc", "--max-pause", "200ms")
	if !strings.Contains(out, "split msrc: host I/O paused") {
		t.Errorf("split output: %q", out)
	}
	var after wire.LUN
	d.JSON(&after, "lun", "show", "msrc")
	if after.Migration != nil {
		t.Errorf("after the split lun show still has a migration: %+v", after)
	}
	qemuIOOK(t, d.URL(iqn, 0), "read -P 0x4d 0 2M")
	d.OK("target", "map", iqn, "mdst") // mappable once split
	qemuIOOK(t, d.URL(iqn, 1), "read -P 0x4d 0 2M")
}
