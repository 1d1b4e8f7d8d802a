package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// failingExporter passes Apply to the real target server unless told to
// fail (fault injection for the rollback path).
type failingExporter struct {
	*target.Server
	fail    atomic.Bool
	applied atomic.Int64
	last    atomic.Pointer[[]target.Target]
}

func (f *failingExporter) Apply(ts []target.Target) error {
	if f.fail.Load() {
		return errors.New("injected apply failure")
	}
	if err := f.Server.Apply(ts); err != nil {
		return err
	}
	f.applied.Add(1)
	f.last.Store(&ts)
	return nil
}

type env struct {
	t   *testing.T
	dir string
	db  *metavol.DB
	mgr *lm.Manager
	exp *failingExporter
	svc *Service
	srv *Server
	cl  *client.Client
}

// newEnv starts the API on a unix socket over a real meta volume, a real
// LUN manager and a real (not listening) target server.
func newEnv(t *testing.T, opts ...func(*Options)) *env {
	t.Helper()
	dir := t.TempDir()
	log := zerolog.Nop()
	db, err := metavol.Open(filepath.Join(dir, "meta"), metavol.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := lm.Open(db, lm.Options{DataDir: dir, Log: log})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	ts, err := target.New(target.Options{Portals: []string{"127.0.0.1:0"}, Log: log, Reservations: db})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, db: db, mgr: mgr, exp: &failingExporter{Server: ts}}
	e.svc = NewService(mgr, e.exp, log)
	o := Options{Service: e.svc, Socket: filepath.Join(dir, "admin.sock"), Log: log, Version: "test"}
	for _, f := range opts {
		f(&o)
	}
	e.srv, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	e.cl = client.New(o.Socket, client.Options{Timeout: 30 * time.Second})
	t.Cleanup(func() {
		e.cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("api shutdown: %v", err)
		}
		ts.Shutdown(ctx)
		mgr.Close()
		db.Close()
	})
	return e
}

func wantStatus(t *testing.T, err error, status int, contains string) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) {
		t.Fatalf("want HTTP %d (%q), got %v", status, contains, err)
	}
	if we.Status != status || !strings.Contains(we.Message, contains) {
		t.Fatalf("want HTTP %d containing %q, got %d %q (object %q reason %q)", status, contains, we.Status, we.Message, we.Object, we.Reason)
	}
	if we.Object == "" || we.Reason == "" {
		t.Errorf("error %q names no object or reason: %+v", we.Message, we)
	}
}

const tgt = "iqn.2026-11.org.lmtgt.test:api"

