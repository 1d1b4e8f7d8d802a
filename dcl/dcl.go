package dcl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/rs/zerolog"
)

// PageBytes is the size of one persisted bitmap page: 4 KiB covers 32768
// regions (32 GiB at 1 MiB regions).
const PageBytes = 4096

const (
	pageWords   = PageBytes / 8
	pageRegions = PageBytes * 8
)

// DefaultRegionSize is the region size used when a caller passes 0.
const DefaultRegionSize = 1 << 20

// DefaultClearInterval is how often quiet marks are cleared.
const DefaultClearInterval = 2 * time.Second

// Errors.
var (
	// ErrClosed: the store or log was closed or dropped.
	ErrClosed = errors.New("dcl closed")
	// ErrRange: a region index outside the log.
	ErrRange = errors.New("region out of range")
)

// Options for Open.
type Options struct {
	Log zerolog.Logger
	// ClearInterval between lazy clear passes; 0 = DefaultClearInterval,
	// negative disables lazy clearing (ClearNow still works).
	ClearInterval time.Duration
}

// Store owns the committer and clearer goroutines of every Log kept in one
// meta volume. Shutdown order: Close refuses new marks, stops the clearer,
// commits what is pending, then stops the committer; every later mark
// fails with ErrClosed.
type Store struct {
	db  *metavol.DB
	log zerolog.Logger

	// closed is set (under mu) by Close; the fast check of BeginWrite and
	// MarkDCL. queuePageLocked checks mu.closed itself.
	closed atomic.Bool

	// commitMu is held while a batch is written, and by Drop and Forget
	// while they delete keys, so a dropped log's pages are never written
	// after the delete. It is the one lock held across a meta volume
	// commit in this package (it serialises them); Log.mu and Store.mu are
	// never held across I/O.
	commitMu sync.Mutex

	mu struct {
		sync.Mutex
		next   *batch
		logs   map[string]*Log
		closed bool
	}

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

type pageRef struct {
	l    *Log
	page int
}

// batch is one group commit: the pages touched since the previous one and
// the channel that releases everyone waiting on it.
type batch struct {
	pages map[pageRef]struct{}
	done  chan struct{}
	err   error
}

func newBatch() *batch {
	return &batch{pages: make(map[pageRef]struct{}), done: make(chan struct{})}
}

// closedBatch is a commit that has already failed with ErrClosed.
func closedBatch() *batch {
	b := &batch{done: make(chan struct{}), err: ErrClosed}
	close(b.done)
	return b
}

// Open starts a store on db. The caller keeps db open until Close returns.
func Open(db *metavol.DB, opts Options) *Store {
	s := &Store{
		db:   db,
		log:  opts.Log.With().Str("component", "dcl").Logger(),
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
	s.mu.next = newBatch()
	s.mu.logs = make(map[string]*Log)
	iv := opts.ClearInterval
	if iv == 0 {
		iv = DefaultClearInterval
	}
	s.wg.Add(1)
	go s.committer()
	if iv > 0 {
		s.wg.Add(1)
		go s.clearer(iv)
	}
	return s
}

// Close stops the goroutines after committing what is pending. Logs are
// unusable afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true
	s.closed.Store(true)
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	return nil
}

// Retry delays of the committer after a failed commit (a full meta
// filesystem, an I/O error): the pages stay queued and are retried after
// the delay, or at once when a writer needs them.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
)

func (s *Store) committer() {
	defer s.wg.Done()
	retry := time.NewTimer(retryMin)
	retry.Stop()
	defer retry.Stop()
	delay := time.Duration(0)
	commit := func() {
		if s.commitOnce() == nil {
			delay = 0
			return
		}
		delay = min(max(2*delay, retryMin), retryMax)
		retry.Reset(delay)
	}
	for {
		select {
		case <-s.kick:
			commit()
		case <-retry.C:
			commit()
		case <-s.stop:
			s.commitOnce()
			// Release anyone who queued after the last commit.
			s.mu.Lock()
			b := s.mu.next
			s.mu.next = newBatch()
			s.mu.Unlock()
			if len(b.pages) > 0 {
				b.err = ErrClosed
			}
			close(b.done)
			return
		}
	}
}

