package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// POST /v1/migrations and /v1/sessions with dry_run answer 200 with the
// estimate and create nothing; a bad max_host_latency is a 400 naming
// the pair; the bound shows on the pair.
func TestDryRunAndHostLatencyAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, n := range []string{"src", "dst"} {
		if _, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: n, Size: 4 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(e.dir, "admin.sock"))
	}}}
	t.Cleanup(hc.CloseIdleConnections)
	post := func(path string, body any, out any) int {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := hc.Post("http://lmtgt"+wire.Version+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return resp.StatusCode
	}
	var m wire.Migration
	if code := post("/migrations", wire.CreateMigration{Source: "src", Target: "dst", DryRun: true}, &m); code != http.StatusOK ||
		!m.DryRun || m.State != "dry-run" || m.Estimate == nil || m.Estimate.TotalBytes != 4<<20 {
		t.Fatalf("dry run: HTTP %d %+v", code, m)
	}
	var s wire.MigrationSession
	if code := post("/sessions", wire.CreateSession{Name: "w", Pairs: []wire.SessionPair{{Source: "src", Target: "dst"}}, DryRun: true}, &s); code != http.StatusOK ||
		!s.DryRun || len(s.Pairs) != 1 || s.Pairs[0].Estimate == nil {
		t.Fatalf("session dry run: HTTP %d %+v", code, s)
	}
	if ms, _ := e.cl.Migrations(ctx); len(ms) != 0 {
		t.Fatalf("a dry run created %+v", ms)
	}
	_, err := e.cl.CreateMigration(ctx, wire.CreateMigration{Source: "src", Target: "dst", MaxHostLatency: "fast"})
	wantStatus(t, err, 400, "max host latency")
	m, err = e.cl.CreateMigration(ctx, wire.CreateMigration{Source: "src", Target: "dst", Speed: "low", MaxHostLatency: "2ms"})
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxHostLatency != "2ms" || m.HostLatencyBound != "2ms" {
		t.Errorf("created with 2ms: max_host_latency %q bound %q", m.MaxHostLatency, m.HostLatencyBound)
	}
	off := "off"
	if m, err = e.cl.SetMigration(ctx, "src", wire.SetMigration{MaxHostLatency: &off}); err != nil || m.MaxHostLatency != "off" || m.HostLatencyBound != "" {
		t.Errorf("set off: %+v (%v)", m, err)
	}
}
