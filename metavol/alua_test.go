package metavol

import (
	"errors"
	"reflect"
	"testing"
)

func getTarget(t *testing.T, db *DB, iqn string) Target {
	t.Helper()
	var tg Target
	if err := db.View(func(tx *Tx) error {
		var err error
		tg, err = tx.GetTarget(iqn)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return tg
}

// TestTargetPorts: a target gets the default group and the lowest free
// relative port ID, keeps them when its record is rewritten, cannot take
// another target's port ID, and records written before the fields existed
// are given them when the meta volume opens.
func TestTargetPorts(t *testing.T) {
	db, dir := openTestDB(t)
	put := func(tg Target) error { return db.Update(func(tx *Tx) error { return tx.PutTarget(tg) }) }
	for _, iqn := range []string{"iqn.a", "iqn.b"} {
		if err := put(Target{IQN: iqn}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := getTarget(t, db, "iqn.a"), getTarget(t, db, "iqn.b")
	if a.Group != DefaultGroup || a.Port != 1 || b.Group != DefaultGroup || b.Port != 2 {
		t.Fatalf("ports: a %d/%d b %d/%d, want group 1, ports 1 and 2", a.Group, a.Port, b.Group, b.Port)
	}
	a.Initiators = []string{"iqn.host"}
	if err := put(a); err != nil {
		t.Fatal(err)
	}
	if got := getTarget(t, db, "iqn.a"); got.Port != 1 {
		t.Fatalf("rewritten target moved to port %d", got.Port)
	}
	b.Port = 1
	if err := put(b); !errors.Is(err, ErrExists) {
		t.Fatalf("port of another target: %v, want ErrExists", err)
	}
	if got := getTarget(t, db, "iqn.b"); got.Port != 2 {
		t.Fatalf("refused change wrote port %d", got.Port)
	}
	b.Port, b.Group = 7, 9
	if err := put(b); err != nil {
		t.Fatal(err)
	}
	// iqn.c takes the lowest free ID (2 now).
	if err := put(Target{IQN: "iqn.c"}); err != nil {
		t.Fatal(err)
	}
	if c := getTarget(t, db, "iqn.c"); c.Port != 2 {
		t.Fatalf("iqn.c port %d, want 2", c.Port)
	}

	// A record from before targets had ports.
	if err := db.Update(func(tx *Tx) error {
		return tx.set(prefixTarget+"iqn.0old", "target", "iqn.0old", []byte(`{"iqn":"iqn.0old","mappings":[],"allow_all":true}`))
	}); err != nil {
		t.Fatal(err)
	}
	if o := getTarget(t, db, "iqn.0old"); o.Port != 0 || o.Group != 0 {
		t.Fatalf("raw old record reads %d/%d", o.Group, o.Port)
	}
	db = reopen(t, db, dir)
	o := getTarget(t, db, "iqn.0old")
	if o.Group != DefaultGroup || o.Port != 3 || !o.AllowAll {
		t.Fatalf("old record after reopen: %+v, want group 1 port 3", o)
	}
	if b := getTarget(t, db, "iqn.b"); b.Port != 7 || b.Group != 9 {
		t.Fatalf("iqn.b after reopen %d/%d", b.Group, b.Port)
	}
}

// TestLUNAccess: a LUN's ALUA states are stored, replaced, removed when
// empty, refused for group 0, and deleted with the LUN.
func TestLUNAccess(t *testing.T) {
	db, _ := openTestDB(t)
	get := func() map[uint16]string {
		var m map[uint16]string
		if err := db.View(func(tx *Tx) error {
			var err error
			m, err = tx.GetLUNAccess("l1")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := get(); m != nil {
		t.Fatalf("no record: %v", m)
	}
	if err := db.Update(func(tx *Tx) error {
		if err := tx.PutLUN(LUN{ID: "l1", Name: "a", VolumeID: "v"}); err != nil {
			return err
		}
		return tx.PutLUNAccess("l1", map[uint16]string{1: "standby", 300: "unavailable"})
	}); err != nil {
		t.Fatal(err)
	}
	if m := get(); !reflect.DeepEqual(m, map[uint16]string{1: "standby", 300: "unavailable"}) {
		t.Fatalf("read back %v", m)
	}
	err := db.Update(func(tx *Tx) error { return tx.PutLUNAccess("l1", map[uint16]string{0: "standby"}) })
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("group 0: %v, want ErrInvalid", err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutLUNAccess("l1", nil) }); err != nil {
		t.Fatal(err)
	}
	if m := get(); m != nil {
		t.Fatalf("after clearing: %v", m)
	}
	if err := db.Update(func(tx *Tx) error {
		if err := tx.PutLUNAccess("l1", map[uint16]string{2: "standby"}); err != nil {
			return err
		}
		return tx.DeleteLUN("l1")
	}); err != nil {
		t.Fatal(err)
	}
	if m := get(); m != nil {
		t.Fatalf("after the LUN was deleted: %v", m)
	}
	var all []LUNAccess
	if err := db.View(func(tx *Tx) error { var err error; all, err = tx.LUNAccesses(); return err }); err != nil || len(all) != 0 {
		t.Fatalf("list %v %v", all, err)
	}
}
