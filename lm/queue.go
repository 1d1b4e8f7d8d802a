package lm

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The copy queue: which pairs copy now. A pair that wants to copy (queued,
// or copying again after an interruption) asks the Manager's copyQueue
// for a slot; at most Limit pairs hold one. Free slots go to the waiting
// pairs in priority order (higher first), then creation order (older
// first), then pair ID: never in the order they happened to ask.
//
// Decisions:
//   - Priority is 1..9, higher first; the names low, medium and high
//     (Huawei's levels) are 1, 5 and 9. The default is medium (5); a
//     record without one (written before priorities existed) reads as 5.
//   - The limit (serve --max-active, Options.MaxActive) changes at run
//     time (Manager.SetLimits, `lmtgt config set max-active N`). Raised:
//     the next waiting pairs start at once. Lowered below the number of
//     pairs copying: the pairs past the limit with the lowest priority
//     (newest first among equals) go back to queued ("max active lowered
//     to N"), their copy stops after the chunk in flight and nothing
//     copied is copied again (the cursor and the DCL stay).
//   - A higher priority pair never preempts a copying one: priority
//     decides who gets the next free slot.
//   - Resume of a paused pair (migration resume) goes to queued, saying
//     so, when no slot is free for it, and to copying otherwise.
//   - The limits set at run time are not persisted: a restart takes the
//     serve flags again (change them there to keep a value).
//
// Lock: copyQueue.mu is a leaf: taken by the run goroutines and the admin
// operations with no pair lock held, and nothing is taken under it.

// Priorities of a pair (higher copies first).
const (
	PriorityLow     = 1
	PriorityMedium  = 5
	PriorityHigh    = 9
	PriorityDefault = PriorityMedium
)

// ParsePriority reads a priority: low, medium, high or a number 1..9.
func ParsePriority(obj, s string) (int, error) {
	switch strings.ToLower(s) {
	case "":
		return PriorityDefault, nil
	case "low":
		return PriorityLow, nil
	case "medium":
		return PriorityMedium, nil
	case "high":
		return PriorityHigh, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 9 {
		return 0, refuse(ErrInvalid, obj, "priority %q: want low, medium, high or a number from 1 (lowest) to 9 (highest)", s)
	}
	return n, nil
}

// PriorityName is the name of a priority level, or its number.
func PriorityName(n int) string {
	switch n {
	case 0, PriorityMedium:
		return "medium"
	case PriorityLow:
		return "low"
	case PriorityHigh:
		return "high"
	}
	return strconv.Itoa(n)
}

// recPriority is a record's priority (0: written before priorities: medium).
func recPriority(n int) int {
	if n == 0 {
		return PriorityDefault
	}
	return n
}

// queueKey orders the pairs that wait for a slot.
type queueKey struct {
	priority int
	created  time.Time
	id       string
}

// before reports whether a is served before b.
func (a queueKey) before(b queueKey) bool {
	if a.priority != b.priority {
		return a.priority > b.priority
	}
	if !a.created.Equal(b.created) {
		return a.created.Before(b.created)
	}
	return a.id < b.id
}

func compareKeys(a, b queueKey) int {
	if a.before(b) {
		return -1
	}
	if b.before(a) {
		return 1
	}
	return 0
}

type waiter struct {
	key     queueKey
	granted chan struct{} // closed when the slot is given
}

// copyQueue grants the copy slots (see above).
type copyQueue struct {
	mu struct {
		sync.Mutex
		limit   int
		holders map[*pair]queueKey
		waiting map[*pair]*waiter
	}
}

func newCopyQueue(limit int) *copyQueue {
	q := &copyQueue{}
	q.mu.limit = limit
	q.mu.holders = map[*pair]queueKey{}
	q.mu.waiting = map[*pair]*waiter{}
	return q
}

// grantLocked gives free slots to the best waiters. mu is held.
func (q *copyQueue) grantLocked() {
	for len(q.mu.holders) < q.mu.limit && len(q.mu.waiting) > 0 {
		var best *pair
		for p, w := range q.mu.waiting {
			if best == nil || w.key.before(q.mu.waiting[best].key) {
				best = p
			}
		}
		w := q.mu.waiting[best]
		delete(q.mu.waiting, best)
		q.mu.holders[best] = w.key
		close(w.granted)
	}
}

// acquire waits for a copy slot for p. It returns true once p holds one,
// false when ctx ends or wake fires first (p then waits no more; the
// caller re-checks its state and asks again).
func (q *copyQueue) acquire(ctx context.Context, p *pair, key queueKey, wake <-chan struct{}) bool {
	q.mu.Lock()
	if _, ok := q.mu.holders[p]; ok {
		q.mu.Unlock()
		return true
	}
	w := q.mu.waiting[p]
	if w == nil {
		w = &waiter{key: key, granted: make(chan struct{})}
		q.mu.waiting[p] = w
		q.grantLocked()
	}
	q.mu.Unlock()
	select {
	case <-w.granted:
		return true
	case <-ctx.Done():
	case <-wake:
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.mu.holders[p]; ok {
		return true
	}
	delete(q.mu.waiting, p)
	return false
}

// release gives p's slot (if any) back; a waiting p stops waiting.
func (q *copyQueue) release(p *pair) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.mu.waiting, p)
	if _, ok := q.mu.holders[p]; ok {
		delete(q.mu.holders, p)
		q.grantLocked()
	}
}

// setLimit changes the number of slots and returns the holders past the
// new limit (lowest priority, newest first), which the caller sends back
// to queued.
func (q *copyQueue) setLimit(n int) []*pair {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.mu.limit = n
	q.grantLocked()
	over := len(q.mu.holders) - n
	if over <= 0 {
		return nil
	}
	hs := make([]*pair, 0, len(q.mu.holders))
	for p := range q.mu.holders {
		hs = append(hs, p)
	}
	slices.SortFunc(hs, func(a, b *pair) int { return compareKeys(q.mu.holders[b], q.mu.holders[a]) })
	return hs[:over]
}

// keep reports whether p, a holder, stays within the limit; a holder
// past it (the limit was lowered while it had its slot but did not copy
// yet) gives its slot back and waits again. Holders past the limit are the
// lowest priority ones, as in setLimit.
func (q *copyQueue) keep(p *pair) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	k, ok := q.mu.holders[p]
	if !ok {
		return false
	}
	better := 0
	for o, ok2 := range q.mu.holders {
		if o != p && ok2.before(k) {
			better++
		}
	}
	if better < q.mu.limit {
		return true
	}
	delete(q.mu.holders, p)
	q.grantLocked()
	return false
}

