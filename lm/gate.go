package lm

import (
	"sync"
	"time"
)

// gate is a LUN's I/O gate. Every host command enters it and reads the
// LUN's route inside; the route changes only while the gate is closed and
// drained (split, pair attach/detach, delete). Closing never waits for new
// commands: they queue at enter until the gate opens again.
type gate struct {
	mu       sync.Mutex
	closed   bool
	inflight int
	opened   chan struct{} // closed when the gate opens; valid while closed
	drained  chan struct{} // closed when inflight reaches 0 while closed
}

// enter admits one command, waiting while the gate is closed.
func (g *gate) enter() {
	rankAcquire(lockGate)
	g.mu.Lock()
	for g.closed {
		ch := g.opened
		g.mu.Unlock()
		<-ch
		g.mu.Lock()
	}
	g.inflight++
	g.mu.Unlock()
}

// exit ends a command admitted by enter.
func (g *gate) exit() {
	g.mu.Lock()
	g.inflight--
	if g.closed && g.inflight == 0 && g.drained != nil {
		close(g.drained)
		g.drained = nil
	}
	g.mu.Unlock()
	rankRelease(lockGate)
}

// close stops new commands and returns a channel closed once the commands
// in flight have drained. The caller must call open later.
func (g *gate) close() <-chan struct{} {
	rankAcquire(lockGate)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.opened = make(chan struct{})
	d := make(chan struct{})
	if g.inflight == 0 {
		close(d)
	} else {
		g.drained = d
	}
	return d
}

// open admits commands again.
func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		return
	}
	g.closed = false
	g.drained = nil
	close(g.opened)
	rankRelease(lockGate)
}

// closeGates closes every gate and waits until all have drained or the
// budget is spent. On timeout every gate is reopened and ok is false.
func closeGates(gates []*gate, budget time.Duration) (ok bool) {
	chans := make([]<-chan struct{}, len(gates))
	for i, g := range gates {
		chans[i] = g.close()
	}
	t := time.NewTimer(budget)
	defer t.Stop()
	for _, ch := range chans {
		select {
		case <-ch:
		case <-t.C:
			for _, g := range gates {
				g.open()
			}
			return false
		}
	}
	return true
}
