package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
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

// httpGet fetches url and returns the status code and the body.
func httpGet(t testing.TB, url string) (int, http.Header, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, body
}

// scrapeText fetches /metrics in the text format (what curl gets).
func scrapeText(t testing.TB, addr string) []byte {
	t.Helper()
	code, h, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %d Content-Type %q\n%s", code, h.Get("Content-Type"), body)
	}
	return body
}

// samples parses a text exposition into its samples by series
// ("name{labels}").
func samples(t testing.TB, body []byte) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// scrape fetches /metrics and returns its samples by series.
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	return samples(t, scrapeText(t, addr))
}

// promtoolCheck runs `promtool check metrics` (Debian package prometheus)
// on an exposition: no lint problem and no parse error.
func promtoolCheck(t testing.TB, body []byte) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, body)
	}
}

// pairSeries returns the label set `pair="ID",source="S",target="T"` of
// the live pair whose source is src, or "" when m has none.
func pairSeries(m map[string]float64, src string) string {
	for k := range m {
		rest, ok := strings.CutPrefix(k, "lmtgt_migration_size_bytes{")
		if ok && strings.Contains(rest, `,source="`+src+`",`) {
			return strings.TrimSuffix(rest, "}")
		}
	}
	return ""
}

// TestMetrics starts the daemon with --metrics on a free port, checks the
// exposition with promtool (standard go_ and process_ collectors
// included), moves the LUN counters and latency histograms with qemu-io,
// watches the session gauges while a qemu-io session is open, scrapes
// twice during a throttled migration (the copied-bytes counter grows),
// and finds no series of the pair after its split.
func TestMetrics(t *testing.T) {
	needTools(t, "qemu-io", "promtool")
	d := StartDaemon(t, "", "--metrics", "127.0.0.1:0")
	addr := metricsAddr(t, d)
	iqn := d.Export("msrc", "16MiB", 512)
	d.OK("lun", "create", "mdst", "--size", "16MiB")

	body := scrapeText(t, addr)
	promtoolCheck(t, body)
	m := samples(t, body)
	if _, err := exec.LookPath("curl"); err == nil {
		// What the issue asks, literally: curl's output passes promtool.
		r := runCmd(t, "", nil, "curl", "-sS", "--fail", "http://"+addr+"/metrics")
		if r.Code != 0 {
			t.Fatalf("curl /metrics: %s", r)
		}
		promtoolCheck(t, []byte(r.Stdout))
	}
	for _, family := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} {
		if !bytes.Contains(body, []byte("\n"+family)) {
			t.Errorf("no %s series (standard collectors)", family)
		}
	}
	for series, want := range map[string]float64{
		`lmtgt_lun_size_bytes{lun="msrc"}`:                    16 << 20,
		`lmtgt_lun_size_bytes{lun="mdst"}`:                    16 << 20,
		`lmtgt_lun_io_ops_total{lun="msrc",op="write"}`:       0,
		`lmtgt_iscsi_target_sessions{iqn="` + iqn + `"}`:      0,
		`lmtgt_iscsi_login_failures_total`:                    0,
		`lmtgt_lun_io_bytes_total{lun="mdst",op="write"}`:     0,
		`lmtgt_split_deferrals_total`:                         0,
		`lmtgt_split_pause_seconds_count`:                     0,
		`lmtgt_build_info{version="` + buildVersion(m) + `"}`: 1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("before I/O: %s = %v (present %v), want %v", series, got, ok, want)
		}
	}

	// 8 MiB of data for the migration to copy.
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x4d 0 8M", "read -P 0x4d 0 1M")
	m = scrape(t, addr)
	if w := m[`lmtgt_lun_io_bytes_total{lun="msrc",op="write"}`]; w < 8<<20 {
		t.Errorf("written bytes %v after an 8 MiB write", w)
	}
	if r := m[`lmtgt_lun_io_bytes_total{lun="msrc",op="read"}`]; r < 1<<20 {
		t.Errorf("read bytes %v after a 1 MiB read", r)
	}
	for _, op := range []string{"read", "write"} {
		ops := m[`lmtgt_lun_io_ops_total{lun="msrc",op="`+op+`"}`]
		timed := m[`lmtgt_lun_io_duration_seconds_count{lun="msrc",op="`+op+`"}`]
		inf := m[`lmtgt_lun_io_duration_seconds_bucket{lun="msrc",op="`+op+`",le="+Inf"}`]
		if ops < 1 || timed < ops || inf != timed || m[`lmtgt_lun_io_duration_seconds_sum{lun="msrc",op="`+op+`"}`] <= 0 {
			t.Errorf("%s: %v ops, %v timed (+Inf bucket %v): the latency histogram does not follow the commands", op, ops, timed, inf)
		}
		if e := m[`lmtgt_lun_io_errors_total{lun="msrc",op="`+op+`"}`]; e != 0 {
			t.Errorf("%s errors %v on a healthy LUN", op, e)
		}
	}
	if m[`lmtgt_iscsi_logins_total{type="normal"}`] < 1 {
		t.Errorf("logins_total{normal} = %v after a qemu-io session", m[`lmtgt_iscsi_logins_total{type="normal"}`])
	}

	// A session stays open: the gauges show it, then drop back.
	q := startQIO(t, "metrics", d.URL(iqn, 0))
	if err := q.write(1<<20, 64<<10, 0x11); err != nil {
		t.Fatal(err)
	}
	m = scrape(t, addr)
	if got := m[`lmtgt_iscsi_target_sessions{iqn="`+iqn+`"}`]; got != 1 {
		t.Errorf("target sessions = %v while a qemu-io session is open, want 1", got)
	}
	var perInitiator, conns float64
	for k, v := range m {
		if strings.HasPrefix(k, `lmtgt_iscsi_sessions{initiator="`) && strings.HasSuffix(k, `,iqn="`+iqn+`"}`) {
			perInitiator += v
		}
		if strings.HasPrefix(k, `lmtgt_iscsi_connections{initiator="`) && strings.HasSuffix(k, `,iqn="`+iqn+`"}`) {
			conns += v
		}
	}
	if perInitiator != 1 || conns != 1 {
		t.Errorf("sessions %v, connections %v by initiator while one qemu-io session is open, want 1 and 1", perInitiator, conns)
	}
	q.close()
	waitFor(t, 10*time.Second, "the session gauge back to 0", func() (bool, string) {
		v := scrape(t, addr)[`lmtgt_iscsi_target_sessions{iqn="`+iqn+`"}`]
		return v == 0, fmt.Sprint(v)
	})

	// A migration throttled to 1 MB/s: two scrapes while it copies show
	// the copied-bytes counter growing.
	d.OK("migration", "create", "--source", "msrc", "--target", "mdst", "--speed", "low", "--max-mbps", "1")
	var pair string
	var first float64
	waitFor(t, 30*time.Second, "the pair's copied-bytes counter above 0 while copying", func() (bool, string) {
		m := scrape(t, addr)
		pair = pairSeries(m, "msrc")
		if pair == "" {
			return false, "no pair series"
		}
		first = m[`lmtgt_migration_copied_bytes_total{`+pair+`}`]
		copying := m[`lmtgt_migration_state{`+strings.Replace(pair, `,target=`, `,state="copying",target=`, 1)+`}`]
		return first > 0 && copying == 1, fmt.Sprintf("copied %v, copying %v", first, copying)
	})
	waitFor(t, 30*time.Second, "the copied-bytes counter growing between two scrapes", func() (bool, string) {
		v := scrape(t, addr)[`lmtgt_migration_copied_bytes_total{`+pair+`}`]
		return v > first, fmt.Sprintf("first %v, now %v", first, v)
	})
	body = scrapeText(t, addr)
	promtoolCheck(t, body)

	d.OK("migration", "set", "msrc", "--speed", "highest", "--max-mbps", "0")
	d.waitMig("msrc", 60*time.Second, "synced")
	m = scrape(t, addr)
	synced := `lmtgt_migration_state{` + strings.Replace(pair, `,target=`, `,state="synced",target=`, 1) + `}`
	if m[synced] != 1 {
		t.Errorf("%s = %v while synced", synced, m[synced])
	}
	if m[`lmtgt_migration_size_bytes{`+pair+`}`] != 16<<20 || m[`lmtgt_migration_progress_bytes{`+pair+`}`] != 16<<20 {
		t.Errorf("progress/size %v/%v, want 16 MiB both", m[`lmtgt_migration_progress_bytes{`+pair+`}`], m[`lmtgt_migration_size_bytes{`+pair+`}`])
	}
	if c := m[`lmtgt_migration_copied_bytes_total{`+pair+`}`]; c < 8<<20 || c > 16<<20 {
		t.Errorf("copied bytes %v for 8 MiB of data in 16 MiB", c)
	}

	d.OK("migration", "split", "msrc")
	d.waitMig("msrc", 30*time.Second, "split")
	body = scrapeText(t, addr)
	promtoolCheck(t, body)
	m = samples(t, body)
	if pid, _, _ := strings.Cut(pair, ","); bytes.Contains(body, []byte(pid)) {
		t.Errorf("series of the split pair %s are still exported", pid)
	}
	if n := m[`lmtgt_split_pause_seconds_count`]; n != 1 {
		t.Errorf("split pauses observed: %v, want 1", n)
	}
	if p := m[`lmtgt_split_pause_seconds_sum`]; p <= 0 || p > 1 {
		t.Errorf("split pause sum %v s, want in (0, 1]", p)
	}
	// The host still sees its LUN and the counters keep counting.
	before := m[`lmtgt_lun_io_ops_total{lun="msrc",op="read"}`]
	qemuIOOK(t, d.URL(iqn, 0), "read -P 0x4d 0 512k")
	if after := scrape(t, addr)[`lmtgt_lun_io_ops_total{lun="msrc",op="read"}`]; after <= before {
		t.Errorf("read ops %v -> %v across a read after the split", before, after)
	}

	// No --pprof: the profiler is not there.
	if code, _, _ := httpGet(t, "http://"+addr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without --pprof: %d, want 404", code)
	}
	d.Stop()
}

