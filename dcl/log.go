package dcl

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// Log is the dirty-region bitmap of one pair. Safe for concurrent use.
type Log struct {
	s          *Store
	id         string
	regionSize int64
	regions    int64
	flush      func() error

	// mu guards the bitmaps. Never held during disk I/O; it is taken
	// before Store.mu when both are needed.
	mu struct {
		sync.Mutex
		marked   []uint64 // durable (or queued) "may differ"
		dcl      []uint64 // target known to differ
		touched  []uint64 // a write ended here since the last clear pass
		inflight map[int64]int32
		pending  map[int]*batch // page -> the commit that will contain it
		nmarked  int64
		ndcl     int64
		closed   bool
	}
}

// ID is the pair ID.
func (l *Log) ID() string { return l.id }

// RegionSize in bytes.
func (l *Log) RegionSize() int64 { return l.regionSize }

// Len is the number of regions.
func (l *Log) Len() int64 { return l.regions }

// Span returns the regions [first, last] touching bytes [off, off+n); n must
// be positive.
func (l *Log) Span(off, n int64) (first, last int64) {
	if n <= 0 {
		n = 1
	}
	first = off / l.regionSize
	last = (off + n - 1) / l.regionSize
	if last >= l.regions {
		last = l.regions - 1
	}
	return first, last
}

func (l *Log) pageBytesLocked(p int) []byte {
	lo := p * pageWords
	hi := lo + pageWords
	if hi > len(l.mu.marked) {
		hi = len(l.mu.marked)
	}
	out := make([]byte, (hi-lo)*8)
	for i := lo; i < hi; i++ {
		binary.LittleEndian.PutUint64(out[(i-lo)*8:], l.mu.marked[i])
	}
	return out
}

// queuePageLocked puts page p into the next group commit and returns it;
// after Store.Close a commit that failed with ErrClosed (the committer is
// gone: nothing would ever complete a new batch).
func (l *Log) queuePageLocked(p int) *batch {
	s := l.s
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return closedBatch()
	}
	b := s.mu.next
	b.pages[pageRef{l, p}] = struct{}{}
	s.mu.Unlock()
	l.mu.pending[p] = b
	return b
}

func bit(v []uint64, r int64) bool { return v[r>>6]&(1<<uint(r&63)) != 0 }
func set(v []uint64, r int64)      { v[r>>6] |= 1 << uint(r&63) }
func clr(v []uint64, r int64)      { v[r>>6] &^= 1 << uint(r&63) }

func (l *Log) check(first, last int64) error {
	if first < 0 || last >= l.regions || first > last {
		return fmt.Errorf("dcl %s: regions [%d,%d] of %d: %w", l.id, first, last, l.regions, ErrRange)
	}
	return nil
}

// markLocked sets the marked (and, if dcl, the DCL) bits of [first,last]
// and returns the commits to wait for (none if everything is durable).
func (l *Log) markLocked(first, last int64, dcl bool) []*batch {
	var waits []*batch
	queued := -1
	for r := first; r <= last; r++ {
		if dcl && !bit(l.mu.dcl, r) {
			set(l.mu.dcl, r)
			l.mu.ndcl++
		}
		p := int(r / pageRegions)
		if !bit(l.mu.marked, r) {
			set(l.mu.marked, r)
			l.mu.nmarked++
			if p != queued {
				waits = appendBatch(waits, l.queuePageLocked(p))
				queued = p
			}
			continue
		}
		if b := l.mu.pending[p]; b != nil {
			waits = appendBatch(waits, b)
		}
	}
	return waits
}

func appendBatch(w []*batch, b *batch) []*batch {
	for _, x := range w {
		if x == b {
			return w
		}
	}
	return append(w, b)
}

func (l *Log) wait(waits []*batch) error {
	if len(waits) == 0 {
		return nil
	}
	l.s.kickCommitter()
	var first error
	for _, b := range waits {
		<-b.done
		if b.err != nil && first == nil {
			first = b.err
		}
	}
	if first != nil {
		return fmt.Errorf("dcl %s: %w", l.id, first)
	}
	return nil
}

// lockToMark checks regions [first,last] and takes mu if the log still
// takes marks (neither it nor the store is closed); else mu is not held.
func (l *Log) lockToMark(first, last int64) error {
	if err := l.check(first, last); err != nil {
		return err
	}
	l.mu.Lock()
	if l.mu.closed || l.s.closed.Load() {
		l.mu.Unlock()
		return fmt.Errorf("dcl %s: %w", l.id, ErrClosed)
	}
	return nil
}

