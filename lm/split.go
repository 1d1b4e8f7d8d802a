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

// Split performs the (consistent) split of the pairs whose source LUNs are
// named (DESIGN §5): all must be synced; pairs created with Verify are
// compared region by region first; then every source and target LUN's I/O
// gate closes, in-flight I/O drains within maxPause (else everything is
// left as it was and ErrSplitTimeout is returned), and one meta volume
// transaction swaps the data volume IDs of every pair's LUNs and marks the
// pairs split. The pause is measured and recorded on every pair.
func (m *Manager) Split(sources []string, maxPause time.Duration) (SplitResult, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return SplitResult{}, fmt.Errorf("split: manager closed: %w", ErrState)
	}
	if len(sources) == 0 {
		return SplitResult{}, fmt.Errorf("split: no pairs named: %w", ErrInvalid)
	}
	if maxPause <= 0 {
		maxPause = DefaultMaxPause
	}
	var ps []*pair
	seen := map[string]bool{}
	for _, s := range sources {
		if seen[s] {
			continue
		}
		seen[s] = true
		p, err := m.activePair(s)
		if err != nil {
			return SplitResult{}, fmt.Errorf("split: %w", err)
		}
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].id < ps[j].id })
	for _, p := range ps {
		if err := p.splittable(); err != nil {
			return SplitResult{}, err
		}
	}
	// A leg truncated, deleted or replaced underneath lmtgt would hand the
	// host zeros after the swap: check both legs of every pair now (cheap:
	// an fstat and a stat each) and again inside the pause.
	for _, p := range ps {
		if err := p.verifyLegs("split"); err != nil {
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

	// Every pair → splitting, in one transaction, before the gates close.
	for _, p := range ps {
		p.mu.Lock()
	}
	locked := true
	unlockAll := func() {
		if locked {
			for _, p := range ps {
				p.mu.Unlock()
			}
			locked = false
		}
	}
	defer unlockAll()
	recs := make([]metavol.Pair, len(ps))
	for i, p := range ps {
		if err := checkTransition(p.name(), p.mu.state, StateSplitting); err != nil {
			return SplitResult{}, fmt.Errorf("split: %w", err)
		}
		recs[i] = p.recordLocked()
		recs[i].State = StateSplitting.String()
		recs[i].Reason = "split started"
	}
	if err := m.db.Update(func(tx *metavol.Tx) error {
		for _, r := range recs {
			if err := tx.PutPair(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return SplitResult{}, fmt.Errorf("split: persist splitting: %w", err)
	}
	for i, p := range ps {
		p.applyLocked(recs[i], StateSplitting)
	}
	// back returns every pair to synced (or interrupted) with a reason.
	back := func(reason string) {
		for _, p := range ps {
			to := StateSynced
			r := reason
			if f := p.fault.Load(); f != nil {
				to, r = StateInterrupted, *f
			}
			if err := p.transitionLocked(to, r); err != nil {
				p.zlog.Error().Err(err).Msg("split: cannot leave splitting")
			}
		}
	}

	// The swap makes each target the source LUN's data: what the copier
	// and the DCL re-copies wrote there must be on disk first, or a power
	// loss after the swap takes back data the host had synced on the
	// source. The copier is idle while splitting, so this is done before
	// the pause; host writes after it are durable when the host syncs.
	for _, p := range ps {
		if _, err := p.syncLegs(true, false, true); err != nil {
			p.setFault("sync before the split: " + err.Error())
			back("split refused: sync failed: " + err.Error())
			return SplitResult{}, fmt.Errorf("split: pair %s: sync before the swap: %w: %w", p.name(), err, ErrNotSynced)
		}
	}

	var gates []*gate
	for _, p := range ps {
		gates = append(gates, &p.src.gate, &p.tgt.gate)
	}
	t0 := time.Now()
	if !closeGates(gates, maxPause) {
		back(fmt.Sprintf("split deferred: in-flight I/O did not drain within %v", maxPause))
		return SplitResult{}, fmt.Errorf("split of %s: %w (budget %v)", names(ps), ErrSplitTimeout, maxPause)
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
		if f := p.fault.Load(); f != nil {
			openGates()
			back("")
			return SplitResult{}, fmt.Errorf("split: pair %s: during the drain: %s: %w", p.name(), *f, ErrNotSynced)
		}
		if d, _, _ := p.log.Counts(); d > 0 {
			openGates()
			back("split refused: the DCL is not empty after the drain")
			return SplitResult{}, fmt.Errorf("split: pair %s: DCL holds %d regions after the drain: %w", p.name(), d, ErrNotSynced)
		}
		if err := p.verifyLegs("split"); err != nil {
			openGates()
			back("split refused: " + err.Error())
			return SplitResult{}, err
		}
	}

	// One transaction: swap the data volume IDs, mark the pairs split.
	newSrcSize := make([]int64, len(ps))
	newTgtSize := make([]int64, len(ps))
	for i, p := range ps {
		recs[i] = p.recordLocked()
		recs[i].State = StateSplit.String()
		recs[i].Reason = "split"
		recs[i].Cursor, recs[i].CopiedBytes = p.size, p.size
	}
	err := m.db.Update(func(tx *metavol.Tx) error {
		for i, p := range ps {
			sl, err := tx.GetLUN(p.src.id)
			if err != nil {
				return err
			}
			tl, err := tx.GetLUN(p.tgt.id)
			if err != nil {
				return err
			}
			sl.VolumeID, tl.VolumeID = tl.VolumeID, sl.VolumeID
			// The target LUN now holds the old source's data volume,
			// which may be smaller than the target LUN was.
			if o, err := p.srcVol.get(); err == nil && o.raw.Size() < tl.Size {
				tl.Size = sl.Size
			}
			newSrcSize[i], newTgtSize[i] = sl.Size, tl.Size
			if err := tx.PutLUN(sl); err != nil {
				return err
			}
			if err := tx.PutLUN(tl); err != nil {
				return err
			}
			recs[i].SplitPauseNS = int64(time.Since(t0))
			if err := tx.PutPair(recs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		openGates()
		back("split failed: " + err.Error())
		return SplitResult{}, fmt.Errorf("split of %s: swap: %w", names(ps), err)
	}
	if h := m.hooks.splitCommitted; h != nil {
		h()
	}
	for i, p := range ps {
		p.src.vol, p.tgt.vol = p.tgtVol, p.srcVol
		p.src.pair = nil
		p.tgt.targetOf = nil
		p.src.size.Store(newSrcSize[i])
		p.tgt.size.Store(newTgtSize[i])
		p.applyLocked(recs[i], StateSplit)
	}
	openGates()
	pause := time.Since(t0)
	unlockAll()

	res := SplitResult{Pause: pause, PauseMS: float64(pause) / 1e6}
	for i, p := range ps {
		res.Pairs = append(res.Pairs, p.name())
		recs[i].SplitPauseNS = int64(pause)
		p.mu.Lock()
		p.mu.rec.SplitPauseNS = int64(pause)
		p.mu.Unlock()
	}
	if err := m.db.Update(func(tx *metavol.Tx) error {
		for _, r := range recs {
			if err := tx.PutPair(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		m.log.Warn().Err(err).Msg("split: could not record the measured pause")
	}
	for _, p := range ps {
		p.stopRun()
		if err := m.dcl.Drop(p.id); err != nil {
			p.zlog.Warn().Err(err).Msg("split: DCL not dropped (dropped at the next start)")
		}
		m.mu.Lock()
		delete(m.mu.pairs, p.id)
		m.mu.Unlock()
		p.zlog.Info().Dur("pause", pause).Msg("pair split")
	}
	return res, nil
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

// splittable says why the pair cannot be split now, or nil.
func (p *pair) splittable() error {
	for _, e := range []*lunEntry{p.src, p.tgt} {
		if err := e.fenced("split"); err != nil {
			return fmt.Errorf("split: pair %s: %w", p.name(), err)
		}
	}
	st := p.getState()
	if st != StateSynced {
		p.mu.Lock()
		reason := p.mu.rec.Reason
		p.mu.Unlock()
		return fmt.Errorf("split: pair %s (%s → %s) is %s (%s): %w", p.name(), p.src.name, p.tgt.name, st, reason, ErrNotSynced)
	}
	if f := p.fault.Load(); f != nil {
		return fmt.Errorf("split: pair %s: %s: %w", p.name(), *f, ErrNotSynced)
	}
	if d, _, _ := p.log.Counts(); d > 0 {
		return fmt.Errorf("split: pair %s: %d regions still to re-copy: %w", p.name(), d, ErrNotSynced)
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
	so, err := p.srcVol.get()
	if err != nil {
		return fmt.Errorf("verify %s: %w", p.name(), err)
	}
	to, err := p.tgtVol.get()
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
			_, err := m.Split([]string{p.name()}, 0)
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
