package lm

import "fmt"

// Migration sessions (DESIGN §1, §6; EMC patent US 7,080,225): a named
// group of pairs that is started, throttled, paused, resumed, cancelled and
// split together. A session only orchestrates its pairs through the
// Manager's pair operations (createPair, Pause, Resume, Cancel, Set, Split)
// and aggregates their status; it never changes how a pair works.
//
// Decisions:
//   - MaxActive (pairs of the session copying at once): the pairs past the
//     first MaxActive are created paused ("held", listed in the session
//     record); the session's runner resumes the next held pair, in the
//     order they were given, when one of its pairs is no longer copying
//     (synced). The Manager-wide MaxActive still applies on top.
//   - PauseSession pauses every copying or synced pair; a pair that is
//     queued for a Manager slot or interrupted at that moment is paused
//     by the runner as soon as it copies again. ResumeSession puts every
//     paused pair back in the held list and resumes as many as MaxActive
//     allows.
//   - AutoSplit: the runner splits all the session's pairs in one
//     consistent split (Manager.Split) once every pair is synced; a
//     deferred split is retried with backoff; any other failure (verify)
//     stops auto-split and shows as the session's reason.
//   - A cancelled pair's record is deleted by Manager.Cancel, so a pair of
//     the session that has no record any more reads as cancelled.
//   - CreateSession is all or nothing, also across a crash: every pair
//     record (held ones paused) and the session record are written in one
//     meta volume transaction, with the I/O gates of all the LUNs closed
//     (Manager.createPairs); before it nothing exists, after it all does.

// SessionState is a session's global state, aggregated from its pairs.
type SessionState int

// Session states.
const (
	SessionScheduled       SessionState = iota // created, nothing copied yet
	SessionCopying                             // some pair copies
	SessionSynced                              // every pair synced
	SessionPaused                              // paused by the admin
	SessionPartiallyFaulty                     // some pair interrupted or faulty
	SessionSplit                               // every pair split (final)
	SessionCancelled                           // cancelled (final)
	SessionSwitched                            // every pair switched (split --keep-source; rollback.go)
)

var sessionStateNames = [...]string{
	SessionScheduled:       "scheduled",
	SessionCopying:         "copying",
	SessionSynced:          "synced",
	SessionPaused:          "paused",
	SessionPartiallyFaulty: "partially-faulty",
	SessionSplit:           "split",
	SessionCancelled:       "cancelled",
	SessionSwitched:        "switched",
}

func (s SessionState) String() string {
	if s >= 0 && int(s) < len(sessionStateNames) {
		return sessionStateNames[s]
	}
	return fmt.Sprintf("SessionState(%d)", int(s))
}

// Final reports whether the session is over (split or cancelled).
func (s SessionState) Final() bool { return s == SessionSplit || s == SessionCancelled }

// sessionPairView is what the aggregation needs of one pair.
type sessionPairView struct {
	State PairState
	Held  bool // paused by the session, waiting for one of its copy slots
}

// aggregateState is the session's global state (the only place it is
// decided): any interrupted or faulty pair makes it partially-faulty; with
// every pair final it is split (all split) or cancelled; with every
// remaining pair synced it is synced (switched: switched); a paused session or a pair paused by
// the admin makes it paused; a copying or synced pair makes it copying;
// else nothing started yet: scheduled.
func aggregateState(paused bool, pairs []sessionPairView) SessionState {
	var split, cancelled, bad, synced, switched, copying, adminPaused int
	for _, p := range pairs {
		switch p.State {
		case StateSplit:
			split++
		case StateCancelled:
			cancelled++
		case StateFaulty, StateInterrupted:
			bad++
		case StateSynced, StateSplitting:
			synced++
		case StateSwitched, StateRollingBack:
			switched++
		case StateCopying:
			copying++
		case StatePaused:
			if !p.Held {
				adminPaused++
			}
		}
	}
	live := len(pairs) - split - cancelled
	switch {
	case len(pairs) == 0:
		return SessionCancelled
	case bad > 0:
		return SessionPartiallyFaulty
	case live == 0 && cancelled == 0:
		return SessionSplit
	case live == 0:
		return SessionCancelled
	case synced == live:
		return SessionSynced
	case switched == live:
		return SessionSwitched
	case paused || adminPaused > 0:
		return SessionPaused
	case copying > 0 || synced > 0 || switched > 0:
		return SessionCopying
	}
	return SessionScheduled
}
