package lm

import (
	"errors"
	"testing"
	"time"
)

// A cancel whose drain times out leaves the pair attached: host writes
// keep working, and the cancel can be repeated.
func TestCancelDrainTimeout(t *testing.T) {
	e := newEnv(t, Options{DrainTimeout: 50 * time.Millisecond}, true)
	size := int64(4 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	h := e.handle(l)
	fs := e.faultyOf("src")
	before := fs.Writes()
	fs.Delay(300 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- writeBlock(h, 1, 5) }()
	model[1] = 5
	waitFor(t, 5*time.Second, "write in flight", func() bool { return fs.Writes() > before })
	if err := e.m.Cancel("src"); !errors.Is(err, ErrSplitTimeout) {
		t.Fatalf("cancel with a stuck write: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fs.Delay(0)
	if err := writeBlock(h, 2, 5); err != nil {
		t.Fatalf("host write after a cancel that did not drain: %v", err)
	}
	model[2] = 5
	if st, err := e.m.Pair("src"); err != nil || st.State != "cancelled" {
		t.Fatalf("pair after the timed-out cancel: %+v, %v", st, err)
	}
	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	// The record is gone; the history says the last pair was cancelled.
	if st, err := e.m.Pair("src"); err != nil || st.State != "cancelled" {
		t.Fatalf("pair after the cancel: %+v, %v; want the cancelled pair from the history", st, err)
	}
	tl := lunRecord(t, e.db, "tgt").ID
	th, _ := e.m.LUN(tl)
	if err := writeBlock(th, 3, 1); err != nil {
		t.Fatalf("target LUN not writable after the cancel: %v", err)
	}
	checkModel(t, "source", h, size, model)
}
