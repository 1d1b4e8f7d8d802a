package api

import (
	"context"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestRollbackStatuses: what the rollback routes answer on a pair that is
// not switched, on a switched one, and on bad bodies; nothing changes on a
// refusal.
func TestRollbackStatuses(t *testing.T) {
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
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			m, err := e.cl.Migration(ctx, "src")
			if err != nil {
				t.Fatal(err)
			}
			if m.State == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pair not %s within 20s: %+v", want, m)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitState("synced")
	_, err := e.cl.Rollback(ctx, []string{"src"}, 0)
	wantStatus(t, err, 409, "not switched")
	_, err = e.cl.Commit(ctx, []string{"src"}, nil)
	wantStatus(t, err, 409, "not switched")
	_, err = e.cl.SplitWith(ctx, []string{"src"}, 0, true, false, &wire.Retire{})
	wantStatus(t, err, 400, "retire refused with keep_source")
	_, err = e.cl.Retire(ctx, "src", wire.Retire{})
	wantStatus(t, err, 409, "retire refused")
	_, err = e.cl.DeleteMigrations(ctx, "src")
	wantStatus(t, err, 409, "delete refused")
	_, err = e.cl.Rollback(ctx, []string{"nope"}, 0)
	wantStatus(t, err, 404, "not found")

	r, err := e.cl.SplitWith(ctx, []string{"src"}, 0, true, false, nil)
	if err != nil || r.State != "switched" {
		t.Fatalf("split --keep-source: %+v, %v", r, err)
	}
	if m, err := e.cl.Migration(ctx, "src"); err != nil || m.State != "switched" || !m.Switched {
		t.Fatalf("after split --keep-source: %+v, %v", m, err)
	}
	_, err = e.cl.CancelMigration(ctx, "src")
	wantStatus(t, err, 409, "roll it back or commit it")
	_, err = e.cl.Split(ctx, []string{"src"}, 0)
	wantStatus(t, err, 409, "switched")
	r, err = e.cl.Rollback(ctx, []string{"src"}, 0)
	if err != nil || r.State != "synced" {
		t.Fatalf("rollback: %+v, %v", r, err)
	}
	waitState("synced")
	if _, err := e.cl.SplitWith(ctx, []string{"src"}, 0, true, false, nil); err != nil {
		t.Fatal(err)
	}
	r, err = e.cl.Commit(ctx, []string{"src"}, &wire.Retire{Scrub: true})
	if err != nil || r.State != "split" || len(r.Retired) != 1 || r.Retired[0].Error != "" || r.Retired[0].LUN != "dst" ||
		r.Retired[0].Scrub == "" || !r.Retired[0].VolumeDeleted {
		t.Fatalf("commit --retire --scrub: %+v, %v", r, err)
	}
	d, err := e.cl.DeleteMigrations(ctx, "src")
	if err != nil || len(d.Pairs) != 1 {
		t.Fatalf("delete: %+v, %v", d, err)
	}
	_, err = e.cl.DeleteMigrations(ctx, "src")
	wantStatus(t, err, 404, "no ended migration")
}
