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
	if err := m.settleSplitJournal(); err != nil {
		return SplitResult{}, fmt.Errorf("%s: %w", mode, err)
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

	// Everything the pause needs is prepared before it: the split
	// journal (one key saying what the swap sets for every pair),
	// encoded; the swapped LUN records and the pairs' final records,
	// written right after the pause; the gates.
	for i, p := range ps {
		p.mu.Lock()
		recs[i] = p.recordLocked()
		p.mu.Unlock()
	}
	sw, err := m.prepareSwap(ps, recs, mode, by)
	if err != nil {
		back(mode.String() + " refused: " + err.Error())
		return SplitResult{}, fmt.Errorf("%s of %s: %w", mode, names(ps), err)
	}
	// The full check of both legs (path and open file) again, now that
	// the syncs are done: inside the pause only the open files are
	// re-checked, while the journal commits.
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

	// The pause: drain, cheap checks, the journal's commit (one key)
	// with the open files re-checked meanwhile, the route swap.
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
	// the fault or the DCL.
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
	}
	// The journal commits (an fsync: the CPU is free) while this
	// goroutine re-checks every leg's open file (an fstat each: a leg
	// truncated or deleted since the check before the pause). A failed
	// re-check deletes the journal again before anything else sees it.
	jerr := make(chan error, 1)
	go func() { // owned here: always received below
		jerr <- m.db.Update(func(tx *metavol.Tx) error { return tx.Apply(&sw.journal) })
	}()
	var recheck error
	for _, p := range ps {
		if recheck = p.recheckLegs(mode.String()); recheck != nil {
			break
		}
	}
	if err := <-jerr; err != nil {
		// Nothing swapped. Should the failed commit have landed all
		// the same, the journal goes (or the next split finds that its
		// swap never happened: settleSplitJournal).
		if derr := m.db.Update(func(tx *metavol.Tx) error { return tx.DeleteSplitJournal() }); derr != nil {
			m.log.Warn().Err(derr).Msg(mode.String() + ": delete of the split journal whose commit failed")
		}
		openGates()
		back(mode.String() + " failed: " + err.Error())
		return SplitResult{}, fmt.Errorf("%s of %s: commit the split journal: %w", mode, names(ps), err)
	}
	if recheck != nil {
		if err := m.db.Update(func(tx *metavol.Tx) error { return tx.DeleteSplitJournal() }); err != nil {
			// The journal stays: the swap it describes is committed
			// and goes on (the lost leg is offline, its data is on
			// the other LUN); see docs/design.md "Split journal".
			m.log.Error().Err(err).AnErr("recheck", recheck).Msg(mode.String() + ": the journal of a refused swap could not be deleted: the swap goes on")
		} else {
			openGates()
			back(mode.String() + " refused: " + recheck.Error())
			return SplitResult{}, recheck
		}
	}
	if h := m.hooks.splitJournaled; h != nil {
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
	if h := m.hooks.splitReopened; h != nil {
		h()
	}
	// After the pause, still holding admin and every pair's persist
	// lock: the records the journal describes (with the measured pause),
	// the DCL headers of the pairs that end, the journal deleted, in one
	// transaction. A crash before it commits is rolled forward from the
	// journal at the next start (m.rollForwardSplit).
	res := SplitResult{Pause: pause, PauseMS: float64(pause) / 1e6}
	for i, p := range ps {
		res.Pairs = append(res.Pairs, p.name())
		recs[i].SplitPauseNS = int64(pause)
	}
	garbage, applyErr := m.applySwap(ps, sw, recs, ids, mode)
	if applyErr != nil {
		m.log.Error().Err(applyErr).Msg(mode.String() + ": the records of the swap were not written (the journal is rolled forward later)")
		applyErr = fmt.Errorf("%s of %s: done, but its records were not written (its journal is applied at the next split or start): %w", mode, names(ps), applyErr)
	} else if h := m.hooks.splitCommitted; h != nil {
		h()
	}
	// The in-memory states follow the records (each queues an event and
	// wakes runners: microseconds per pair, kept out of the pause), so
	// that whoever sees a pair split finds its records written. No host
	// write depends on them: a split pair is detached already, and a
	// pair that stays attached writes in the mode it had while splitting
	// (modeIn keeps dual for switched and synced). Every other change of
	// these pairs waits for their persist locks, still held. A failed
	// write of the records changes nothing here: the journal decided.
	for i, p := range ps {
		p.mu.Lock()
		p.applyLocked(recs[i], mode.to())
		p.mu.Unlock()
	}
	m.events.splitPaused(ps, recs, pause) // events.go
	releaseAll()
	if mode.keepsPair() {
		for _, p := range ps {
			p.zlog.Info().Dur("split_pause_ms", pause).Str("state", mode.to().String()).Msg(mode.done(by))
		}
		return res, applyErr
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
	return res, applyErr
}

// swapPlan is the meta volume side of a split, prepared before the pause:
// the split journal, encoded (committed inside the pause), the LUN records
// with their data volume IDs swapped (written after it), and the LUNs' new
// sizes.
type swapPlan struct {
	journal          metavol.Batch
	jrn              *metavol.SplitJournal
	luns             []metavol.LUN // source, target of every pair, in order
	srcSize, tgtSize []int64
}

// prepareSwap reads the LUN records of every pair and writes down in a
// split journal what the swap sets: the data volume and size of each LUN,
// the pairs' final fields, which it also sets in recs (the records the
// pairs get; metavol.SplitJournal.SetPair is the one rule for both, here
// and in the roll-forward at a start). Called with admin held: nothing
// else writes LUN records until the swap.
func (m *Manager) prepareSwap(ps []*pair, recs []metavol.Pair, mode splitMode, by string) (*swapPlan, error) {
	j := &metavol.SplitJournal{
		State:       mode.to().String(),
		Reason:      mode.done(by),
		During:      mode.during().String(),
		Switched:    mode == splitKeepSource,
		NoAutoSplit: mode == splitRollback, // rollback.go: no switch again on its own
		DropDCL:     !mode.keepsPair(),
		Time:        time.Now().UTC(),
		Pairs:       make([]metavol.SplitJournalPair, len(ps)),
	}
	sw := &swapPlan{jrn: j, luns: make([]metavol.LUN, 0, 2*len(ps)),
		srcSize: make([]int64, len(ps)), tgtSize: make([]int64, len(ps))}
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
			e := metavol.SplitJournalPair{Pair: p.id, Size: p.size,
				SourceLUN: sl.ID, SourceVolume: tl.VolumeID, SourceSize: sl.Size,
				TargetLUN: tl.ID, TargetVolume: sl.VolumeID, TargetSize: tl.Size}
			// The target LUN now holds the old source's data volume,
			// which may be smaller than the target LUN was.
			if o, err := p.legs().src.get(); err == nil && o.raw.Size() < tl.Size {
				e.TargetSize = sl.Size
			}
			e.SetLUNs(&sl, &tl)
			j.SetPair(e, &recs[i])
			j.Pairs[i] = e
			sw.luns = append(sw.luns, sl, tl)
			sw.srcSize[i], sw.tgtSize[i] = sl.Size, tl.Size
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := sw.journal.PutSplitJournal(j); err != nil {
		return nil, err
	}
	return sw, nil
}

// applySwap writes, after the pause, the records the split journal
// describes (the swapped LUN records, the pairs' records recs), deletes the
// DCL headers of pairs that end and the journal, in one transaction. It
// returns the pairs whose DCL pages are garbage (dcl.Store.Purge).
func (m *Manager) applySwap(ps []*pair, sw *swapPlan, recs []metavol.Pair, ids []string, mode splitMode) (garbage []string, err error) {
	var b metavol.Batch
	for i := range ps {
		for _, l := range sw.luns[2*i : 2*i+2] {
			if err := b.ReplaceLUN(l); err != nil {
				return nil, err
			}
		}
		if err := b.PutPair(recs[i]); err != nil {
			return nil, err
		}
	}
	// One transaction with the records prepared here; should it fail,
	// one more that rolls the journal forward (the same records, read
	// and set in it): a lone failed commit does not leave the records
	// behind the routes.
	commit := func() (rest []string, err error) {
		err = m.db.Update(func(tx *metavol.Tx) error {
			if err := tx.Apply(&b); err != nil {
				return err
			}
			if !mode.keepsPair() {
				var err error
				if rest, err = tx.DeleteDCLHeaders(ids); err != nil {
					return err
				}
			}
			return tx.DeleteSplitJournal()
		})
		if err == nil {
			return rest, nil
		}
		m.log.Warn().Err(err).Msg(mode.String() + ": writing the records after the pause failed: rolling the split journal forward")
		if err2 := m.db.Update(func(tx *metavol.Tx) error { _, _, err := tx.RollForwardSplit(); return err }); err2 != nil {
			return nil, errors.Join(err, err2)
		}
		if !mode.keepsPair() {
			rest = ids
		}
		return rest, nil
	}
	if mode.keepsPair() {
		return commit()
	}
	// dcl forgets the logs: none of their pages is written after this
	// transaction. Only the headers go in it, which make a DCL exist;
	// the pages are purged after it (or swept at the next start).
	return m.dcl.Forget(ids, commit)
}

// settleSplitJournal deals, at the start of a split (admin held), with a
// journal still in the meta volume: there is one journal key, so a new
// one must not replace one not yet applied. A journal whose swap the
// routes in memory show (its records were not written after the pause: a
// failed commit) is rolled forward; one whose swap they do not show (its
// commit reported a failure yet landed: the split was refused, nothing
// swapped) is deleted, since rolling it forward would move the LUNs to
// volumes that missed the host's writes since. Anything in between is
// refused, naming the pair.
func (m *Manager) settleSplitJournal() error {
	var j *metavol.SplitJournal
	if err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		j, err = tx.SplitJournal()
		return err
	}); err != nil || j == nil {
		return err
	}
	swapped, kept := 0, 0
	for _, e := range j.Pairs {
		m.mu.Lock()
		se, te := m.mu.luns[e.SourceLUN], m.mu.luns[e.TargetLUN]
		m.mu.Unlock()
		// A LUN deleted since says nothing (the roll-forward skips it).
		var sv, tv string
		if se != nil && se.vol != nil {
			sv = se.vol.rec.ID
		}
		if te != nil && te.vol != nil {
			tv = te.vol.rec.ID
		}
		switch {
		case (sv == "" || sv == e.SourceVolume) && (tv == "" || tv == e.TargetVolume) && sv+tv != "":
			swapped++
		case (sv == "" || sv == e.TargetVolume) && (tv == "" || tv == e.SourceVolume) && sv+tv != "":
			kept++
		case sv+tv == "":
		default:
			return fmt.Errorf("split journal: pair %s: its LUNs are on neither the volumes before nor after its swap: %w", e.Pair, ErrState)
		}
	}
	switch {
	case kept == 0:
		return m.rollForwardSplit()
	case swapped == 0:
		if err := m.db.Update(func(tx *metavol.Tx) error { return tx.DeleteSplitJournal() }); err != nil {
			return fmt.Errorf("delete the journal of a swap that did not happen: %w", err)
		}
		m.log.Warn().Int("pairs", len(j.Pairs)).Msg("split journal of a swap that did not happen deleted")
		return nil
	}
	return fmt.Errorf("split journal: %d of its pairs swapped, %d not: %w", swapped, kept, ErrState)
}

