package lm

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestPairHistoryScheduledCreate: a pair created with a start time ahead
// is scheduled from its first entry; its history does not claim that an
// entry was lost (the review of issue 11 found "queued → scheduled ...
// (recovered from the pair record: the history entry was lost)" on every
// scheduled create).
func TestPairHistoryScheduledCreate(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("src", 4<<20)
	e.lun("tgt", 4<<20)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest,
		StartAt: time.Now().Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	flushEvents(t, e.m)
	hs, err := e.m.PairHistories("src")
	if err != nil || len(hs) != 1 {
		t.Fatalf("history of src: %+v, %v", hs, err)
	}
	es := hs[0].Entries
	for _, en := range es {
		if strings.Contains(en.Reason, "lost") {
			t.Errorf("entry %+v: a fresh scheduled pair lost no history entry", en)
		}
	}
	if len(es) != 1 || es[0].Event != "created" || es[0].To != "scheduled" {
		t.Fatalf("entries %+v, want one: created → scheduled", es)
	}
}

// TestPairHistoryByTarget: `migration history` names a pair by its
// target LUN too, as every migration command does.
func TestPairHistoryByTarget(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("src", 4<<20)
	e.lun("tgt", 4<<20)
	st, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest})
	if err != nil {
		t.Fatal(err)
	}
	flushEvents(t, e.m)
	hs, err := e.m.PairHistories("tgt")
	if err != nil || len(hs) != 1 || hs[0].ID != st.ID {
		t.Fatalf("history by the target's name: %+v, %v", hs, err)
	}
	if _, err := e.m.PairHistories("nope"); err == nil {
		t.Fatal("history of a LUN that was never in a pair: no error")
	}
}

// TestResumeRefusedByID: a refused resume of a pair named by its ID names
// the pair once ("pair pair ID" before).
func TestResumeRefusedByID(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("src", 4<<20)
	e.lun("tgt", 4<<20)
	st, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest,
		StartAt: time.Now().Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	err = e.m.Resume(st.ID)
	if !errors.Is(err, ErrState) {
		t.Fatalf("resume of a scheduled pair: %v, want ErrState", err)
	}
	if strings.Contains(err.Error(), "pair pair") || !strings.Contains(err.Error(), "src") {
		t.Fatalf("resume by ID refused with %q: want the pair named once, by its source", err)
	}
}

