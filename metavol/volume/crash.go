package volume

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"sync"
)

// ErrCrashed: the volume lost power (CrashSet.Crash); every call fails
// until the volume is opened again from its file.
var ErrCrashed = errors.New("volume lost power")

// CrashPageSize is the unit in which a Crashable tracks unsynced data and
// in which data survives or is lost at a crash (a page of the page cache).
const CrashPageSize = 4096

// CrashOptions configure a CrashSet.
type CrashOptions struct {
	// Partial: at a crash each unsynced page independently survives (as if
	// the kernel had written it back) or is lost, drawn from a random
	// source seeded with Seed. Without Partial every unsynced page is
	// lost, the worst case for data written since the last Sync.
	Partial bool
	Seed    int64
}

// CrashSet is one power domain for tests of durability: the volumes it
// wraps (Wrap) lose power together, at one instant (Crash, or the k-th
// operation with CrashAt), like the disks of one machine. It counts every
// WriteAt, Unmap and Sync of its volumes, in the order they are admitted.
//
// The model (after pebble's vfs.NewCrashableMem, but on real files): the
// durable image of a volume is what its last successful Sync covered.
// Writes go through to the real file at once (so reads, SEEK_DATA and
// everything that looks at the file see them, as with the page cache); the
// first write or unmap of a page since the last Sync saves the page's
// durable content in memory. Sync (fdatasync of the file) forgets the
// saved pages. Crash writes the saved pages back over the file (all of
// them, or a seeded random subset with Partial), so that the file is
// exactly a durable image a power cut could leave, and from then on every
// call fails with ErrCrashed. A test then reopens the files as a reboot
// would. Pages are atomic: a torn page is not modelled.
type CrashSet struct {
	mu      sync.Mutex // guards the fields below; never held during I/O
	vols    []*Crashable
	ops     int64
	armed   bool
	crashAt int64
	crashed bool
	err     error // the first error writing the durable image back
	done    chan struct{}

	// rmu guards rnd (held while durable images are written back).
	rmu sync.Mutex
	rnd *rand.Rand
}

// NewCrashSet makes an empty power domain.
func NewCrashSet(opts CrashOptions) *CrashSet {
	s := &CrashSet{done: make(chan struct{})}
	if opts.Partial {
		s.rnd = rand.New(rand.NewSource(opts.Seed))
	}
	return s
}

// Wrap makes v crashable in this power domain. v's current content is
// taken as durable. Wrapping after the crash returns a volume that fails
// every call.
func (s *CrashSet) Wrap(v Volume) *Crashable {
	c := &Crashable{set: s, inner: v, pre: map[int64][]byte{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	c.crashed = s.crashed
	s.vols = append(s.vols, c)
	return c
}

// CrashAt arms the crash: the operation numbered k (operations are
// numbered from 0 since NewCrashSet) does not happen; the power is cut
// instead, and it fails with ErrCrashed. If k operations already ran, the
// next one crashes.
func (s *CrashSet) CrashAt(k int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.crashAt = true, k
}

// Ops is the number of operations admitted so far.
func (s *CrashSet) Ops() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ops
}

// Crashed reports whether the power was cut.
func (s *CrashSet) Crashed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crashed
}

// Done is closed once the crash is complete: every volume holds its
// durable image and fails every call.
func (s *CrashSet) Done() <-chan struct{} { return s.done }

