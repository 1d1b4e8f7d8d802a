package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestShowSwitchedWithWindowAndGuard: `migration show` of a switched pair
// (split --keep-source) with a daily window in force and a host-latency
// bound says each consistently, in text and -o json: the state and that
// writes are mirrored back, the window's rate as the limit (the pair's
// own speed named as what applies outside the windows), the bound; the
// config file carries the pair's options, the bound too.
func TestShowSwitchedWithWindowAndGuard(t *testing.T) {
	d := StartDaemon(t, "")
	d.OK("lun", "create", "src", "--size", "16M")
	d.OK("lun", "create", "dst", "--size", "16M")
	d.OK("migration", "create", "--source", "src", "--target", "dst", "--speed", "highest",
		"--window", "00:00-00:00=low,max-mbps=20", "--max-host-latency", "2ms")
	d.waitMig("src", 30*time.Second, "synced")
	d.OK("migration", "split", "src", "--keep-source")

	var m wire.Migration
	d.JSON(&m, "migration", "show", "src")
	if m.State != "switched" || !m.Switched || m.Speed != "highest" || m.Window != "00:00-00:00=low,max-mbps=20" ||
		len(m.Windows) != 1 || m.LimitBps != 10_000_000 || m.LimitedBy != "speed" || m.MaxHostLatency != "2ms" || m.HostLatencyBound != "2ms" {
		t.Fatalf("show -o json of the switched pair: %+v", m)
	}
	text := d.OK("migration", "show", "src")
	t.Logf("show:\n%s", text)
	for _, want := range []string{
		"state:          switched\n",
		"speed:          highest outside the windows; window 00:00-00:00=low,max-mbps=20 in force: copies at up to 10 MB/s\n",
		"effective rate: - (max host latency 2ms)\n",
		"options:        switched: on the new volume, writes mirrored back to the old one (rollback or commit)\n",
		"windows:        00:00-00:00=low,max-mbps=20\n",
		"window now:     00:00-00:00=low,max-mbps=20\n",
		"estimate:       nothing to copy, actual ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("show does not say %q", want)
		}
	}
	var c wire.Config
	d.JSON(&c, "config", "export")
	if len(c.Migrations) != 1 || c.Migrations[0].MaxHostLatency != "2ms" || c.Migrations[0].Speed != "highest" ||
		len(c.Migrations[0].Windows) != 1 {
		t.Fatalf("config export of the switched pair: %+v", c.Migrations)
	}
}
