package integration

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricsAddr is the metrics address from the daemon's ready line.
func metricsAddr(t testing.TB, d *Daemon) string {
	t.Helper()
	for _, line := range strings.Split(d.stdout.String(), "\n") {
		if !strings.HasPrefix(line, "lmtgt serving ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "metrics="); ok {
				return v
			}
		}
	}
	t.Fatalf("no metrics= in the ready line:\n%s", d.stdout)
	return ""
}

// scrape fetches /metrics and returns its samples by series ("name{labels}").
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s Content-Type %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetrics starts the daemon with --metrics on a free port, moves the
// LUN counters with qemu-io, watches the session gauge while a qemu-io
// session is open, migrates the LUN and finds the pair's state.
func TestMetrics(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "", "--metrics", "127.0.0.1:0")
	addr := metricsAddr(t, d)
	iqn := d.Export("msrc", "8MiB", 512)
	d.OK("lun", "create", "mdst", "--size", "8MiB")

	m := scrape(t, addr)
	for series, want := range map[string]float64{
		`lmtgt_lun_size_bytes{lun="msrc"}`:                    8 << 20,
		`lmtgt_lun_size_bytes{lun="mdst"}`:                    8 << 20,
		`lmtgt_lun_write_ops_total{lun="msrc"}`:               0,
		`lmtgt_iscsi_sessions{target="` + iqn + `"}`:          0,
		`lmtgt_iscsi_login_failures_total`:                    0,
		`lmtgt_lun_written_bytes_total{lun="mdst"}`:           0,
		`lmtgt_build_info{version="` + buildVersion(m) + `"}`: 1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("before I/O: %s = %v (present %v), want %v", series, got, ok, want)
		}
	}

	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x4d 0 1M", "read -P 0x4d 0 1M")
	m = scrape(t, addr)
	if w := m[`lmtgt_lun_written_bytes_total{lun="msrc"}`]; w < 1<<20 {
		t.Errorf("written bytes %v after a 1 MiB write", w)
	}
	if r := m[`lmtgt_lun_read_bytes_total{lun="msrc"}`]; r < 1<<20 {
		t.Errorf("read bytes %v after a 1 MiB read", r)
	}
	if m[`lmtgt_lun_write_ops_total{lun="msrc"}`] < 1 || m[`lmtgt_lun_read_ops_total{lun="msrc"}`] < 1 {
		t.Errorf("op counters did not move: writes %v reads %v", m[`lmtgt_lun_write_ops_total{lun="msrc"}`], m[`lmtgt_lun_read_ops_total{lun="msrc"}`])
	}
	if m[`lmtgt_iscsi_logins_total{type="normal"}`] < 1 {
		t.Errorf("logins_total{normal} = %v after a qemu-io session", m[`lmtgt_iscsi_logins_total{type="normal"}`])
	}

	// A session stays open: the gauge shows it, then drops back.
	q := startQIO(t, "metrics", d.URL(iqn, 0))
	if err := q.write(1<<20, 64<<10, 0x11); err != nil {
		t.Fatal(err)
	}
	sessions := `lmtgt_iscsi_sessions{target="` + iqn + `"}`
	if got := scrape(t, addr)[sessions]; got != 1 {
		t.Errorf("%s = %v while a qemu-io session is open, want 1", sessions, got)
	}
	q.close()
	waitFor(t, 10*time.Second, "the session gauge back to 0", func() (bool, string) {
		v := scrape(t, addr)[sessions]
		return v == 0, fmt.Sprint(v)
	})

	// A short migration: the pair appears with its state and sizes.
	d.OK("migration", "create", "--source", "msrc", "--target", "mdst", "--speed", "highest")
	d.waitMig("msrc", 30*time.Second, "synced")
	m = scrape(t, addr)
	pair := `source="msrc",target="mdst"`
	if m[`lmtgt_migration_state{`+pair+`,state="synced"}`] != 1 || m[`lmtgt_migration_state{`+pair+`,state="copying"}`] != 0 {
		t.Errorf("migration state lines while synced: synced=%v copying=%v", m[`lmtgt_migration_state{`+pair+`,state="synced"}`], m[`lmtgt_migration_state{`+pair+`,state="copying"}`])
	}
	if m[`lmtgt_migration_total_bytes{`+pair+`}`] != 8<<20 || m[`lmtgt_migration_copied_bytes{`+pair+`}`] != 8<<20 {
		t.Errorf("copied/total %v/%v, want 8 MiB both", m[`lmtgt_migration_copied_bytes{`+pair+`}`], m[`lmtgt_migration_total_bytes{`+pair+`}`])
	}
	d.OK("migration", "split", "msrc")
	d.waitMig("msrc", 30*time.Second, "split")
	m = scrape(t, addr)
	if m[`lmtgt_migration_state{`+pair+`,state="split"}`] != 1 {
		t.Errorf("after split: state=split line = %v", m[`lmtgt_migration_state{`+pair+`,state="split"}`])
	}
	if p, ok := m[`lmtgt_migration_split_pause_seconds{`+pair+`}`]; !ok || p < 0 || p > 1 {
		t.Errorf("split pause %v (present %v), want 0..1 s", p, ok)
	}
	// The host still sees its LUN and the counters keep counting.
	before := m[`lmtgt_lun_read_ops_total{lun="msrc"}`]
	qemuIOOK(t, d.URL(iqn, 0), "read -P 0x4d 0 512k")
	if after := scrape(t, addr)[`lmtgt_lun_read_ops_total{lun="msrc"}`]; after <= before {
		t.Errorf("read ops %v -> %v across a read after the split", before, after)
	}
	d.Stop()
}

// buildVersion is the version label of lmtgt_build_info in m.
func buildVersion(m map[string]float64) string {
	for k := range m {
		if v, ok := strings.CutPrefix(k, `lmtgt_build_info{version="`); ok {
			return strings.TrimSuffix(v, `"}`)
		}
	}
	return "?"
}
