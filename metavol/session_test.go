package metavol

import (
	"errors"
	"testing"
	"time"
)

func TestSessionCRUD(t *testing.T) {
	db, dir := openTestDB(t)
	s := Session{ID: NewID(), Name: "wave1", PairIDs: []string{"p1", "p2"}, Sources: []string{"a", "b"},
		Targets: []string{"a2", "b2"}, Speed: "high", MaxActive: 1, AutoSplit: true,
		Created: time.Now().UTC().Truncate(time.Second)}
	mustUpdate(t, db, func(tx *Tx) error { return tx.PutSession(s) })

	other := Session{ID: NewID(), Name: "wave1"}
	err := db.Update(func(tx *Tx) error { return tx.PutSession(other) })
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second session named wave1: got %v, want ErrExists", err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutSession(Session{ID: NewID()}) }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("session without a name: got %v, want ErrInvalid", err)
	}

	db = reopen(t, db, dir)
	db.View(func(tx *Tx) error {
		got, err := tx.SessionByName("wave1")
		if err != nil || got.ID != s.ID || len(got.PairIDs) != 2 || got.MaxActive != 1 || !got.AutoSplit {
			t.Fatalf("SessionByName after reopen: %+v, %v", got, err)
		}
		all, err := tx.Sessions()
		if err != nil || len(all) != 1 {
			t.Fatalf("Sessions: %v, %v", all, err)
		}
		return nil
	})

	// Rename frees the old name.
	s.Name = "wave2"
	mustUpdate(t, db, func(tx *Tx) error { return tx.PutSession(s) })
	db.View(func(tx *Tx) error {
		if _, err := tx.SessionByName("wave1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old name after rename: %v", err)
		}
		return nil
	})
	mustUpdate(t, db, func(tx *Tx) error { return tx.DeleteSession(s.ID) })
	db.View(func(tx *Tx) error {
		if _, err := tx.GetSession(s.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get after delete: %v", err)
		}
		if _, err := tx.SessionByName("wave2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("name after delete: %v", err)
		}
		if all, _ := tx.Sessions(); len(all) != 0 {
			t.Fatalf("sessions after delete: %v", all)
		}
		return nil
	})
	if err := db.Update(func(tx *Tx) error { return tx.DeleteSession(s.ID) }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}
