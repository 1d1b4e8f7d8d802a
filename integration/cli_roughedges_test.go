package integration

import (
	"encoding/json"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tests for the "rough edges" of issue 12 that need the real daemon; the
// ones that do not are in cmd/lmtgt/main_test.go.

// TestCLIDotNames: `lun show .` and `lun delete .` answer with the LUN
// name rule (they printed a JSON decode error of the LUN list, and
// deleted through the collection URL), and change nothing.
func TestCLIDotNames(t *testing.T) {
	d := StartDaemon(t, "")
	d.OK("lun", "create", "keep", "--size", "1MiB")
	for _, name := range []string{".", ".."} {
		for _, args := range [][]string{{"lun", "show", name}, {"lun", "delete", name}, {"lun", "resize", name, "--size", "2MiB"}} {
			r := d.Fail(1, []string{"lun name", "want 1-64 letters"}, args...)
			if strings.Contains(r.Stderr, "json") || strings.Contains(r.Stderr, "unmarshal") {
				t.Errorf("lmtgt %q: a decode error: %s", args, r.Stderr)
			}
			// The class of the refusal is the exit code and the HTTP
			// status, not an errno-like suffix.
			if strings.Contains(r.Stderr, "invalid argument") {
				t.Errorf("lmtgt %q: the message ends with the sentinel's text: %s", args, r.Stderr)
			}
		}
	}
	for _, args := range [][]string{
		{"lun", "create", "é", "--size", "1MiB"},
		{"session", "create", "a/b", "--pair", "keep:keep"},
		{"migration", "create", "--source", "keep", "--target", "small"},
		{"lun", "create", "dn", "--path", "/dev/null"},
	} {
		if args[0] == "migration" {
			d.OK("lun", "create", "small", "--size", "512KiB")
		}
		r := d.Run(args...)
		if r.Code != 1 || strings.Contains(r.Stderr, "invalid argument") {
			t.Errorf("lmtgt %q: want exit 1 and a message without the sentinel's text: %s", args, r)
		}
	}
	var luns []struct{ Name string }
	d.JSON(&luns, "lun", "list")
	if len(luns) != 2 || luns[0].Name != "keep" {
		t.Errorf("after the refusals: %+v", luns)
	}
}

// TestCLIServeDataDirInUse: a second daemon on the same data dir says the
// dir is in use by another lmtgt and gives its PID (it printed the meta store's
// directory lock message); the first keeps serving.
func TestCLIServeDataDirInUse(t *testing.T) {
	d := StartDaemon(t, "")
	d.mu.Lock()
	pid := d.cmd.Process.Pid
	d.mu.Unlock()
	r := runCmd(t, "", nil, lmtgtBin, "serve", "--data-dir", d.DataDir, "--portal", "127.0.0.1:0", "--admin", filepath.Join(t.TempDir(), "a.sock"))
	want := "lmtgt: data dir " + d.DataDir + " is in use by another lmtgt (pid " + strconv.Itoa(pid) + ")\n"
	if r.Code != 1 || !strings.HasSuffix(r.Stderr, "\n"+want) {
		t.Errorf("second lmtgt serve on the same data dir: want exit 1 and %q: %s", want, r)
	}
	d.OK("lun", "list")
	// After a clean stop the next daemon starts on the same dir.
	d.Stop()
	d.Start("127.0.0.1:0")
	d.OK("lun", "list")
}

// TestCLIServePortal: a malformed --portal is a usage error (exit 2)
// naming --portal, and a portal already in use says so in one clean
// message (it stuttered "iSCSI portal: iscsi transport: iscsi:" and
// exited 1 for both).
func TestCLIServePortal(t *testing.T) {
	dir := t.TempDir()
	r := runCmd(t, "", nil, lmtgtBin, "serve", "--data-dir", dir, "--portal", "nonsense")
	if r.Code != 2 || r.Stderr != "lmtgt: --portal \"nonsense\": want host:port, like 127.0.0.1:3260 or [::]:3260\n" || strings.Contains(r.Stderr, "iscsi") {
		t.Errorf("serve --portal nonsense: %s", r)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().String()
	r = runCmd(t, "", nil, lmtgtBin, "serve", "--data-dir", dir, "--portal", busy, "--admin", filepath.Join(dir, "a.sock"))
	if want := "lmtgt: --portal " + busy + ": cannot listen: bind: address already in use\n"; r.Code != 1 || !strings.HasSuffix(r.Stderr, "\n"+want) {
		t.Errorf("serve on a busy portal: want exit 1 and %q: %s", want, r)
	}
}

// TestCLIThrottleAndRates: `migration set --max-mbps 100` on a low pair
// says the cap has no effect and shows the effective rate; rates print in
// MB/s; a paused pair shows no rate; `--watch -o json` prints one compact
// JSON object per line.
func TestCLIThrottleAndRates(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("tsrc", "8MiB", 512)
	d.OK("lun", "create", "tdst", "--size", "8MiB")
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x5a 0 8M")
	d.OK("migration", "create", "--source", "tsrc", "--target", "tdst", "--speed", "low", "--max-mbps", "1")

	out := d.OK("migration", "show", "tsrc")
	if !strings.Contains(out, "low, max 1 MB/s: copies at up to 1 MB/s (the cap limits)") {
		t.Errorf("migration show with a cap below the level:\n%s", out)
	}
	out = d.OK("migration", "set", "tsrc", "--max-mbps", "100")
	if !strings.Contains(out, "copies at up to 10 MB/s (the speed level limits; the cap has no effect)") {
		t.Errorf("migration set --max-mbps 100 on a low pair: %q", out)
	}
	var m wire.Migration
	d.JSON(&m, "migration", "show", "tsrc")
	if m.LimitBps != 10_000_000 || m.LimitedBy != "speed" {
		t.Errorf("migration show -o json after set: limit %d by %q, want 10000000 by speed", m.LimitBps, m.LimitedBy)
	}
	d.OK("migration", "set", "tsrc", "--max-mbps", "1")
	// Wait for a measured rate, then pause: the paused pair shows none.
	waitFor(t, 30*time.Second, "a measured copy rate", func() (bool, string) {
		d.JSON(&m, "migration", "show", "tsrc")
		return m.RateBps > 0, strconv.FormatInt(m.RateBps, 10) + " " + m.State
	})
	if out := d.OK("migration", "list"); !strings.Contains(out, "kB/s") && !strings.Contains(out, "MB/s") {
		t.Errorf("migration list rate not in decimal units:\n%s", out)
	}
	d.OK("migration", "pause", "tsrc")
	d.JSON(&m, "migration", "show", "tsrc")
	if m.State != "paused" || m.RateBps != 0 || m.ETASeconds != 0 {
		t.Errorf("paused pair: state %s rate %d eta %d, want no rate", m.State, m.RateBps, m.ETASeconds)
	}
	if out := d.OK("migration", "show", "tsrc"); !regexp.MustCompile(`(?m)^rate:\s+-$`).MatchString(out) {
		t.Errorf("paused pair shows a rate:\n%s", out)
	}
	d.OK("migration", "resume", "tsrc")
	d.OK("migration", "set", "tsrc", "--speed", "highest", "--max-mbps", "0")
	out = d.OK("migration", "show", "tsrc", "--watch", "-o", "json", "--interval", "100ms")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, line := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil || v["source"] != "tsrc" {
			t.Fatalf("--watch -o json: line %q is not one JSON object (%v); output:\n%s", line, err, out)
		}
	}
	if !strings.Contains(lines[len(lines)-1], `"state":"synced"`) {
		t.Errorf("--watch -o json: last line %q", lines[len(lines)-1])
	}
}
