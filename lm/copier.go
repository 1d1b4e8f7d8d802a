package lm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// run is the pair's life as a sequence of steps driven by its state:
// wait for a copy slot, copy, re-copy the DCL, sit in sync, retry after a
// target failure. It returns when the pair reaches a final state or ctx
// ends. Admin operations change the state (persisted) and wake it.
func (p *pair) run(ctx context.Context) {
	slot := false
	release := func() {
		if slot {
			p.m.queue.release(p)
			slot = false
		}
	}
	defer release()
	idle := func() {
		select {
		case <-ctx.Done():
		case <-p.wake:
		}
	}
	for ctx.Err() == nil {
		v := p.view()
		st := v.state
		if st.Final() {
			return
		}
		if v.fault != "" && (st == StateCopying || st == StateSynced || st == StateSwitched) {
			release()
			if err := p.transitionFrom(st, StateInterrupted, v.fault); err != nil && !errors.Is(err, ErrState) {
				p.zlog.Error().Err(err).Msg("cannot record the interruption; retrying")
				p.sleep(ctx, p.m.opts.RetryMin)
			}
			continue
		}
		switch st {
		case StateQueued, StateCopying:
			if !slot {
				if !p.m.queue.acquire(ctx, p, p.queueKey(), p.wake) {
					continue
				}
				slot = true
			}
			if st == StateQueued {
				if !p.m.queue.keep(p) { // queue.go: the limit was lowered meanwhile
					slot = false
					continue
				}
				if err := p.transitionFrom(StateQueued, StateCopying, "copy started"); err != nil && !errors.Is(err, ErrState) {
					p.zlog.Error().Err(err).Msg("cannot start the copy")
					p.sleep(ctx, p.m.opts.RetryMin)
				}
				continue
			}
			err := p.copyAll(ctx)
			switch {
			case err == nil:
				p.markSynced()
				if err := p.transitionFrom(StateCopying, p.inSync(), "in sync: copy done and DCL empty"); err != nil {
					if !errors.Is(err, ErrState) {
						p.zlog.Error().Err(err).Msg("cannot record sync")
						p.sleep(ctx, p.m.opts.RetryMin)
					}
					continue
				}
				release()
				if p.autoSplit() && !p.switched() {
					p.m.goAutoSplit(p)
				}
			case errors.Is(err, errStopped):
				if p.getState() != StateCopying {
					release()
				}
			default:
				p.copyFault("copy", err)
			}
		case StateSynced, StateSwitched:
			release()
			if d, _, _ := p.log.Counts(); d > 0 && p.view().fault == "" {
				if err := p.transitionFrom(st, StateCopying, "DCL not empty: re-copying"); err != nil && !errors.Is(err, ErrState) {
					p.sleep(ctx, p.m.opts.RetryMin)
				}
				continue
			}
			idle()
		case StateScheduled:
			release()
			p.waitStart(ctx) // schedule.go
		case StateInterrupted:
			release()
			p.retry(ctx)
		default: // paused, splitting, rolling-back
			release()
			idle()
		}
	}
}

func (p *pair) autoSplit() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.rec.AutoSplit
}

// sleep waits d or until ctx ends or the pair is woken.
func (p *pair) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-p.wake:
	}
}

// retry is one step of an interrupted pair: wait with backoff, then probe
// the target by re-copying one DCL region; on success the copy resumes.
func (p *pair) retry(ctx context.Context) {
	p.mu.Lock()
	if p.mu.retryStart.IsZero() {
		// Recovered already interrupted: the budget starts now, not at
		// the zero time (which made the first failed probe "faulty").
		p.mu.retryStart = time.Now()
	}
	start := p.mu.retryStart
	p.mu.retryAttempt++
	n := p.mu.retryAttempt
	p.mu.Unlock()
	d := p.m.opts.RetryMin
	for i := 1; i < n && d < p.m.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, p.m.opts.RetryMax)
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return
	case <-t.C:
	}
	if p.getState() != StateInterrupted {
		return
	}
	err := p.probe(ctx)
	if err == nil {
		if err := p.recovered("target answers again: re-copying"); err != nil && !errors.Is(err, ErrState) {
			p.zlog.Error().Err(err).Msg("cannot resume after the interruption")
		}
		return
	}
	p.zlog.Debug().Err(err).Int("attempt", n).Msg("target still failing")
	if time.Since(start) > p.m.opts.RetryBudget {
		if err := p.transition(StateFaulty, fmt.Sprintf("gave up after %d retries over %v: %v", n, p.m.opts.RetryBudget, err)); err != nil {
			p.zlog.Error().Err(err).Msg("cannot mark the pair faulty")
		}
	}
}

