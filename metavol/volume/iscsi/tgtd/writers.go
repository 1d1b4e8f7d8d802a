package tgtd

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Disk is what Writers write to: a data volume seen through an initiator.
type Disk interface {
	WriteAt(p []byte, off int64) (int, error)
	Size() int64
}

// Writers is the load of the "target restarts under load" tests: workers
// that each write random 4 KiB-aligned extents of their own region until
// stopped, and the image every acknowledged write makes (Want). The tests
// restart the target underneath and check that no write failed and that
// every acknowledged one is there afterwards.
type Writers struct {
	t     testing.TB
	want  []byte
	acked atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
	errc  chan error
}

// StartWriters starts workers writers on d; each writes extents of 4 KiB
// to maxBlocks x 4 KiB, from a random stream seeded by its index and seed.
// Stop ends them; a failed write fails t at the next WaitAcked or Stop.
func StartWriters(t testing.TB, d Disk, workers, maxBlocks int, seed uint64) *Writers {
	w := &Writers{t: t, want: make([]byte, d.Size()), stop: make(chan struct{}), errc: make(chan error, workers)}
	region := d.Size() / int64(workers)
	for i := range workers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), seed))
			for n := 0; ; n++ {
				select {
				case <-w.stop:
					return
				default:
				}
				size := int64(4096 * (1 + r.IntN(maxBlocks)))
				off := int64(i)*region + r.Int64N(region-size+1)/4096*4096
				buf := make([]byte, size)
				for j := range buf {
					buf[j] = byte(r.Uint32())
				}
				if _, err := d.WriteAt(buf, off); err != nil {
					w.errc <- fmt.Errorf("writer %d, write %d at %d (+%d): %w", i, n, off, size, err)
					return
				}
				copy(w.want[off:], buf) // regions are disjoint: no lock needed
				w.acked.Add(1)
			}
		}()
	}
	return w
}

// Acked is the number of acknowledged writes so far.
func (w *Writers) Acked() int64 { return w.acked.Load() }

// WaitAcked waits until n writes are acknowledged, failing t when a write
// fails or the deadline passes first.
func (w *Writers) WaitAcked(n int64, timeout time.Duration, what string) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for w.acked.Load() < n {
		select {
		case err := <-w.errc:
			w.t.Fatalf("%s: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: only %d writes acknowledged within %v, want %d", what, w.acked.Load(), timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop ends the writers, fails t if any write failed, and returns the
// image of every acknowledged write (zeros where nothing was written).
func (w *Writers) Stop() []byte {
	w.t.Helper()
	close(w.stop)
	w.wg.Wait()
	close(w.errc)
	for err := range w.errc {
		w.t.Fatal(err)
	}
	return w.want
}
