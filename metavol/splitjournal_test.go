package metavol

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// sjWorld: n pairs, each a source LUN on volume sN and a target LUN on tN,
// a DCL header and a page each, the pairs splitting.
func sjWorld(t *testing.T, db *DB, n int) {
	t.Helper()
	if err := db.Update(func(tx *Tx) error {
		for i := range n {
			for _, l := range []LUN{
				{ID: fmt.Sprintf("ls%d", i), Name: fmt.Sprintf("s%d", i), Size: 1 << 20, BlockSize: 512, VolumeID: fmt.Sprintf("vs%d", i)},
				{ID: fmt.Sprintf("lt%d", i), Name: fmt.Sprintf("t%d", i), Size: 2 << 20, BlockSize: 512, VolumeID: fmt.Sprintf("vt%d", i)},
			} {
				if err := tx.PutLUN(l); err != nil {
					return err
				}
			}
			id := fmt.Sprintf("p%d", i)
			if err := tx.PutPair(Pair{ID: id, SourceLUN: fmt.Sprintf("ls%d", i), TargetLUN: fmt.Sprintf("lt%d", i),
				State: "splitting", AutoSplit: true, Cursor: 4096, Speed: "high"}); err != nil {
				return err
			}
			if err := tx.PutDCLInfo(id, DCLInfo{RegionSize: 65536, Size: 1 << 20}); err != nil {
				return err
			}
			if err := tx.PutDCLPage(id, 0, []byte{1}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func sjJournal(n int, dropDCL bool) *SplitJournal {
	j := &SplitJournal{State: "split", Reason: "split by test", NoAutoSplit: true, DropDCL: dropDCL,
		Time: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	for i := range n {
		j.Pairs = append(j.Pairs, SplitJournalPair{Pair: fmt.Sprintf("p%d", i), Size: 1 << 20,
			SourceLUN: fmt.Sprintf("ls%d", i), SourceVolume: fmt.Sprintf("vt%d", i), SourceSize: 1 << 20,
			TargetLUN: fmt.Sprintf("lt%d", i), TargetVolume: fmt.Sprintf("vs%d", i), TargetSize: 1 << 20})
	}
	return j
}

// sjCheck: every pair's LUNs swapped, the pair split, its DCL header gone
// (dropDCL) or kept, no journal left.
func sjCheck(t *testing.T, db *DB, n int, dropDCL bool) {
	t.Helper()
	if err := db.View(func(tx *Tx) error {
		if j, err := tx.SplitJournal(); err != nil || j != nil {
			t.Errorf("after the roll-forward the journal is %v, %v; want none", j, err)
		}
		for i := range n {
			s, err := tx.LUNByName(fmt.Sprintf("s%d", i))
			if err != nil {
				return err
			}
			tl, err := tx.LUNByName(fmt.Sprintf("t%d", i))
			if err != nil {
				return err
			}
			if s.VolumeID != fmt.Sprintf("vt%d", i) || tl.VolumeID != fmt.Sprintf("vs%d", i) || tl.Size != 1<<20 || s.Size != 1<<20 {
				t.Errorf("pair %d: source %+v, target %+v: not swapped", i, s, tl)
			}
			p, err := tx.GetPair(fmt.Sprintf("p%d", i))
			if err != nil {
				return err
			}
			if p.State != "split" || p.Reason != "split by test" || p.AutoSplit || p.Cursor != 1<<20 || p.CopiedBytes != 1<<20 || p.Speed != "high" {
				t.Errorf("pair %d: %+v", i, p)
			}
			_, err = tx.GetDCLInfo(p.ID)
			if dropDCL != errors.Is(err, ErrNotFound) {
				t.Errorf("pair %d: DCL header: %v (dropped: %v)", i, err, dropDCL)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestSplitJournalRollForward: a journal committed alone, then the DB
// closed and opened again (a restart), is rolled forward to exactly the
// records it describes, and rolling it forward again (a crash during the
// first roll-forward's commit would leave it) changes nothing.
func TestSplitJournalRollForward(t *testing.T) {
	for _, drop := range []bool{true, false} {
		t.Run(fmt.Sprintf("dropDCL=%v", drop), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "meta")
			db, err := Open(dir, Options{Log: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			const n = 50
			sjWorld(t, db, n)
			var b Batch
			if err := b.PutSplitJournal(sjJournal(n, drop)); err != nil {
				t.Fatal(err)
			}
			if b.Len() != 1 {
				t.Fatalf("the journal of %d pairs is %d writes, want 1", n, b.Len())
			}
			if err := db.Update(func(tx *Tx) error { return tx.Apply(&b) }); err != nil {
				t.Fatal(err)
			}
			db.Close()
			db, err = Open(dir, Options{Log: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var got *SplitJournal
			if err := db.Update(func(tx *Tx) error {
				var err error
				var missing []string
				got, missing, err = tx.RollForwardSplit()
				if len(missing) > 0 {
					t.Errorf("missing %v", missing)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if got == nil || len(got.Pairs) != n {
				t.Fatalf("rolled forward %+v, want the journal of %d pairs", got, n)
			}
			sjCheck(t, db, n, drop)
			// Again, as if the first roll-forward had not been committed
			// (every value is set, none swapped).
			if err := db.Update(func(tx *Tx) error { return tx.Apply(&b) }); err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *Tx) error { _, _, err := tx.RollForwardSplit(); return err }); err != nil {
				t.Fatal(err)
			}
			sjCheck(t, db, n, drop)
			// No journal: nothing to do.
			if err := db.Update(func(tx *Tx) error {
				j, _, err := tx.RollForwardSplit()
				if j != nil {
					t.Errorf("rolled forward %+v without a journal", j)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A journal naming a LUN or pair that no longer exists (deleted after a
// split whose records were not written) rolls forward the rest, reports
// what it skipped and recreates nothing; an incomplete journal is refused
// before it is written.
func TestSplitJournalMissingRecords(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sjWorld(t, db, 2)
	if err := db.Update(func(tx *Tx) error {
		if err := tx.DeleteLUN("lt1"); err != nil {
			return err
		}
		return tx.DeletePair("p1")
	}); err != nil {
		t.Fatal(err)
	}
	var b Batch
	if err := b.PutSplitJournal(sjJournal(2, true)); err != nil {
		t.Fatal(err)
	}
	var missing []string
	if err := db.Update(func(tx *Tx) error {
		if err := tx.Apply(&b); err != nil {
			return err
		}
		var err error
		_, missing, err = tx.RollForwardSplit()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"lun lt1", "pair p1"}; fmt.Sprint(missing) != fmt.Sprint(want) {
		t.Fatalf("skipped %v, want %v", missing, want)
	}
	sjCheck(t, db, 1, true)
	if err := db.View(func(tx *Tx) error {
		if s, err := tx.LUNByName("s1"); err != nil || s.VolumeID != "vt1" {
			t.Errorf("s1 (its target LUN gone): %+v, %v; want on vt1", s, err)
		}
		if _, err := tx.GetLUN("lt1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("the deleted LUN came back: %v", err)
		}
		if _, err := tx.GetPair("p1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("the deleted pair came back: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	bad := sjJournal(1, false)
	bad.Pairs[0].SourceVolume = ""
	if err := b.PutSplitJournal(bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("journal with an empty volume ID: %v, want ErrInvalid", err)
	}
	if err := b.PutSplitJournal(&SplitJournal{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("journal without a state: %v, want ErrInvalid", err)
	}
}