func (s *Store) kickCommitter() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// commitOnce writes the pending batch in one synced transaction. On error
// the pages stay queued for the next commit.
func (s *Store) commitOnce() error {
	s.mu.Lock()
	b := s.mu.next
	if len(b.pages) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.mu.next = newBatch()
	s.mu.Unlock()

	s.commitMu.Lock()
	type kv struct {
		id   string
		page int
		v    []byte
	}
	var kvs []kv
	for ref := range b.pages {
		l := ref.l
		l.mu.Lock()
		if !l.mu.closed {
			kvs = append(kvs, kv{l.id, ref.page, l.pageBytesLocked(ref.page)})
		}
		l.mu.Unlock()
	}
	err := s.db.UpdateDCL(func(tx *metavol.Tx) error {
		for _, e := range kvs {
			if err := tx.PutDCLPage(e.id, e.page, e.v); err != nil {
				return err
			}
		}
		return nil
	})
	s.commitMu.Unlock()
	if err != nil {
		err = fmt.Errorf("dcl: commit %d bitmap pages: %w", len(kvs), err)
		s.log.Error().Err(err).Msg("group commit failed")
	}

	for ref := range b.pages {
		l := ref.l
		l.mu.Lock()
		if l.mu.pending[ref.page] == b {
			delete(l.mu.pending, ref.page)
			if err != nil && !l.mu.closed {
				// Keep the page queued: the bits are set in memory and
				// must reach the disk with the next commit.
				l.queuePageLocked(ref.page)
			}
		}
		l.mu.Unlock()
	}
	b.err = err
	close(b.done)
	return err
}

func (s *Store) clearer(iv time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			for _, l := range s.logList() {
				if err := l.clearPass(); err != nil {
					s.log.Warn().Err(err).Str("pair", l.id).Msg("lazy clear skipped")
				}
			}
		}
	}
}

func (s *Store) logList() []*Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Log, 0, len(s.mu.logs))
	for _, l := range s.mu.logs {
		out = append(out, l)
	}
	return out
}

// PairIDs lists the pairs that have DCL keys on disk.
func (s *Store) PairIDs() ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *metavol.Tx) error {
		var err error
		ids, err = tx.DCLPairIDs()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dcl: list: %w", err)
	}
	return ids, nil
}

