package lm

import (
	"fmt"
	"sort"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// Rollback after the switch (issue 11; PowerPath's selectTarget /
// selectSource / commit; EMC US 7,093,088 "undoing a migration").
//
// A split --keep-source swaps the LUNs' data volumes exactly like a split
// (same checks, same bounded pause, same transaction), but the pair is not
// ended: it stays attached in state switched with its record's Switched
// set, and its legs are reversed (pair.legs): the new volume is the
// primary (hosts read it, its write failure fails the command) and the old
// one the secondary, written by the same dual-write path, with the same
// intent marks, DCL, re-copy (new → old), interruption, retry and crash
// rules. Nothing new stores the orientation: after a restart the pair is
// loaded from its record and its LUNs' records, whose data volume IDs are
// swapped, so its legs come out reversed by themselves.
//
// rollback swaps back the same way (switched → rolling-back → synced): the
// old volume must hold everything first (state switched, no fault, empty
// DCL: drained before, re-checked inside the pause); the pair is then a
// synced pair again, which can be split later. commit ends the mirroring:
// the pair becomes split, as a plain split would have ended it.
//
// Each step is persisted before it takes effect, and a crash between any
// two leaves a safe state (recover.go):
//
//	synced --(persist splitting)--> splitting --(one tx: LUNs swapped, pair switched)--> switched
//	switched --(persist rolling-back)--> rolling-back --(one tx: LUNs swapped back, pair synced)--> synced
//	switched|copying|queued|paused|interrupted (Switched) --(persist split)--> split, then detach, then DCL deleted
//
// A restart in splitting goes back to synced, in rolling-back back to
// switched (the swap transaction decides which volume the source LUN
// reads: before it the old, after it the new); a split record whose DCL
// was not deleted yet has its DCL dropped as a stray one.
//
// Decisions:
//   - A rollback clears AutoSplit on its pairs (in its swap transaction)
//     and on their session: the admin rolled back because the new space
//     misbehaves; the pair must not switch again on its own.
//   - commit is allowed in every non-final state of a switched pair (the
//     primary, the new volume, has every write whatever the secondary's
//     state): a secondary that failed (interrupted) can be given up. The
//     pairs are committed in one transaction; their detach needs the host
//     I/O to drain (DrainTimeout): if it does not, the pairs are split
//     already (the secondary no longer counts) and a repeated commit
//     finishes the detach.
//   - cancel of a switched pair is refused (it would leave the source LUN
//     on the new volume with no record saying so): roll back or commit.
//     A faulty switched pair (final) is removed by cancel like any faulty
//     pair; the source LUN stays on the new volume.
//   - A split --keep-source cannot be asked of a pair created with
//     AutoSplit by the pair itself; the admin asks for it.

// splitMode says which swap Manager.split performs.
type splitMode int8

const (
	splitPlain      splitMode = iota // split: the pair ends (split)
	splitKeepSource                  // split --keep-source: synced → switched
	splitRollback                    // rollback: switched → synced
)

func (m splitMode) String() string {
	switch m {
	case splitPlain:
		return "split"
	case splitKeepSource:
		return "split --keep-source"
	case splitRollback:
		return "rollback"
	}
	return fmt.Sprintf("splitMode(%d)", int(m))
}

// from is the state every pair must be in.
func (m splitMode) from() PairState {
	if m == splitRollback {
		return StateSwitched
	}
	return StateSynced
}

// during is the state persisted before the gates close.
func (m splitMode) during() PairState {
	if m == splitRollback {
		return StateRollingBack
	}
	return StateSplitting
}

// to is the state written by the swap transaction.
func (m splitMode) to() PairState {
	switch m {
	case splitKeepSource:
		return StateSwitched
	case splitRollback:
		return StateSynced
	}
	return StateSplit
}

// Who asks for a split (Manager.split's by).
const (
	splitByAdmin = "admin"      // an admin command
	splitByAuto  = "auto-split" // a pair's or session's auto-split
)

// done is the reason recorded with the swap asked for by by.
func (m splitMode) done(by string) string {
	switch m {
	case splitKeepSource:
		return "switched by " + by + ": the LUN runs on the new volume, host writes are mirrored back to the old one"
	case splitRollback:
		return "rolled back by " + by + ": the LUN runs on the old volume again, host writes are mirrored to the new one"
	}
	return "split by " + by
}

// keepsPair says whether the pair stays attached after the swap.
func (m splitMode) keepsPair() bool { return m != splitPlain }

// sourceRefs names the pairs of an operation on several pairs at once:
// each by source, target or pair ID, a session's pair refused unless
// forced (memberCheck).
func (m *Manager) sourceRefs(op string, names []string, force bool) ([]pairRef, error) {
	if err := checkSplitSources(names); err != nil {
		return nil, err
	}
	refs := make([]pairRef, len(names))
	for i, n := range names {
		ref, err := m.memberCheck(op, n, force)
		if err != nil {
			return nil, err
		}
		refs[i] = ref
	}
	return refs, nil
}

// SplitKeepSource switches the LUNs named by sources to their new volumes
// in one consistent split (all synced, one bounded pause, one
// transaction) but keeps every pair, switched: host writes are mirrored
// back to the old volumes until Rollback or Commit.
func (m *Manager) SplitKeepSource(sources []string, maxPause time.Duration, force bool) (SplitResult, error) {
	refs, err := m.sourceRefs("split --keep-source", sources, force)
	if err != nil {
		return SplitResult{}, err
	}
	return m.split(refs, maxPause, splitKeepSource, splitByAdmin)
}

// Rollback switches the LUNs named by sources (their pairs switched) back
// to their old volumes, with the same bounded pause and nothing lost: each
// old volume must be in sync (empty DCL) before the pause and after the
// drain. The pairs are synced again (source primary).
func (m *Manager) Rollback(sources []string, maxPause time.Duration) (SplitResult, error) {
	refs, err := m.sourceRefs("rollback", sources, false)
	if err != nil {
		return SplitResult{}, err
	}
	return m.split(refs, maxPause, splitRollback, splitByAdmin)
}

// Commit ends the mirroring of the switched pairs of the LUNs named by
// sources: each pair becomes split (as a plain split would have ended
// it), its DCL is deleted and its target LUN holds the old volume.
func (m *Manager) Commit(sources []string) (CommitResult, error) {
	refs, err := m.sourceRefs("commit", sources, false)
	if err != nil {
		return CommitResult{}, err
	}
	return m.commit(refs)
}

// CommitResult reports a commit.
type CommitResult struct {
	Pairs []string // source LUN names
}

// commit ends the mirroring of switched pairs (see the package comment of
// this file): every pair → split in one transaction, the run goroutines
// stopped, the pairs detached with their LUNs' I/O drained, the DCLs
// deleted. A pair already split but still attached (a commit whose detach
// did not drain) is only detached.
func (m *Manager) commit(refs []pairRef) (CommitResult, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return CommitResult{}, fmt.Errorf("commit: manager closed: %w", ErrState)
	}
	if err := m.settled("commit"); err != nil {
		return CommitResult{}, err
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
			return CommitResult{}, fmt.Errorf("commit: %w", err)
		}
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].id < ps[j].id })
	for _, p := range ps {
		if err := p.committable(); err != nil {
			return CommitResult{}, err
		}
	}

	// Every pair → split, in one transaction: from here the old volumes
	// no longer count (a crash after it comes back with the source LUNs
	// on the new volumes and no pair).
	var todo []*pair
	var recs []metavol.Pair
	for _, p := range ps {
		p.persist.Lock()
	}
	for _, p := range ps {
		p.mu.Lock()
		st := p.view().state
		rec := p.recordLocked()
		p.mu.Unlock()
		if st == StateSplit {
			continue // committed before, detach pending
		}
		rec.State, rec.Reason = StateSplit.String(), "committed by admin: mirroring to the old volume ended"
		rec.Switched = false
		todo, recs = append(todo, p), append(recs, rec)
	}
	err := m.putPairs(recs)
	if err == nil {
		for i, p := range todo {
			p.mu.Lock()
			p.applyLocked(recs[i], StateSplit)
			p.mu.Unlock()
			p.zlog.Info().Msg("pair committed")
		}
	}
	for _, p := range ps {
		p.persist.Unlock()
	}
	if err != nil {
		return CommitResult{}, fmt.Errorf("commit of %s: persist split: %w", names(ps), err)
	}

	// The run goroutines see a final state and return; then the routes
	// lose the pairs, with the I/O of all their LUNs drained at once.
	for _, p := range ps {
		p.stopRun()
	}
	entries := make([]*lunEntry, 0, 2*len(ps))
	for _, p := range ps {
		entries = append(entries, p.src, p.tgt)
	}
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.id
	}
	err = m.withGates(entries, func() error {
		for _, p := range ps {
			if p.src.pair == p {
				p.src.pair = nil
			}
			if p.tgt.targetOf == p {
				p.tgt.targetOf = nil
			}
		}
		return nil
	})
	if err != nil {
		return CommitResult{}, fmt.Errorf("commit of %s: the pairs are split, but their detach waits: %w (commit again)", names(ps), err)
	}
	m.mu.Lock()
	for _, p := range ps {
		delete(m.mu.pairs, p.id)
	}
	m.mu.Unlock()
	garbage, err := m.dcl.Forget(ids, func() (rest []string, err error) {
		err = m.db.Update(func(tx *metavol.Tx) error {
			var err error
			rest, err = tx.DeleteDCLs(ids)
			return err
		})
		return rest, err
	})
	if err != nil {
		// The records say split: the next start drops the DCLs as stray.
		m.log.Warn().Err(err).Str("pairs", names(ps)).Msg("commit: DCLs not deleted (dropped at the next start)")
	} else if len(garbage) > 0 {
		if err := m.dcl.Purge(garbage); err != nil {
			m.log.Warn().Err(err).Msg("commit: DCL pages left (swept at the next start)")
		}
	}
	res := CommitResult{}
	for _, p := range ps {
		res.Pairs = append(res.Pairs, p.name())
	}
	return res, nil
}

