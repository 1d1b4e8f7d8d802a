package iscsi

import (
	"slices"
	"sync"
)

// writeBudget bounds the bytes of data buffers reserved by outstanding
// SCSI commands across one Server (Options.MaxWriteBuffer). A write
// command reserves its whole expected length before its buffer is
// allocated and gives it back when the buffer is freed (command answered,
// aborted or its connection gone); a read reserves its Data-In buffer
// before it runs (TASK SET FULL when there is no space; see complete). No
// buffer is ever allocated past the cap.
//
// Rules (docs/design.md "Command window and write buffer cap"):
//   - One session may hold at most perConn bytes (half the cap, at least
//     one maximum command), so one session cannot starve the others.
//   - A command that has no unsolicited data waits for space without
//     holding any: it is parked, no R2T goes out, the reader goes on.
//     Waiters are granted in arrival order; a waiter blocked only by its
//     own session's share does not hold up the others.
//   - A command that brings unsolicited data (immediate data or an
//     unsolicited burst) must have its buffer now: if there is no space it
//     is answered TASK SET FULL and its data dropped.
//   - The reader never blocks on the budget, so a command holding part of
//     it can always receive its data and finish: no deadlock.
//
// mu is taken after conn.mu (dropTaskLocked releases under conn.mu) and
// never held across I/O; grants start a goroutine owned by the waiter's
// connection (its cmdWG), counted before the waiter leaves the queue.
type writeBudget struct {
	limit   int64 // server-wide cap
	perConn int64 // one session's share

	mu struct {
		sync.Mutex
		used    int64
		peak    int64
		held    map[*conn]int64
		waiters []budgetWaiter
	}
}

// budgetWaiter is a parked write command.
type budgetWaiter struct {
	c *conn
	t *task
	n int64
}

func newWriteBudget(limit, maxCmd int64) *writeBudget {
	b := &writeBudget{limit: limit, perConn: max(limit/2, maxCmd)}
	b.mu.held = make(map[*conn]int64)
	return b
}

// reserve takes n bytes for t of c when they are free and no earlier
// waiter that could use them is queued. Otherwise, when park is set, t
// waits in the queue and c.granted(t, n) runs once the bytes are taken for
// it; reserve then returns false (and false without queueing when park is
// not set).
func (b *writeBudget) reserve(c *conn, t *task, n int64, park bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	blocked := false
	for _, w := range b.mu.waiters {
		if b.mu.held[w.c]+w.n <= b.perConn {
			blocked = true // a waiter ahead is waiting for global space
			break
		}
	}
	if !blocked && b.mu.used+n <= b.limit && b.mu.held[c]+n <= b.perConn {
		b.takeLocked(c, n)
		return true
	}
	if park {
		b.mu.waiters = append(b.mu.waiters, budgetWaiter{c: c, t: t, n: n})
	}
	return false
}

func (b *writeBudget) takeLocked(c *conn, n int64) {
	b.mu.used += n
	b.mu.held[c] += n
	b.mu.peak = max(b.mu.peak, b.mu.used)
}

// release gives back n bytes c held and grants what waiters now fit.
func (b *writeBudget) release(c *conn, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.used -= n
	if b.mu.held[c] -= n; b.mu.held[c] <= 0 {
		delete(b.mu.held, c)
	}
	kept := b.mu.waiters[:0]
	blocked := false
	for _, w := range b.mu.waiters {
		sessionOK := b.mu.held[w.c]+w.n <= b.perConn
		if !blocked && sessionOK && b.mu.used+w.n <= b.limit {
			b.takeLocked(w.c, w.n)
			w.c.cmdWG.Add(1)
			go w.c.granted(w.t, w.n)
			continue
		}
		if sessionOK {
			blocked = true
		}
		kept = append(kept, w)
	}
	clear(b.mu.waiters[len(kept):])
	b.mu.waiters = kept
}

// cancel forgets t's place in the queue (t dropped before its grant).
func (b *writeBudget) cancel(t *task) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, w := range b.mu.waiters {
		if w.t == t {
			b.mu.waiters = slices.Delete(b.mu.waiters, i, i+1)
			return
		}
	}
}

// budgetStats is a snapshot of a writeBudget.
type budgetStats struct {
	Limit, PerSession int64
	Used, Peak        int64
	Waiting           int
}

func (b *writeBudget) stats() budgetStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return budgetStats{Limit: b.limit, PerSession: b.perConn, Used: b.mu.used, Peak: b.mu.peak, Waiting: len(b.mu.waiters)}
}

// granted runs once buffer space was taken for a parked task: it gives
// the task its buffer and solicits its data, or gives the space back when
// the task is gone meanwhile.
func (c *conn) granted(t *task, n int64) {
	defer c.cmdWG.Done()
	buf := c.srv.pool.get(int(t.writeLen))
	c.mu.Lock()
	if t.state != taskReceiving || t.aborted || c.mu.tasks[t.itt] != t || t.wbuf != nil {
		c.mu.Unlock()
		c.srv.pool.put(buf)
		c.srv.budget.release(c, n)
		return
	}
	t.wbuf, t.reserved = buf, n
	pdus := c.nextR2Ts(t)
	itt := t.itt // t may be done and reused once mu is released
	c.mu.Unlock()
	if err := c.send(pdus...); err != nil {
		c.log.Debug().Err(err).Uint32("itt", itt).Msg("R2T not sent")
	}
}
