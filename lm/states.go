package lm

import "fmt"

// PairState is the state of a migration pair (DESIGN §6).
//
// Allowed transitions (the table below is the only place they are decided):
//
//	scheduled   → queued       its start time came (--start-at; schedule.go)
//	queued      → copying      a copy slot became free
//	copying     → queued       max active lowered below the pairs copying (queue.go)
//	copying     → synced       the cursor reached the end and the DCL is empty
//	synced      → splitting    split started (gates about to close)
//	splitting   → split        the volume IDs were swapped (final)
//	splitting   → synced       split deferred (drain timeout) or refused after the drain
//	splitting   → interrupted  a target write failed during the drain
//	queued|copying|synced → paused  admin pause (a session's pause too)
//	paused      → copying      admin resume (re-copies only the DCL and what is above the cursor)
//	paused      → queued       admin resume while no copy slot is free (queue.go)
//	copying|synced → interrupted  the target (or the copy's source read) failed
//	interrupted → copying      the target answers again; re-copy
//	interrupted → faulty       the retry budget is spent (final)
//	synced      → copying      the DCL is not empty (after a restart or a late failure)
//	any non-final → cancelled  admin cancel (final)
//
// Rollback after the switch (split --keep-source, docs/design.md "Rollback
// after the switch"). The record's Switched field says the pair mirrors
// back: its LUNs' data volumes are swapped, the new volume is the primary
// leg and the old one the secondary; copying, paused and interrupted then
// mean the same as before with the legs reversed, and the in-sync state
// is switched instead of synced:
//
//	splitting   → switched     the volume IDs were swapped, mirroring back (split --keep-source)
//	switched    → rolling-back rollback started (gates about to close)
//	rolling-back → synced      the volume IDs were swapped back (the pair is a synced pair again)
//	rolling-back → switched    rollback deferred (drain timeout) or refused after the drain
//	rolling-back → interrupted the old volume failed during the drain
//	switched    → paused | interrupted | copying   as synced (legs reversed)
//	copying     → switched     a switched pair's re-copy (new → old) is done
//	switched|copying|queued|paused|interrupted → split    commit (only a switched pair: Manager.commit checks it;
//	                           queued: its re-copy waits for a slot, after max active was lowered)
//
// split, cancelled and faulty are final: nothing leaves them.
type PairState int

// Pair states.
const (
	StateQueued PairState = iota
	StateCopying
	StateSynced
	StatePaused
	StateInterrupted
	StateSplitting
	StateSplit
	StateCancelled
	StateFaulty
	// StateScheduled: created with a start time not reached yet
	// (schedule.go); host writes go to both legs as in queued.
	StateScheduled
	StateSwitched
	StateRollingBack
)

var stateNames = [...]string{
	StateQueued:      "queued",
	StateCopying:     "copying",
	StateSynced:      "synced",
	StatePaused:      "paused",
	StateInterrupted: "interrupted",
	StateSplitting:   "splitting",
	StateSplit:       "split",
	StateCancelled:   "cancelled",
	StateFaulty:      "faulty",
	StateScheduled:   "scheduled",
	StateSwitched:    "switched",
	StateRollingBack: "rolling-back",
}

func (s PairState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("PairState(%d)", int(s))
}

// ParseState is the inverse of String.
func ParseState(s string) (PairState, error) {
	for i, n := range stateNames {
		if n == s {
			return PairState(i), nil
		}
	}
	return 0, invalidf("pair state %q", s)
}

// Final reports whether nothing can leave the state.
func (s PairState) Final() bool {
	return s == StateSplit || s == StateCancelled || s == StateFaulty
}

// transitions lists every allowed move except "→ cancelled", which every
// non-final state allows.
var transitions = map[PairState][]PairState{
	StateScheduled:   {StateQueued},
	StateQueued:      {StateCopying, StatePaused, StateSplit},
	StateCopying:     {StateSynced, StatePaused, StateInterrupted, StateQueued, StateSwitched, StateSplit},
	StateSynced:      {StateSplitting, StatePaused, StateInterrupted, StateCopying},
	StatePaused:      {StateCopying, StateQueued, StateSplit},
	StateInterrupted: {StateCopying, StateFaulty, StateSplit},
	StateSplitting:   {StateSplit, StateSynced, StateInterrupted, StateSwitched},
	StateSwitched:    {StateRollingBack, StatePaused, StateInterrupted, StateCopying, StateSplit},
	StateRollingBack: {StateSynced, StateSwitched, StateInterrupted},
}

// CanTransition reports whether from → to is allowed.
func CanTransition(from, to PairState) bool {
	if from.Final() {
		return false
	}
	if to == StateCancelled {
		return true
	}
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// checkTransition returns a wrapped ErrState for a refused move.
func checkTransition(pair string, from, to PairState) error {
	if !CanTransition(from, to) {
		return fmt.Errorf("pair %s: %s → %s: %w", pair, from, to, ErrState)
	}
	return nil
}
