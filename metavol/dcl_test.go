package metavol

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/rs/zerolog"
)

// TestDCLKeyLayout: the typed DCL methods read keys written in the layout
// package dcl used before it went through metavol ("dcl/<pair>/meta" as
// JSON, "dcl/<pair>/p/%08x" pages), so existing data dirs open; and they
// write the same layout.
func TestDCLKeyLayout(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	page := bytes.Repeat([]byte{0xa5}, 4096)
	if err := db.bdb.Update(func(txn *badgerTxn) error {
		if err := txn.Set([]byte("dcl/p1/meta"), []byte(`{"region_size":1048576,"size":107374182400}`)); err != nil {
			return err
		}
		if err := txn.Set([]byte("dcl/p1/p/00000002"), page); err != nil {
			return err
		}
		return txn.Set([]byte("dcl/p2/meta"), []byte(`{"region_size":65536,"size":1048576}`))
	}); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		in, err := tx.GetDCLInfo("p1")
		if err != nil {
			return err
		}
		if in != (DCLInfo{RegionSize: 1 << 20, Size: 100 << 30}) {
			t.Errorf("info %+v", in)
		}
		pages, err := tx.DCLPages("p1")
		if err != nil {
			return err
		}
		if len(pages) != 1 || !bytes.Equal(pages[2], page) {
			t.Errorf("pages %v", len(pages))
		}
		ids, err := tx.DCLPairIDs()
		if err != nil {
			return err
		}
		if len(ids) != 2 || ids[0] != "p1" || ids[1] != "p2" {
			t.Errorf("pair ids %v", ids)
		}
		if _, err := tx.GetDCLInfo("p3"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing info: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateDCL(func(tx *Tx) error { return tx.PutDCLPage("p2", 0x1f, page) }); err != nil {
		t.Fatal(err)
	}
	if err := db.bdb.View(func(txn *badgerTxn) error {
		_, err := txn.Get([]byte("dcl/p2/p/0000001f"))
		return err
	}); err != nil {
		t.Fatalf("page key layout: %v", err)
	}
	if err := db.UpdateDCL(func(tx *Tx) error { return tx.DeleteDCL("p1") }); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *Tx) error {
		ids, err := tx.DCLPairIDs()
		if err == nil && (len(ids) != 1 || ids[0] != "p2") {
			t.Errorf("after delete: %v", ids)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestBeforeCommitSeam: an error from Options.BeforeCommit fails the
// commit with nothing written; badger's conflict comes back as ErrConflict.
func TestBeforeCommitSeam(t *testing.T) {
	fail := errors.New("injected")
	var on bool
	db, err := Open(t.TempDir(), Options{Log: zerolog.Nop(), BeforeCommit: func() error {
		if on {
			return fail
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	on = true
	if err := db.Update(func(tx *Tx) error { return tx.PutMeta("x", []byte("1")) }); !errors.Is(err, fail) {
		t.Fatalf("update: %v", err)
	}
	if err := db.UpdateDCL(func(tx *Tx) error { return tx.PutDCLPage("p", 0, []byte{1}) }); !errors.Is(err, fail) {
		t.Fatalf("update dcl: %v", err)
	}
	on = false
	if err := db.View(func(tx *Tx) error {
		if b, err := tx.GetMeta("x"); err != nil || b != nil {
			t.Errorf("failed commit wrote: %q %v", b, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteDCLs: one call deletes the header and pages of every pair
// named, and nothing of a pair whose ID only starts like one of them.
func TestDeleteDCLs(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ids := []string{"p1", "p10", "p2", "p3"}
	if err := db.UpdateDCL(func(tx *Tx) error {
		for _, id := range ids {
			if err := tx.PutDCLInfo(id, DCLInfo{RegionSize: 1 << 20, Size: 1 << 30}); err != nil {
				return err
			}
			for pg := range 3 {
				if err := tx.PutDCLPage(id, pg, []byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var rest []string
	if err := db.Update(func(tx *Tx) error {
		var err error
		rest, err = tx.DeleteDCLs([]string{"p3", "p1", "p9", "p1"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(rest) != 0 {
		t.Fatalf("rest %v, want none", rest)
	}
	if err := db.View(func(tx *Tx) error {
		got, err := tx.DCLPairIDs()
		if err != nil {
			return err
		}
		if len(got) != 2 || got[0] != "p10" || got[1] != "p2" {
			t.Errorf("after deleting p1, p3: DCLs of %v, want [p10 p2]", got)
		}
		pages, err := tx.DCLPages("p10")
		if err == nil && len(pages) != 3 {
			t.Errorf("p10 has %d pages, want 3", len(pages))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { _, err := tx.DeleteDCLs([]string{"a/b"}); return err }); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad pair id: %v, want ErrInvalid", err)
	}
}

// TestDeleteDCLsTooBig: DCLs with more pages than one transaction takes
// lose every header in it and as many pages as fit; rest names the pairs
// with pages left, and later transactions delete them. A DCL whose pages
// have no header is never loaded (GetDCLInfo: ErrNotFound).
func TestDeleteDCLsTooBig(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const pages = 40000 // ~2.4 MB of delete entries: more than one transaction
	for _, id := range []string{"big", "small"} {
		if err := db.UpdateDCL(func(tx *Tx) error { return tx.PutDCLInfo(id, DCLInfo{RegionSize: 1 << 20, Size: 1 << 40}) }); err != nil {
			t.Fatal(err)
		}
	}
	for lo := 0; lo < pages; lo += 10000 {
		if err := db.UpdateDCL(func(tx *Tx) error {
			for pg := lo; pg < lo+10000; pg++ {
				if err := tx.PutDCLPage("big", pg, []byte{0, 0, 0, 0, 0, 0, 0, 1}); err != nil {
					return err
				}
			}
			return tx.PutDCLPage("small", lo, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Update(func(tx *Tx) error { return tx.DeleteDCL("big") }); !errors.Is(err, ErrTooBig) {
		t.Fatalf("DeleteDCL of %d pages: %v, want ErrTooBig", pages, err)
	}
	var rest []string
	if err := db.Update(func(tx *Tx) error {
		var err error
		rest, err = tx.DeleteDCLs([]string{"small", "big"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(rest) == 0 || rest[0] != "big" {
		t.Fatalf("rest %v, want big first", rest)
	}
	if err := db.View(func(tx *Tx) error {
		for _, id := range []string{"big", "small"} {
			if _, err := tx.GetDCLInfo(id); !errors.Is(err, ErrNotFound) {
				t.Errorf("header of %s after the first transaction: %v, want ErrNotFound", id, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for n := 0; len(rest) > 0; n++ {
		if n > 10 {
			t.Fatalf("pages still left after %d transactions: %v", n, rest)
		}
		todo := rest
		if err := db.Update(func(tx *Tx) error {
			var err error
			rest, err = tx.DeleteDCLs(todo)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.View(func(tx *Tx) error {
		ids, err := tx.DCLPairIDs()
		if err == nil && len(ids) != 0 {
			t.Errorf("keys left of %v", ids)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteDCLHeaders: only the headers go (the DCLs no longer exist),
// the pages stay as garbage and every pair is in rest; DeleteDCLs of rest
// then removes the pages (what dcl.Store.Purge does after a split).
func TestDeleteDCLHeaders(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, id := range []string{"a", "b"} {
		if err := db.UpdateDCL(func(tx *Tx) error {
			if err := tx.PutDCLInfo(id, DCLInfo{RegionSize: 1 << 20, Size: 1 << 30}); err != nil {
				return err
			}
			return tx.PutDCLPage(id, 0, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}); err != nil {
			t.Fatal(err)
		}
	}
	var rest []string
	if err := db.Update(func(tx *Tx) error {
		var err error
		rest, err = tx.DeleteDCLHeaders([]string{"b", "a", "b"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rest, []string{"a", "b"}) {
		t.Fatalf("rest %v, want [a b]", rest)
	}
	if err := db.View(func(tx *Tx) error {
		for _, id := range rest {
			if _, err := tx.GetDCLInfo(id); !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("header of %s after DeleteDCLHeaders: %v, want ErrNotFound", id, err)
			}
			if pg, err := tx.DCLPages(id); err != nil || len(pg) != 1 {
				return fmt.Errorf("pages of %s after DeleteDCLHeaders: %d, %v; want the 1 page left", id, len(pg), err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error {
		left, err := tx.DeleteDCLs(rest)
		if err == nil && len(left) > 0 {
			err = fmt.Errorf("DeleteDCLs of the garbage left %v", left)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *Tx) error {
		ids, err := tx.DCLPairIDs()
		if err == nil && len(ids) > 0 {
			err = fmt.Errorf("DCL keys of %v left after the purge", ids)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