// probe checks whether the target works again: reopen missing volumes,
// re-copy the first DCL region (or sync the target when there is none).
func (p *pair) probe(ctx context.Context) error {
	for _, d := range []*dataVol{p.legs().src, p.legs().tgt} {
		if err := p.m.openVolume(d); err != nil {
			return err
		}
	}
	if rs := p.log.Dirty(0, 1); len(rs) > 0 {
		return p.recopyRegion(ctx, rs[0], nil)
	}
	_, terr := p.syncLegs(false, false, true)
	return terr
}

// copyAll runs the initial copy from the cursor to the end, then
// re-copies the DCL until it is empty. nil means the pair is in sync;
// errStopped that the state changed, the pair was interrupted or ctx
// ended.
func (p *pair) copyAll(ctx context.Context) error {
	defer p.copying()()
	stop := func() bool {
		v := p.view()
		return ctx.Err() != nil || v.state != StateCopying || v.fault != ""
	}
	if stop() {
		return errStopped
	}
	p.chooseVehicle()
	p.markCopyStarted()
	defer p.runGuard(ctx)()
	if p.done.Load() < p.size {
		err := p.initialCopy(ctx, stop)
		p.checkpoint(true)
		if err != nil {
			return err
		}
	}
	return p.recopyDCL(ctx, stop)
}

// job is a range of the initial copy: a data chunk, or a run of whole
// chunks that were holes in the source when the job was made (hole: no
// throttle; copyRange looks at the source's extents again under the lock).
type job struct {
	start, end int64
	hole       bool
}

// nextJob returns the job at pos (chunk aligned).
func (p *pair) nextJob(pos int64) (job, error) {
	end := min(pos+p.chunk, p.size)
	o, err := p.legs().src.get()
	if err != nil {
		return job{}, sourceErr{err}
	}
	ds, _, err := o.raw.NextData(pos)
	if errors.Is(err, io.EOF) || (err == nil && ds >= p.size) {
		return job{pos, p.size, true}, nil
	}
	if err != nil {
		return job{}, sourceErr{fmt.Errorf("source: %w", err)}
	}
	if h := ds / p.chunk * p.chunk; h > pos {
		// A hole job never spans a chunk finished in an earlier run.
		p.mu.Lock()
		for s := range p.mu.completed {
			if s > pos && s < h {
				h = s
			}
		}
		p.mu.Unlock()
		return job{pos, h, true}, nil
	}
	return job{pos, end, false}, nil
}

// initialCopy dispatches the jobs from the done cursor to the end to
// InFlight workers. It stops dispatching when stop() says so and waits for
// the jobs already dispatched, so that afterwards done == issued.
func (p *pair) initialCopy(ctx context.Context, stop func() bool) error {
	start := p.done.Load()
	complete := func(j job) {
		p.mu.Lock()
		p.mu.completed[j.start] = j.end
		d := p.done.Load()
		for {
			e, ok := p.mu.completed[d]
			if !ok {
				break
			}
			delete(p.mu.completed, d)
			d = e
		}
		p.done.Store(d)
		p.mu.Unlock()
	}
	// skip returns where to go on from pos when pos is done already: below
	// the done cursor (a worker may have merged the jobs finished in an
	// earlier run into it since the last look), or a job finished in an
	// earlier run.
	skip := func(pos int64) (int64, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if d := p.done.Load(); pos < d {
			return d, true
		}
		e, ok := p.mu.completed[pos]
		return e, ok
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for i := 0; i < p.copyWorkers(); i++ { // rbd.go: more for RBD legs
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, p.chunk)
			for j := range jobs {
				if h := p.m.hooks.beforeJob; h != nil {
					h(p, j)
				}
				if err := p.copyJob(ctx, j, buf, stop); err == nil {
					complete(j)
				}
			}
		}()
	}
	// The checkpoint (a sync of both legs and a record write) runs in its
	// own goroutine, so the dispatcher keeps the workers fed while the
	// target's disk takes the last 64 MiB: in the dispatcher it stalled
	// the copy for every sync (design.md "Copy checkpoints off the
	// dispatch path"). At most one runs; a request while one runs is kept.
	ckpt := make(chan struct{}, 1)
	ckptDone := make(chan struct{})
	go func() {
		defer close(ckptDone)
		for range ckpt {
			p.checkpoint(false)
		}
	}()
	pos := start
	var derr error
