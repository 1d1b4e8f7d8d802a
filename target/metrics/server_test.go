package metrics

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target"
)

// daemonParts opens a real meta volume, LUN manager and target server with
// LUN "a" (mapped, 1 MiB) and LUN "b" (not mapped, 2 MiB).
func daemonParts(t *testing.T) Sources {
	t.Helper()
	dir := t.TempDir()
	db, err := metavol.Open(filepath.Join(dir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := lm.Open(db, lm.Options{DataDir: dir, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mgr.Close()
		db.Close()
	})
	a, err := mgr.CreateLUN(lm.CreateLUNRequest{Name: "a", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.CreateLUN(lm.CreateLUNRequest{Name: "b", Size: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	vol, err := mgr.LUN(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	var naa [16]byte
	if _, err := hex.Decode(naa[:], []byte(a.NAA)); err != nil {
		t.Fatal(err)
	}
	tsrv, err := target.New(target.Options{Portals: []string{"127.0.0.1:0"}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := tsrv.Apply([]target.Target{{IQN: "iqn.2026-11.org.lmtgt:t", AllowAll: true,
		LUNs: []target.LUN{{ID: a.ID, Name: a.Name, NAA: naa, Serial: a.Serial, BlockSize: 512, Volume: vol}}}}); err != nil {
		t.Fatal(err)
	}
	return Sources{Version: "test", DB: db, Manager: mgr, Target: tsrv}
}

// listen starts a metrics listener on a free port, stopped at cleanup.
func listen(t *testing.T, src Sources, opts Options) string {
	t.Helper()
	s, err := Listen("127.0.0.1:0", src, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return "http://" + s.Addr().String()
}

// get fetches url with an optional Accept header.
func get(t *testing.T, url, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// promtoolCheck runs `promtool check metrics` on a text exposition; it
// skips the test when promtool is not installed
// (scripts/install-test-deps.sh installs it: Debian package prometheus).
func promtoolCheck(t *testing.T, body []byte) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestListenAndScrape(t *testing.T) {
	base := listen(t, daemonParts(t), Options{Log: zerolog.Nop()})
	resp, body := get(t, base+"/metrics", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s, Content-Type %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	for _, want := range []string{
		`lmtgt_build_info{version="test"} 1`,
		`lmtgt_iscsi_target_sessions{iqn="iqn.2026-11.org.lmtgt:t"} 0`,
		`lmtgt_lun_size_bytes{lun="a"} 1.048576e+06`,
		`lmtgt_lun_size_bytes{lun="b"} 2.097152e+06`,
		`lmtgt_lun_io_ops_total{lun="b",op="read"} 0`,
		`lmtgt_lun_io_duration_seconds_count{lun="a",op="write"} 0`,
		`lmtgt_split_deferrals_total 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
	for _, family := range []string{"go_goroutines", "go_memstats_alloc_bytes", "go_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} {
		if !strings.Contains(string(body), "\n"+family) {
			t.Errorf("no %s series", family)
		}
	}
	promtoolCheck(t, body)

	post, err := http.Post(base+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %s, want 405", post.Status)
	}
	if resp, _ := get(t, base+"/other", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %s, want 404", resp.Status)
	}
}

// TestOpenMetrics: a scraper that asks for OpenMetrics gets it.
func TestOpenMetrics(t *testing.T) {
	base := listen(t, daemonParts(t), Options{Log: zerolog.Nop()})
	resp, body := get(t, base+"/metrics", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("GET /metrics (OpenMetrics): %s, Content-Type %q", resp.Status, ct)
	}
	if !bytes.HasSuffix(body, []byte("# EOF\n")) || !bytes.Contains(body, []byte("# TYPE lmtgt_lun_io_ops counter\n")) {
		t.Fatalf("not an OpenMetrics exposition:\n%s", body)
	}
}

// TestPprofOptIn: /debug/pprof/ is served with Options.Pprof only.
func TestPprofOptIn(t *testing.T) {
	src := daemonParts(t)
	off := listen(t, src, Options{Log: zerolog.Nop()})
	if resp, _ := get(t, off+"/debug/pprof/", ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /debug/pprof/ without Pprof: %s, want 404", resp.Status)
	}
	on := listen(t, src, Options{Log: zerolog.Nop(), Pprof: true})
	resp, body := get(t, on+"/debug/pprof/", "")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine") {
		t.Fatalf("GET /debug/pprof/ with Pprof: %s\n%s", resp.Status, body)
	}
	resp, body = get(t, on+"/debug/pprof/goroutine?debug=1", "")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("GET /debug/pprof/goroutine: %s\n%s", resp.Status, body)
	}
	if resp, _ := get(t, on+"/metrics", ""); resp.StatusCode != 200 {
		t.Fatalf("GET /metrics with Pprof: %s", resp.Status)
	}
}

// TestListenRefuses: a busy port or a malformed address is a clear error.
func TestListenRefuses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{busy.Addr().String(), "nonsense", "127.0.0.1:99999"} {
		s, err := Listen(addr, Sources{}, Options{Log: zerolog.Nop()})
		if err == nil {
			s.Shutdown(context.Background())
			t.Fatalf("Listen(%q) succeeded", addr)
		}
		if !strings.Contains(err.Error(), "metrics listener") || !strings.Contains(err.Error(), addr) {
			t.Errorf("Listen(%q): %v: want the listener and the address named", addr, err)
		}
	}
}

// TestShutdownEndsProfile: a CPU profile in progress does not hold
// Shutdown for its ?seconds=N.
func TestShutdownEndsProfile(t *testing.T) {
	s, err := Listen("127.0.0.1:0", daemonParts(t), Options{Log: zerolog.Nop(), Pprof: true})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr().String()
	profile := make(chan error, 1)
	go func() {
		resp, err := http.Get(base + "/debug/pprof/profile?seconds=600")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		profile <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, base+"/debug/pprof/goroutine?debug=2", "")
		if strings.Contains(string(body), "net/http/pprof.Profile(") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the profile request never started:\n%s", body)
		}
		runtime.Gosched()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a profile running: %v", err)
	}
	select {
	case <-profile:
	case <-time.After(10 * time.Second):
		t.Fatal("the profile request still runs after Shutdown")
	}
}