// TestPairHistoryWhoSplits: the history says who caused a split, a
// switch, a rollback and a commit: the admin's commands are "admin", an
// auto-split is "system" and says so (all were "system" before).
func TestPairHistoryWhoSplits(t *testing.T) {
	e := newEnv(t, Options{}, false)
	for _, n := range []string{"src", "tgt", "src2", "tgt2"} {
		e.lun(n, 4<<20)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Minute)
	if _, err := e.m.SplitKeepSource([]string{"src"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Rollback([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SplitKeepSource([]string{"src"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Commit([]string{"src"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src2", Target: "tgt2", Speed: SpeedHighest, AutoSplit: true}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src2", StateSplit, time.Minute)
	flushEvents(t, e.m)
	check := func(src string, want map[string]string) {
		t.Helper()
		hs, err := e.m.PairHistories(src)
		if err != nil || len(hs) != 1 {
			t.Fatalf("history of %s: %+v, %v", src, hs, err)
		}
		got := map[string]bool{}
		for _, en := range hs[0].Entries {
			t.Logf("%s: %s → %s: %s (%s)", src, en.From, en.To, en.Reason, en.Who)
			if w, ok := want[en.From+">"+en.To]; ok {
				got[en.From+">"+en.To] = true
				if en.Who != w {
					t.Errorf("%s: entry %s → %s (%s) caused by %q, want %q", src, en.From, en.To, en.Reason, en.Who, w)
				}
			}
		}
		for k := range want {
			if !got[k] {
				t.Errorf("%s: no entry %s", src, k)
			}
		}
	}
	check("src", map[string]string{"synced>splitting": "admin", "splitting>switched": "admin",
		"switched>rolling-back": "admin", "rolling-back>synced": "admin", "switched>split": "admin"})
	check("src2", map[string]string{"synced>splitting": "system", "splitting>split": "system"})
}

// TestEndedPairNamedThreeWays: a split pair is shown, retired and deleted
// by its target's name or its ID too (`migration show|retire|delete`
// answered "not found" / "no ended migration" for those names).
func TestEndedPairNamedThreeWays(t *testing.T) {
	e := newEnv(t, Options{}, false)
	for _, n := range []string{"src", "tgt", "src2", "tgt2"} {
		e.lun(n, 4<<20)
	}
	st, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest})
	if err != nil {
		t.Fatal(err)
	}
	st2, err := e.m.CreatePair(PairRequest{Source: "src2", Target: "tgt2", Speed: SpeedHighest})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Minute)
	e.waitState("src2", StateSynced, time.Minute)
	if _, err := e.m.Split([]string{"src", "src2"}, time.Second); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"src", "tgt", st.ID} {
		got, err := e.m.Pair(name)
		if err != nil || got.ID != st.ID || got.State != "split" {
			t.Errorf("Pair(%q) of the split pair: %+v, %v", name, got, err)
		}
	}
	if _, err := e.m.Retire("tgt", RetireOptions{}); err != nil {
		t.Errorf("retire by the target's name: %v", err)
	}
	if ids, err := e.m.DeletePairRecords(st.ID); err != nil || len(ids) != 1 || ids[0] != st.ID {
		t.Errorf("delete by the pair ID: %v, %v", ids, err)
	}
	if _, err := e.m.Retire(st2.ID, RetireOptions{}); err != nil {
		t.Errorf("retire by the pair ID: %v", err)
	}
	if ids, err := e.m.DeletePairRecords("src2"); err != nil || len(ids) != 1 {
		t.Errorf("delete by the source's name: %v, %v", ids, err)
	}
	if _, err := e.m.DeletePairRecords("src"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete again: %v, want not found", err)
	}
}

// TestSetLimitsAnswerCounts: lowering max active answers with the counts
// it brought about (the pairs past the limit no longer count as copying),
// not the ones before it (`config set max-active 1` printed "3 copying, 0
// queued" with one slot).
func TestSetLimitsAnswerCounts(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 3}, false)
	const size = 16 << 20
	one := int64(1)
	names := []string{"p1", "p2", "p3"}
	for _, n := range names {
		l := e.lun(n, size)
		e.lun(n+"t", size)
		writeSome(t, e.handle(l), size, 256, 1, 61, map[int64]uint64{}) // data all over: seconds at 1 MB/s
		if _, err := e.m.CreatePair(PairRequest{Source: n, Target: n + "t", Speed: SpeedHighest, MaxMBps: one}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		e.waitState(n, StateCopying, 10*time.Second)
	}
	limit := 1
	got, err := e.m.SetLimits(LimitsRequest{MaxActive: &limit})
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxActive != 1 || got.Active != 1 || got.Waiting+got.Active != 3 {
		t.Fatalf("SetLimits(max active 1) answered %+v, want 1 copying and 2 waiting (or about to wait)", got)
	}
	copying := 0
	for _, n := range names {
		if st, _ := e.m.Pair(n); st.State == StateCopying.String() {
			copying++
		}
	}
	if copying != 1 {
		t.Fatalf("%d pairs copying after max active 1", copying)
	}
}

// TestSessionHistoryTimeline: a session's own timeline has its switch,
// rollback and commit (by admin) and a forced lone operation on one of
// its pairs; it had only "created" and "split: committed ... (system)".
func TestSessionHistoryTimeline(t *testing.T) {
	e := newEnv(t, Options{}, false)
	for _, n := range []string{"a", "a2", "b", "b2"} {
		e.lun(n, 4<<20)
	}
	if _, err := e.m.CreateSession(SessionRequest{Name: "wave", Speed: SpeedHighest,
		Pairs: []PairRequest{{Source: "a", Target: "a2"}, {Source: "b", Target: "b2"}}}); err != nil {
		t.Fatal(err)
	}
	e.waitState("a", StateSynced, time.Minute)
	e.waitState("b", StateSynced, time.Minute)
	if err := e.m.Pause("a"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.ResumeNamed("a", true); err != nil {
		t.Fatal(err)
	}
	e.waitState("a", StateSynced, time.Minute)
	if _, err := e.m.SplitKeepSourceSession("wave", time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.RollbackSession("wave", time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SplitKeepSourceSession("wave", time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CommitSession("wave"); err != nil {
		t.Fatal(err)
	}
	flushEvents(t, e.m)
	h, err := e.m.SessionHistoryOf("wave")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range h.Entries {
		t.Logf("%s: %s (%s)", en.Event, en.Reason, en.Who)
		got = append(got, en.Event+"/"+en.Who)
	}
	want := []string{"created/admin", "forced/admin", "switched/admin", "rolled-back/admin", "switched/admin", "split/admin"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("session timeline %v, want %v", got, want)
	}
}