// rekey changes the key of a waiting pair (its priority changed).
func (q *copyQueue) rekey(p *pair, key queueKey) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w := q.mu.waiting[p]; w != nil {
		w.key = key
	}
	if _, ok := q.mu.holders[p]; ok {
		q.mu.holders[p] = key
	}
}

// hasRoom reports whether a pair asking now would get a slot at once.
func (q *copyQueue) hasRoom() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.mu.holders)+len(q.mu.waiting) < q.mu.limit
}

// position is p's place among the waiting pairs (1 = next), 0 if it does
// not wait.
func (q *copyQueue) position(p *pair) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.mu.waiting[p]
	if w == nil {
		return 0
	}
	n := 1
	for _, o := range q.mu.waiting {
		if o.key.before(w.key) {
			n++
		}
	}
	return n
}

// counts is the limit, the holders and the waiters.
func (q *copyQueue) counts() (limit, active, waiting int) {
	return q.countsAfter(nil)
}

// countsAfter is counts with the pairs requeued (sent back to queued by a
// lowered limit) counted as waiting: their run goroutines give their slots
// back and wait again only once their copies have stopped.
func (q *copyQueue) countsAfter(requeued []*pair) (limit, active, waiting int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	active, waiting = len(q.mu.holders), len(q.mu.waiting)
	for _, p := range requeued {
		if _, ok := q.mu.holders[p]; ok {
			active--
			waiting++
		} else if _, ok := q.mu.waiting[p]; !ok {
			waiting++ // between its slot and its wait
		}
	}
	return q.mu.limit, active, waiting
}

// Limits are the server-wide limits of the copies, as `lmtgt config show`
// reports them.
type Limits struct {
	// MaxActive: pairs copying at once; Active of them hold a slot now,
	// Waiting wait for one.
	MaxActive, Active, Waiting int
	// MaxTotalMBps: the bandwidth budget of all the copies together
	// (0: none).
	MaxTotalMBps int64
}

// LimitsRequest changes the server-wide limits; nil fields stay.
type LimitsRequest struct {
	MaxActive    *int
	MaxTotalMBps *int64 // 0 removes the budget
}

// Limits reports the server-wide limits.
func (m *Manager) Limits() Limits { return m.limitsAfter(nil) }

// limitsAfter is Limits with the pairs requeued counted as waiting.
func (m *Manager) limitsAfter(requeued []*pair) Limits {
	limit, active, waiting := m.queue.countsAfter(requeued)
	m.admin.Lock()
	total := m.totalMBps
	m.admin.Unlock()
	return Limits{MaxActive: limit, Active: active, Waiting: waiting, MaxTotalMBps: total}
}

// SetLimits changes the server-wide limits at run time (see above: a
// lowered max active sends the pairs past it back to queued).
func (m *Manager) SetLimits(req LimitsRequest) (Limits, error) {
	const obj = "config"
	if req.MaxActive == nil && req.MaxTotalMBps == nil {
		return Limits{}, refuse(ErrInvalid, obj, "nothing to set: give max-active and/or max-total-mbps")
	}
	if req.MaxActive != nil && (*req.MaxActive < 1 || *req.MaxActive > 1024) {
		return Limits{}, refuse(ErrInvalid, obj, "max-active %d: want 1 to 1024 pairs copying at once", *req.MaxActive)
	}
	if req.MaxTotalMBps != nil && *req.MaxTotalMBps < 0 {
		return Limits{}, refuse(ErrInvalid, obj, "max-total-mbps %d is negative (0 removes the budget)", *req.MaxTotalMBps)
	}
	m.admin.Lock()
	var requeued []*pair
	if req.MaxTotalMBps != nil {
		m.totalMBps = *req.MaxTotalMBps
		m.budget.setRate(*req.MaxTotalMBps * 1_000_000)
		m.log.Info().Int64("max_total_mbps", m.totalMBps).Msg("copy bandwidth budget set")
	}
	if req.MaxActive != nil {
		n := *req.MaxActive
		over := m.queue.setLimit(n)
		m.log.Info().Int("max_active", n).Int("requeued", len(over)).Msg("max active set")
		for _, p := range over {
			err := p.transitionFrom(StateCopying, StateQueued, fmt.Sprintf("max active lowered to %d: waiting for a copy slot", n))
			if err != nil {
				// Not copying any more (synced, paused, ...): its slot is
				// given back by its run goroutine.
				p.zlog.Debug().Err(err).Msg("max active lowered: pair not requeued")
				continue
			}
			requeued = append(requeued, p)
		}
	}
	m.admin.Unlock()
	return m.limitsAfter(requeued), nil // the answer counts the requeued pairs as waiting
}
