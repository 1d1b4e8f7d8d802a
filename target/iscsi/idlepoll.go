package iscsi

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Idle polling at queue depth 1.
//
// A host at queue depth 1 sends its next command a few tens of
// microseconds after it got the last response. A reader that goes to
// sleep in between is woken through the netpoller and its thread through
// the kernel, and on a virtual machine whose idle vCPUs halt (this
// project's machines: cpuidle haltpoll with guest_halt_poll_ns=0) that
// wake-up is a good part of the round trip. So after a command at queue
// depth 1 the reader polls its socket for up to Options.IdlePoll
// (pdu.Sock.SpinNextRead) before it sleeps.
//
// It costs no CPU when the host is idle and little when polling does not
// pay:
//   - it is armed only after a command that ran alone (nothing else in
//     flight on the connection, nothing more buffered) and whose PDU
//     acknowledged every status sent before it (ExpStatSN): queue depth
//     1. A host at depth often looks alone to a reader that runs its
//     writes inline, but it sends on before it reads what was answered,
//     so its ExpStatSN lags; polling there cost CPU (measured). An
//     arming is good for one wait of the reader: the next PDU's header,
//     and once more for its data segment if that is not all there (a
//     write's data may come in a second segment), never for more;
//   - only with at least two Ps, and at most half of them poll at once:
//     a poll holds its P, and with one P the netpoller would be checked
//     only by sysmon, every 10 ms, for every other connection;
//   - only while no other connection has received a PDU in the last
//     activityEpoch or two: with several hosts at work the CPUs are
//     rarely idle, so a sleeping reader's CPU does not halt (no costly
//     wake-up to save), and a poll takes CPU from the hosts and the
//     other connections (four hosts at queue depth 1 on two CPUs read at
//     0.68x without this). The kernel's CPU pressure
//     (/proc/pressure/cpu) was tried as that signal and cannot tell: one
//     host's own polling raises it to 55 %, four hosts without polling
//     to 60-87 %;
//   - polls that time out in a row (a host that is not in a tight loop)
//     turn polling off for the connection's next 1, 3, 7, ... up to
//     maxPollBackoff commands; one miss alone (a host that was late
//     once) does not, and a poll that catches resets the count.
const (
	defaultIdlePoll = 100 * time.Microsecond
	maxPollBackoff  = 63
	activityEpoch   = time.Millisecond
)

// idlePollCounters count the polls of all connections (tests, metrics).
type idlePollCounters struct {
	active  atomic.Int32 // polling now
	caught  atomic.Int64 // polls that caught data (or EOF, an error)
	missed  atomic.Int64 // polls that timed out
	refused atomic.Int64 // polls not started: too few Ps, or enough polling
	// othersActive counts polls not started because other connections
	// were receiving PDUs.
	othersActive atomic.Int64
}

// IdlePollStats are the idle poll counters of a Server.
type IdlePollStats struct {
	Caught, Missed, Refused, OthersActive int64
}

// IdlePollStats returns the idle poll counters.
func (s *Server) IdlePollStats() IdlePollStats {
	p := &s.idle
	return IdlePollStats{Caught: p.caught.Load(), Missed: p.missed.Load(), Refused: p.refused.Load(), OthersActive: p.othersActive.Load()}
}

// activity counts the connections that received a PDU, per epoch of
// activityEpoch. It is approximate on purpose (a count can be lost at an
// epoch's turn): it only decides whether to poll.
type activity struct {
	epoch     atomic.Int64 // the current epoch: unix nanos / activityEpoch
	cur, prev atomic.Int32 // connections seen in it, and in the one before
}

// noteActivity counts the reader's connection in the epoch of now (once
// per epoch). Reader only.
func (c *conn) noteActivity(now time.Time) {
	e := now.UnixNano() / int64(activityEpoch)
	if c.seenEpoch == e {
		return
	}
	c.seenEpoch = e
	a := &c.srv.activity
	for {
		old := a.epoch.Load()
		if old >= e {
			break
		}
		if a.epoch.CompareAndSwap(old, e) {
			n := a.cur.Swap(0)
			if e != old+1 {
				n = 0 // an idle epoch between
			}
			a.prev.Store(n)
			break
		}
	}
	a.cur.Add(1)
}

// othersActive says whether another connection received a PDU in this
// epoch or the one before (this one was counted in them).
func (c *conn) othersActive() bool {
	a := &c.srv.activity
	self := int32(0)
	if c.seenEpoch == a.epoch.Load() {
		self = 1
	}
	return a.cur.Load() > self || a.prev.Load() > 1
}

// armIdlePoll arms the poll of the reader's next wait for the host after
// a command at queue depth 1. Reader only.
func (c *conn) armIdlePoll() {
	if c.pollWanted() {
		c.pollPDU = true
		c.sock.SpinNextRead(c.srv.opts.IdlePoll, c.pollTry, c.pollDone)
	}
}

// armDataPoll arms the poll once more for the data segment of the PDU
// whose header an armed poll waited for, if it is not all buffered yet.
// Reader only.
func (c *conn) armDataPoll(h *header) {
	if !c.pollPDU {
		return
	}
	c.pollPDU = false
	if n := int(h.DataLen()); n > 0 && c.br.Buffered() < n {
		c.sock.SpinNextRead(c.srv.opts.IdlePoll, c.pollTry, c.pollDone)
	}
}

// disarmIdlePoll cancels an armed poll: a command that was not at queue
// depth 1 means the host has more in flight, and the reader has work.
// Reader only.
func (c *conn) disarmIdlePoll() {
	c.pollPDU = false
	c.sock.SpinNextRead(0, nil, nil)
}

// pollWanted says whether to poll after this command (counting down a
// back-off). Reader only.
func (c *conn) pollWanted() bool {
	if c.srv.opts.IdlePoll <= 0 {
		return false
	}
	if c.pollOff > 0 {
		c.pollOff--
		return false
	}
	return true
}

// tryPoll admits a poll when no other connection is active and fewer
// connections poll than the limit (half the Ps; none with one P). It runs
// on the reader, inside its read.
func (c *conn) tryPoll() bool {
	p := &c.srv.idle
	if c.othersActive() {
		p.othersActive.Add(1)
		return false
	}
	if p.active.Add(1) > c.srv.pollMax() {
		p.active.Add(-1)
		p.refused.Add(1)
		return false
	}
	return true
}

// pollMax is how many connections may poll at once: Server.spinMax when
// a test set it, else half the Ps, read at each poll (GOMAXPROCS can
// change while the server runs).
func (s *Server) pollMax() int32 {
	if s.spinMax > 0 {
		return s.spinMax
	}
	return int32(runtime.GOMAXPROCS(0) / 2)
}

// pollEnded ends an admitted poll.
func (c *conn) pollEnded(caught bool) {
	p := &c.srv.idle
	p.active.Add(-1)
	if caught {
		p.caught.Add(1)
		c.pollMisses = 0
		return
	}
	p.missed.Add(1)
	c.pollMisses++
	c.pollOff = pollBackoff(c.pollMisses)
}

// pollBackoff is how many commands go without polling after the n-th
// poll in a row that missed: none after the first, then 1, 3, 7, ...,
// maxPollBackoff.
func pollBackoff(n int) int {
	return min(1<<min(n-1, 7)-1, maxPollBackoff)
}
