package lm

import (
	"errors"
	"fmt"

	"github.com/lmtgt/lmtgt/dcl"
)

// The host write path of a source LUN under migration (DESIGN §3). Called
// by lunEntry inside the LUN's I/O gate.

// lastBelow returns the last region of [.., r1] that starts below the
// in-memory copy cursor, or -1. Those regions are copied already (or being
// copied under the exclusive lock, which the caller's shared lock rules
// out), so a write there needs a durable mark first; regions at or above
// the cursor will be copied after this write.
func (p *pair) lastBelow(r1 int64) int64 {
	issued := p.issued.Load()
	if issued <= 0 {
		return -1
	}
	return min(r1, (issued-1)/p.region)
}

// markBelow puts the regions of [r0,r1] below the cursor in the DCL,
// durably.
func (p *pair) markBelow(r0, r1 int64) error {
	if rb := p.lastBelow(r1); rb >= r0 {
		if err := p.log.MarkDCL(r0, rb); err != nil {
			return fmt.Errorf("lun %s: mark DCL: %w", p.src.name, err)
		}
	}
	return nil
}

// legs runs fsrc on the source and ftgt on the target in parallel.
func legs(fsrc, ftgt func() error) (serr, terr error) {
	done := make(chan error, 1)
	go func() { done <- ftgt() }()
	serr = fsrc()
	terr = <-done
	return serr, terr
}

// parallelMin is the size from which a change's two legs run in parallel.
// Smaller writes are page-cache copies of a few microseconds: handing one
// leg to another goroutine (a wake-up on another core, then one back)
// costs more than it saves, so they run one after the other (measured:
// BenchmarkDualWrite, 4 KiB at queue depth 1). Measured again end to end
// for issue 13 (docs/benchmarks.md, scripts/bench-migration A/B): legs in
// parallel for every size gave 0.84x/0.79x the no-migration IOPS at
// QD1/QD32, legs in turn 0.95-1.00x/0.89-1.01x; at QD32 the cores are
// busy with other commands already, so a hand-off only adds CPU.
const parallelMin = 64 << 10

// change is one host change (a write, or an unmap when b is nil) of the
// bytes [off, off+n).
type change struct {
	b      []byte
	off, n int64
}

func (c *change) op() string {
	if c.b != nil {
		return "write"
	}
	return "unmap"
}

func (c *change) apply(v *openVol) (int, error) {
	if c.b != nil {
		return v.v.WriteAt(c.b, c.off)
	}
	return 0, v.v.Unmap(c.off, c.n)
}

// both applies c to the source and the target; see parallelMin.
func (c *change) both(so, to *openVol) (n int, serr, terr error) {
	if c.n < parallelMin {
		n, serr = c.apply(so)
		_, terr = c.apply(to)
		return n, serr, terr
	}
	cc := *c // c itself stays on the caller's stack
	done := make(chan error, 1)
	go func() {
		_, err := cc.apply(to)
		done <- err
	}()
	n, serr = c.apply(so)
	terr = <-done
	return n, serr, terr
}

// dual applies one change to the regions it touches (DESIGN §3).
func (p *pair) dual(c *change) (int, error) {
	r0, r1 := p.log.Span(c.off, c.n)
	p.locks.rlock(r0, r1)
	defer p.locks.runlock(r0, r1)
	lv := p.legs() // fixed while the gate is entered
	so, err := lv.src.get()
	if err != nil {
		return 0, fmt.Errorf("lun %s: %s: source: %w", p.src.name, c.op(), err)
	}
	to, terr := (*openVol)(nil), error(nil)
	if !p.view().sourceOnly() {
		if to, terr = lv.tgt.get(); terr != nil {
			p.setFault(terr.Error())
		}
	}
	if to == nil {
		// Paused, interrupted or no target: mark first, then change the
		// source only.
		if err := p.markBelow(r0, r1); err != nil {
			return 0, err
		}
		n, err := c.apply(so)
		if err != nil {
			p.m.ioFailed(lv.src, err)
			return n, fmt.Errorf("lun %s: %s to source: %w", p.src.name, c.op(), err)
		}
		return n, nil
	}
	rb := p.lastBelow(r1)
	marked := rb >= r0
	if marked {
		if err := p.log.BeginWrite(r0, rb); err != nil {
			// Nothing was written. The DCL cannot take marks (a full
			// meta filesystem, an I/O error): stop writing the target,
			// so the pair goes interrupted and resumes by itself
			// once marks and its state can be written again.
			if !errors.Is(err, dcl.ErrClosed) {
				p.setFault("DCL mark: " + err.Error())
			}
			return 0, fmt.Errorf("lun %s: %s: intent mark: %w", p.src.name, c.op(), err)
		}
	}
	n, serr, terr := c.both(so, to)
	differs := serr != nil || terr != nil
	if differs {
		p.m.ioFailed(lv.src, serr)
		p.m.ioFailed(lv.tgt, terr)
	}
	if marked {
		p.log.EndWrite(r0, rb, differs)
	}
	if terr != nil {
		p.setFault(fmt.Sprintf("%s at offset %d: %v", c.op(), c.off, terr))
	} else if differs {
		p.wakeUp()
	}
	if serr != nil {
		return n, fmt.Errorf("lun %s: %s to source: %w", p.src.name, c.op(), serr)
	}
	return n, nil
}

