package lm

import (
	"errors"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// switchController is the controller of a switching world: with both
// pairs in sync it switches them (split --keep-source, one consistent
// group) or rolls them back, again and again, under the host writers,
// until the power is cut. The final life stops the writers, waits for
// the pairs to be in sync, rolls back if switched, switches once more and
// commits, then checks that the LUNs hold every acknowledged write and
// that the old volumes (the targets) hold the same bytes.
func (w *cvWorld) switchController(final bool, stopWriters func()) error {
	names := make([]string, len(w.src))
	for i := range w.src {
		names[i] = w.src[i].Name
	}
	deadline := time.Now().Add(60 * time.Second)
	inSync := func() (PairState, error) {
		var st0 PairState
		var last PairStatus
		var perr error
		ok := poll(time.Until(deadline), func() bool {
			if w.set.Crashed() {
				return true
			}
			for i := range w.src {
				st, err := w.m.Pair(names[i])
				if err != nil {
					perr = fmt.Errorf("pair %s: %w", names[i], err)
					return true
				}
				s, _ := ParseState(st.State)
				if s != StateSynced && s != StateSwitched {
					last = st
					return false
				}
				if i == 0 {
					st0 = s
				} else if s != st0 {
					perr = fmt.Errorf("consistent group not in one state: %s is %s, %s is %s", names[0], st0, names[i], s)
					return true
				}
			}
			return true
		})
		switch {
		case perr != nil:
			return 0, perr
		case !ok:
			return 0, fmt.Errorf("pair %s not in sync within 60s: %+v", last.Source, last)
		}
		return st0, nil
	}
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
		if w.set.Crashed() {
			return nil
		}
		if err := w.ensurePairs(); err != nil {
			if w.set.Crashed() {
				return nil
			}
			return err
		}
		if !final {
			deadline = time.Now().Add(60 * time.Second)
		}
		st, err := inSync()
		if w.set.Crashed() {
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
	points := cvCrashPoints(t, 60)
	chain := 30
	seed := cvSeed(t)
	t.Logf("seed %d (LMTGT_VOLUME_SEED replays it), %d crash points", seed, points)
	rnd := rand.New(rand.NewSource(seed))
	var crashes, flips int64
	for done := 0; done < points; {
		ws := rnd.Int63()
		w := newCVWorld(t, ws, nil)
		w.switching = true
		w.kill(true)
		n := min(chain, points-done)
		prev := false
		for c := 0; c < n; c++ {
			w.label = fmt.Sprintf("switching world %d, life %d", ws, c)
			w.open(volume.CrashOptions{Partial: rnd.Intn(2) == 0, Seed: rnd.Int63()})
			swapped := w.check(fmt.Sprintf("switching world %d after crash %d", ws, c))
			if c > 0 && swapped != prev {
				flips++
			}
			prev = swapped
			k := rnd.Int63n(2000)
			if rnd.Intn(2) == 0 {
				k = rnd.Int63n(400)
			}
			w.set.CrashAt(k)
			w.life(false)
			crashes++
			w.kill(c%10 == 9)
		}
		w.open(volume.CrashOptions{})
		w.label = fmt.Sprintf("switching world %d final", ws)
		w.check(w.label + " (after reopen)")
		w.life(true)
		w.kill(true)
		done += n
	}
	t.Logf("%d crash points; %d lives changed which volume the LUNs run on", crashes, flips)
}