// TestMetricsPprof: with --pprof the metrics listener serves the Go
// profiler; without --metrics, --pprof is refused (exit 2).
func TestMetricsPprof(t *testing.T) {
	d := StartDaemon(t, "", "--metrics", "127.0.0.1:0", "--pprof")
	addr := metricsAddr(t, d)
	code, _, body := httpGet(t, "http://"+addr+"/debug/pprof/")
	if code != http.StatusOK || !bytes.Contains(body, []byte("goroutine")) {
		t.Fatalf("GET /debug/pprof/ with --pprof: %d\n%s", code, body)
	}
	code, _, body = httpGet(t, "http://"+addr+"/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !bytes.Contains(body, []byte("goroutine profile:")) {
		t.Fatalf("GET /debug/pprof/goroutine?debug=1: %d\n%s", code, body)
	}
	if code, _, _ := httpGet(t, "http://"+addr+"/metrics"); code != http.StatusOK {
		t.Fatalf("GET /metrics with --pprof: %d", code)
	}
	d.Stop()

	r := runCmd(t, "", nil, lmtgtBin, "serve", "--pprof", "--data-dir", t.TempDir())
	if r.Code != 2 || !strings.Contains(r.Stderr, "--pprof: needs --metrics") {
		t.Fatalf("serve --pprof without --metrics: %s", r)
	}
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
