package metrics

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"path/filepath"
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
func daemonParts(t *testing.T) *Collector {
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
	return &Collector{Version: "test", DB: db, Manager: mgr, Target: tsrv}
}

func TestListenAndScrape(t *testing.T) {
	c := daemonParts(t)
	s, err := Listen("127.0.0.1:0", c, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	url := "http://" + s.Addr().String() + "/metrics"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType {
		t.Fatalf("GET /metrics: %s, Content-Type %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	for _, want := range []string{
		`lmtgt_build_info{version="test"} 1`,
		`lmtgt_iscsi_sessions{target="iqn.2026-11.org.lmtgt:t"} 0`,
		`lmtgt_lun_size_bytes{lun="a"} 1048576`,
		`lmtgt_lun_size_bytes{lun="b"} 2097152`,
		`lmtgt_lun_read_ops_total{lun="b"} 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}

	resp, err = http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %s, want 405", resp.Status)
	}
	resp, err = http.Get("http://" + s.Addr().String() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %s, want 404", resp.Status)
	}
}

// TestListenRefuses: a busy port or a malformed address is a clear error.
func TestListenRefuses(t *testing.T) {
	c := &Collector{}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{busy.Addr().String(), "nonsense", "127.0.0.1:99999"} {
		s, err := Listen(addr, c, zerolog.Nop())
		if err == nil {
			s.Shutdown(context.Background())
			t.Fatalf("Listen(%q) succeeded", addr)
		}
		if !strings.Contains(err.Error(), "metrics listener") || !strings.Contains(err.Error(), addr) {
			t.Errorf("Listen(%q): %v: want the listener and the address named", addr, err)
		}
	}
}
