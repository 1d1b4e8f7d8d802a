package lm

import (
	"fmt"

	"github.com/lmtgt/lmtgt/metavol"
)

// recover attaches every pair found in the meta volume (DESIGN §7): the
// DCL is loaded (every region found there will be re-copied), the copy
// resumes from the persisted checkpoint, a split cut short by the restart
// goes back to synced (a rollback cut short to switched), a synced (or
// switched) pair with regions in its DCL goes back to
// copying, and a pair whose data volume is missing is interrupted with the
// reason. Cancelled pairs and stray DCLs are cleaned.
//
// A pair record that cannot be loaded (an unknown state, a LUN it names is
// missing, its DCL fails to load) is never skipped silently: its record and
// DCL are kept and the LUNs it names are offline (offline.go) until it
// loads at a later start or the admin cancels it. Serving its source
// plainly would stop tracking writes that the pair, loaded again later,
// would then miss at the split.
//
// A split cut after the commit of its journal (split.go) is not seen here
// as cut short: Open rolled the journal forward before loading anything,
// so its pairs arrive split (switched, or synced after a rollback) with
// their LUNs on the swapped volumes, and the DCL pages of the ended ones
// are swept below as stray.
func (m *Manager) recover(recs []metavol.Pair) error {
	active := map[string]bool{}
	var started []*pair
	for _, rec := range recs {
		st, err := ParseState(rec.State)
		if err != nil {
			m.unloadable(rec, fmt.Sprintf("unknown state %q (written by another lmtgt version?)", rec.State))
			active[rec.ID] = true // keep its DCL
			continue
		}
		switch st {
		case StateCancelled:
			m.events.pairSeen(rec, m.lunName(rec.SourceLUN), m.lunName(rec.TargetLUN), false) // its history ends in cancelled
			if err := m.db.Update(func(tx *metavol.Tx) error { return tx.DeletePair(rec.ID) }); err != nil {
				m.log.Warn().Err(err).Str("pair", rec.ID).Msg("could not delete a cancelled pair")
			}
			continue
		case StateSplit:
			continue
		}
		m.mu.Lock()
		se, te := m.mu.luns[rec.SourceLUN], m.mu.luns[rec.TargetLUN]
		m.mu.Unlock()
		if se == nil || te == nil {
			var missing []string
			if se == nil {
				missing = append(missing, "source LUN "+rec.SourceLUN)
			}
			if te == nil {
				missing = append(missing, "target LUN "+rec.TargetLUN)
			}
			m.unloadable(rec, fmt.Sprintf("%s does not exist", joinAnd(missing)))
			active[rec.ID] = true
			continue
		}
		p, err := m.newPair(rec, se, te)
		if err != nil {
			m.unloadable(rec, err.Error())
			active[rec.ID] = true
			continue
		}
		se.pair = p
		te.targetOf = p
		m.mu.Lock()
		m.mu.pairs[p.id] = p
		m.mu.Unlock()
		active[p.id] = true

		if st == StateSplitting {
			if err := p.transition(StateSynced, "split cut short by a restart"); err != nil {
				m.log.Error().Err(err).Str("pair", rec.ID).Msg("recovery")
			}
			st = StateSynced
		}
		if st == StateRollingBack {
			// The swap back was not committed: the source LUN still
			// reads the new volume (rollback.go).
			if err := p.transition(StateSwitched, "rollback cut short by a restart"); err != nil {
				m.log.Error().Err(err).Str("pair", rec.ID).Msg("recovery")
			}
			st = StateSwitched
		}
		var missing error
		for _, d := range []*dataVol{p.legs().src, p.legs().tgt} {
			if _, err := d.get(); err != nil && missing == nil {
				missing = err
			}
		}
		if missing != nil {
			if CanTransition(st, StateInterrupted) && st != StateInterrupted {
				if err := p.transition(StateInterrupted, missing.Error()); err != nil {
					m.log.Error().Err(err).Str("pair", rec.ID).Msg("recovery")
				}
			} else if !st.Final() {
				p.setFault(missing.Error())
			}
		}
		// A pair is synced only with an empty DCL (DESIGN §4). One
		// recovered synced holds the regions of the writes in flight at
		// the crash, whose source leg may have landed and target leg not:
		// it goes back to copying here, before Open returns, so that no
		// one (status, a session's aggregate, a test) sees it synced while
		// the target still differs. Left to the run goroutine, that was a
		// window after Open in which status said synced and the legs
		// differed (TestRecoverSyncedWithDCL).
		d, _, _ := p.log.Counts()
		if st := p.getState(); d > 0 && (st == StateSynced || st == StateSwitched) {
			if err := p.transition(StateCopying, fmt.Sprintf("%d DCL regions found at startup: re-copying", d)); err != nil {
				// The run goroutine retries the same transition.
				m.log.Error().Err(err).Str("pair", rec.ID).Msg("recovery")
			}
		}
		p.zlog.Info().Str("state", p.getState().String()).Int64("cursor", rec.Cursor).Int64("dcl_regions", d).Msg("pair recovered")
		started = append(started, p)
	}
	if ids, err := m.dcl.PairIDs(); err == nil {
		for _, id := range ids {
			if !active[id] {
				if err := m.dcl.Drop(id); err != nil {
					m.log.Warn().Err(err).Str("pair", id).Msg("stray DCL not dropped")
				}
			}
		}
	}
	for _, p := range started {
		m.startPair(p)
	}
	return nil
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return s[0] + " and " + s[1]
}
