package lm

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/lmtgt/lmtgt/lm/histogram"
)

// splitStats counts what the splits of this process did, for metrics:
// the host I/O pause of every split that swapped (one observation per
// split, however many pairs it carried) and the splits deferred because
// in-flight I/O did not drain within the pause budget. Owned by the
// Manager; written only by split (split.go), read by SplitStats.
type splitStats struct {
	pauses    *histogram.Histogram
	deferrals atomic.Uint64
}

func (s *splitStats) init() { s.pauses = histogram.New(histogram.PauseBounds()) }

// SplitStats is a snapshot of the split counters since the Manager was
// opened (they start from zero at every start).
type SplitStats struct {
	// Pauses: host I/O pause of each split (consistent or not) that
	// swapped the volumes.
	Pauses histogram.Snapshot
	// Deferrals: splits given up because the drain exceeded the pause
	// budget (ErrSplitTimeout); the pairs stayed synced.
	Deferrals uint64
}

// SplitStats snapshots the split counters. It takes no lock.
func (m *Manager) SplitStats() SplitStats {
	return SplitStats{Pauses: m.splits.pauses.Snapshot(), Deferrals: m.splits.deferrals.Load()}
}

// LivePairs lists the pairs that have not ended: the active ones and the
// ones that could not be loaded (state PairOffline), by source name. It
// reads no finished record (Pairs does), so its cost does not grow with
// the history: metrics call it on every scrape.
func (m *Manager) LivePairs() []PairStatus {
	m.mu.Lock()
	active := make([]*pair, 0, len(m.mu.pairs))
	for _, p := range m.mu.pairs {
		active = append(active, p)
	}
	m.mu.Unlock()
	out := make([]PairStatus, 0, len(active))
	for _, p := range active {
		if s := p.status(); !isFinal(s.State) {
			out = append(out, s)
		}
	}
	out = append(out, m.unloadedStatuses()...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Created.Before(out[j].Created)
	})
	return out
}

// isFinal reports whether a status's state is a final PairState (a pair
// that split or was cancelled while it was being listed).
func isFinal(state string) bool {
	st, err := ParseState(state)
	return err == nil && st.Final()
}

// observeSplit records the pause of a split that swapped.
func (s *splitStats) observeSplit(pause time.Duration) { s.pauses.Observe(pause) }
