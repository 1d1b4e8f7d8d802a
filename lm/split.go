package lm

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// DefaultMaxPause is the split's pause budget when none is given.
const DefaultMaxPause = 100 * time.Millisecond

// split performs the (consistent) split of the pairs named by refs
// (DESIGN §5): all must be synced; pairs created with Verify are
// compared region by region first; then every source and target LUN's I/O
// gate closes, in-flight I/O drains within maxPause (else everything is
// left as it was and ErrSplitTimeout is returned), and one meta volume
// transaction swaps the data volume IDs of every pair's LUNs, marks the
// pairs split and deletes their DCLs. The pause is measured and recorded
// on every pair. Inside the pause only the drain, a cheap re-check, that
// transaction (prepared before) and the route swap run (doc.go).
//
// mode says which of the three swaps it is (rollback.go): a plain split,
// a split --keep-source (the pairs stay attached, switched, their legs
// reversed) or a rollback (switched pairs swap back and are synced again).
// The three share every step; only the states, whether the DCLs are
// deleted and whether the pairs stay attached differ.
//
// by says who asked for it (splitByAdmin, splitByAuto): the pairs'
// reasons say so, and so their histories (events.go, causeOf).
func (m *Manager) split(refs []pairRef, maxPause time.Duration, mode splitMode, by string) (SplitResult, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return SplitResult{}, fmt.Errorf("%s: manager closed: %w", mode, ErrState)
	}
	if maxPause <= 0 {
		maxPause = DefaultMaxPause
	}
	var ps []*pair
	seen := map[string]bool{}
	for _, r := range refs {
		if seen[r.key()] {
			continue
		}
		seen[r.key()] = true
		p, err := m.findPair(r)
		if err != nil {
			return SplitResult{}, fmt.Errorf("%s: %w", mode, err)
		}
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].id < ps[j].id })
	for _, p := range ps {
		if err := p.splittable(mode); err != nil {
			return SplitResult{}, err
		}
	}
	// A leg truncated, deleted or replaced underneath lmtgt would hand the
	// host zeros after the swap: check both legs of every pair now (cheap:
	// an fstat and a stat each), again just before the pause and, with
	// an fstat, inside it.
	for _, p := range ps {
		if err := p.verifyLegs(mode.String()); err != nil {
			return SplitResult{}, err
		}
	}
	for _, p := range ps {
		if p.wantsVerify() {
			if err := p.verify(); err != nil {
				return SplitResult{}, err
			}
		}
	}

	// Every pair's persist lock, held to the end: no other change of a
	// pair record interleaves with the split (the run goroutine's
	// transitions wait, then find the pair split or back in synced). No
	// pair's mu is held across a sync or a commit, so `migration show`
	// answers at once (state splitting) while the split runs.
	for _, p := range ps {
		p.persist.Lock()
	}
	persisting := true
	releaseAll := func() {
		if persisting {
			for _, p := range ps {
				p.persist.Unlock()
			}
			persisting = false
		}
	}
	defer releaseAll()

	// Every pair → splitting (rolling-back), in one transaction, before
	// the gates close.
	during := mode.during()
	recs := make([]metavol.Pair, len(ps))
	for i, p := range ps {
		p.mu.Lock()
		err := checkTransition(p.name(), p.getState(), during)
		recs[i] = p.recordLocked()
		p.mu.Unlock()
		if err != nil {
			return SplitResult{}, fmt.Errorf("%s: %w", mode, err)
		}
		recs[i].State = during.String()
		recs[i].Reason = mode.String() + " started by " + by
	}
	if err := m.putPairs(recs); err != nil {
		return SplitResult{}, fmt.Errorf("%s: persist %s: %w", mode, during, err)
	}
	for i, p := range ps {
		p.mu.Lock()
		p.applyLocked(recs[i], during)
		p.mu.Unlock()
	}
	// back returns every pair to synced (switched) or interrupted with a
	// reason.
	back := func(reason string) { m.leaveSplitting(ps, reason, mode) }

	// The swap makes each target the source LUN's data: what the copier
	// and the DCL re-copies wrote there must be on disk first, or a power
	// loss after the swap takes back data the host had synced on the
	// source. The copier is idle while splitting, so this is done before
	// the pause. Host writes after it need no sync by the split: they
	// reach both legs' page caches, and a host SYNCHRONIZE CACHE syncs
	// both legs before the swap and the new source after it (a writeback
	// error after this sync is reported by the next fsync of the file).
	for _, p := range ps {
		if _, err := p.syncLegs(true, false, true); err != nil {
			p.setFault("sync before the " + mode.String() + ": " + err.Error())
			back(mode.String() + " refused: sync failed: " + err.Error())
			return SplitResult{}, fmt.Errorf("%s: pair %s: sync before the swap: %w: %w", mode, p.name(), err, ErrNotSynced)
		}
	}

	// Everything the pause needs is prepared before it: the swapped LUN
	// records and the split pair records, encoded (the measured pause is
	// recorded right after it), the gates and the DCLs to delete.
	for i, p := range ps {
		p.mu.Lock()
		recs[i] = p.recordLocked()
		p.mu.Unlock()
		recs[i].State = mode.to().String()
		recs[i].Reason = mode.done(by)
		recs[i].Cursor, recs[i].CopiedBytes = p.size, p.size
		recs[i].Switched = mode == splitKeepSource
		if mode == splitRollback {
			recs[i].AutoSplit = false // rollback.go: no switch again on its own
		}
	}
	sw, err := m.prepareSwap(ps, recs)
	if err != nil {
		back(mode.String() + " refused: " + err.Error())
		return SplitResult{}, fmt.Errorf("%s of %s: %w", mode, names(ps), err)
	}
	// The full check of both legs (path and open file) again, now that
	// the syncs are done: inside the pause only the open files are
	// re-checked.
	for _, p := range ps {
		if err := p.verifyLegs(mode.String()); err != nil {
			back(mode.String() + " refused: " + err.Error())
			return SplitResult{}, err
		}
	}
	gates := make([]*gate, 0, 2*len(ps))
	ids := make([]string, len(ps))
	for i, p := range ps {
		gates = append(gates, &p.src.gate, &p.tgt.gate)
		ids[i] = p.id
	}

	// The pause: drain, a cheap re-check, one transaction, the route swap.
	t0 := time.Now()
	if !closeGates(gates, maxPause) {
		m.splits.deferrals.Add(1)
		back(fmt.Sprintf("%s deferred: in-flight I/O did not drain within %v", mode, maxPause))
		return SplitResult{}, fmt.Errorf("%s of %s: %w (budget %v)", mode, names(ps), ErrSplitTimeout, maxPause)
	}
	gatesOpen := false
	openGates := func() {
		if !gatesOpen {
			for _, g := range gates {
				g.open()
			}
			gatesOpen = true
		}
	}
	defer openGates()

	if h := m.hooks.splitDrained; h != nil {
		h()
	}
	// Drained: no write is in flight. A failure during the drain shows in
	// the fault or the DCL; a leg truncated or deleted since the check
	// before the pause shows in an fstat (volume.File.VerifyOpen).
	for _, p := range ps {
		if f := p.view().fault; f != "" {
			openGates()
			back("")
			return SplitResult{}, fmt.Errorf("%s: pair %s: during the drain: %s: %w", mode, p.name(), f, ErrNotSynced)
		}
		if d, _, _ := p.log.Counts(); d > 0 {
			openGates()
			back(mode.String() + " refused: the DCL is not empty after the drain")
			return SplitResult{}, fmt.Errorf("%s: pair %s: DCL holds %d regions after the drain: %w", mode, p.name(), d, ErrNotSynced)
		}
		if err := p.recheckLegs(mode.String()); err != nil {
			openGates()
			back(mode.String() + " refused: " + err.Error())
			return SplitResult{}, err
		}
	}

	// One transaction: swap the data volume IDs, mark the pairs split,
	// delete their DCLs (DESIGN §5 steps 3-4): only the headers, which
	// make a DCL exist; the pages are garbage from then on and are purged
	// after the pause (m.dcl.Purge below, or the sweep at the next start),
	// so the pause has no iterator and no work per page (issue 13: at
	// 2048 pairs deleting the pages took ~16 ms of it). dcl forgets the
	// logs: none of their pages is written after this transaction. A pair that stays attached (switched, or synced
	// again after a rollback) keeps its DCL: it still tracks where the
	// secondary may differ (after the drain only intent marks of writes
	// that reached both legs, cleared lazily).
	var garbage []string
	if mode.keepsPair() {
		err = m.db.Update(func(tx *metavol.Tx) error { return tx.Apply(&sw.batch) })
	} else {
		garbage, err = m.dcl.Forget(ids, func() (rest []string, err error) {
			err = m.db.Update(func(tx *metavol.Tx) error {
				if err := tx.Apply(&sw.batch); err != nil {
					return err
				}
				var err error
				rest, err = tx.DeleteDCLHeaders(ids)
				return err
			})
			return rest, err
		})
	}
	if err != nil {
		openGates()
		back(mode.String() + " failed: " + err.Error())
		return SplitResult{}, fmt.Errorf("%s of %s: swap: %w", mode, names(ps), err)
	}
	if h := m.hooks.splitCommitted; h != nil {
		h()
	}
	for i, p := range ps {
		lv := p.legs()
		p.src.vol, p.tgt.vol = lv.tgt, lv.src
		if mode.keepsPair() {
			// The legs follow the routes: the primary is the volume
			// the source LUN now reads.
			p.vols.Store(&legVols{src: lv.tgt, tgt: lv.src})
		} else {
			p.src.pair = nil
			p.tgt.targetOf = nil
		}
		p.src.size.Store(sw.srcSize[i])
		p.tgt.size.Store(sw.tgtSize[i])
	}
	openGates()
	pause := time.Since(t0)
	m.splits.observeSplit(pause)
	// The in-memory states follow the committed ones right after the
	// pause (each queues an event and wakes runners: microseconds per
	// pair, kept out of the pause). No host write depends on them: a
	// split pair is detached already, and a pair that stays attached
	// writes in the mode it had while splitting (modeIn keeps dual for
	// switched and synced). Every other change of these pairs waits for
	// their persist locks, still held.
	for i, p := range ps {
		p.mu.Lock()
		p.applyLocked(recs[i], mode.to())
		p.mu.Unlock()
	}

	// After the pause, batched: the measured pause in one transaction,
	// every run goroutine told to stop at once, then waited for.
	res := SplitResult{Pause: pause, PauseMS: float64(pause) / 1e6}
	for i, p := range ps {
		res.Pairs = append(res.Pairs, p.name())
		recs[i].SplitPauseNS = int64(pause)
		p.mu.Lock()
		p.mu.rec.SplitPauseNS = int64(pause)
		p.mu.Unlock()
	}
	if err := m.putPairs(recs); err != nil {
		m.log.Warn().Err(err).Msg(mode.String() + ": could not record the measured pause")
	}
	m.events.splitPaused(ps, recs, pause) // events.go
	releaseAll()
	if mode.keepsPair() {
		for _, p := range ps {
			p.zlog.Info().Dur("split_pause_ms", pause).Str("state", mode.to().String()).Msg(mode.done(by))
		}
		return res, nil
	}
	if len(garbage) > 0 {
		// DCL pages the swap transaction had no room for: their headers
		// went with the swap, so they are garbage (never loaded).
		if err := m.dcl.Purge(garbage); err != nil {
			m.log.Warn().Err(err).Msg("split: DCL pages left (swept at the next start)")
		}
	}
	for _, p := range ps {
		if p.stop != nil {
			p.stop()
		}
	}
	for _, p := range ps {
		if p.stop != nil {
			<-p.exited
		}
	}
	m.mu.Lock()
	for _, p := range ps {
		delete(m.mu.pairs, p.id)
	}
	m.mu.Unlock()
	for _, p := range ps {
		p.zlog.Info().Dur("split_pause_ms", pause).Msg("pair split")
	}
	return res, nil
}