// committable says why the pair cannot be committed, or nil.
func (p *pair) committable() error {
	p.mu.Lock()
	st := p.view().state
	switched := p.mu.rec.Switched
	p.mu.Unlock()
	switch {
	case st == StateSplit:
		return nil // committed, detach pending
	case st == StateFaulty && switched:
		return refuse(ErrState, pairObject(p.name()), "commit: the pair is faulty: cancel it (the LUN stays on the new volume)")
	case !switched:
		return refuse(ErrState, pairObject(p.name()), "commit: the pair is %s, not switched (commit ends the mirroring of a pair split with --keep-source)", st)
	case !CanTransition(st, StateSplit):
		return refuse(ErrState, pairObject(p.name()), "commit: the pair is %s", st)
	}
	return nil
}

// refuseCancelSwitched is cancel's rule for a switched pair.
func (p *pair) refuseCancelSwitched() error {
	p.mu.Lock()
	st := p.view().state
	switched := p.mu.rec.Switched
	p.mu.Unlock()
	if switched && st != StateFaulty && st != StateCancelled {
		return refuse(ErrState, pairObject(p.name()), "cancel refused: the pair is switched (%s; the LUN runs on the new volume, mirrored back to the old one): roll it back or commit it", st)
	}
	return nil
}

// SplitKeepSourceSession switches every pair of the session in one
// consistent split --keep-source.
func (m *Manager) SplitKeepSourceSession(name string, maxPause time.Duration) (SplitResult, error) {
	return m.sessionSwap(name, maxPause, splitKeepSource)
}