// Err is the first error met writing a durable image back at the crash
// (nil before the crash and after a clean one). A test must fail on it:
// the files then do not hold a durable image.
func (s *CrashSet) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Crash cuts the power now (once; later calls wait for nothing and return
// the first crash's error). Operations admitted before it may still
// complete (they happened before the cut); none admitted after it does.
func (s *CrashSet) Crash() error {
	s.mu.Lock()
	if s.crashed {
		err := s.err
		s.mu.Unlock()
		return err
	}
	s.crashed = true
	vols := slices.Clone(s.vols)
	s.mu.Unlock()
	var first error
	s.rmu.Lock()
	for _, c := range vols {
		if err := c.crash(s.rnd); err != nil && first == nil {
			first = err
		}
	}
	s.rmu.Unlock()
	s.mu.Lock()
	s.err = first
	s.mu.Unlock()
	close(s.done)
	return first
}

// admit counts one operation; it cuts the power if this is the armed one.
func (s *CrashSet) admit() error {
	s.mu.Lock()
	if s.crashed {
		s.mu.Unlock()
		return ErrCrashed
	}
	n := s.ops
	s.ops++
	trigger := s.armed && n >= s.crashAt
	s.mu.Unlock()
	if trigger {
		s.Crash()
		return ErrCrashed
	}
	return nil
}

// Crashable is a Volume of a CrashSet (see there for the model). Safe for
// concurrent use. As a test device it holds its own lock across the inner
// volume's I/O: writes and unmaps share it, Sync and the crash take it
// exclusively, so that a Sync covers exactly the writes completed before
// it and a crash sees no write half done.
type Crashable struct {
	set   *CrashSet
	inner Volume

	// mu: shared by ReadAt, WriteAt and Unmap; exclusive in Sync, crash
	// and DropUnsynced. It guards crashed.
	mu      sync.RWMutex
	crashed bool

	// pmu guards pre: page index → the page's durable content, saved at
	// its first change since the last Sync (nil: the page was zeros).
	pmu sync.Mutex
	pre map[int64][]byte
}

var _ Volume = (*Crashable)(nil)

// Inner is the wrapped volume.
func (c *Crashable) Inner() Volume { return c.inner }

// Unsynced is the number of pages changed since the last Sync.
func (c *Crashable) Unsynced() int {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return len(c.pre)
}

// rlock takes mu shared unless the volume crashed.
func (c *Crashable) rlock(op string) error {
	c.mu.RLock()
	if c.crashed {
		c.mu.RUnlock()
		return fmt.Errorf("crashable volume: %s: %w", op, ErrCrashed)
	}
	return nil
}

// ReadAt reads the current content (unsynced writes included, as from the
// page cache). Reads are not counted as operations.
func (c *Crashable) ReadAt(p []byte, off int64) (int, error) {
	if err := c.rlock("read"); err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	return c.inner.ReadAt(p, off)
}

// WriteAt writes through to the inner volume after saving the durable
// content of the pages it changes.
func (c *Crashable) WriteAt(p []byte, off int64) (int, error) {
	if err := c.set.admit(); err != nil {
		return 0, fmt.Errorf("crashable volume: write at %d: %w", off, err)
	}
	if err := c.rlock("write"); err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	if err := c.save(off, int64(len(p))); err != nil {
		return 0, err
	}
	return c.inner.WriteAt(p, off)
}

// Unmap deallocates through to the inner volume after saving the durable
// content of the pages it changes.
func (c *Crashable) Unmap(off, length int64) error {
	if err := c.set.admit(); err != nil {
		return fmt.Errorf("crashable volume: unmap [%d, %d): %w", off, off+length, err)
	}
	if err := c.rlock("unmap"); err != nil {
		return err
	}
	defer c.mu.RUnlock()
	if err := c.save(off, length); err != nil {
		return err
	}
	return c.inner.Unmap(off, length)
}

// save records the durable content of every page of [off, off+n) not yet
// changed since the last Sync. Out-of-range requests save nothing (the
// inner volume refuses them).
func (c *Crashable) save(off, n int64) error {
	size := c.inner.Size()
	if n <= 0 || off < 0 || off > size || n > size-off {
		return nil
	}
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for pg := off / CrashPageSize; pg*CrashPageSize < off+n; pg++ {
		if _, ok := c.pre[pg]; ok {
			continue
		}
		start := pg * CrashPageSize
		b := make([]byte, min(CrashPageSize, size-start))
		if _, err := c.inner.ReadAt(b, start); err != nil {
			return fmt.Errorf("crashable volume: save page %d: %w", pg, err)
		}
		if IsZero(b) {
			b = nil
		}
		c.pre[pg] = b
	}
	return nil
}

// Sync syncs the inner volume; on success everything written before it is
// durable. A failed Sync keeps the pages unsynced.
func (c *Crashable) Sync() error {
	if err := c.set.admit(); err != nil {
		return fmt.Errorf("crashable volume: sync: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return fmt.Errorf("crashable volume: sync: %w", ErrCrashed)
	}
	if err := c.inner.Sync(); err != nil {
		return err
	}
	c.pmu.Lock()
	c.pre = map[int64][]byte{}
	c.pmu.Unlock()
	return nil
}

// DropUnsynced loses what was written since the last Sync (all of it, or
// the CrashSet's random subset with Partial), the volume staying up: what
// a kernel does after a failed writeback, which marks the pages clean so
// that a later fsync succeeds without them (modelled as if the pages were
// evicted at once: reads see the durable content). Faulty calls it when it
// fails a Sync. Not counted as an operation.
func (c *Crashable) DropUnsynced() error {
	// Lock order: the set's rmu before mu (as in Crash).
	c.set.rmu.Lock()
	defer c.set.rmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return fmt.Errorf("crashable volume: drop unsynced: %w", ErrCrashed)
	}
	return c.restore(c.set.rnd)
}

// crash writes the durable image back and fails every later call.
func (c *Crashable) crash(rnd *rand.Rand) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return nil
	}
	c.crashed = true
	return c.restore(rnd)
}

// restore writes the saved pages back (each with probability 1/2 when rnd
// is set), in page order so a seeded run is repeatable, and forgets them.
// The caller holds mu exclusively.
func (c *Crashable) restore(rnd *rand.Rand) error {
	c.pmu.Lock()
	pre := c.pre
	c.pre = map[int64][]byte{}
	c.pmu.Unlock()
	pages := make([]int64, 0, len(pre))
	for pg := range pre {
		pages = append(pages, pg)
	}
	slices.Sort(pages)
	size := c.inner.Size()
	var first error
	for _, pg := range pages {
		if rnd != nil && rnd.Intn(2) == 0 {
			continue // written back before the power went
		}
		start := pg * CrashPageSize
		var err error
		if b := pre[pg]; b != nil {
			_, err = c.inner.WriteAt(b, start)
		} else {
			err = c.inner.Unmap(start, min(CrashPageSize, size-start))
		}
		if err != nil && first == nil {
			first = fmt.Errorf("crashable volume: restore page %d: %w", pg, err)
		}
	}
	return first
}

// Size passes through.
func (c *Crashable) Size() int64 { return c.inner.Size() }

// Close closes the inner volume (it does not crash it).
func (c *Crashable) Close() error { return c.inner.Close() }
