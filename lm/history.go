package lm

import (
	"fmt"
	"slices"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// Histories (events.go writes them): the timeline of every pair and
// session, kept after it ended (cancelled pairs too, whose records are
// deleted) and across restarts.

// PairHistory is the timeline and final figures of one pair.
type PairHistory = metavol.PairHistory

// SessionHistory is a session's own timeline with its pairs' timelines.
type SessionHistory struct {
	metavol.SessionHistory
	Pairs []PairHistory
}

// PairHistories returns the histories of the pairs whose source is the
// LUN named source (or whose ID is source; else whose target is it),
// oldest first; "" lists all.
// Pending entries are committed first.
func (m *Manager) PairHistories(source string) ([]PairHistory, error) {
	m.events.flushBriefly()
	var all []PairHistory
	var bare []metavol.Pair // records without a history
	if err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		if all, err = tx.PairHistories(); err != nil {
			return err
		}
		recs, err := tx.Pairs()
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, h := range all {
			have[h.ID] = true
		}
		for _, r := range recs {
			if !have[r.ID] { // a pair that ended before histories existed
				bare = append(bare, r)
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("migration history: %w", err)
	}
	for _, r := range bare { // names from m.mu, outside the transaction
		all = append(all, m.historyOfRecord(r))
	}
	var out []PairHistory
	for _, h := range all {
		if source == "" || h.SourceName == source || h.ID == source || m.lunName(h.SourceLUN) == source {
			out = append(out, h)
		}
	}
	if source != "" && len(out) == 0 {
		// A pair is named by its target too (as by every migration
		// command): the pairs that had this target, when none had it
		// as source.
		for _, h := range all {
			if h.TargetName == source || m.lunName(h.TargetLUN) == source {
				out = append(out, h)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b PairHistory) int { return a.Created.Compare(b.Created) })
	if source != "" && len(out) == 0 {
		return nil, fmt.Errorf("migration %s: no history: no pair ever had this source or target: %w", source, ErrNotFound)
	}
	return out, nil
}

// SessionHistoryOf returns the history of the session named name (the
// latest one of that name).
func (m *Manager) SessionHistoryOf(name string) (SessionHistory, error) {
	m.events.flushBriefly()
	var out SessionHistory
	err := m.db.View(func(tx *metavol.Tx) error {
		all, err := tx.SessionHistories()
		if err != nil {
			return err
		}
		found := false
		for _, h := range all {
			if h.Name == name && (!found || h.Created.After(out.Created)) {
				out.SessionHistory, found = h, true
			}
		}
		if !found {
			return fmt.Errorf("session %s: no history: no session ever had this name: %w", name, ErrNotFound)
		}
		for _, id := range out.PairIDs {
			h, err := tx.GetPairHistory(id)
			if err == nil {
				out.Pairs = append(out.Pairs, h)
			}
		}
		return nil
	})
	return out, err
}

// lastCancelled is the status of the latest pair of source found only in
// the histories (a cancelled pair: its record is deleted) created after
// after, or ok=false.
func (m *Manager) lastCancelled(source string, after time.Time) (PairStatus, bool) {
	hs, err := m.PairHistories(source)
	if err != nil || len(hs) == 0 {
		return PairStatus{}, false
	}
	h := hs[len(hs)-1]
	if !m.lunIs(h.SourceLUN, source) { // a LUN deleted and created again under the name
		return PairStatus{}, false
	}
	if h.Final == nil || h.Final.State != StateCancelled.String() || !h.Created.After(after) {
		return PairStatus{}, false
	}
	reason := ""
	for i := len(h.Entries) - 1; i >= 0; i-- {
		if h.Entries[i].To == StateCancelled.String() {
			reason = h.Entries[i].Reason
			break
		}
	}
	return PairStatus{ID: h.ID, Source: h.SourceName, Target: h.TargetName, SourceID: h.SourceLUN, TargetID: h.TargetLUN,
		State: StateCancelled.String(), Reason: reason, DataBytes: h.Final.DataBytes, RecopiedBytes: h.Final.RecopiedBytes,
		Vehicle: h.Final.Vehicle, Created: h.Created}, true
}

// historyOfRecord is what the record of a pair without a history says:
// its creation and its current state (and final figures if it ended).
func (m *Manager) historyOfRecord(r metavol.Pair) PairHistory {
	h := PairHistory{ID: r.ID, SourceLUN: r.SourceLUN, TargetLUN: r.TargetLUN, SourceName: m.lunName(r.SourceLUN),
		TargetName: m.lunName(r.TargetLUN), Session: r.Session, Created: r.Created,
		Entries: []metavol.HistoryEntry{
			{Time: r.Created, Event: "created", To: StateQueued.String(), Reason: "pair created"},
			{Time: r.Updated, Event: "state", To: r.State, Reason: r.Reason + " (from the pair record: no history was kept)"},
		}}
	if st, err := ParseState(r.State); err == nil && st.Final() {
		h.Final = figures(&h, &r, r.Updated)
	}
	return h
}

// lunIs reports whether the LUN with ID id exists and is named name.
func (m *Manager) lunIs(id, name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.mu.luns[id]
	return e != nil && e.name == name
}