// swapPlan is the meta volume side of a split, prepared before the pause:
// the LUN records with their data volume IDs swapped and the pairs'
// records, encoded, and the LUNs' new sizes.
type swapPlan struct {
	batch            metavol.Batch
	srcSize, tgtSize []int64
}

// prepareSwap reads the LUN records of every pair, swaps their data volume
// IDs and encodes them with the pairs' split records. Called with admin
// held: nothing else writes LUN records until the swap.
func (m *Manager) prepareSwap(ps []*pair, recs []metavol.Pair) (*swapPlan, error) {
	sw := &swapPlan{srcSize: make([]int64, len(ps)), tgtSize: make([]int64, len(ps))}
	err := m.db.View(func(tx *metavol.Tx) error {
		for i, p := range ps {
			sl, err := tx.GetLUN(p.src.id)
			if err != nil {
				return err
			}
			tl, err := tx.GetLUN(p.tgt.id)
			if err != nil {
				return err
			}
			sl.VolumeID, tl.VolumeID = tl.VolumeID, sl.VolumeID
			// The target LUN now holds the old source's data volume,
			// which may be smaller than the target LUN was.
			if o, err := p.legs().src.get(); err == nil && o.raw.Size() < tl.Size {
				tl.Size = sl.Size
			}
			sw.srcSize[i], sw.tgtSize[i] = sl.Size, tl.Size
			if err := sw.batch.ReplaceLUN(sl); err != nil {
				return err
			}
			if err := sw.batch.ReplaceLUN(tl); err != nil {
				return err
			}
			if err := sw.batch.PutPair(recs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	return sw, err
}

// putPairs writes the records of a split's pairs in one transaction:
// their states change together or not at all.
func (m *Manager) putPairs(recs []metavol.Pair) error {
	return m.db.Update(func(tx *metavol.Tx) error {
		for _, r := range recs {
			if err := tx.PutPair(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// leaveSplitting returns every pair to synced (switched, for a rollback;
// or interrupted, with its fault) in one transaction: a deferred or
// refused split or rollback. Called with every pair's persist lock held.
// reason "" keeps the fault as the reason.
func (m *Manager) leaveSplitting(ps []*pair, reason string, mode splitMode) {
	recs := make([]metavol.Pair, 0, len(ps))
	tos := make([]PairState, 0, len(ps))
	var moved []*pair
	for _, p := range ps {
		p.mu.Lock()
		v := p.view()
		to, r := mode.from(), reason
		if v.fault != "" {
			to, r = StateInterrupted, v.fault
		}
		err := checkTransition(p.name(), v.state, to)
		rec := p.recordLocked()
		p.mu.Unlock()
		if err != nil {
			p.zlog.Error().Err(err).Msg(mode.String() + ": cannot leave " + mode.during().String())
			continue
		}
		rec.State, rec.Reason = to.String(), r
		recs, tos, moved = append(recs, rec), append(tos, to), append(moved, p)
	}
	if err := m.putPairs(recs); err != nil {
		m.log.Error().Err(err).Str("pairs", names(moved)).Msg(mode.String() + ": cannot leave " + mode.during().String())
		return
	}
	for i, p := range moved {
		p.mu.Lock()
		p.applyLocked(recs[i], tos[i])
		p.mu.Unlock()
		p.zlog.Info().Str("from", mode.during().String()).Str("to", tos[i].String()).Str("reason", recs[i].Reason).Msg("pair state")
	}
}

func names(ps []*pair) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ","
		}
		s += p.name()
	}
	return s
}

// splittable says why the pair cannot be split (or rolled back) now, or
// nil: a split needs it synced, a rollback switched, both with no fault
// and an empty DCL (a rollback drains the DCL first: the old volume must
// hold everything the hosts wrote).
func (p *pair) splittable(mode splitMode) error {
	for _, e := range []*lunEntry{p.src, p.tgt} {
		if err := e.fenced(mode.String()); err != nil {
			return fmt.Errorf("%s: pair %s: %w", mode, p.name(), err)
		}
	}
	p.mu.Lock()
	v := p.view()
	reason := p.mu.rec.Reason
	switched := p.mu.rec.Switched
	p.mu.Unlock()
	if mode != splitRollback && switched {
		return refuse(ErrState, pairObject(p.name()), "%s: the pair is switched (mirrored back to its old volume): roll it back or commit it", mode)
	}
	if mode == splitRollback && !switched {
		return refuse(ErrState, pairObject(p.name()), "rollback: the pair is %s, not switched (only a pair split with --keep-source can be rolled back)", v.state)
	}
	if v.state != mode.from() {
		return fmt.Errorf("%s: pair %s (%s → %s) is %s (%s): %w", mode, p.name(), p.src.name, p.tgt.name, v.state, reason, ErrNotSynced)
	}
	if v.fault != "" {
		return fmt.Errorf("%s: pair %s: %s: %w", mode, p.name(), v.fault, ErrNotSynced)
	}
	if d, _, _ := p.log.Counts(); d > 0 {
		return fmt.Errorf("%s: pair %s: %d regions still to re-copy: %w", mode, p.name(), d, ErrNotSynced)
	}
	return nil
}

func (p *pair) wantsVerify() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.rec.Verify
}

// verify compares source and target region by region while host I/O
// continues; each region is compared under its exclusive range lock so no
// write is half done on it.
func (p *pair) verify() error {
	so, err := p.legs().src.get()
	if err != nil {
		return fmt.Errorf("verify %s: %w", p.name(), err)
	}
	to, err := p.legs().tgt.get()
	if err != nil {
		return fmt.Errorf("verify %s: %w", p.name(), err)
	}
	a := make([]byte, p.region)
	b := make([]byte, p.region)
	for r := int64(0); r < p.log.Len(); r++ {
		off := r * p.region
		n := min(p.region, p.size-off)
		unlock := p.locks.lock(r, r)
		_, err1 := so.v.ReadAt(a[:n], off)
		_, err2 := to.v.ReadAt(b[:n], off)
		unlock()
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("verify %s: region %d: %w", p.name(), r, err)
		}
		if !bytes.Equal(a[:n], b[:n]) {
			return fmt.Errorf("verify %s: region %d (bytes %d-%d) differs: source crc32 %08x, target %08x: %w",
				p.name(), r, off, off+n-1, crc32.ChecksumIEEE(a[:n]), crc32.ChecksumIEEE(b[:n]), ErrVerify)
		}
	}
	return nil
}

// goAutoSplit splits a pair created with AutoSplit once it is synced,
// retrying a deferred split with backoff while the pair stays synced.
func (m *Manager) goAutoSplit(p *pair) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		d := 50 * time.Millisecond
		for m.ctx.Err() == nil && p.getState() == StateSynced {
			_, err := m.splitNamed([]string{p.name()}, 0, false, splitByAuto)
			if err == nil {
				return
			}
			if !errors.Is(err, ErrSplitTimeout) && !errors.Is(err, ErrNotSynced) {
				p.zlog.Error().Err(err).Msg("auto-split failed")
				return
			}
			t := time.NewTimer(d)
			select {
			case <-m.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			d = min(2*d, 5*time.Second)
		}
	}()
}
