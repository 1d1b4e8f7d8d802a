package lm

import (
	"fmt"
	"sort"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// Pairs lists the active pairs and the finished (split) ones, by source
// name then creation time.
func (m *Manager) Pairs() []PairStatus {
	active := m.activePairs()
	seen := map[string]bool{}
	var out []PairStatus
	for _, p := range active {
		out = append(out, p.status())
		seen[p.id] = true
	}
	out = append(out, m.unloadedStatuses()...)
	for _, r := range m.finishedRecords() {
		if !seen[r.ID] {
			out = append(out, m.recordStatus(r))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Created.Before(out[j].Created)
	})
	return out
}

// Pair is the status of the migration of the LUN named source: the active
// pair, else the latest finished one.
func (m *Manager) Pair(source string) (PairStatus, error) {
	if p, err := m.activePair(source); err == nil {
		return p.status(), nil
	}
	m.mu.Lock()
	u := m.unloadedLocked(source)
	m.mu.Unlock()
	if u != nil {
		return m.unloadedStatus(u), nil
	}
	var best *PairStatus
	for _, r := range m.endedNamed(m.finishedRecords(), source) { // sessionref.go: source, ID or target
		st := m.recordStatus(r)
		if best == nil || st.Created.After(best.Created) {
			best = &st
		}
	}
	var after time.Time
	if best != nil {
		after = best.Created
	}
	if c, ok := m.lastCancelled(source, after); ok { // history.go: its record is gone
		return c, nil
	}
	if best == nil {
		return PairStatus{}, fmt.Errorf("migration of %s: %w", source, ErrNotFound)
	}
	return *best, nil
}

func (m *Manager) finishedRecords() []metavol.Pair {
	var recs []metavol.Pair
	m.db.View(func(tx *metavol.Tx) error {
		all, err := tx.Pairs()
		for _, r := range all {
			if st, err := ParseState(r.State); err == nil && st.Final() {
				recs = append(recs, r)
			}
		}
		return err
	})
	return recs
}

func (m *Manager) lunName(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.mu.luns[id]; e != nil {
		return e.name
	}
	return id
}

func (m *Manager) recordStatus(r metavol.Pair) PairStatus {
	return PairStatus{
		ID:               r.ID,
		Source:           m.lunName(r.SourceLUN),
		Target:           m.lunName(r.TargetLUN),
		SourceID:         r.SourceLUN,
		TargetID:         r.TargetLUN,
		State:            r.State,
		Reason:           r.Reason,
		CopiedBytes:      r.DataBytes + r.RecopiedBytes,
		SkippedBytes:     r.SkippedBytes,
		DoneBytes:        r.CopiedBytes,
		CursorBytes:      r.Cursor,
		TotalBytes:       r.Cursor, // final records: the copy covered the LUN
		DataBytes:        r.DataBytes,
		RecopiedBytes:    r.RecopiedBytes,
		Vehicle:          r.Vehicle,
		Speed:            Speed(r.Speed),
		MaxMBps:          r.MaxMBps,
		AutoSplit:        r.AutoSplit,
		Verify:           r.Verify,
		SplitPauseMS:     float64(r.SplitPauseNS) / 1e6,
		Created:          r.Created,
		MaxHostLatency:   time.Duration(r.MaxHostLatencyNS),
		EstimateDuration: time.Duration(r.EstimateNS),
		EstimateBytes:    r.EstimateBytes,
		ActualDuration:   time.Duration(r.ActualNS),
		Priority:         recPriority(r.Priority),
		StartAt:          r.StartAt,
		Session:          m.sessionName(r.Session),
		Windows:          r.Windows,
		MaxElapsed:       time.Duration(r.MaxElapsedNS),
		CopyElapsed:      time.Duration(r.CopyElapsedNS),
		Switched:         r.Switched,
	}
}

// status is the pair as shown by `migration show`.
func (p *pair) status() PairStatus {
	done := p.done.Load()
	moved := p.dataBytes.Load() + p.recopyBytes.Load()
	p.mu.Lock()
	rec := p.recordLocked()
	v := p.view()
	rate, progress := p.mu.rate.sample(moved, done)
	p.mu.Unlock()
	st := v.state
	s := p.m.recordStatus(rec)
	s.Source, s.Target = p.src.name, p.tgt.name
	s.State = st.String()
	if v.fault != "" && !st.Final() && st != StateInterrupted {
		s.Reason = v.fault
	}
	s.DoneBytes = done
	s.CursorBytes = p.issued.Load()
	s.TotalBytes = p.size
	d, _, _ := p.log.Counts()
	s.DCLBytes = d * p.region
	s.RateBps = int64(rate)
	logical := p.size - done
	alloc, known := p.allocatedAbove()
	if st == StateSynced || st.Final() || rec.Switched {
		logical, alloc, known = 0, 0, true
	}
	switch {
	case known:
		s.RemainingBytes = alloc + s.DCLBytes
	default:
		s.RemainingBytes = logical + s.DCLBytes
	}
	switch {
	case s.RemainingBytes <= 0:
	case rate > 0 && known:
		// Holes cost no transfer and pass unthrottled: the time left is
		// the allocated bytes at the rate of bytes really moved.
		s.ETASeconds = int64(float64(s.RemainingBytes)/rate + 0.5)
	case progress > 0:
		s.ETASeconds = int64(float64(logical+s.DCLBytes)/progress + 0.5)
	}
	if w, until, el := p.windowStatus(); w != nil { // schedule_window.go
		s.Window, s.WindowSpeed, s.WindowMaxMBps, s.WindowUntil = w.String(), w.Speed, w.MaxMBps, until
		s.CopyElapsed = el
	} else {
		s.WindowUntil, s.CopyElapsed = until, el
	}
	s.QueuePos = p.m.queue.position(p)
	s.MaxActive, _, _ = p.m.queue.counts()
	if st != StateCopying {
		// Only a copying pair moves data (synced, switched, paused,
		// queued, interrupted ... copy nothing): the sampler's last
		// window is history.
		s.RateBps, s.ETASeconds = 0, 0
	}
	p.guardStatus(&s)
	return s
}

// allocRefresh is how often a running copy looks at the source's extents
// above its cursor for status (a walk costs two seeks per extent).
const allocRefresh = time.Second

// allocatedAbove is the source's allocated bytes above the copy cursor,
// from the copy's last walk of its extents (lookAllocated), less the
// bytes copied since; false before any walk. Status does no I/O for it.
func (p *pair) allocatedAbove() (int64, bool) {
	moved := p.dataBytes.Load()
	p.mu.Lock()
	a := p.mu.alloc
	p.mu.Unlock()
	if a.at.IsZero() {
		return 0, false
	}
	return max(0, a.bytes-(moved-a.moved)), true
}

// lookAllocated walks the source's extents above the copy cursor (no lock
// held) and keeps the result for status. Called by a running copy: when
// it starts and every allocRefresh (its guard's ticker).
func (p *pair) lookAllocated() {
	done, moved := p.done.Load(), p.dataBytes.Load()
	// The cursor only moves up: bytes copied between the load of done and
	// the walk are counted twice at worst (remaining shown a bit low,
	// until the next look).
	o, err := p.legs().src.get()
	if err != nil {
		return
	}
	n, err := allocatedBytes(o.raw, done, p.size)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.mu.alloc = allocLook{at: time.Now(), bytes: n, moved: moved}
	p.mu.Unlock()
}

// allocLook is a walk of the source's extents above the copy cursor.
type allocLook struct {
	at    time.Time
	bytes int64 // allocated bytes found above the cursor
	moved int64 // dataBytes at the time
}