// settled is the first step, admin held, of every admin operation other
// than a split that changes LUN or pair records or acts on a LUN's data
// volume by its record (resize, delete, retire, commit, cancel, set,
// pause, resume, pair and session creation, forgetting pair records): a
// split journal left by a split whose records were not written after its
// pause (the server still running) is settled first (settleSplitJournal).
// Until then the LUN records name the volumes before the swap while the
// routes use the swapped ones: a resize would be undone by the later
// roll-forward, a retire after a commit would delete the volume the
// source LUN serves. One that cannot be settled refuses the operation,
// nothing changed.
func (m *Manager) settled(op string) error {
	if err := m.settleSplitJournal(); err != nil {
		return fmt.Errorf("%s refused: the records of a split are not written yet: %w", op, err)
	}
	return nil
}

// rollForwardSplit applies a split journal left in the meta volume by a
// split whose records were not written after its pause (a crash, or a
// failed commit): at Open, before anything is loaded, and at the start of
// a split whose routes show that swap (settleSplitJournal). Called with
// admin held, or before the Manager serves.
func (m *Manager) rollForwardSplit() error {
	var j *metavol.SplitJournal
	var missing []string
	err := m.db.Update(func(tx *metavol.Tx) error {
		var err error
		j, missing, err = tx.RollForwardSplit()
		return err
	})
	if err != nil {
		return fmt.Errorf("roll forward the split journal: %w", err)
	}
	if j != nil {
		ids := make([]string, len(j.Pairs))
		for i, e := range j.Pairs {
			ids[i] = e.Pair
		}
		m.log.Warn().Strs("pairs", ids).Str("state", j.State).Strs("skipped", missing).Msg("split journal rolled forward: the swap committed in the pause is now in the records")
	}
	return nil
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
