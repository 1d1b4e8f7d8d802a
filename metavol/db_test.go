package metavol

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// openTestDB opens a DB in a fresh temp dir, closed at cleanup.
func openTestDB(t *testing.T) (*DB, string) {
	t.Helper()
	dir := t.TempDir()
	db, err := Open(dir, Options{Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dir
}

func reopen(t *testing.T, db *DB, dir string) *DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	db2, err := Open(dir, Options{Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { db2.Close() })
	return db2
}

func mustUpdate(t *testing.T, db *DB, fn func(tx *Tx) error) {
	t.Helper()
	if err := db.Update(fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func testLUN(name string) LUN {
	return LUN{ID: NewID(), Name: name, Size: 1 << 20, BlockSize: 512, NAA: NewNAA(), Serial: NewSerial(),
		VolumeID: NewID(), Created: time.Now().UTC().Truncate(time.Second)}
}

func TestCRUD(t *testing.T) {
	db, _ := openTestDB(t)
	vol := Volume{ID: NewID(), Path: "/x/v1", Kind: "file", Size: 1 << 20, Owned: true}
	lun := testLUN("db1")
	lun.VolumeID = vol.ID
	tgt := Target{IQN: "iqn.2024-01.org.example:t1", Mappings: []Mapping{{LUN: 0, LUNID: lun.ID}},
		Initiators: []string{"iqn.x:i"}, CHAP: &CHAP{User: "u", Secret: "s"}}
	pair := Pair{ID: NewID(), SourceLUN: lun.ID, TargetLUN: NewID(), State: "queued"}
	mustUpdate(t, db, func(tx *Tx) error {
		for _, err := range []error{tx.PutVolume(vol), tx.PutLUN(lun), tx.PutTarget(tgt), tx.PutPair(pair),
			tx.PutReservation(lun.ID, []byte{1, 2, 3}), tx.PutMeta("x", []byte("y"))} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	err := db.View(func(tx *Tx) error {
		v, err := tx.GetVolume(vol.ID)
		if err != nil || !reflect.DeepEqual(v, vol) {
			return fmt.Errorf("volume: %+v %v", v, err)
		}
		l, err := tx.GetLUN(lun.ID)
		if err != nil || !reflect.DeepEqual(l, lun) {
			return fmt.Errorf("lun: %+v %v", l, err)
		}
		l, err = tx.LUNByName("db1")
		if err != nil || !reflect.DeepEqual(l, lun) {
			return fmt.Errorf("lun by name: %+v %v", l, err)
		}
		g, err := tx.GetTarget(tgt.IQN)
		if err != nil || g.CHAP == nil || g.CHAP.Secret != "s" || len(g.Mappings) != 1 || g.Mappings[0].LUNID != lun.ID {
			return fmt.Errorf("target: %+v %v", g, err)
		}
		p, err := tx.GetPair(pair.ID)
		if err != nil || !reflect.DeepEqual(p, pair) {
			return fmt.Errorf("pair: %+v %v", p, err)
		}
		r, err := tx.GetReservation(lun.ID)
		if err != nil || string(r) != "\x01\x02\x03" {
			return fmt.Errorf("resv: %v %v", r, err)
		}
		m, err := tx.GetMeta("x")
		if err != nil || string(m) != "y" {
			return fmt.Errorf("meta: %q %v", m, err)
		}
		vs, _ := tx.Volumes()
		ls, _ := tx.LUNs()
		ts, _ := tx.Targets()
		ps, _ := tx.Pairs()
		if len(vs) != 1 || len(ls) != 1 || len(ts) != 1 || len(ps) != 1 {
			return fmt.Errorf("lists: %d %d %d %d", len(vs), len(ls), len(ts), len(ps))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Deletes.
	mustUpdate(t, db, func(tx *Tx) error {
		for _, err := range []error{tx.DeleteVolume(vol.ID), tx.DeleteLUN(lun.ID), tx.DeleteTarget(tgt.IQN), tx.DeletePair(pair.ID)} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	err = db.View(func(tx *Tx) error {
		if _, err := tx.GetVolume(vol.ID); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("volume after delete: %v", err)
		}
		if _, err := tx.GetLUN(lun.ID); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("lun after delete: %v", err)
		}
		if _, err := tx.LUNByName("db1"); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("lun name after delete: %v", err)
		}
		if _, err := tx.GetTarget(tgt.IQN); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("target after delete: %v", err)
		}
		if _, err := tx.GetPair(pair.ID); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("pair after delete: %v", err)
		}
		if r, err := tx.GetReservation(lun.ID); r != nil || err != nil {
			return fmt.Errorf("reservation after lun delete: %v %v", r, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Deleting what is not there names the object.
	err = db.Update(func(tx *Tx) error { return tx.DeleteLUN("nope") })
	if !errors.Is(err, ErrNotFound) || err.Error() != `lun "nope": not found` {
		t.Fatalf("delete missing lun: %v", err)
	}
}

func TestLUNNameUnique(t *testing.T) {
	db, _ := openTestDB(t)
	a, b := testLUN("a"), testLUN("b")
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutLUN(a); err != nil {
			return err
		}
		return tx.PutLUN(b)
	})
	dup := testLUN("a")
	err := db.Update(func(tx *Tx) error { return tx.PutLUN(dup) })
	if !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	// Renaming b onto a's name is refused too.
	b2 := b
	b2.Name = "a"
	if err := db.Update(func(tx *Tx) error { return tx.PutLUN(b2) }); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto taken name: %v", err)
	}
	// Re-putting a with the same name is fine; renaming b frees "b".
	b3 := b
	b3.Name = "c"
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutLUN(a); err != nil {
			return err
		}
		return tx.PutLUN(b3)
	})
	err = db.View(func(tx *Tx) error {
		if _, err := tx.LUNByName("b"); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("old name b still resolves: %v", err)
		}
		l, err := tx.LUNByName("c")
		if err != nil || l.ID != b.ID {
			return fmt.Errorf("c: %+v %v", l, err)
		}
		ls, err := tx.LUNs()
		if err != nil || len(ls) != 2 || ls[0].Name != "a" || ls[1].Name != "c" {
			return fmt.Errorf("luns: %+v %v", ls, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The freed name "b" can be taken by a new LUN.
	mustUpdate(t, db, func(tx *Tx) error { return tx.PutLUN(testLUN("b")) })
}

func TestUpdateAtomic(t *testing.T) {
	db, _ := openTestDB(t)
	boom := errors.New("boom")
	l := testLUN("x")
	err := db.Update(func(tx *Tx) error {
		if err := tx.PutLUN(l); err != nil {
			return err
		}
		if err := tx.PutVolume(Volume{ID: l.VolumeID}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	err = db.View(func(tx *Tx) error {
		ls, _ := tx.LUNs()
		vs, _ := tx.Volumes()
		if _, err := tx.LUNByName("x"); !errors.Is(err, ErrNotFound) || len(ls) != 0 || len(vs) != 0 {
			return fmt.Errorf("failed update left state: %d luns %d volumes, name %v", len(ls), len(vs), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestViewIsReadOnly(t *testing.T) {
	db, _ := openTestDB(t)
	if err := db.View(func(tx *Tx) error { return tx.PutLUN(testLUN("ro")) }); err == nil {
		t.Fatal("put in a View succeeded")
	}
}

func TestInvalidRecords(t *testing.T) {
	db, _ := openTestDB(t)
	for name, fn := range map[string]func(tx *Tx) error{
		"lun without id":     func(tx *Tx) error { return tx.PutLUN(LUN{Name: "n"}) },
		"lun without name":   func(tx *Tx) error { return tx.PutLUN(LUN{ID: "i"}) },
		"volume without id":  func(tx *Tx) error { return tx.PutVolume(Volume{}) },
		"target without iqn": func(tx *Tx) error { return tx.PutTarget(Target{}) },
		"pair without id":    func(tx *Tx) error { return tx.PutPair(Pair{}) },
		"schema via meta":    func(tx *Tx) error { return tx.PutMeta("schema", []byte("9")) },
	} {
		if err := db.Update(fn); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	db, dir := openTestDB(t)
	var luns []LUN
	for i := range 50 {
		l := testLUN(fmt.Sprintf("lun%02d", i))
		luns = append(luns, l)
		mustUpdate(t, db, func(tx *Tx) error {
			if err := tx.PutLUN(l); err != nil {
				return err
			}
			return tx.PutVolume(Volume{ID: l.VolumeID, Path: "/p/" + l.Name, Kind: "file", Size: l.Size})
		})
	}
	if err := db.SaveReservations(luns[3].ID, []byte("pr")); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir)
	err := db.View(func(tx *Tx) error {
		ls, err := tx.LUNs()
		if err != nil || len(ls) != 50 {
			return fmt.Errorf("luns after reopen: %d %v", len(ls), err)
		}
		for i, l := range ls {
			if !reflect.DeepEqual(l, luns[i]) {
				return fmt.Errorf("lun %d: %+v want %+v", i, l, luns[i])
			}
			if _, err := tx.GetVolume(l.VolumeID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := db.LoadReservations(luns[3].ID); err != nil || string(b) != "pr" {
		t.Fatalf("reservations after reopen: %q %v", b, err)
	}
	if b, err := db.LoadReservations(luns[4].ID); err != nil || b != nil {
		t.Fatalf("no reservations: %q %v", b, err)
	}
	if err := db.SaveReservations(luns[3].ID, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := db.LoadReservations(luns[3].ID); err != nil || b != nil {
		t.Fatalf("cleared reservations: %q %v", b, err)
	}
}

func TestSchemaVersion(t *testing.T) {
	db, dir := openTestDB(t)
	err := db.bdb.Update(func(txn *badgerTxn) error { return txn.Set(schemaKey, []byte("99")) })
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("open newer schema: %v", err)
	}
	t.Log(err)
	// The refused open released badger's directory lock and changed nothing.
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("second open of newer schema: %v", err)
	}
}

func TestSchemaWrittenOnCreate(t *testing.T) {
	db, _ := openTestDB(t)
	err := db.bdb.View(func(txn *badgerTxn) error {
		item, err := txn.Get(schemaKey)
		if err != nil {
			return err
		}
		v, _ := item.ValueCopy(nil)
		if string(v) != "1" {
			return fmt.Errorf("schema %q", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	naa := NewNAA()
	if !regexp.MustCompile(`^6026c74[0-9a-f]{25}$`).MatchString(naa) {
		t.Fatalf("bad naa %q", naa)
	}
	if NewNAA() == naa {
		t.Fatal("naa repeats")
	}
	if s := NewSerial(); !regexp.MustCompile(`^[0-9A-F]{16}$`).MatchString(s) {
		t.Fatalf("bad serial %q", s)
	}
}
