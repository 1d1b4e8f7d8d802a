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