dispatch:
	for pos < p.size && !stop() {
		if e, ok := skip(pos); ok {
			pos = e
			continue
		}
		j, err := p.nextJob(pos)
		if err != nil {
			derr = err
			p.copyFault("copy", err)
			break
		}
		select {
		case jobs <- j:
			if h := p.m.hooks.dispatched; h != nil {
				h(p, j)
			}
		case <-ctx.Done():
			break dispatch
		}
		pos = j.end
		select {
		case ckpt <- struct{}{}:
		default: // one is pending already
		}
	}
	close(jobs)
	wg.Wait()
	close(ckpt)
	<-ckptDone
	if derr != nil || p.done.Load() < p.size {
		return errStopped
	}
	return nil
}

// raiseIssued moves the in-memory cursor up to end (never down).
func (p *pair) raiseIssued(end int64) {
	for {
		cur := p.issued.Load()
		if end <= cur || p.issued.CompareAndSwap(cur, end) {
			return
		}
	}
}

// copyJob copies one job under the exclusive range lock. A failed copy
// puts the job's regions in the DCL (so the job still counts as done) and
// interrupts the pair; only an error here leaves the job not done.
func (p *pair) copyJob(ctx context.Context, j job, buf []byte, stop func() bool) error {
	if !j.hole {
		if err := p.bucket.wait(ctx, j.end-j.start, stop); err != nil {
			return err
		}
		if err := p.waitBudget(ctx, j.end-j.start, stop); err != nil {
			return err
		}
	}
	r0, r1 := p.log.Span(j.start, j.end-j.start)
	unlock := p.locks.lock(r0, r1)
	defer unlock()
	p.raiseIssued(j.end)
	n, err := p.copyRange(j.start, j.end, buf)
	p.dataBytes.Add(n)
	if err == nil {
		p.skipBytes.Add(j.end - j.start - n)
	}
	if err != nil {
		if merr := p.log.MarkDCL(r0, r1); merr != nil {
			p.setFault(merr.Error())
			return merr
		}
		p.copyFault("copy", err)
	}
	return nil
}

// recopyDCL re-copies DCL regions until the DCL is empty.
func (p *pair) recopyDCL(ctx context.Context, stop func() bool) error {
	for {
		if stop() {
			return errStopped
		}
		rs := p.log.Dirty(0, 256)
		if len(rs) == 0 {
			return nil
		}
		for _, r := range rs {
			if stop() {
				return errStopped
			}
			if err := p.recopyRegion(ctx, r, stop); err != nil {
				return errStopped
			}
		}
	}
}

// recopyRegion copies region r from source to target under the exclusive
// range lock and takes it out of the DCL.
func (p *pair) recopyRegion(ctx context.Context, r int64, stop func() bool) error {
	off := r * p.region
	n := min(p.region, p.size-off)
	if n <= 0 {
		p.log.Cleaned(r)
		return nil
	}
	if stop != nil {
		if err := p.bucket.wait(ctx, n, stop); err != nil {
			return err
		}
		if err := p.waitBudget(ctx, n, stop); err != nil {
			return err
		}
	}
	unlock := p.locks.lock(r, r)
	defer unlock()
	if !p.log.IsDirty(r) {
		return nil
	}
	moved, err := p.copyRange(off, off+n, make([]byte, min(n, p.chunk)))
	p.recopyBytes.Add(moved)
	if err != nil {
		p.copyFault("re-copy", err)
		return err
	}
	p.log.Cleaned(r)
	return nil
}

// chooseVehicle picks the transfer vehicle for this run of the copy.
func (p *pair) chooseVehicle() {
	p.mu.Lock()
	wanted := p.mu.rec.VehicleWanted
	p.mu.Unlock()
	lv := p.legs()
	v := pickVehicle(wanted, lv.src, lv.tgt)
	if wanted == VehicleCopyFileRange && v != VehicleCopyFileRange {
		p.zlog.Warn().Msg("copy_file_range does not apply (not two files on one filesystem): using the generic copy")
	}
	p.setVehicle(v)
}

// pickVehicle is the transfer vehicle that runs for wanted between the
// two data volumes (a dry run's estimate asks it too).
func pickVehicle(wanted string, src, tgt *dataVol) string {
	v := VehicleGeneric
	if wanted != VehicleGeneric {
		so, err1 := src.get()
		to, err2 := tgt.get()
		if err1 == nil && err2 == nil && so.file != nil && to.file != nil &&
			so.file.Kind() == "file" && to.file.Kind() == "file" {
			var a, b unix.Stat_t
			if unix.Fstat(int(so.file.Fd()), &a) == nil && unix.Fstat(int(to.file.Fd()), &b) == nil && a.Dev == b.Dev {
				v = VehicleCopyFileRange
			}
		}
		if err1 == nil && err2 == nil && (so.remote != nil || to.remote != nil) {
			v = VehicleRemote
		}
	}
	return v
}

