package lm

import (
	"errors"
	"testing"
)

func TestTransitions(t *testing.T) {
	all := []PairState{StateQueued, StateCopying, StateSynced, StatePaused, StateInterrupted,
		StateSplitting, StateSplit, StateCancelled, StateFaulty, StateScheduled, StateSwitched, StateRollingBack}
	allowed := map[[2]PairState]bool{
		{StateQueued, StateCopying}:        true,
		{StateCopying, StateSynced}:        true,
		{StateSynced, StateSplitting}:      true,
		{StateSplitting, StateSplit}:       true,
		{StateSplitting, StateSynced}:      true,
		{StateSplitting, StateInterrupted}: true,
		{StateQueued, StatePaused}:         true,
		{StateCopying, StatePaused}:        true,
		{StateSynced, StatePaused}:         true,
		{StatePaused, StateCopying}:        true,
		{StateCopying, StateInterrupted}:   true,
		{StateSynced, StateInterrupted}:    true,
		{StateInterrupted, StateCopying}:   true,
		{StateInterrupted, StateFaulty}:    true,
		{StateSynced, StateCopying}:        true,
		{StateQueued, StateCancelled}:      true,
		{StateCopying, StateCancelled}:     true,
		{StateSynced, StateCancelled}:      true,
		{StatePaused, StateCancelled}:      true,
		{StateInterrupted, StateCancelled}: true,
		{StateSplitting, StateCancelled}:   true,
		{StateScheduled, StateQueued}:      true,
		{StateScheduled, StateCancelled}:   true,
		{StateCopying, StateQueued}:        true,
		{StatePaused, StateQueued}:         true,
		// Rollback after the switch.
		{StateSplitting, StateSwitched}:      true,
		{StateSwitched, StateRollingBack}:    true,
		{StateRollingBack, StateSynced}:      true,
		{StateRollingBack, StateSwitched}:    true,
		{StateRollingBack, StateInterrupted}: true,
		{StateSwitched, StatePaused}:         true,
		{StateSwitched, StateInterrupted}:    true,
		{StateSwitched, StateCopying}:        true,
		{StateCopying, StateSwitched}:        true,
		{StateSwitched, StateSplit}:          true,
		{StateCopying, StateSplit}:           true,
		{StatePaused, StateSplit}:            true,
		{StateInterrupted, StateSplit}:       true,
		{StateQueued, StateSplit}:            true, // commit of a switched pair requeued by max active
		{StateSwitched, StateCancelled}:      true,
		{StateRollingBack, StateCancelled}:   true,
	}
	for _, from := range all {
		for _, to := range all {
			want := allowed[[2]PairState{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("%s → %s: allowed=%v, want %v", from, to, got, want)
			}
			err := checkTransition("p", from, to)
			if want != (err == nil) || (err != nil && !errors.Is(err, ErrState)) {
				t.Errorf("%s → %s: checkTransition = %v", from, to, err)
			}
		}
	}
	for _, s := range all {
		p, err := ParseState(s.String())
		if err != nil || p != s {
			t.Errorf("ParseState(%q) = %v, %v", s, p, err)
		}
		if s.Final() != (s == StateSplit || s == StateCancelled || s == StateFaulty) {
			t.Errorf("%s: Final()=%v", s, s.Final())
		}
	}
	if _, err := ParseState("bogus"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseState(bogus) = %v", err)
	}
	if PairState(99).String() != "PairState(99)" {
		t.Error("String of an unknown state")
	}
}
