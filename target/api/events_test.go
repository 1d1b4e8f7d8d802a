package api

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestEventsLongPoll: a long poll answers with the first selected event
// recorded after it started; an admin change is recorded with its caller
// and a refused one with its reason; bad queries are refused.
func TestEventsLongPoll(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.cl.Events(ctx, client.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan wire.EventList, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := e.cl.Events(ctx, client.EventQuery{After: l.Last, Types: []string{"admin"}, Wait: 20 * time.Second})
		got <- l
		errc <- err
	}()
	if _, err := e.cl.CreateLUN(ctx, wire.CreateLUN{Name: "lp", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	r := <-got
	if len(r.Events) != 1 || r.Events[0].Action != "lun create" || r.Events[0].LUN != "lp" || !r.Events[0].OK || r.Events[0].Who == "" || r.Last < r.Events[0].Seq {
		t.Fatalf("long poll answered %+v, want the lun create of lp with its caller", r)
	}
	_, err = e.cl.CreateLUN(ctx, wire.CreateLUN{Name: "lp", Size: 1 << 20})
	wantStatus(t, err, http.StatusConflict, "lp")
	r, err = e.cl.Events(ctx, client.EventQuery{After: r.Last, Wait: 20 * time.Second})
	if err != nil || len(r.Events) != 1 || r.Events[0].OK || r.Events[0].Reason == "" {
		t.Fatalf("refused create: %+v, %v; want one event with the reason", r, err)
	}
	// A map and an allow name the LUN and the initiator from the body;
	// a CHAP secret in a body is never recorded.
	if _, err := e.cl.CreateTarget(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Map(ctx, tgt, "lp", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Allow(ctx, tgt, "iqn.2026-12.org.x:h"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.SetCHAP(ctx, tgt, wire.SetCHAP{User: "u", Secret: "very-secret-1234"}); err != nil {
		t.Fatal(err)
	}
	// Recorded asynchronously: follow until the four are there.
	var got4 []wire.Event
	for after, deadline := r.Last, time.Now().Add(time.Minute); len(got4) < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("events of create, map, allow, chap: %+v", got4)
		}
		l, err := e.cl.Events(ctx, client.EventQuery{After: after, Wait: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		got4, after = append(got4, l.Events...), l.Last
	}
	r = wire.EventList{Events: got4}
	if m, a := r.Events[1], r.Events[2]; m.Action != "target map" || m.LUN != "lp" || m.Target != tgt || a.Action != "target allow" || a.Initiator != "iqn.2026-12.org.x:h" {
		t.Fatalf("map %+v, allow %+v: want the LUN and the initiator named", m, a)
	}
	if b, _ := json.Marshal(r); strings.Contains(string(b), "very-secret") {
		t.Fatalf("a CHAP secret reached the event log: %s", b)
	}
	for _, q := range []string{"after=x", "type=nosuch", "since=yesterday", "wait=-1s", "limit=-2"} {
		err := e.cl.Do(ctx, http.MethodGet, wire.Version+"/events?"+q, nil, nil)
		wantStatus(t, err, http.StatusBadRequest, "events")
	}
}

// TestEventsLongPollShutdown: a long poll in progress does not hold the
// server's shutdown.
func TestEventsLongPollShutdown(t *testing.T) {
	e := newEnv(t)
	l, err := e.cl.Events(context.Background(), client.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.cl.Events(context.Background(), client.EventQuery{After: l.Last + 1000, Wait: time.Minute})
		done <- err
	}()
	deadline := time.Now().Add(time.Minute)
	for e.mgr.Events().Waiting() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the long poll never reached the event log")
		}
		runtime.Gosched()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a long poll in progress: %v (after %v)", err, time.Since(start))
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the long poll did not end with the shutdown")
	}
}
