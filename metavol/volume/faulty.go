package volume

import (
	"fmt"
	"sync"
	"time"
)

// Faulty wraps a Volume and injects failures, for tests of the packages
// above (the DCL, dual-write, recovery). It passes every call through to
// the inner volume until told otherwise; it never fakes success.
//
// "Writes" are WriteAt and Unmap (both change data). While writes fail,
// Sync fails with the same error too (a device that rejects writes cannot
// promise durability). A failed call does not reach the inner volume.
//
// FailWriteNumber and FailSyncNumber fail one call only (the k-th), for
// error-at-every-step loops. A Sync failed by injection also loses the
// data written since the inner volume's last Sync when the inner volume
// can (a Crashable: DropUnsynced), as a kernel does after a failed
// writeback: the next fsync succeeds without those pages.
type Faulty struct {
	inner Volume

	mu sync.Mutex // guards the fields below
	// writeErr fails every write when set.
	writeErr error
	// readErr fails every read when set.
	readErr error
	// afterErr fails writes once writesLeft reaches zero; armed when
	// afterErr != nil.
	afterErr   error
	writesLeft int
	delay      time.Duration
	reads      int64 // reads that reached the inner volume
	writes     int64 // writes that reached the inner volume
	// The one-shot failures of FailWriteNumber and FailSyncNumber.
	oneWrite, oneSync    oneShot
	syncs                int64 // syncs that reached the inner volume
	injectedSyncFailure  int64 // syncs failed by injection
	injectedWriteFailure int64 // writes failed by injection
}

// unsyncedDropper is a volume that can lose its unsynced data (Crashable).
type unsyncedDropper interface {
	DropUnsynced() error
}

var _ Volume = (*Faulty)(nil)

// oneShot fails the call numbered at, counted in n from 0 since it was
// armed, with err; armed while err is set. Its owner's mutex guards it.
type oneShot struct {
	at, n int64
	err   error
}

func (o *oneShot) arm(k int64, err error) { *o = oneShot{at: k, err: err} }

// next counts one call and returns the armed error if it is the one
// (disarming it), nil otherwise.
func (o *oneShot) next() error {
	if o.err == nil {
		return nil
	}
	n := o.n
	o.n++
	if n != o.at {
		return nil
	}
	err := o.err
	o.err = nil
	return err
}

// NewFaulty wraps v; it behaves exactly like v until a failure is armed.
func NewFaulty(v Volume) *Faulty { return &Faulty{inner: v} }

// Inner is the wrapped volume.
func (f *Faulty) Inner() Volume { return f.inner }

// FailWrites makes every write fail with err until Heal.
func (f *Faulty) FailWrites(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writeErr = err
}

// FailReads makes every ReadAt fail with err until Heal.
func (f *Faulty) FailReads(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readErr = err
}

// FailWritesAfter lets the next n writes through and fails the one after
// them and every later one with err, until Heal. Writes are numbered from
// 0 starting now: write number n and later fail. FailWritesAfter(0, err)
// is FailWrites(err).
func (f *Faulty) FailWritesAfter(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n <= 0 {
		f.writeErr = err
		return
	}
	f.afterErr = err
	f.writesLeft = n
}

// Delay makes every call that does I/O (ReadAt, WriteAt, Unmap, Sync) wait
// d before it proceeds; 0 removes the delay. Heal does not reset it.
func (f *Faulty) Delay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// FailWriteNumber fails the write (WriteAt or Unmap) numbered k, counted
// from 0 starting now, with err; the writes before and after it pass.
func (f *Faulty) FailWriteNumber(k int64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.oneWrite.arm(k, err)
}

// FailSyncNumber fails the Sync numbered k, counted from 0 starting now,
// with err (and makes the inner volume lose its unsynced data if it can);
// the syncs before and after it pass.
func (f *Faulty) FailSyncNumber(k int64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.oneSync.arm(k, err)
}

// Heal removes every armed failure; later calls pass through again.
func (f *Faulty) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writeErr, f.readErr, f.afterErr, f.writesLeft = nil, nil, nil, 0
	f.oneWrite.err, f.oneSync.err = nil, nil
}

// Syncs is how many Sync calls reached the inner volume.
func (f *Faulty) Syncs() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// InjectedWriteFailures is how many writes (WriteAt, Unmap) failed by
// injection.
func (f *Faulty) InjectedWriteFailures() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injectedWriteFailure
}

// InjectedSyncFailures is how many Syncs failed by injection.
func (f *Faulty) InjectedSyncFailures() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injectedSyncFailure
}

// Reads is how many ReadAt calls reached the inner volume.
func (f *Faulty) Reads() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// Writes is how many writes (WriteAt, Unmap) reached the inner volume.
func (f *Faulty) Writes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// admitWrite decides whether the next write may pass; it returns the delay
// to apply and the injected error, if any.
func (f *Faulty) admitWrite() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeErr != nil {
		f.injectedWriteFailure++
		return f.delay, f.writeErr
	}
	if err := f.oneWrite.next(); err != nil {
		f.injectedWriteFailure++
		return f.delay, err
	}
	if f.afterErr != nil {
		if f.writesLeft <= 0 {
			f.writeErr = f.afterErr
			f.afterErr = nil
			f.injectedWriteFailure++
			return f.delay, f.writeErr
		}
		f.writesLeft--
	}
	f.writes++
	return f.delay, nil
}

func wait(d time.Duration) {
	if d > 0 {
		time.Sleep(d) // injected latency, not a wait for a condition
	}
}

// ReadAt passes through unless reads fail.
func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	d, err := f.delay, f.readErr
	if err == nil {
		f.reads++
	}
	f.mu.Unlock()
	wait(d)
	if err != nil {
		return 0, fmt.Errorf("faulty volume: read at %d: %w", off, err)
	}
	return f.inner.ReadAt(p, off)
}

// WriteAt passes through unless writes fail.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	d, err := f.admitWrite()
	wait(d)
	if err != nil {
		return 0, fmt.Errorf("faulty volume: write at %d: %w", off, err)
	}
	return f.inner.WriteAt(p, off)
}

// Unmap passes through unless writes fail.
func (f *Faulty) Unmap(off, length int64) error {
	d, err := f.admitWrite()
	wait(d)
	if err != nil {
		return fmt.Errorf("faulty volume: unmap [%d, %d): %w", off, off+length, err)
	}
	return f.inner.Unmap(off, length)
}

// Sync passes through unless writes fail or this is the Sync armed by
// FailSyncNumber.
func (f *Faulty) Sync() error {
	f.mu.Lock()
	d, err := f.delay, f.writeErr
	drop := false
	if err == nil {
		err = f.oneSync.next()
		drop = err != nil
	}
	if err == nil {
		f.syncs++
	} else {
		f.injectedSyncFailure++
	}
	f.mu.Unlock()
	wait(d)
	if err != nil {
		if d, ok := f.inner.(unsyncedDropper); ok && drop {
			if derr := d.DropUnsynced(); derr != nil {
				return fmt.Errorf("faulty volume: sync: %w (and losing the unsynced data failed: %v)", err, derr)
			}
		}
		return fmt.Errorf("faulty volume: sync: %w", err)
	}
	return f.inner.Sync()
}

// Size passes through.
func (f *Faulty) Size() int64 { return f.inner.Size() }

// Close passes through (failures armed do not affect it).
func (f *Faulty) Close() error { return f.inner.Close() }