// RollbackSession rolls every pair of the session back in one consistent
// rollback; the session's AutoSplit is cleared.
func (m *Manager) RollbackSession(name string, maxPause time.Duration) (SplitResult, error) {
	return m.sessionSwap(name, maxPause, splitRollback)
}

func (m *Manager) sessionSwap(name string, maxPause time.Duration, mode splitMode) (SplitResult, error) {
	var res SplitResult
	_, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st.Final() {
			return fmt.Errorf("session %s is %s: nothing to %s: %w", name, st, mode, ErrState)
		}
		if mode == splitRollback {
			rec := s.record()
			if rec.AutoSplit {
				rec.AutoSplit = false
				if err := s.save(rec); err != nil {
					return err
				}
			}
		}
		var err error
		res, err = m.split(activeRefs(ps), maxPause, mode, splitByAdmin)
		if err != nil {
			return fmt.Errorf("session %s: %w", name, err)
		}
		s.setReason("")
		event := "switched"
		if mode == splitRollback {
			event = "rolled-back"
		}
		m.events.sessionEvent(s.record(), event, fmt.Sprintf("%s (host I/O paused %.3f ms)", mode.done(splitByAdmin), res.PauseMS), splitByAdmin)
		return nil
	})
	if err != nil {
		return SplitResult{}, err
	}
	m.log.Info().Str("session", name).Float64("pause_ms", res.PauseMS).Msg("session " + mode.String())
	return res, nil
}

// CommitSession commits every switched pair of the session; the session
// is then split (final).
func (m *Manager) CommitSession(name string) (CommitResult, error) {
	var res CommitResult
	s, err := m.opSession(name, func(s *session, ps []sessionPair, st SessionState) error {
		if st.Final() {
			return fmt.Errorf("session %s is %s: nothing to commit: %w", name, st, ErrState)
		}
		var err error
		res, err = m.commit(activeRefs(ps))
		if err != nil {
			return fmt.Errorf("session %s: %w", name, err)
		}
		s.setReason("")
		s.finish(SessionSplit, "committed by admin: mirroring to the old volumes ended")
		return nil
	})
	if err != nil {
		return CommitResult{}, err
	}
	s.stopRun()
	m.log.Info().Str("session", name).Msg("session committed")
	return res, nil
}
