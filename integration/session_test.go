package integration

import (
	"fmt"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"strings"
	"testing"
	"time"
)

// TestSessionAutoSplit migrates three exported LUNs as one session with
// --auto-split while qemu-io writes to one of them, waits with
// `session show --watch` until the session is split, and checks that every
// source LUN now sits on its target's old volume with its data intact.
func TestSessionAutoSplit(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	var iqns []string
	var pairs []string
	before := map[string]string{}
	for i := range 3 {
		src, dst := fmt.Sprintf("ss%d", i), fmt.Sprintf("ss%d-new", i)
		iqn := d.Export(src, "8MiB", 512)
		iqns = append(iqns, iqn)
		d.OK("lun", "create", dst, "--size", "8MiB")
		qemuIOOK(t, d.URL(iqn, 0), fmt.Sprintf("write -P 0x%x 0 3M", 0x11*(i+1)))
		var l wire.LUN
		d.JSON(&l, "lun", "show", dst)
		before[dst] = l.Volume
		pairs = append(pairs, "--pair", src+":"+dst)
	}
	d.Fail(1, []string{"session bad", "pair 1 (ss0 → nope) refused", "not found"},
		"session", "create", "bad", "--pair", "ss0:nope")

	// Slow first, so that the host writes land during the copy.
	args := append([]string{"session", "create", "wave", "--speed", "low", "--max-mbps", "1", "--auto-split"}, pairs...)
	if out := d.OK(args...); !strings.Contains(out, "session wave created with 3 pairs") {
		t.Errorf("session create output: %q", out)
	}
	if out := d.OK("session", "list"); !strings.Contains(out, "wave") || !strings.Contains(out, "auto-split") {
		t.Errorf("session list:\n%s", out)
	}
	qemuIOOK(t, d.URL(iqns[1], 0), "write -P 0x5a 1M 512k", "write -P 0x5b 6M 1M")
	if out := d.OK("session", "set", "wave", "--speed", "highest", "--max-mbps", "0"); !strings.Contains(out, "speed highest, no cap") {
		t.Errorf("session set output: %q", out)
	}

	out := d.OK("session", "show", "wave", "--watch", "--interval", "100ms")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; !strings.HasSuffix(last, "split") {
		t.Fatalf("--watch: last line %q", last)
	}
	var s wire.MigrationSession
	waitFor(t, 10*time.Second, "the split pause on every pair", func() (bool, string) {
		d.JSON(&s, "session", "show", "wave")
		for _, p := range s.Pairs {
			if p.State != "split" || p.SplitPauseMS != s.Pairs[0].SplitPauseMS {
				return false, fmt.Sprintf("%+v", s)
			}
		}
		return s.State == "split" && len(s.Pairs) == 3, fmt.Sprintf("%+v", s)
	})
	for i := range 3 {
		src, dst := fmt.Sprintf("ss%d", i), fmt.Sprintf("ss%d-new", i)
		var l wire.LUN
		d.JSON(&l, "lun", "show", src)
		if l.Volume != before[dst] {
			t.Errorf("%s: volume %s after the split, want %s (the target's)", src, l.Volume, before[dst])
		}
	}
	qemuIOOK(t, d.URL(iqns[0], 0), "read -P 0x11 0 3M", "read -P 0 3M 5M")
	qemuIOOK(t, d.URL(iqns[1], 0), "read -P 0x22 0 1M", "read -P 0x5a 1M 512k", "read -P 0x22 1536k 1536k",
		"read -P 0 3M 3M", "read -P 0x5b 6M 1M", "read -P 0 7M 1M")
	qemuIOOK(t, d.URL(iqns[2], 0), "read -P 0x33 0 3M", "read -P 0 3M 5M")

	if out := d.OK("session", "show", "wave"); !strings.Contains(out, "state:") || !strings.Contains(out, "SOURCE") ||
		strings.Count(out, " split ") < 3 {
		t.Errorf("session show:\n%s", out)
	}
	d.Fail(1, []string{"session wave", "is split"}, "session", "cancel", "wave")
	d.OK("session", "delete", "wave")
	if out := d.OK("session", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("session list after delete: %s", out)
	}
}
