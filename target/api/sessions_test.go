package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

func TestSessions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.cl
	var pairs []wire.SessionPair
	for i := range 2 {
		src, dst := fmt.Sprintf("s%d", i), fmt.Sprintf("s%d-new", i)
		for _, n := range []string{src, dst} {
			if _, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: n, Size: 2 << 20}); err != nil {
				t.Fatal(err)
			}
		}
		pairs = append(pairs, wire.SessionPair{Source: src, Target: dst})
	}

	_, err := cl.CreateSession(ctx, wire.CreateSession{Name: "w", Pairs: append(pairs[:1:1], wire.SessionPair{Source: "s1", Target: "nope"})})
	wantStatus(t, err, http.StatusNotFound, "pair 2 (s1 → nope) refused")
	_, err = cl.CreateSession(ctx, wire.CreateSession{Name: "w"})
	wantStatus(t, err, http.StatusBadRequest, "at least one pair")
	_, err = cl.CreateSession(ctx, wire.CreateSession{Name: "w", Pairs: pairs, Speed: "warp"})
	wantStatus(t, err, http.StatusBadRequest, "speed")
	_, err = cl.MigrationSession(ctx, "w")
	wantStatus(t, err, http.StatusNotFound, "session w")

	// Slow (1 MB/s) so that pause/resume/set find it copying.
	st, err := cl.CreateSession(ctx, wire.CreateSession{Name: "w", Pairs: pairs, Speed: "low", MaxMBps: 1, MaxActive: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "w" || len(st.Pairs) != 2 || st.MaxActive != 1 || st.Pairs[1].Source != "s1" {
		t.Fatalf("created: %+v", st)
	}
	_, err = cl.CreateSession(ctx, wire.CreateSession{Name: "w", Pairs: pairs})
	wantStatus(t, err, http.StatusConflict, "exists")
	if ss, err := cl.Sessions(ctx); err != nil || len(ss) != 1 {
		t.Fatalf("list: %+v %v", ss, err)
	}
	if st, err = cl.PauseSession(ctx, "w"); err != nil || st.State != "paused" {
		t.Fatalf("pause: %+v %v", st.State, err)
	}
	if st, err = cl.ResumeSession(ctx, "w"); err != nil || st.Paused {
		t.Fatalf("resume: %+v %v", st, err)
	}
	_, err = cl.ResumeSession(ctx, "w")
	wantStatus(t, err, http.StatusConflict, "not paused")
	hi := "highest"
	if st, err = cl.SetSession(ctx, "w", wire.SetMigration{Speed: &hi}); err != nil || st.Speed != "highest" {
		t.Fatalf("set: %+v %v", st, err)
	}
	_, err = cl.SetSession(ctx, "w", wire.SetMigration{})
	wantStatus(t, err, http.StatusBadRequest, "nothing to set")
	err = cl.DeleteSession(ctx, "w")
	wantStatus(t, err, http.StatusConflict, "cancel or split it first")

	deadline := time.Now().Add(30 * time.Second)
	for st.State != "synced" {
		if time.Now().After(deadline) {
			t.Fatalf("session not synced: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
		if st, err = cl.MigrationSession(ctx, "w"); err != nil {
			t.Fatal(err)
		}
	}
	_, err = cl.SplitSession(ctx, "w", time.Hour)
	wantStatus(t, err, http.StatusBadRequest, "max pause")
	res, err := cl.SplitSession(ctx, "w", time.Second)
	if err != nil || len(res.Pairs) != 2 {
		t.Fatalf("split: %+v %v", res, err)
	}
	if st, err = cl.MigrationSession(ctx, "w"); err != nil || st.State != "split" || st.Counts["split"] != 2 {
		t.Fatalf("after split: %+v %v", st, err)
	}
	_, err = cl.CancelSession(ctx, "w")
	wantStatus(t, err, http.StatusConflict, "is split")
	if err := cl.DeleteSession(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	if ss, err := cl.Sessions(ctx); err != nil || len(ss) != 0 {
		t.Fatalf("list after delete: %+v %v", ss, err)
	}
}
