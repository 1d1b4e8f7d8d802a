package lm

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// switchController is the controller of a switching world: with both
// pairs in sync it switches them (split --keep-source, one consistent
// group) or rolls them back, again and again, under the host writers,
// until the power is cut. The final life stops the writers, waits for
// the pairs to be in sync, rolls back if switched, switches once more and
// commits, then checks that the LUNs hold every acknowledged write and
// that the old volumes (the targets) hold the same bytes.
func (w *cvWorld) switchController(final bool, stopWriters func()) error {
	names := w.sourceNames()
	deadline := time.Now().Add(60 * time.Second)
	step := func(st PairState) error {
		var err error
		if st == StateSwitched {
			_, err = w.m.Rollback(names, cvMaxPause)
		} else {
			_, err = w.m.SplitKeepSource(names, cvMaxPause, false)
		}
		return err
	}
	if final {
		stopWriters()
	}
	for n := 0; ; n++ {
		if !final {
			deadline = time.Now().Add(60 * time.Second)
		}
		st, cut, err := w.groupReady(names, deadline, StateSynced, StateSwitched)
		if cut {
			return nil
		}
		if err != nil {
			return err
		}
		if final && st == StateSwitched && n > 0 {
			if _, err := w.m.Commit(names); err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			w.checkSplits("final commit " + w.label)
			for i := range w.src {
				w.checkLUN("final commit "+w.label, i, w.handle(w.src[i]))
				sameContent(w.t, fmt.Sprintf("%s: after the commit: s%d == t%d (the old volume)", w.label, i, i), w.handle(w.src[i]), w.handle(w.tgt[i]), cvLUNSize)
			}
			return nil
		}
		if err := step(st); err != nil {
			if w.set.Crashed() {
				return nil
			}
			if !errors.Is(err, ErrSplitTimeout) && !errors.Is(err, ErrNotSynced) {
				return fmt.Errorf("%s: %w", st, err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("switch or rollback still refused after 60s: %w", err)
			}
			continue
		}
	}
}

// TestVolumePowerLossSwitched is TestVolumePowerLoss for rollback after
// the switch: the power of every data volume is cut at random operations
// while two pairs are switched and rolled back as one group under host
// writes (dual-write with the legs reversed, re-copies new → old after a
// restart, the swaps themselves); after each cut the world is reopened and
// checked (no acknowledged write lost; both pairs swapped or neither); the
// last life commits and compares each LUN with its old volume. Unsynced
// data of the secondary (as of the primary) disappears at each cut.
func TestVolumePowerLossSwitched(t *testing.T) {
	r := cvLives(t, "switching world", cvCrashPoints(t, 60), 30, 2000, true)
	t.Logf("%d crash points; %d lives changed which volume the LUNs run on", r.crashes, r.flips)
}