// BeginWrite records a write in flight on regions [first,last] and returns
// once their marks are durable. Writes to regions already durably marked
// cost no I/O. Every successful BeginWrite must be followed by EndWrite.
func (l *Log) BeginWrite(first, last int64) error {
	if err := l.lockToMark(first, last); err != nil {
		return err
	}
	for r := first; r <= last; r++ {
		l.mu.inflight[r]++
	}
	waits := l.markLocked(first, last, false)
	l.mu.Unlock()
	if err := l.wait(waits); err != nil {
		l.EndWrite(first, last, true)
		return err
	}
	return nil
}

// EndWrite ends a write begun with BeginWrite. differs says the target may
// now differ from the source (a leg failed): the regions go to the DCL.
func (l *Log) EndWrite(first, last int64, differs bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for r := first; r <= last; r++ {
		if c := l.mu.inflight[r] - 1; c <= 0 {
			delete(l.mu.inflight, r)
		} else {
			l.mu.inflight[r] = c
		}
		set(l.mu.touched, r)
		if differs && !bit(l.mu.dcl, r) {
			set(l.mu.dcl, r)
			l.mu.ndcl++
		}
	}
}

// MarkDCL puts regions [first,last] in the DCL (the target differs or will)
// and returns once the marks are durable.
func (l *Log) MarkDCL(first, last int64) error {
	if err := l.lockToMark(first, last); err != nil {
		return err
	}
	waits := l.markLocked(first, last, true)
	l.mu.Unlock()
	return l.wait(waits)
}

// MarkedToDCL puts every marked region in the DCL: after a failed sync of
// a leg, writes that completed there may not be on its disk. The marks are
// already durable (or queued for the writes still beginning), so nothing
// is committed.
func (l *Log) MarkedToDCL() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for w, x := range l.mu.marked {
		add := x &^ l.mu.dcl[w]
		l.mu.dcl[w] |= x
		l.mu.ndcl += int64(bits.OnesCount64(add))
	}
}

// IsDirty reports whether region r is in the DCL.
func (l *Log) IsDirty(r int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return r >= 0 && r < l.regions && bit(l.mu.dcl, r)
}

// Dirty returns up to max regions in the DCL, ascending, starting at from.
func (l *Log) Dirty(from int64, max int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int64
	if from < 0 {
		from = 0
	}
	for w := from >> 6; w < int64(len(l.mu.dcl)) && len(out) < max; w++ {
		x := l.mu.dcl[w]
		if w == from>>6 {
			x &^= (1 << uint(from&63)) - 1
		}
		for x != 0 && len(out) < max {
			b := bits.TrailingZeros64(x)
			out = append(out, w*64+int64(b))
			x &^= 1 << uint(b)
		}
	}
	return out
}

// Cleaned takes region r out of the DCL after it was re-copied while no
// write could touch it. Its durable mark is cleared lazily.
func (l *Log) Cleaned(r int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r >= 0 && r < l.regions && bit(l.mu.dcl, r) {
		clr(l.mu.dcl, r)
		l.mu.ndcl--
		set(l.mu.touched, r)
	}
}

// Counts returns the number of regions in the DCL, marked (on disk "may
// differ") and with writes in flight.
func (l *Log) Counts() (dcl, marked int64, inflight int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.ndcl, l.mu.nmarked, len(l.mu.inflight)
}

// ClearNow runs one clear pass ignoring the quiet interval: every marked
// region that is not in the DCL and has no write in flight is cleared, and
// the cleared pages are committed before it returns.
func (l *Log) ClearNow() error { return l.clear(true) }

func (l *Log) clearPass() error { return l.clear(false) }

func (l *Log) clear(now bool) error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	var cands []int64
	for w := range l.mu.marked {
		x := l.mu.marked[w] &^ l.mu.dcl[w]
		if !now {
			x &^= l.mu.touched[w]
		}
		for x != 0 {
			b := bits.TrailingZeros64(x)
			x &^= 1 << uint(b)
			r := int64(w)*64 + int64(b)
			if l.mu.inflight[r] == 0 {
				cands = append(cands, r)
			}
		}
	}
	for i := range l.mu.touched {
		l.mu.touched[i] = 0
	}
	l.mu.Unlock()
	if len(cands) == 0 {
		return nil
	}
	if l.flush != nil {
		if err := l.flush(); err != nil {
			return fmt.Errorf("dcl %s: flush before clear: %w", l.id, err)
		}
	}
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	var waits []*batch
	queued := -1
	for _, r := range cands {
		if !bit(l.mu.marked, r) || bit(l.mu.dcl, r) || bit(l.mu.touched, r) || l.mu.inflight[r] != 0 {
			continue
		}
		clr(l.mu.marked, r)
		l.mu.nmarked--
		if p := int(r / pageRegions); p != queued {
			waits = appendBatch(waits, l.queuePageLocked(p))
			queued = p
		}
	}
	l.mu.Unlock()
	if now {
		return l.wait(waits)
	}
	if len(waits) > 0 {
		l.s.kickCommitter()
	}
	return nil
}
