package lm

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol"
)

func flushEvents(t testing.TB, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Events().Flush(ctx); err != nil {
		t.Fatalf("flush the event log: %v", err)
	}
}

// TestEventLogBound: the log keeps the latest MaxEvents, the oldest are
// deleted in the commit that goes over the bound, sequence numbers go on,
// and the bound holds across a restart.
func TestEventLogBound(t *testing.T) {
	const max = 50
	e := newEnv(t, Options{MaxEvents: max}, false)
	el := e.m.Events()
	for i := range 3 * max {
		el.Record(Event{Type: EventAdmin, Action: "test", Object: fmt.Sprintf("n%d", i), OK: true})
		if i%17 == 0 {
			flushEvents(t, e.m) // commits of several sizes
		}
	}
	flushEvents(t, e.m)
	check := func(what string, wantLast uint64) {
		t.Helper()
		evs, last, err := el.List(EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != max {
			t.Fatalf("%s: %d events stored, want the bound %d", what, len(evs), max)
		}
		if last != wantLast || evs[len(evs)-1].Seq != wantLast || evs[0].Seq != wantLast-max+1 {
			t.Fatalf("%s: seqs %d..%d (last %d), want %d..%d", what, evs[0].Seq, evs[len(evs)-1].Seq, last, wantLast-max+1, wantLast)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq != evs[i-1].Seq+1 {
				t.Fatalf("%s: seq %d after %d", what, evs[i].Seq, evs[i-1].Seq)
			}
		}
	}
	check("after 150 events", 3*max)
	if got := e.m.Events().Dropped(); got != 0 {
		t.Fatalf("dropped %d events with a queue that never filled", got)
	}
	e.reopen()
	el = e.m.Events()
	check("after a restart", 3*max)
	el.Record(Event{Type: EventAdmin, Action: "after restart", OK: true})
	flushEvents(t, e.m)
	check("one more after the restart", 3*max+1)
}

// TestEventLogQueueFull: a full queue drops the event (never blocks),
// counts it and says so in an events-dropped event.
func TestEventLogQueueFull(t *testing.T) {
	e := newEnv(t, Options{EventQueue: 1}, false)
	el := e.m.Events()
	for range 2000 {
		el.Record(Event{Type: EventAdmin, Action: "flood", OK: true})
	}
	if el.Dropped() == 0 {
		t.Fatal("2000 events into a queue of 1: none dropped")
	}
	el.Record(Event{Type: EventAdmin, Action: "one more", OK: true}) // a commit after the drops reports them
	flushEvents(t, e.m)
	waitFor(t, time.Minute, "an events-dropped event", func() bool {
		el.Record(Event{Type: EventAdmin, Action: "nudge", OK: true})
		flushEvents(t, e.m)
		evs, _, _ := el.List(EventQuery{Types: []string{EventDropped}})
		return len(evs) > 0
	})
}

// TestEventFollow: Follow returns the events recorded after it started
// waiting, and filters by type.
func TestEventFollow(t *testing.T) {
	e := newEnv(t, Options{}, false)
	el := e.m.Events()
	el.Record(Event{Type: EventAdmin, Action: "before", OK: true})
	flushEvents(t, e.m)
	_, last, err := el.List(EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		evs []Event
		err error
	}
	got := make(chan res, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		evs, _, err := el.Follow(ctx, EventQuery{After: last, Types: []string{EventLoginRefused}})
		got <- res{evs, err}
	}()
	el.Record(Event{Type: EventAdmin, Action: "not selected", OK: true})
	flushEvents(t, e.m)
	el.Record(Event{Type: EventLoginRefused, Initiator: "iqn.x", Reason: "ACL: test"})
	r := <-got
	if r.err != nil || len(r.evs) != 1 || r.evs[0].Reason != "ACL: test" || r.evs[0].Who != "system" {
		t.Fatalf("follow: %+v, %v; want the one refused login", r.evs, r.err)
	}
}

// TestPairHistory: a pair's transitions (with their reasons and causes)
// are kept in its history, with the final figures, after the pair is
// cancelled (its record deleted) and across restarts; Pair says a source
// whose last pair was cancelled is cancelled.
func TestPairHistory(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 8 << 20
	e.lun("src", size)
	e.lun("tgt", size)
	e.lun("tgt2", size)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Minute)
	if err := e.m.Pause("src"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Resume("src"); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Minute)
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	hs, err := e.m.PairHistories("src")
	if err != nil || len(hs) != 1 {
		t.Fatalf("history of src after a restart: %+v, %v", hs, err)
	}
	h := hs[0]
	var steps []string
	for _, en := range h.Entries {
		steps = append(steps, en.From+">"+en.To+"/"+en.Who)
	}
	want := []string{">queued/admin", "queued>copying/system", "copying>synced/system", "synced>paused/admin",
		"paused>copying/admin", "copying>synced/system", "synced>splitting/admin", "splitting>split/admin"} // e.m.Split is the admin's split
	if fmt.Sprint(steps) != fmt.Sprint(want) {
		t.Fatalf("history entries %v, want %v", steps, want)
	}
	if h.Final == nil || h.Final.State != "split" || h.Final.SplitPauseNS <= 0 || h.Final.DurationNS <= 0 || h.SourceName != "src" || h.TargetName != "tgt" {
		t.Fatalf("final figures %+v of %+v", h.Final, h)
	}

	// A cancelled pair: record deleted, history kept, show says cancelled.
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt2", Speed: SpeedLow}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	st, err := e.m.Pair("src")
	if err != nil || st.State != "cancelled" || st.Target != "tgt2" || st.Reason != "cancelled by admin" {
		t.Fatalf("Pair(src) after the cancel: %+v, %v; want the cancelled pair to tgt2", st, err)
	}
	e.reopen()
	hs, err = e.m.PairHistories("src")
	if err != nil || len(hs) != 2 || hs[1].Final == nil || hs[1].Final.State != "cancelled" || hs[1].TargetName != "tgt2" {
		t.Fatalf("histories of src after the cancel and a restart: %+v, %v", hs, err)
	}
	if st, err := e.m.Pair("src"); err != nil || st.State != "cancelled" {
		t.Fatalf("Pair(src) after a restart: %+v, %v", st, err)
	}
}

