package metavol

import (
	"errors"
	"testing"

	"github.com/rs/zerolog"
)

// TestBatch: records encoded before the transaction read back as written
// by the typed methods; a renamed LUN is no business of ReplaceLUN (the
// name index stays).
func TestBatch(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := LUN{ID: "l1", Name: "a", Size: 1 << 20, BlockSize: 512, VolumeID: "v1"}
	if err := db.Update(func(tx *Tx) error { return tx.PutLUN(l) }); err != nil {
		t.Fatal(err)
	}
	var b Batch
	l.VolumeID, l.Size = "v2", 2<<20
	if err := b.ReplaceLUN(l); err != nil {
		t.Fatal(err)
	}
	if err := b.PutPair(Pair{ID: "p1", SourceLUN: "l1", State: "split"}); err != nil {
		t.Fatal(err)
	}
	if err := b.PutPair(Pair{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pair without an ID: %v", err)
	}
	if b.Len() != 2 {
		t.Fatalf("batch of %d writes, want 2", b.Len())
	}
	if err := db.Update(func(tx *Tx) error { return tx.Apply(&b) }); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *Tx) error {
		got, err := tx.LUNByName("a")
		if err != nil {
			return err
		}
		if got != l {
			t.Errorf("lun %+v, want %+v", got, l)
		}
		p, err := tx.GetPair("p1")
		if err != nil {
			return err
		}
		if p.State != "split" || p.SourceLUN != "l1" {
			t.Errorf("pair %+v", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
