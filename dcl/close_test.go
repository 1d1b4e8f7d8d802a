package dcl

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// callWithin runs f and fails the test if it does not return within d (a
// hang: a mark queued into a commit that never runs).
func callWithin(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s after Close did not return within %v", what, d)
		return nil
	}
}

// TestMarkAfterClose: marks after Store.Close fail at once with ErrClosed
// naming the pair, whether the region needs a commit or is already marked
// (finding 5: they used to wait forever for a committer that had exited).
func TestMarkAfterClose(t *testing.T) {
	db := openMeta(t, t.TempDir())
	defer db.Close()
	s := Open(db, Options{ClearInterval: -1})
	l := openLog(t, s, "p-closed", 64<<20, 0, nil)
	must(t, l.MarkDCL(0, 0)) // durable: a later write there costs no I/O
	must(t, s.Close())

	for _, c := range []struct {
		what string
		f    func() error
	}{
		{"BeginWrite on a new region", func() error { return l.BeginWrite(7, 9) }},
		{"BeginWrite on a marked region", func() error { return l.BeginWrite(0, 0) }},
		{"MarkDCL on a new region", func() error { return l.MarkDCL(20, 20) }},
		{"MarkDCL on a marked region", func() error { return l.MarkDCL(0, 0) }},
	} {
		err := callWithin(t, 10*time.Second, c.what, c.f)
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "p-closed") {
			t.Errorf("%s after Close: got %v, want ErrClosed naming the pair", c.what, err)
		}
	}
	if _, err := s.Open("p2", 1<<20, 0, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: got %v, want ErrClosed", err)
	}
}

// TestCloseConcurrentWithMarks: Close while writers mark: every mark
// returns (nil before Close, ErrClosed after), none hangs, and what was
// acknowledged is on disk. Run with -race.
func TestCloseConcurrentWithMarks(t *testing.T) {
	dir := t.TempDir()
	db := openMeta(t, dir)
	s := Open(db, Options{ClearInterval: time.Millisecond})
	l := openLog(t, s, "p", 1<<30, 0, nil)
	const writers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acked []int64
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := (i*writers + int64(w)) % l.Len()
				var err error
				if i%2 == 0 {
					if err = l.BeginWrite(r, r); err == nil {
						l.EndWrite(r, r, false)
					}
				} else {
					err = l.MarkDCL(r, r)
				}
				switch {
				case err == nil:
					if i%2 == 1 {
						mu.Lock()
						acked = append(acked, r)
						mu.Unlock()
					}
				case errors.Is(err, ErrClosed):
					return
				default:
					t.Errorf("mark: %v", err)
					return
				}
			}
		}()
	}
	// Let the writers run until some marks are acknowledged.
	waitFor(t, 10*time.Second, "marks before Close", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > 100
	})
	must(t, s.Close())
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		close(stop)
		t.Fatal("writers still blocked 20s after Close")
	}
	close(stop)
	must(t, db.Close())

	db = openMeta(t, dir)
	defer db.Close()
	s = Open(db, Options{ClearInterval: -1})
	defer s.Close()
	l = openLog(t, s, "p", 1<<30, 0, nil)
	for _, r := range acked {
		if !l.IsDirty(r) {
			t.Fatalf("acknowledged DCL mark of region %d lost", r)
		}
	}
}

// TestForget: the caller's transaction deletes the keys; Forget closes the
// log without deleting again, and a page queued before it (a lazy clear
// not yet committed) is never written after the delete. A failed commit
// changes nothing.
func TestForget(t *testing.T) {
	db, s := newStore(t)
	l := openLog(t, s, "p-split", 64<<20, 0, nil)
	other := openLog(t, s, "p-other", 64<<20, 0, nil)
	must(t, l.MarkDCL(3, 3))
	must(t, other.MarkDCL(1, 1))
	keys := func() []string {
		t.Helper()
		ids, err := s.PairIDs()
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}

	fail := errors.New("injected")
	if _, err := s.Forget([]string{"p-split"}, func() ([]string, error) { return nil, fail }); !errors.Is(err, fail) {
		t.Fatalf("Forget with a failing commit: %v", err)
	}
	must(t, l.MarkDCL(4, 4)) // still open
	if got := keys(); len(got) != 2 {
		t.Fatalf("after a failed Forget: DCLs of %v, want both", got)
	}

	// A page of the log queued for the next group commit, not yet written.
	l.mu.Lock()
	l.queuePageLocked(0)
	l.mu.Unlock()
	rest, err := s.Forget([]string{"p-split"}, func() (rest []string, err error) {
		err = db.Update(func(tx *metavol.Tx) error {
			var err error
			rest, err = tx.DeleteDCLs([]string{"p-split"})
			return err
		})
		return rest, err
	})
	must(t, err)
	if len(rest) != 0 {
		t.Fatalf("a 2-page DCL did not fit in one transaction: rest %v", rest)
	}
	if got := keys(); len(got) != 1 || got[0] != "p-other" {
		t.Fatalf("right after Forget: DCLs of %v, want [p-other]", got)
	}
	must(t, s.commitOnce()) // the queued page: skipped
	must(t, other.MarkDCL(9, 9))
	if got := keys(); len(got) != 1 || got[0] != "p-other" {
		t.Fatalf("after the next group commits: DCLs of %v, want [p-other]", got)
	}
	if err := l.MarkDCL(5, 5); !errors.Is(err, ErrClosed) {
		t.Errorf("mark after Forget: %v, want ErrClosed", err)
	}
	if _, err := s.Open("p-split", 64<<20, 0, nil); err != nil {
		t.Errorf("Open after Forget (the log is no longer open): %v", err)
	}
}

// Pages whose header is gone (left by a split whose transaction had no
// room for them) are garbage: a log opened under that ID starts clean and
// deletes them.
func TestOpenIgnoresHeaderlessPages(t *testing.T) {
	db := openMeta(t, t.TempDir())
	defer db.Close()
	must(t, db.UpdateDCL(func(tx *metavol.Tx) error {
		return tx.PutDCLPage("p-gone", 0, []byte{0xff, 0, 0, 0, 0, 0, 0, 0})
	}))
	s := Open(db, Options{ClearInterval: -1})
	defer s.Close()
	l := openLog(t, s, "p-gone", 64<<20, 0, nil)
	if d, marked, _ := l.Counts(); d != 0 || marked != 0 {
		t.Fatalf("a log opened over headerless pages: %d in the DCL, %d marked, want 0", d, marked)
	}
	must(t, db.View(func(tx *metavol.Tx) error {
		pages, err := tx.DCLPages("p-gone")
		if err == nil && len(pages) != 0 {
			t.Errorf("the headerless pages are still there: %d", len(pages))
		}
		return err
	}))
}