// TestPairHistoryReconciled: a transition whose history entry was lost
// (committed state, then a crash before the history commit) is added from
// the pair record when the pair is loaded.
func TestPairHistoryReconciled(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("src", 4<<20)
	e.lun("tgt", 4<<20)
	st, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Minute)
	if err := e.m.Pause("src"); err != nil {
		t.Fatal(err)
	}
	flushEvents(t, e.m)
	e.close()
	// Lose the last entry (paused), as a kill -9 between the two commits would.
	db, err := metavol.Open(e.metaDir, metavol.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *metavol.Tx) error {
		h, err := tx.GetPairHistory(st.ID)
		if err != nil {
			return err
		}
		h.Entries = h.Entries[:len(h.Entries)-1]
		return tx.PutPairHistory(h)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.open()
	hs, err := e.m.PairHistories("src")
	if err != nil || len(hs) != 1 {
		t.Fatalf("history: %+v, %v", hs, err)
	}
	for _, en := range hs[0].Entries {
		t.Logf("entry %+v", en)
	}
	last := hs[0].Entries[len(hs[0].Entries)-1]
	if last.To != "paused" || last.From != "synced" {
		t.Fatalf("last entry after the reload %+v, want synced → paused recovered from the record", last)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestProgressAndSummaryLines: a copying pair logs a progress line every
// ProgressInterval, and one summary line (bytes, duration, vehicle,
// average rate) when it ends.
func TestProgressAndSummaryLines(t *testing.T) {
	dir := t.TempDir()
	db, err := metavol.Open(filepath.Join(dir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logs syncBuffer
	m, err := Open(db, Options{DataDir: dir, Log: zerolog.New(&logs), ProgressInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, n := range []string{"src", "tgt"} {
		if _, err := m.CreateLUN(CreateLUNRequest{Name: n, Size: 64 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	src := lunRecord(t, db, "src")
	h, err := m.LUN(src.ID)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, h, 64<<20, 1<<20, 1) // data to copy: 10 MB/s makes it last
	if _, err := m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedLow}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "a copy progress line of pair src", func() bool {
		return strings.Contains(logs.String(), `"message":"copy progress"`) && strings.Contains(logs.String(), `"copied_bytes"`)
	})
	if err := m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the summary line of the cancelled pair", func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"message":"migration summary"`) && strings.Contains(l, `"state":"cancelled"`) &&
				strings.Contains(l, `"data_bytes"`) && strings.Contains(l, `"avg_mbps"`) && strings.Contains(l, `"lun":"src"`) {
				return true
			}
		}
		return false
	})
}

// TestEventRecordLimited: events of one key beyond the burst are
// suppressed and counted in the next one let through; other keys are not
// affected.
func TestEventRecordLimited(t *testing.T) {
	e := newEnv(t, Options{}, false)
	el := e.m.Events()
	for range 3 * limitBurst {
		el.RecordLimited("10.0.0.1 iqn.flood", Event{Type: EventLoginRefused, Initiator: "iqn.flood", Reason: "ACL: x"})
	}
	el.RecordLimited("10.0.0.2 iqn.other", Event{Type: EventLoginRefused, Initiator: "iqn.other", Reason: "ACL: y"})
	flushEvents(t, e.m)
	evs, _, err := el.List(EventQuery{Types: []string{EventLoginRefused}})
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, ev := range evs {
		n[ev.Initiator]++
	}
	if n["iqn.flood"] != limitBurst || n["iqn.other"] != 1 {
		t.Fatalf("recorded %v, want %d of the flood and 1 of the other", n, limitBurst)
	}
	// The window's end lets the next one through with the count.
	el.limit.Lock()
	el.limit.by["10.0.0.1 iqn.flood"].start = time.Now().Add(-2 * limitWindowLen)
	el.limit.Unlock()
	el.RecordLimited("10.0.0.1 iqn.flood", Event{Type: EventLoginRefused, Initiator: "iqn.flood", Reason: "ACL: x"})
	flushEvents(t, e.m)
	evs, _, _ = el.List(EventQuery{Types: []string{EventLoginRefused}, Limit: 1})
	if len(evs) != 1 || !strings.Contains(evs[0].Reason, fmt.Sprintf("(%d similar events suppressed", 2*limitBurst)) {
		t.Fatalf("next event after the window: %+v", evs)
	}
}