func TestLUNsTargetsAndBuild(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.cl

	a, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: "a", Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "a" || a.ID == "" || a.Size != 4<<20 || a.BlockSize != 512 || len(a.NAA) != 32 || a.Serial == "" ||
		a.Volume == "" || !a.Owned || a.VolumeKind != "file" || !strings.HasPrefix(a.VolumePath, e.dir) {
		t.Fatalf("created LUN: %+v", a)
	}
	if a.DirectIO {
		t.Fatalf("LUN without direct: %+v", a)
	}
	if b, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: "b", Size: 8 << 20, BlockSize: 4096, Direct: true}); err != nil || !b.DirectIO {
		t.Fatalf("LUN with direct: %+v %v", b, err)
	}
	_, err = cl.CreateLUN(ctx, wire.CreateLUN{Name: "a", Size: 4 << 20})
	wantStatus(t, err, 409, "exists")
	_, err = cl.CreateLUN(ctx, wire.CreateLUN{Name: "c", Size: 4<<20 + 512, BlockSize: 4096})
	wantStatus(t, err, 400, "not a multiple of the block size 4096")
	_, err = cl.CreateLUN(ctx, wire.CreateLUN{Name: "c/d", Size: 4 << 20})
	wantStatus(t, err, 400, "want 1-64 letters")
	_, err = cl.CreateLUN(ctx, wire.CreateLUN{Name: "c", Size: 4 << 20, Path: "relative.img"})
	wantStatus(t, err, 400, "not absolute")
	// --path: never inside the data dir (lm's path rules, 400).
	_, err = cl.CreateLUN(ctx, wire.CreateLUN{Name: "ext", Size: 2 << 20, Path: filepath.Join(e.dir, "ext.img")})
	wantStatus(t, err, 400, "is inside the data directory")
	// --path: a file created sparse where asked, not owned.
	p := filepath.Join(t.TempDir(), "ext.img")
	ext, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: "ext", Size: 2 << 20, Path: p})
	if err != nil || ext.VolumePath != p || ext.Owned {
		t.Fatalf("LUN on --path: %+v %v", ext, err)
	}
	ls, err := cl.LUNs(ctx)
	if err != nil || len(ls) != 3 || ls[0].Name != "a" || ls[1].Name != "b" || ls[2].Name != "ext" {
		t.Fatalf("LUNs: %+v %v", ls, err)
	}

	// Targets.
	_, err = cl.CreateTarget(ctx, "iqn.bad")
	wantStatus(t, err, 400, "bad IQN")
	if _, err := cl.CreateTarget(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateTarget(ctx, tgt)
	wantStatus(t, err, 409, "already exists")
	tv, err := cl.Map(ctx, tgt, "a", nil)
	if err != nil || len(tv.LUNs) != 1 || tv.LUNs[0].LUN != 0 || tv.LUNs[0].Name != "a" {
		t.Fatalf("map a: %+v %v", tv, err)
	}
	seven := uint64(7)
	if _, err := cl.Map(ctx, tgt, "b", &seven); err != nil {
		t.Fatal(err)
	}
	if tv, err = cl.Map(ctx, tgt, "ext", nil); err != nil || tv.LUNs[1].LUN != 1 || tv.LUNs[1].Name != "ext" {
		t.Fatalf("map ext (lowest free = 1): %+v %v", tv, err)
	}
	_, err = cl.Map(ctx, tgt, "a", nil)
	wantStatus(t, err, 409, "already mapped")
	_, err = cl.Map(ctx, tgt, "nosuch", nil)
	wantStatus(t, err, 404, "not found")
	big := uint64(lm.MaxLUNNumber + 1)
	_, err = cl.Map(ctx, tgt, "a", &big)
	wantStatus(t, err, 400, "above the highest")
	_, err = cl.Map(ctx, "iqn.2026-11.org.lmtgt.test:none", "a", nil)
	wantStatus(t, err, 404, "not found")
	if _, err := cl.Unmap(ctx, tgt, "ext"); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Unmap(ctx, tgt, "ext")
	wantStatus(t, err, 404, "not mapped")

	// ACL and CHAP.
	_, err = cl.Allow(ctx, tgt, "host_1")
	wantStatus(t, err, 400, "bad initiator name")
	if _, err := cl.Allow(ctx, tgt, "iqn.2026-11.org.lmtgt.test:h1"); err != nil {
		t.Fatal(err)
	}
	if tv, err = cl.Allow(ctx, tgt, "iqn.2026-11.org.lmtgt.test:h1"); err != nil || len(tv.Initiators) != 1 {
		t.Fatalf("allowing twice must not duplicate: %+v %v", tv, err)
	}
	_, err = cl.Disallow(ctx, tgt, "ALL")
	wantStatus(t, err, 404, "not allowed")
	tv, err = cl.SetCHAP(ctx, tgt, wire.SetCHAP{User: "u", Secret: "short"})
	if err != nil || len(tv.Warnings) != 1 || tv.CHAP == nil || tv.CHAP.User != "u" {
		t.Fatalf("short CHAP secret: want a warning: %+v %v", tv, err)
	}
	_, err = cl.SetCHAP(ctx, tgt, wire.SetCHAP{User: "u", Secret: "samesecret123", MutualUser: "m", MutualSecret: "samesecret123"})
	wantStatus(t, err, 400, "must differ")
	_, err = cl.SetCHAP(ctx, tgt, wire.SetCHAP{User: "u", Secret: "samesecret123", MutualUser: "m"})
	wantStatus(t, err, 400, "mutual")
	tv, err = cl.SetCHAP(ctx, tgt, wire.SetCHAP{User: "u", Secret: "initsecret123", MutualUser: "m", MutualSecret: "targetsecret1"})
	if err != nil || len(tv.Warnings) != 0 || tv.CHAP.MutualUser != "m" {
		t.Fatalf("mutual CHAP: %+v %v", tv, err)
	}

	// What the target server got is exactly the meta volume's view.
	cfg, err := e.mgr.TargetConfig()
	ts, skipped := BuildTargets(cfg, e.mgr.LUN)
	if err != nil || len(skipped) != 0 || len(ts) != 1 {
		t.Fatalf("BuildTargets: %+v %v %v", ts, skipped, err)
	}
	last := *e.exp.last.Load()
	if len(last) != 1 || len(last[0].LUNs) != len(ts[0].LUNs) {
		t.Fatalf("last Apply %+v, want %+v", last, ts)
	}
	got := ts[0]
	if got.IQN != tgt || got.AllowAll || len(got.Initiators) != 1 || got.CHAP == nil || got.CHAP.Secret != "initsecret123" || got.CHAP.MutualSecret != "targetsecret1" {
		t.Errorf("built target: %+v", got)
	}
	if len(got.LUNs) != 2 || got.LUNs[0].Number != 0 || got.LUNs[1].Number != 7 {
		t.Fatalf("built LUNs: %+v", got.LUNs)
	}
	la, _ := cl.LUN(ctx, "a")
	if hex.EncodeToString(got.LUNs[0].NAA[:]) != la.NAA || got.LUNs[0].Serial != la.Serial || got.LUNs[0].ID != la.ID ||
		got.LUNs[0].BlockSize != 512 || got.LUNs[1].BlockSize != 4096 || got.LUNs[0].Volume.Size() != 4<<20 {
		t.Errorf("built LUN 0: %+v (lun %+v)", got.LUNs[0], la)
	}
	// Secrets never leave through the API.
	raw := new(bytes.Buffer)
	for _, path := range []string{"/v1/targets", "/v1/targets/" + tgt} {
		var v any
		if err := cl.Do(ctx, "GET", path, nil, &v); err != nil {
			t.Fatal(err)
		}
		raw.WriteString(strings.ToLower(toJSON(t, v)))
	}
	if strings.Contains(raw.String(), "secret") {
		t.Errorf("a CHAP secret leaks through the API: %s", raw)
	}

	// Resize, delete.
	la, err = cl.ResizeLUN(ctx, "a", 8<<20)
	if err != nil || la.Size != 8<<20 {
		t.Fatalf("resize: %+v %v", la, err)
	}
	_, err = cl.ResizeLUN(ctx, "a", 4<<20)
	wantStatus(t, err, 400, "only grow")
	err = cl.DeleteLUN(ctx, "a")
	wantStatus(t, err, 409, "mapped to a target ("+tgt+" LUN 0)")
	err = cl.DeleteTarget(ctx, tgt, false)
	wantStatus(t, err, 409, "--force")
	if err := cl.DeleteTarget(ctx, tgt, true); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteLUN(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteLUN(ctx, "ext"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("deleting a --path LUN removed its file: %v", err)
	}
	if _, err := os.Stat(la.VolumePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleting an owned LUN left its volume file: %v", err)
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeJSONTo(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestApplyFailureRollsBack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: "a", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.CreateTarget(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	before, _ := e.cl.Target(ctx, tgt)
	e.exp.fail.Store(true)
	_, err := e.cl.Map(ctx, tgt, "a", nil)
	wantStatus(t, err, 500, "rolled back")
	_, err = e.cl.CreateTarget(ctx, "iqn.2026-11.org.lmtgt.test:other")
	wantStatus(t, err, 500, "rolled back")
	err = e.cl.DeleteTarget(ctx, tgt, false)
	wantStatus(t, err, 500, "rolled back")
	e.exp.fail.Store(false)
	after, err := e.cl.Target(ctx, tgt)
	if err != nil || len(after.LUNs) != len(before.LUNs) {
		t.Fatalf("after failed applies: %+v %v (before %+v)", after, err, before)
	}
	if _, err := e.cl.Target(ctx, "iqn.2026-11.org.lmtgt.test:other"); client.StatusOf(err) != 404 {
		t.Fatalf("a target whose apply failed exists: %v", err)
	}
	if _, err := e.cl.Map(ctx, tgt, "a", nil); err != nil {
		t.Fatal(err)
	}
}

func TestMapRefusesPairTarget(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, n := range []string{"src", "dst"} {
		if _, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: n, Size: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.cl.CreateTarget(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	m, err := e.cl.CreateMigration(ctx, wire.CreateMigration{Source: "src", Target: "dst", Speed: "highest"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != "src" || m.Target != "dst" || m.ID == "" {
		t.Fatalf("migration: %+v", m)
	}
	_, err = e.cl.Map(ctx, tgt, "dst", nil)
	wantStatus(t, err, 409, "target of pair")
	if _, err := e.cl.Map(ctx, tgt, "src", nil); err != nil {
		t.Fatalf("mapping the source of a pair: %v", err)
	}
	l, _ := e.cl.LUN(ctx, "dst")
	if l.Migration == nil || l.Migration.Role != "target" || l.Migration.Peer != "src" {
		t.Errorf("lun dst migration: %+v", l.Migration)
	}
	err = e.cl.DeleteLUN(ctx, "dst")
	wantStatus(t, err, 409, "in a migration pair")
	_, err = e.cl.CreateMigration(ctx, wire.CreateMigration{Source: "src", Target: "dst", Speed: "warp"})
	wantStatus(t, err, 400, "speed")
	_, err = e.cl.SetMigration(ctx, "src", wire.SetMigration{})
	wantStatus(t, err, 400, "nothing to set")
	_, err = e.cl.Split(ctx, nil, 0)
	wantStatus(t, err, 400, "at least one")
	// Once cancelled, the target LUN can be mapped.
	if _, err := e.cl.CancelMigration(ctx, "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Map(ctx, tgt, "dst", nil); err != nil {
		t.Fatalf("mapping the target LUN of a cancelled pair: %v", err)
	}
}

func TestHTTPErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, c := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/v1/luns", `{"name":`, 400, "malformed JSON"},
		{"POST", "/v1/luns", `{"name":"x","size":1048576,"extra":1}`, 400, "unknown field"},
		{"POST", "/v1/luns", `{"name":"x","size":1048576}{}`, 400, "trailing data"},
		{"POST", "/v1/luns", strings.Repeat(" ", maxBody+1), 400, "larger than"},
		{"PUT", "/v1/luns", `{}`, 405, "not allowed"},
		{"GET", "/v1/zzz", ``, 404, "no such API path"},
		{"DELETE", "/v1/targets/" + tgt + "?force=maybe", ``, 400, "force"},
		{"POST", "/v1/migrations/split", `{"sources":["a"],"max_pause":"forever"}`, 400, "max pause"},
		{"POST", "/v1/migrations/x/explode", ``, 404, "no action"},
	} {
		var body *strings.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		var err error
		if body == nil {
			err = e.cl.DoRaw(ctx, c.method, c.path, nil, nil)
		} else {
			err = e.cl.DoRaw(ctx, c.method, c.path, body, nil)
		}
		wantStatus(t, err, c.status, c.want)
	}
	h, err := e.cl.Health(ctx)
	if err != nil || h.Status != "ok" || h.Version != "test" {
		t.Errorf("health: %+v %v", h, err)
	}
}

func TestSocketAndToken(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.TCP = "127.0.0.1:0"; o.Token = "t0ken" })
	fi, err := os.Stat(e.srv.SocketPath())
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	// A second server on the same socket is refused while the first lives.
	s2, err := New(Options{Service: e.svc, Socket: e.srv.SocketPath()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err == nil || !strings.Contains(err.Error(), "another server") {
		t.Fatalf("second server on a live socket: %v", err)
	}
	// TCP: token required.
	ctx := context.Background()
	addr := e.srv.TCPAddr().String()
	for tok, want := range map[string]int{"": 401, "nope": 401, "t0ken": 200} {
		c := client.New(addr, client.Options{Token: tok})
		_, err := c.LUNs(ctx)
		c.Close()
		if got := client.StatusOf(err); (want == 200 && err != nil) || (want != 200 && got != want) {
			t.Errorf("TCP with token %q: want %d, got %v", tok, want, err)
		}
	}
	// New refuses TCP without a token, and over-long socket paths.
	if _, err := New(Options{Service: e.svc, Socket: "/tmp/x.sock", TCP: "127.0.0.1:0"}); err == nil {
		t.Error("TCP without a token accepted")
	}
	if _, err := New(Options{Service: e.svc, Socket: "/" + strings.Repeat("a", 120)}); err == nil {
		t.Error("a 121-byte socket path accepted")
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	// A socket file nobody listens on (a crashed daemon's).
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	nl, err := listenUnix(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	nl.Close()
	// A regular file in the way is not removed.
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := listenUnix(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file at the socket path: %v", err)
	}
}

// TestConcurrentChanges: parallel maps on one target get distinct LUN
// numbers, and the live configuration ends equal to the meta volume's.
func TestConcurrentChanges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.cl.CreateTarget(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	const n = 12
	errs := make(chan error, n)
	for i := range n {
		go func() {
			name := "c" + string(rune('a'+i))
			if _, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: name, Size: 1 << 20}); err != nil {
				errs <- err
				return
			}
			_, err := e.cl.Map(ctx, tgt, name, nil)
			if err == nil && i%3 == 0 {
				_, err = e.cl.Allow(ctx, tgt, "iqn.2026-11.org.lmtgt.test:h"+name)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	tv, err := e.cl.Target(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if len(tv.LUNs) != n || len(tv.Initiators) != n/3 {
		t.Fatalf("target after parallel changes: %d LUNs, %d initiators", len(tv.LUNs), len(tv.Initiators))
	}
	for i, l := range tv.LUNs {
		if l.LUN != uint64(i) {
			t.Fatalf("LUN numbers not 0..%d: %+v", n-1, tv.LUNs)
		}
	}
	last := *e.exp.last.Load()
	if len(last) != 1 || len(last[0].LUNs) != n || len(last[0].Initiators) != n/3 {
		t.Fatalf("last Apply does not hold the final configuration: %+v", last)
	}
}

// Pause, resume, cancel, set and split of a source whose pair has ended
// (split or cancelled) name that state instead of "not found", which would
// contradict `migration show`.
func TestActionsOnEndedPair(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, n := range []string{"src", "dst"} {
		if _, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: n, Size: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.cl.CreateMigration(ctx, wire.CreateMigration{Source: "src", Target: "dst", Speed: "highest"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := e.cl.Migration(ctx, "src")
		if err != nil {
			t.Fatal(err)
		}
		if m.State == "synced" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pair not synced within 20s: %+v", m)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := e.cl.Split(ctx, []string{"src"}, 0); err != nil {
		t.Fatal(err)
	}
	if m, err := e.cl.Migration(ctx, "src"); err != nil || m.State != "split" {
		t.Fatalf("after the split: %+v %v", m, err)
	}
	_, err := e.cl.PauseMigration(ctx, "src")
	wantStatus(t, err, 409, "pair src → dst is split (a final state)")
	_, err = e.cl.ResumeMigration(ctx, "src")
	wantStatus(t, err, 409, "is split")
	_, err = e.cl.CancelMigration(ctx, "src")
	wantStatus(t, err, 409, "is split")
	sp := "low"
	_, err = e.cl.SetMigration(ctx, "src", wire.SetMigration{Speed: &sp})
	wantStatus(t, err, 409, "is split")
	_, err = e.cl.Split(ctx, []string{"src"}, 0)
	wantStatus(t, err, 409, "is split")
	// A LUN that never was a source is still not found.
	_, err = e.cl.PauseMigration(ctx, "dst")
	wantStatus(t, err, 404, "not found")
	_, err = e.cl.Split(ctx, []string{"nope"}, 0)
	wantStatus(t, err, 404, "not found")
}

// A max pause outside 1ms..1m is refused, never replaced by the default.
func TestSplitMaxPauseRange(t *testing.T) {
	e := newEnv(t)
	for _, d := range []time.Duration{-time.Second, time.Nanosecond, 999 * time.Microsecond, 2 * time.Minute} {
		_, err := e.cl.Split(context.Background(), []string{"src"}, d)
		wantStatus(t, err, 400, "want a duration between 1ms and 1m")
	}
}

// TestDotNames: the names "." and ".." get the LUN name rule, on every
// call of the client, instead of a cleaned path (issue 12: `lun show .`
// printed a JSON decode error of the LUN list, `lun delete .` hit the
// collection URL); a raw "." segment is refused, not redirected.
func TestDotNames(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: "keep", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".", ".."} {
		_, err := e.cl.LUN(ctx, name)
		wantStatus(t, err, 400, "want 1-64 letters")
		wantStatus(t, e.cl.DeleteLUN(ctx, name), 400, "want 1-64 letters")
		_, err = e.cl.ResizeLUN(ctx, name, 2<<20)
		wantStatus(t, err, 400, "want 1-64 letters")
		_, err = e.cl.CreateLUN(ctx, wire.CreateLUN{Name: name, Size: 1 << 20})
		wantStatus(t, err, 400, "want 1-64 letters")
		wantStatus(t, e.cl.DoRaw(ctx, "GET", "/v1/luns/"+name, nil, nil), 400, "segment is not a name")
		wantStatus(t, e.cl.DoRaw(ctx, "DELETE", "/v1/luns/"+name, nil, nil), 400, "segment is not a name")
	}
	// One name rule: the API refuses what lm refuses (65 bytes, a space).
	for _, name := range []string{strings.Repeat("a", 65), "a b", "-x"} {
		_, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: name, Size: 1 << 20})
		wantStatus(t, err, 400, "want 1-64 letters")
	}
	if l, err := e.cl.LUN(ctx, "keep"); err != nil || l.Name != "keep" {
		t.Fatalf("lun keep after the refusals: %+v %v", l, err)
	}
}

// TestCreateLUNInDevShm: a new file under /dev/shm (a tmpfs, docs/cli.md:
// "files under /dev/shm are fine") is created through the API too; a
// missing device elsewhere in /dev is still refused. (The API's own path
// pre-check used to refuse every new path under /dev.)
func TestCreateLUNInDevShm(t *testing.T) {
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm")
	}
	e := newEnv(t)
	ctx := context.Background()
	p := filepath.Join("/dev/shm", "lmtgt-api-test-"+filepath.Base(t.TempDir())+".img")
	t.Cleanup(func() { os.Remove(p) })
	l, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: "shm", Size: 1 << 20, Path: p})
	if err != nil || l.VolumePath != p {
		t.Fatalf("LUN in /dev/shm: %+v %v", l, err)
	}
	_, err = e.cl.CreateLUN(ctx, wire.CreateLUN{Name: "nodev", Size: 1 << 20, Path: "/dev/lmtgt-no-such-device"})
	wantStatus(t, err, 400, "no such device")
}
