package lm

import (
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// The state owner of a pair. A pair's state (PairState), its write mode
// (dual / source-only) and its fault (the first failure the run goroutine
// has not handled yet) are one immutable pairView. pair.cur points at the
// current one; it is replaced, never changed, and only with pair.mu held,
// by these methods:
//
//   - transition, transitionFrom, recovered: a state change, persisted in
//     the meta volume before it takes effect (DESIGN §6), with persist
//     held across the commit and mu only around reading the record and
//     applying what was committed;
//   - applyLocked: the in-memory half of a persisted change, for the split,
//     which commits the records of many pairs in one transaction;
//   - recordFault (setFault, setSourceFault): a failure seen by a host
//     write, a sync, the copier or the volume checks. The one change not
//     persisted first: writes switch to source-only at once, before the
//     run goroutine writes the "interrupted" record (always safe: the
//     source gets every write and the DCL every region it changed).
//
// Readers load one snapshot (pair.view) per decision: the host write path
// reads its write mode, the run goroutine its state and fault, status all
// three, never from two loads that could disagree.

// writeMode is how a host change of a paired source LUN reaches the legs.
type writeMode int8

const (
	// writeDual: both legs; a region below the copy cursor is marked
	// durably first (dcl.Log.BeginWrite).
	writeDual writeMode = iota
	// writeSourceOnly: the source only; a region below the copy cursor is
	// put in the DCL first (paused, interrupted, faulty, or a fault not
	// yet handled).
	writeSourceOnly
)

func (w writeMode) String() string {
	switch w {
	case writeDual:
		return "dual"
	case writeSourceOnly:
		return "source-only"
	}
	return fmt.Sprintf("writeMode(%d)", int(w))
}

// pairView is a pair's state as one immutable value (see above).
type pairView struct {
	state PairState
	mode  writeMode
	// fault is the reason of the first failure ("target failed: ...",
	// "source read error: ...") not yet handled by the run goroutine, or
	// "".
	fault string
}

func (v *pairView) sourceOnly() bool { return v.mode == writeSourceOnly }

// modeIn is the write mode once the pair is in state to: source-only in
// paused, interrupted and faulty, and while a fault waits; the other
// states (splitting, rolling-back, split, cancelled) keep the mode they
// had.
func (v *pairView) modeIn(to PairState) writeMode {
	switch to {
	case StatePaused, StateInterrupted, StateFaulty:
		return writeSourceOnly
	case StateScheduled, StateQueued, StateCopying, StateSynced, StateSwitched:
		if v.fault != "" {
			return writeSourceOnly
		}
		return writeDual
	}
	return v.mode
}

// initialView is the view of a pair loaded or created in state st.
func initialView(st PairState) *pairView {
	v := &pairView{state: st}
	v.mode = v.modeIn(st)
	return v
}

// view is the pair's current state, write mode and fault.
func (p *pair) view() *pairView { return p.cur.Load() }

func (p *pair) getState() PairState { return p.view().state }

// transition moves the pair to state to, persisting it (with the reason)
// before it takes effect.
func (p *pair) transition(to PairState, reason string) error {
	p.persist.Lock()
	defer p.persist.Unlock()
	return p.transitionPersisting(nil, to, reason, false)
}

// transitionFrom is transition for the run goroutine, which decides on a
// state it read earlier: it takes effect only if the pair is still in
// from (an admin's pause between the read and the transition must not be
// undone by the copier's queued → copying or synced → copying), and
// otherwise returns ErrState and changes nothing.
func (p *pair) transitionFrom(from, to PairState, reason string) error {
	p.persist.Lock()
	defer p.persist.Unlock()
	return p.transitionPersisting(&from, to, reason, false)
}

// recovered is interrupted → copying after a successful probe: the fault
// that interrupted the pair is handled, so it is dropped (in the same
// step that checks the pair is still interrupted, before the commit: a
// new fault during the commit stays and interrupts the pair again).
func (p *pair) recovered(reason string) error {
	p.persist.Lock()
	defer p.persist.Unlock()
	from := StateInterrupted
	return p.transitionPersisting(&from, StateCopying, reason, true)
}

// transitionPersisting is a transition with persist held: mu is taken
// only to read the record and to apply the committed one, never across
// the commit. A non-nil from must be the current state.
func (p *pair) transitionPersisting(from *PairState, to PairState, reason string, dropFault bool) error {
	p.mu.Lock()
	v := p.view()
	cur := v.state
	if from != nil && cur != *from {
		p.mu.Unlock()
		return fmt.Errorf("pair %s: %s → %s: the pair is %s now: %w", p.name(), *from, to, cur, ErrState)
	}
	if err := checkTransition(p.name(), cur, to); err != nil {
		p.mu.Unlock()
		return err
	}
	if dropFault && v.fault != "" {
		nv := *v
		nv.fault = ""
		p.cur.Store(&nv)
	}
	rec := p.recordLocked()
	p.mu.Unlock()
	rec.State = to.String()
	rec.Reason = reason
	if err := p.m.db.Update(func(tx *metavol.Tx) error { return tx.PutPair(rec) }); err != nil {
		return fmt.Errorf("pair %s: persist %s → %s: %w", p.name(), cur, to, err)
	}
	p.mu.Lock()
	p.applyLocked(rec, to)
	p.mu.Unlock()
	p.zlog.Info().Str("from", cur.String()).Str("to", to.String()).Str("reason", reason).Msg("pair state")
	return nil
}

// applyLocked makes a persisted state take effect. mu is held.
func (p *pair) applyLocked(rec metavol.Pair, to PairState) {
	v := *p.view()
	if to == StateInterrupted && v.state != StateInterrupted {
		p.mu.retryStart = time.Now()
		p.mu.retryAttempt = 0
	}
	p.mu.rec = rec
	from := v.state
	v.mode = v.modeIn(to)
	v.state = to
	p.cur.Store(&v)
	// Every committed state change reaches the history and the event
	// log here (events.go: it only queues; its writer logs the summary
	// of a pair that ended).
	p.m.events.pairChanged(p, rec, from, to)
	p.wakeUp()
	p.m.sess.changed() // wakes the session runners
}

// setFault records a target failure: writes switch to the source only at
// once, and the run goroutine moves the pair to interrupted with the
// reason "target failed: " + reason.
func (p *pair) setFault(reason string) { p.recordFault("target failed: " + reason) }

// setSourceFault records a failure of the source leg of the copy (a
// source read error): handled like a target failure (interrupted, the
// range stays in the DCL, retried with backoff, faulty after RetryBudget)
// but reported as "source read error: " + reason. Host writes go to the
// source only meanwhile, which is always safe.
func (p *pair) setSourceFault(reason string) { p.recordFault("source read error: " + reason) }

// recordFault keeps the first fault (its full reason) until the run
// goroutine handles it, and switches writes to the source only. It takes
// mu (never held across I/O), so the host path may call it.
func (p *pair) recordFault(reason string) {
	p.mu.Lock()
	v := p.view()
	first := v.fault == ""
	if first || v.mode != writeSourceOnly {
		nv := *v
		if first {
			nv.fault = reason
		}
		nv.mode = writeSourceOnly
		p.cur.Store(&nv)
	}
	p.mu.Unlock()
	if first {
		p.m.events.Record(Event{Type: EventVolume, Action: "fault", Object: "pair " + p.src.name, LUN: p.src.name, Pair: p.id, Reason: reason})
		p.zlog.Warn().Str("reason", reason).Msg("pair fault")
	}
	p.wakeUp()
}
