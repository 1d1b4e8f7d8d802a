package lm

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol"
)

// pairRecords reads the pair records by ID.
func pairRecords(t *testing.T, db *metavol.DB) map[string]metavol.Pair {
	t.Helper()
	out := map[string]metavol.Pair{}
	if err := db.View(func(tx *metavol.Tx) error {
		ps, err := tx.Pairs()
		for _, p := range ps {
			out[p.ID] = p
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSessionMembershipInPairRecord: a session's pairs carry the session's
// ID in their own records; records written before that field existed get
// it at the next start; a deleted session's split pairs are in no session.
func TestSessionMembershipInPairRecord(t *testing.T) {
	e := newEnv(t, Options{}, false)
	reqs, _ := sessionLUNs(e, "m", 2, 4*mib)
	e.lun("alone", 4*mib)
	e.lun("alone-new", 4*mib)
	single, err := e.m.CreatePair(PairRequest{Source: "alone", Target: "alone-new", Speed: SpeedLow, MaxMBps: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.m.CreateSession(SessionRequest{Name: "mem", Pairs: reqs, Speed: SpeedHighest})
	if err != nil {
		t.Fatal(err)
	}
	recs := pairRecords(t, e.db)
	for _, p := range st.Pairs {
		if recs[p.ID].Session != st.ID {
			t.Fatalf("pair %s record: session %q, want %q", p.ID, recs[p.ID].Session, st.ID)
		}
	}
	if s := recs[single.ID].Session; s != "" {
		t.Fatalf("a pair created alone is in session %q", s)
	}

	// A meta volume written before pair records named their session.
	e.close()
	db, err := metavol.Open(e.metaDir, metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *metavol.Tx) error {
		for _, p := range st.Pairs {
			r, err := tx.GetPair(p.ID)
			if err != nil {
				return err
			}
			r.Session = ""
			if err := tx.PutPair(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.open()
	recs = pairRecords(t, e.db)
	for _, p := range st.Pairs {
		if recs[p.ID].Session != st.ID {
			t.Fatalf("old pair record %s after the start: session %q, want %q", p.ID, recs[p.ID].Session, st.ID)
		}
	}
	if s := recs[single.ID].Session; s != "" {
		t.Fatalf("a pair created alone got session %q at the start", s)
	}

	// The session drives exactly its pairs, by ID: splitting it leaves the
	// single pair alone.
	waitSession(e, "mem", SessionSynced, 30*time.Second)
	if _, err := e.m.SplitSession("mem", 0); err != nil {
		t.Fatal(err)
	}
	if p, err := e.m.Pair("alone"); err != nil || p.State == StateSplit.String() {
		t.Fatalf("the single pair after the session's split: %+v %v", p, err)
	}
	if err := e.m.DeleteSession("mem"); err != nil {
		t.Fatal(err)
	}
	recs = pairRecords(t, e.db)
	for _, p := range st.Pairs {
		r, ok := recs[p.ID]
		if !ok || r.State != StateSplit.String() || r.Session != "" {
			t.Fatalf("split pair %s after the session was deleted: %+v (present %v)", p.ID, r, ok)
		}
	}
}
