package lm

import (
	"maps"
	"slices"
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

// PairCounters is a live pair as metrics see it: its names and the
// counters it keeps itself, read without the rate sampler (a scrape
// changes nothing) and without the meta volume.
type PairCounters struct {
	ID             string
	Source, Target string // LUN names
	State          string // a PairState, or PairOffline
	Created        time.Time
	// SizeBytes: bytes the migration covers (the source LUN size).
	// DoneBytes: the prefix of the LUN the initial copy has finished.
	SizeBytes, DoneBytes int64
	// CopiedBytes: bytes the initial copy transferred (holes and zero
	// chunks are not); RecopiedBytes: bytes the DCL re-copies transferred.
	// Both are kept in the pair's record: they only grow while the
	// process runs, and resume from the last checkpoint after a restart.
	CopiedBytes, RecopiedBytes int64
	// DCLBytes: bytes marked in the DCL, still to re-copy.
	DCLBytes int64
}

// LivePairs lists the pairs that have not ended: the active ones and the
// ones that could not be loaded (state PairOffline), by source name then
// creation. It reads no finished record (Pairs does), so its cost does
// not grow with the history: metrics call it on every scrape.
func (m *Manager) LivePairs() []PairCounters {
	m.mu.Lock()
	active := slices.Collect(maps.Values(m.mu.pairs))
	unloaded := slices.Collect(maps.Values(m.mu.unloaded))
	m.mu.Unlock()
	out := make([]PairCounters, 0, len(active)+len(unloaded))
	for _, p := range active {
		st := p.view().state
		if st.Final() { // split or cancelled while being listed
			continue
		}
		d, _, _ := p.log.Counts()
		p.mu.Lock()
		created := p.mu.rec.Created
		p.mu.Unlock()
		out = append(out, PairCounters{
			ID: p.id, Source: p.src.name, Target: p.tgt.name, State: st.String(), Created: created,
			SizeBytes: p.size, DoneBytes: p.done.Load(),
			CopiedBytes: p.dataBytes.Load(), RecopiedBytes: p.recopyBytes.Load(),
			DCLBytes: d * p.region,
		})
	}
	for _, u := range unloaded {
		r := u.rec
		out = append(out, PairCounters{
			ID: r.ID, Source: m.lunName(r.SourceLUN), Target: m.lunName(r.TargetLUN), State: PairOffline,
			Created: r.Created, SizeBytes: m.lunSize(r.SourceLUN), DoneBytes: r.Cursor,
			CopiedBytes: r.DataBytes, RecopiedBytes: r.RecopiedBytes,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Created.Before(out[j].Created)
	})
	return out
}

// lunSize is the size of LUN id, 0 if it is not known.
func (m *Manager) lunSize(id string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.mu.luns[id]; e != nil {
		return e.size.Load()
	}
	return 0
}

// observeSplit records the pause of a split that swapped.
func (s *splitStats) observeSplit(pause time.Duration) { s.pauses.Observe(pause) }