// setVehicle records the transfer vehicle that runs.
func (p *pair) setVehicle(v string) {
	p.mu.Lock()
	p.mu.vehicle = v
	p.mu.Unlock()
}

// vehicleNow is the transfer vehicle of this run of the copy.
func (p *pair) vehicleNow() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.vehicle
}

// copyRange copies [start,end) from source to target: source holes and
// all-zero pieces become holes on the target (Unmap), data is copied with
// the vehicle. It returns the bytes transferred. The caller holds the
// range lock exclusively; the source's extents are looked up here, under
// it: a hole seen before the lock may hold a host write by now.
func (p *pair) copyRange(start, end int64, buf []byte) (int64, error) {
	lv := p.legs()
	so, err := lv.src.get()
	if err != nil {
		return 0, sourceErr{fmt.Errorf("source: %w", err)}
	}
	to, err := lv.tgt.get()
	if err != nil {
		return 0, fmt.Errorf("target: %w", err)
	}
	var moved int64
	off := start
	for off < end {
		ds, de, err := so.raw.NextData(off)
		if errors.Is(err, io.EOF) {
			ds, de = end, end
		} else if err != nil {
			return moved, sourceErr{fmt.Errorf("source: %w", err)}
		}
		ds, de = min(ds, end), min(de, end)
		if ds > off {
			if err := to.v.Unmap(off, ds-off); err != nil {
				return moved, fmt.Errorf("target unmap [%d,%d): %w", off, ds, err)
			}
		}
		if ds >= end {
			break
		}
		n, err := p.copyData(so, to, ds, de, buf)
		moved += n
		if err != nil {
			return moved, err
		}
		off = de
	}
	return moved, nil
}

// copyData copies the data extent [start,end).
func (p *pair) copyData(so, to *openVol, start, end int64, buf []byte) (int64, error) {
	if p.vehicleNow() == VehicleCopyFileRange && so.file != nil && to.file != nil {
		n, err := copyFileRange(so, to, start, end)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, errNoCFR) {
			return n, err
		}
		p.setVehicle(VehicleGeneric)
		p.zlog.Warn().Err(err).Msg("copy_file_range unavailable: using the generic copy")
		start += n
	}
	var moved int64
	for off := start; off < end; {
		n := min(int64(len(buf)), end-off)
		b := buf[:n]
		if _, err := so.v.ReadAt(b, off); err != nil {
			return moved, sourceErr{fmt.Errorf("source read at %d: %w", off, err)}
		}
		if volume.IsZero(b) {
			if err := to.v.Unmap(off, n); err != nil {
				return moved, fmt.Errorf("target unmap at %d: %w", off, err)
			}
		} else {
			if _, err := to.v.WriteAt(b, off); err != nil {
				return moved, fmt.Errorf("target write at %d: %w", off, err)
			}
			moved += n
		}
		off += n
	}
	return moved, nil
}

// sourceErr is an error of the source leg in the copy path (reading the
// source, looking up its extents, opening it): the pair reports it as a
// source error, not as a failure of the target.
type sourceErr struct{ error }

func (e sourceErr) Unwrap() error { return e.error }

// copyFault records a copy failure of what ("copy", "re-copy") as a
// source or a target failure (see pair.setFault). copy_file_range errors
// cannot tell the legs apart and count as the target's.
func (p *pair) copyFault(what string, err error) {
	var se sourceErr
	if errors.As(err, &se) {
		p.setSourceFault(what + ": " + err.Error())
		return
	}
	p.setFault(what + ": " + err.Error())
}

var errNoCFR = errors.New("copy_file_range not supported here")

func copyFileRange(so, to *openVol, start, end int64) (int64, error) {
	// Like File.WriteAt's tail check: a copy reaching the end of a target
	// truncated behind our back would give it back its full size.
	if end >= to.file.Size() {
		if err := to.file.Verify(); volume.Lost(err) {
			return 0, fmt.Errorf("copy_file_range: target: %w", err)
		}
	}
	var moved int64
	roff, woff := start, start
	for roff < end {
		n, err := unix.CopyFileRange(int(so.file.Fd()), &roff, int(to.file.Fd()), &woff, int(end-roff), 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EXDEV || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP {
			return moved, fmt.Errorf("%w: %v", errNoCFR, err)
		}
		if err != nil {
			return moved, fmt.Errorf("copy_file_range at %d: %w", roff, err)
		}
		if n == 0 {
			return moved, fmt.Errorf("copy_file_range at %d: short copy", roff)
		}
		moved += int64(n)
	}
	return moved, nil
}

var errStopped = errors.New("copy stopped")