func (p *pair) write(b []byte, off int64) (int, error) {
	return p.dual(&change{b: b, off: off, n: int64(len(b))})
}

func (p *pair) unmap(off, length int64) error {
	_, err := p.dual(&change{off: off, n: length})
	return err
}

// sync makes completed writes durable on both legs (the marks already
// are). A target failure interrupts the pair; only a source failure fails
// the command.
func (p *pair) sync() error {
	serr, terr := p.syncLegs(false, true, !p.view().sourceOnly())
	if terr != nil {
		p.setFault("sync: " + terr.Error())
	}
	earlier := p.src.syncErr.Swap(nil)
	if serr != nil {
		return fmt.Errorf("lun %s: sync source: %w", p.src.name, serr)
	}
	if earlier != nil {
		return fmt.Errorf("lun %s: sync source: an earlier sync of the source failed, data written before it may be lost: %w",
			p.src.name, *earlier)
	}
	return nil
}

// syncLegs syncs the legs asked for, in parallel. An unavailable volume is
// an error of its leg.
//
// Syncs whose success lets metadata say that the target holds what the
// source holds (the checkpoint, the lazy clear, the split) pass
// exclusive; host syncs share syncMu. A failed sync is handled before
// syncMu is released: after a failed writeback the kernel may drop the
// pages and report success to the next fsync, so everything that may not
// be on the failed leg's disk goes into the DCL before any later sync can
// let a checkpoint or a clear be persisted over it.
func (p *pair) syncLegs(exclusive, source, target bool) (serr, terr error) {
	if exclusive {
		p.syncMu.Lock()
		defer p.syncMu.Unlock()
	} else {
		p.syncMu.RLock()
		defer p.syncMu.RUnlock()
	}
	var so, to *openVol
	lv := p.legs()
	if source {
		so, serr = lv.src.get()
	}
	if target {
		to, terr = lv.tgt.get()
	}
	var sfail, tfail bool // a Sync itself failed (not just unavailable)
	switch {
	case so != nil && to != nil:
		serr, terr = legs(so.v.Sync, to.v.Sync)
		sfail, tfail = serr != nil, terr != nil
	case so != nil:
		serr = so.v.Sync()
		sfail = serr != nil
	case to != nil:
		terr = to.v.Sync()
		tfail = terr != nil
	}
	if serr != nil {
		serr = fmt.Errorf("source: %w", serr)
	}
	if terr != nil {
		terr = fmt.Errorf("target: %w", terr)
	}
	if sfail || tfail {
		p.syncFailed(errors.Join(serr, terr), tfail)
	}
	if sfail && exclusive {
		// Not a host's sync: the host must still hear of it, as the
		// writes it completed before may be gone from the source and
		// its next sync would succeed without them. Kept on the LUN,
		// not the pair: a split or cancel may end the pair before that
		// sync.
		p.src.syncErr.Store(&serr)
	}
	return serr, terr
}

// syncFailed puts in the DCL everything that may be missing from a leg's
// disk after a failed sync: every marked region (writes below the cursor
// since their marks were last cleared) and what the copier wrote above
// the persisted checkpoint. A target failure also interrupts the pair.
// The caller holds syncMu.
func (p *pair) syncFailed(err error, target bool) {
	p.zlog.Warn().Err(err).Msg("sync failed: marked regions and the copy above the checkpoint go to the DCL")
	p.log.MarkedToDCL()
	if ck, is := p.persistedCursor(), p.issued.Load(); is > ck {
		r0, r1 := p.log.Span(ck, is-ck)
		if merr := p.log.MarkDCL(r0, r1); merr != nil {
			p.zlog.Error().Err(merr).Msg("sync failed and the DCL could not record it")
			p.setFault("DCL: " + merr.Error())
		}
	}
	if target {
		p.setFault("sync: " + err.Error())
	} else {
		p.wakeUp()
	}
}
