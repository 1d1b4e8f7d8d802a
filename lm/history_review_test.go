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