// Open returns the log of a pair covering size bytes, loading the bits
// found on disk: every loaded bit is in the DCL (the target may differ).
// regionSize 0 means DefaultRegionSize; a log that already exists keeps its
// stored region size. flush, if not nil, is called before cleared bits are
// written (it must make completed writes on both legs durable).
func (s *Store) Open(pairID string, size, regionSize int64, flush func() error) (*Log, error) {
	if pairID == "" || strings.Contains(pairID, "/") {
		return nil, fmt.Errorf("dcl: bad pair id %q", pairID)
	}
	if size <= 0 {
		return nil, fmt.Errorf("dcl %s: size %d must be positive", pairID, size)
	}
	if regionSize <= 0 {
		regionSize = DefaultRegionSize
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("dcl %s: %w", pairID, ErrClosed)
	}
	if _, ok := s.mu.logs[pairID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("dcl %s: already open", pairID)
	}
	s.mu.Unlock()

	var m metavol.DCLInfo
	var pages map[int][]byte
	found := false
	err := s.db.View(func(tx *metavol.Tx) error {
		var err error
		m, err = tx.GetDCLInfo(pairID)
		if errors.Is(err, metavol.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		pages, err = tx.DCLPages(pairID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dcl %s: load: %w", pairID, err)
	}
	if found && m.RegionSize > 0 {
		regionSize = m.RegionSize
	} else {
		m = metavol.DCLInfo{RegionSize: regionSize, Size: size}
		// Pages without a header are garbage (metavol.Tx.DeleteDCLs):
		// never let a new header adopt them.
		if err := s.db.UpdateDCL(func(tx *metavol.Tx) error {
			if err := tx.DeleteDCL(pairID); err != nil {
				return err
			}
			return tx.PutDCLInfo(pairID, m)
		}); err != nil {
			return nil, fmt.Errorf("dcl %s: create: %w", pairID, err)
		}
	}
	n := (size + regionSize - 1) / regionSize
	words := (n + 63) / 64
	l := &Log{
		s:          s,
		id:         pairID,
		regionSize: regionSize,
		regions:    n,
		flush:      flush,
	}
	l.mu.marked = make([]uint64, words)
	l.mu.dcl = make([]uint64, words)
	l.mu.touched = make([]uint64, words)
	l.mu.inflight = make(map[int64]int32)
	l.mu.pending = make(map[int]*batch)
	for p, v := range pages {
		// A page of another length was not written by this code: the
		// DCL cannot be trusted, and the pair must not load with it.
		if len(v)%8 != 0 || len(v) > pageWords*8 {
			return nil, fmt.Errorf("dcl %s: load: page %d has %d bytes (want a multiple of 8, at most %d): corrupt", pairID, p, len(v), pageWords*8)
		}
		for i := 0; i+8 <= len(v); i += 8 {
			w := int64(p)*pageWords + int64(i/8)
			if w >= words {
				break
			}
			x := binary.LittleEndian.Uint64(v[i:])
			l.mu.marked[w] |= x
		}
	}
	// Bits past the end (a shorter size than before) are ignored.
	if rem := n % 64; rem != 0 && words > 0 {
		l.mu.marked[words-1] &= (1 << uint(rem)) - 1
	}
	copy(l.mu.dcl, l.mu.marked)
	for _, w := range l.mu.marked {
		l.mu.nmarked += int64(bits.OnesCount64(w))
	}
	l.mu.ndcl = l.mu.nmarked

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil, fmt.Errorf("dcl %s: %w", pairID, ErrClosed)
	}
	if _, ok := s.mu.logs[pairID]; ok {
		return nil, fmt.Errorf("dcl %s: already open", pairID)
	}
	s.mu.logs[pairID] = l
	return l, nil
}

// Drop closes a pair's log (if open) and deletes its keys.
func (s *Store) Drop(pairID string) error {
	s.mu.Lock()
	l := s.mu.logs[pairID]
	delete(s.mu.logs, pairID)
	s.mu.Unlock()
	if l != nil {
		l.mu.Lock()
		l.mu.closed = true
		l.mu.pending = map[int]*batch{}
		l.mu.Unlock()
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if err := s.purgeLocked([]string{pairID}); err != nil {
		return fmt.Errorf("dcl %s: drop: %w", pairID, err)
	}
	return nil
}

// purgeLocked deletes the DCL keys of the pairs, in as many transactions
// as they need. commitMu is held.
func (s *Store) purgeLocked(pairIDs []string) error {
	for todo := pairIDs; len(todo) > 0; {
		var rest []string
		if err := s.db.UpdateDCL(func(tx *metavol.Tx) error {
			var err error
			rest, err = tx.DeleteDCLs(todo)
			return err
		}); err != nil {
			return err
		}
		todo = rest
	}
	return nil
}

// Purge deletes what is left of forgotten DCLs (the rest Forget
// returned): pages whose header is gone, garbage that is never loaded.
// The next start sweeps them too if this fails.
func (s *Store) Purge(pairIDs []string) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if err := s.purgeLocked(pairIDs); err != nil {
		return fmt.Errorf("dcl: purge the pages of %d forgotten logs: %w", len(pairIDs), err)
	}
	return nil
}

// Forget runs commit, the caller's meta volume transaction that deletes
// the DCLs of pairIDs (metavol.Tx.DeleteDCLs) together with what makes
// them obsolete (the split's swap, the cancel's record delete), while no
// group commit runs; if commit succeeds the logs are closed and forgotten
// without deleting again: none of their pages is written after commit.
// commit returns DeleteDCLs's rest (pairs whose headers are gone but not
// all their pages: the transaction was full), which Forget returns for
// Purge, to be called when the caller can afford it. If commit fails
// nothing changes. The logs must have no write beginning (the caller
// holds their LUNs' gates closed or the pairs detached). commit must not
// wait for a DCL mark.
func (s *Store) Forget(pairIDs []string, commit func() (rest []string, err error)) ([]string, error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	rest, err := commit()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	ls := make([]*Log, 0, len(pairIDs))
	for _, id := range pairIDs {
		if l := s.mu.logs[id]; l != nil {
			ls = append(ls, l)
			delete(s.mu.logs, id)
		}
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.mu.Lock()
		l.mu.closed = true
		l.mu.pending = map[int]*batch{}
		l.mu.Unlock()
	}
	return rest, nil
}

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

// BeginWrite records a write in flight on regions [first,last] and returns
// once their marks are durable. Writes to regions already durably marked
// cost no I/O. Every successful BeginWrite must be followed by EndWrite.
func (l *Log) BeginWrite(first, last int64) error {
	if err := l.check(first, last); err != nil {
		return err
	}
	l.mu.Lock()
	if l.mu.closed || l.s.closed.Load() {
		l.mu.Unlock()
		return fmt.Errorf("dcl %s: %w", l.id, ErrClosed)
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
	if err := l.check(first, last); err != nil {
		return err
	}
	l.mu.Lock()
	if l.mu.closed || l.s.closed.Load() {
		l.mu.Unlock()
		return fmt.Errorf("dcl %s: %w", l.id, ErrClosed)
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
