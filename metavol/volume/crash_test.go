package volume

import (
	"bytes"
	"errors"
	"sync"
	"testing"
)

const pg = CrashPageSize

// reopen opens the file of f again, as a reboot would.
func reopen(t *testing.T, f *File) *File {
	t.Helper()
	g, err := Open(f.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// TestCrashLosesUnsynced: a crash keeps what the last Sync covered and
// loses every later write and unmap, on every volume of the set at once;
// afterwards every call fails and the files hold the durable image.
func TestCrashLosesUnsynced(t *testing.T) {
	s := NewCrashSet(CrashOptions{})
	fa, fb := create(t, 64*pg, Options{}), create(t, 64*pg, Options{})
	a, b := s.Wrap(fa), s.Wrap(fb)
	d1, d2, d3 := pattern(1, 2*pg), pattern(2, pg), pattern(3, pg+100)

	if _, err := a.WriteAt(d1, 0); err != nil { // synced below
		t.Fatal(err)
	}
	if _, err := b.WriteAt(d1, 8*pg); err != nil { // synced below
		t.Fatal(err)
	}
	for _, v := range []*Crashable{a, b} {
		if err := v.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	// Unsynced: an overwrite, an unaligned write, an unmap of synced data.
	if _, err := a.WriteAt(d2, pg); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt(d3, 10*pg+7); err != nil {
		t.Fatal(err)
	}
	if err := b.Unmap(8*pg, 2*pg); err != nil {
		t.Fatal(err)
	}
	// Reads see the unsynced data (page cache), the file too.
	if !bytes.Equal(readBack(t, a, pg, pg), d2) || !bytes.Equal(readBack(t, fa, 10*pg+7, len(d3)), d3) {
		t.Fatal("unsynced write not visible before the crash")
	}
	if !bytes.Equal(readBack(t, b, 8*pg, 2*pg), make([]byte, 2*pg)) {
		t.Fatal("unsynced unmap not visible before the crash")
	}
	if a.Unsynced() != 3 || b.Unsynced() != 2 {
		t.Fatalf("unsynced pages: %d, %d; want 3, 2", a.Unsynced(), b.Unsynced())
	}
	if s.Ops() != 7 {
		t.Fatalf("ops: %d, want 7", s.Ops())
	}

	if err := s.Crash(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Crash")
	}
	if _, err := a.WriteAt(d2, 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write after crash: %v", err)
	}
	if _, err := b.ReadAt(make([]byte, pg), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("read after crash: %v", err)
	}
	if err := b.Unmap(0, pg); !errors.Is(err, ErrCrashed) {
		t.Fatalf("unmap after crash: %v", err)
	}
	if err := a.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("sync after crash: %v", err)
	}
	if late := s.Wrap(fa); late.Sync() == nil {
		t.Fatal("a volume wrapped after the crash works")
	}

	ra, rb := reopen(t, fa), reopen(t, fb)
	if !bytes.Equal(readBack(t, ra, 0, 2*pg), d1) {
		t.Fatal("a: synced data lost or unsynced overwrite survived")
	}
	if !bytes.Equal(readBack(t, ra, 10*pg, 2*pg), make([]byte, 2*pg)) {
		t.Fatal("a: unsynced write survived")
	}
	if !bytes.Equal(readBack(t, rb, 8*pg, 2*pg), d1) {
		t.Fatal("b: unsynced unmap survived")
	}
}

// TestCrashAt: operation k (writes, unmaps and syncs of every volume of
// the set, counted together) is the crash; earlier ones happened.
func TestCrashAt(t *testing.T) {
	for k := int64(0); k < 6; k++ {
		s := NewCrashSet(CrashOptions{})
		fa, fb := create(t, 16*pg, Options{}), create(t, 16*pg, Options{})
		a, b := s.Wrap(fa), s.Wrap(fb)
		s.CrashAt(k)
		// ops: 0 write a, 1 sync a, 2 write b, 3 sync b, 4 unmap a, 5 sync a
		steps := []func() error{
			func() error { _, err := a.WriteAt(pattern(10, pg), 0); return err },
			a.Sync,
			func() error { _, err := b.WriteAt(pattern(11, pg), 0); return err },
			b.Sync,
			func() error { return a.Unmap(0, pg) },
			a.Sync,
		}
		for i, step := range steps {
			err := step()
			if (int64(i) < k) != (err == nil) {
				t.Fatalf("k=%d: step %d: %v", k, i, err)
			}
			if err != nil && !errors.Is(err, ErrCrashed) {
				t.Fatalf("k=%d: step %d: %v, want ErrCrashed", k, i, err)
			}
		}
		if !s.Crashed() {
			t.Fatalf("k=%d: no crash", k)
		}
		ra, rb := reopen(t, fa), reopen(t, fb)
		gotA, gotB := readBack(t, ra, 0, pg), readBack(t, rb, 0, pg)
		wantA, wantB := make([]byte, pg), make([]byte, pg)
		if k >= 2 && k < 6 { // a's write synced, its unmap not synced
			wantA = pattern(10, pg)
		}
		if k >= 4 {
			wantB = pattern(11, pg)
		}
		if !bytes.Equal(gotA, wantA) || !bytes.Equal(gotB, wantB) {
			t.Fatalf("k=%d: durable images wrong (a ok %v, b ok %v)", k, bytes.Equal(gotA, wantA), bytes.Equal(gotB, wantB))
		}
	}
}

// TestCrashPartial: with Partial, each unsynced page is either its new or
// its durable content (both happen), and a seed repeats the outcome.
func TestCrashPartial(t *testing.T) {
	const pages = 64
	run := func(seed int64) []byte {
		s := NewCrashSet(CrashOptions{Partial: true, Seed: seed})
		f := create(t, pages*pg, Options{})
		v := s.Wrap(f)
		if _, err := v.WriteAt(pattern(1, pages*pg), 0); err != nil {
			t.Fatal(err)
		}
		if err := v.Sync(); err != nil {
			t.Fatal(err)
		}
		if _, err := v.WriteAt(pattern(2, pages*pg), 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Crash(); err != nil {
			t.Fatal(err)
		}
		return readBack(t, reopen(t, f), 0, pages*pg)
	}
	old, cur := pattern(1, pages*pg), pattern(2, pages*pg)
	got := run(42)
	kept, lost := 0, 0
	for i := 0; i < pages; i++ {
		switch p := got[i*pg : (i+1)*pg]; {
		case bytes.Equal(p, cur[i*pg:(i+1)*pg]):
			kept++
		case bytes.Equal(p, old[i*pg:(i+1)*pg]):
			lost++
		default:
			t.Fatalf("page %d is neither the old nor the new content", i)
		}
	}
	if kept == 0 || lost == 0 {
		t.Fatalf("kept %d, lost %d pages: want some of each", kept, lost)
	}
	if !bytes.Equal(run(42), got) {
		t.Fatal("the same seed gave another outcome")
	}
}

// TestCrashConcurrent: writers racing a crash; whatever a Sync that
// returned success covered survives, on every volume.
func TestCrashConcurrent(t *testing.T) {
	s := NewCrashSet(CrashOptions{})
	files := []*File{create(t, 64*pg, Options{}), create(t, 64*pg, Options{})}
	s.CrashAt(400)
	var wg sync.WaitGroup
	durable := make([][]uint64, 2*4) // per (volume, writer): seq durable per page
	for vi, f := range files {
		v := s.Wrap(f)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				acked := make([]uint64, 16)
				pending := map[int]uint64{}
				for seq := uint64(1); ; seq++ {
					p := int(seq % 16)
					if _, err := v.WriteAt(pattern(seq, pg), int64(w*16+p)*pg); err != nil {
						break
					}
					pending[p] = seq
					if seq%3 == 0 {
						if v.Sync() != nil {
							break
						}
						for p, q := range pending {
							acked[p] = q
						}
						clear(pending)
					}
				}
				durable[vi*4+w] = acked
			}()
		}
	}
	wg.Wait()
	<-s.Done()
	for vi, f := range files {
		r := reopen(t, f)
		for w := 0; w < 4; w++ {
			for p, seq := range durable[vi*4+w] {
				got := readBack(t, r, int64(w*16+p)*pg, pg)
				if seq == 0 {
					continue
				}
				ok := false
				for q := seq; q < seq+64 && !ok; q += 16 { // the acked one or a later write
					ok = bytes.Equal(got, pattern(q, pg))
				}
				if !ok {
					t.Fatalf("volume %d writer %d page %d: acknowledged seq %d lost", vi, w, p, seq)
				}
			}
		}
	}
}

// TestFaultyFailsOneSyncAndLosesData: FailSyncNumber fails exactly the
// k-th Sync; over a Crashable the unsynced data is lost and the next Sync
// succeeds without it, as after a failed writeback.
func TestFaultyFailsOneSyncAndLosesData(t *testing.T) {
	s := NewCrashSet(CrashOptions{})
	f := create(t, 16*pg, Options{})
	v := NewFaulty(s.Wrap(f))
	boom := errors.New("boom")
	v.FailSyncNumber(1, boom)
	if _, err := v.WriteAt(pattern(1, pg), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(); err != nil { // sync 0
		t.Fatal(err)
	}
	if _, err := v.WriteAt(pattern(2, pg), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(); !errors.Is(err, boom) { // sync 1
		t.Fatalf("sync 1: %v, want boom", err)
	}
	if err := v.Sync(); err != nil { // sync 2
		t.Fatalf("sync 2: %v", err)
	}
	if !bytes.Equal(readBack(t, v, 0, pg), pattern(1, pg)) {
		t.Fatal("the write before the failed sync was not lost")
	}
	if v.Syncs() != 2 || v.InjectedSyncFailures() != 1 {
		t.Fatalf("syncs %d, injected failures %d", v.Syncs(), v.InjectedSyncFailures())
	}
}

// TestFaultyFailsOneWrite: FailWriteNumber fails exactly the k-th write
// or unmap; it does not reach the volume.
func TestFaultyFailsOneWrite(t *testing.T) {
	f := NewFaulty(create(t, 16*pg, Options{}))
	boom := errors.New("boom")
	f.FailWriteNumber(2, boom)
	for i := int64(0); i < 5; i++ {
		var err error
		if i == 3 {
			err = f.Unmap(i*pg, pg)
		} else {
			_, err = f.WriteAt(pattern(uint64(i+1), pg), i*pg)
		}
		if (i == 2) != errors.Is(err, boom) || (i != 2 && err != nil) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if !bytes.Equal(readBack(t, f, 2*pg, pg), make([]byte, pg)) {
		t.Fatal("the failed write reached the volume")
	}
	if !bytes.Equal(readBack(t, f, 4*pg, pg), pattern(5, pg)) {
		t.Fatal("the write after the failed one did not")
	}
}
