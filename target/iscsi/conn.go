package iscsi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// connState is where a connection is in its life (RFC 7143 §8.1, reduced
// to what ERL 0 needs). Transitions: login -> fullFeature -> closing ->
// closed, or login -> closing -> closed.
type connState int32

const (
	stateLogin connState = iota
	stateFullFeature
	stateClosing
	stateClosed
)

func (s connState) String() string {
	switch s {
	case stateLogin:
		return "login"
	case stateFullFeature:
		return "full-feature"
	case stateClosing:
		return "closing"
	case stateClosed:
		return "closed"
	}
	return fmt.Sprintf("connState(%d)", int32(s))
}

// errors that end a connection on purpose.
var (
	errLoggedOut = errors.New("logged out")
	errDraining  = errors.New("server draining")
)

// conn is one TCP connection and, after login, its session. The serve
// goroutine owns it; command goroutines (execute) and the pinger are started
// by serve and waited for before serve returns.
type conn struct {
	srv    *Server
	nc     net.Conn
	sock   *pdu.Sock // the socket I/O of br and of writes (pdu/sock.go)
	br     *bufio.Reader
	log    zerolog.Logger
	remote string
	// portal is the bound address of the listener that accepted the
	// connection ("ip:port"; PortalFilter).
	portal string

	state     atomic.Int32 // connState
	draining  atomic.Bool
	closeOnce sync.Once
	done      chan struct{} // closed when serve has fully torn down

	// Set during login, read-only in full feature phase.
	p         params
	lim       pdu.Limits
	discovery bool
	initiator string
	target    string
	// logNamed: log carries initiator and iqn (each key once per line).
	logNamed bool
	isid     [6]byte
	sess     *session
	nexus    Nexus

	lastRecv atomic.Int64 // unix nanos of the last PDU header received
	// rxAt is when the reader read the header of the PDU it is handling
	// (one clock read per PDU, shared by lastRecv, the command's Arrived
	// and the idle poll's activity count). Reader only.
	rxAt time.Time
	// The idle poll (idlepoll.go), reader only: polls that missed in a
	// row, commands to go without polling after them, and the functions
	// handed to pdu.Sock (made once: no allocation per command).
	pollMisses int
	pollOff    int
	// pollPDU: the poll is armed for the next PDU (its header, then once
	// for its data: armDataPoll); seenEpoch: the activity epoch this
	// connection was last counted in. Reader only.
	pollPDU   bool
	seenEpoch int64
	pollTry   func() bool
	pollDone  func(caught bool)
	tttGen    atomic.Uint32

	// wq is the queue of PDUs waiting to be written (send, flat
	// combining): one sender at a time is the writer and writes every
	// request queued behind it in one writev.
	wq struct {
		sync.Mutex
		busy  bool       // a writer is active
		queue []*sendReq // waiting to be written, in order
		spare []*sendReq // the writer's batch slice, reused
		free  []*sendReq // requests to reuse (no allocation per send)
	}
	// writes counts writev calls (batches) on nc.
	writes atomic.Uint64
	// statNext mirrors w.statSN, the StatSN the next status will carry,
	// for the reader (idlepoll.go: has the host seen every status?).
	statNext atomic.Uint32
	// wmu serializes writes to nc; it guards the fields in w. Only the
	// writer of wq (and login, before there are others) takes it.
	wmu sync.Mutex
	w   struct {
		statSN   uint32
		iov      net.Buffers
		slots    []byte    // per-PDU header/digest scratch
		err      error     // first write error: later writes fail fast
		deadline time.Time // write deadline last set on nc
	}

	// mu guards the command window and the task table. Lock order: wmu, mu.
	mu struct {
		sync.Mutex
		expCmdSN uint32
		maxCmdSN uint32 // highest MaxCmdSN advertised (never decreases)
		inflight int    // tasks holding a CmdSN slot
		// immediate counts the immediate SCSI tasks among them
		// (bounded by maxImmediate).
		immediate int
		tasks     map[uint32]*task
		pingTTT   uint32
		pingAt    int64 // unix nanos; 0 = no ping outstanding
		// inlineBusy: the reader is running a command itself and cannot
		// see ping answers; the pinger waits.
		inlineBusy bool
		// taskDone is signalled (Broadcast, L = &mu.Mutex) whenever a
		// task use ends (task.go).
		taskDone  *sync.Cond
		freeTasks []*task // tasks to reuse
		// workers: command workers started; idle: those waiting for a
		// task and not yet handed one (worker.go).
		workers, idle int
	}
	// Run-to-completion at depth (rtc.go), reader goroutine only: held
	// the responses not sent yet (of tasks with task.hold), rtcOff the
	// commands left before a quick write runs on the reader again.
	held   []outPDU
	rtcOff int
	// work hands tasks to the connection's workers (worker.go).
	work chan *task
	// workerWG counts the worker goroutines.
	workerWG sync.WaitGroup
	// cmdWG counts command and task-management goroutines.
	cmdWG sync.WaitGroup

	// Reader-goroutine-only state.
	pending  map[uint32]*queuedPDU // commands ahead of ExpCmdSN
	textBuf  []byte                // text request continuation (C bit)
	textResp []byte                // text response still to send
	textTTT  uint32
}

// queuedPDU is a non-immediate PDU that arrived ahead of ExpCmdSN.
type queuedPDU struct {
	h        header
	data     []byte
	reserved int64 // write buffer budget held for data
}

func newConn(s *Server, nc net.Conn, portal string) *conn {
	c := &conn{
		srv:    s,
		nc:     nc,
		portal: portal,
		sock:   pdu.NewSock(nc),
		remote: nc.RemoteAddr().String(),
		done:   make(chan struct{}),
	}
	c.br = bufio.NewReaderSize(c.sock, 64<<10)
	c.pollTry, c.pollDone = c.tryPoll, c.pollEnded
	c.log = s.log.With().Str("remote", c.remote).Logger()
	c.mu.tasks = make(map[uint32]*task)
	c.mu.taskDone = sync.NewCond(&c.mu.Mutex)
	c.work = make(chan *task, s.opts.QueueDepth+maxImmediate)
	c.p = defaultParams()
	return c
}

func (c *conn) getState() connState  { return connState(c.state.Load()) }
func (c *conn) setState(s connState) { c.state.Store(int32(s)) }

// closeNow closes the socket; the serve goroutine then tears down.
func (c *conn) closeNow() {
	c.closeOnce.Do(func() { c.nc.Close() })
}

// drain asks the connection to stop reading new PDUs, finish running
// commands and close.
func (c *conn) drain() {
	c.draining.Store(true)
	if c.getState() != stateFullFeature {
		c.closeNow()
		return
	}
	c.nc.SetReadDeadline(time.Now())
}

// serve runs the connection: login, then the full feature phase. A panic
// anywhere in it closes this connection only.
func (c *conn) serve() {
	defer c.srv.connDone(c)
	defer close(c.done)
	var stopPinger func()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("connection panic; closing it")
		}
		if stopPinger != nil {
			stopPinger()
		}
		c.teardown()
	}()
	err := c.login()
	if err == nil {
		c.srv.logins.loggedIn(c.discovery)
		c.setState(stateFullFeature)
		if c.draining.Load() {
			c.nc.SetReadDeadline(time.Now())
		}
		stopPinger = c.startPinger()
		err = c.fullFeature()
	}
	switch {
	case err == nil, errors.Is(err, errLoggedOut):
		c.log.Debug().Msg("connection closed")
	case c.draining.Load():
		c.log.Debug().Err(err).Msg("connection drained")
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug().Err(err).Msg("connection closed by peer")
	default:
		c.log.Warn().Err(err).Msg("connection dropped")
	}
}

// teardown finishes a connection: let running commands answer when
// draining, close the socket, drop the rest, release the session.
func (c *conn) teardown() {
	c.setState(stateClosing)
	if c.draining.Load() {
		c.abortWaitingTasks()
		c.cmdWG.Wait()
	}
	c.closeNow()
	c.abortWaitingTasks()
	c.mu.Lock()
	for _, t := range c.mu.tasks {
		t.aborted = true
	}
	c.mu.Unlock()
	c.cmdWG.Wait()
	c.stopWorkers()
	for _, q := range c.pending {
		if q.reserved > 0 {
			c.srv.budget.release(c, q.reserved)
		}
	}
	c.pending = nil
	if c.nexus != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					c.log.Error().Interface("panic", r).Msg("nexus close panic")
				}
			}()
			c.nexus.Close()
		}()
	}
	if c.sess != nil {
		c.srv.release(c.sess)
		c.log.Info().Msg("session closed")
	}
	c.setState(stateClosed)
}

// window returns ExpCmdSN and MaxCmdSN for an outgoing PDU. MaxCmdSN never
// decreases: initiators ignore smaller values, so it is what they use.
func (c *conn) windowLocked() (uint32, uint32) {
	free := c.srv.opts.QueueDepth - c.mu.inflight
	if free < 0 {
		free = 0
	}
	m := c.mu.expCmdSN + uint32(free) - 1
	if int32(m-c.mu.maxCmdSN) > 0 {
		c.mu.maxCmdSN = m
	}
	return c.mu.expCmdSN, c.mu.maxCmdSN
}

// inWindowLocked reports whether sn lies in [ExpCmdSN, MaxCmdSN].
func (c *conn) inWindowLocked(sn uint32) bool {
	return int32(sn-c.mu.expCmdSN) >= 0 && int32(c.mu.maxCmdSN-sn) >= 0
}

// statMode says how an outgoing PDU carries StatSN.
type statMode uint8

const (
	statNone statMode = iota // field reserved (Data-In without status)
	statPeek                 // current StatSN, not advanced (R2T, NOP-In ping, Async)
	statTake                 // this PDU carries a status: StatSN++
)

// outPDU is one PDU to send: a BHS and an optional data segment, from
// memory (data) or, when flen > 0, flen bytes of file fd at foff sent
// with sendfile (zerocopy.go; never with a data digest).
type outPDU struct {
	hdr  [pdu.BHSLen]byte
	data []byte
	stat statMode
	fd   int32
	flen uint32
	foff int64
}

const slotLen = pdu.BHSLen + 2*pdu.DigestLen // header, header digest, data digest

// sendReq is one send call waiting in conn.wq. Requests are reused per
// connection: pdus keeps its capacity and done is made once.
type sendReq struct {
	pdus []outPDU
	err  error
	lead bool          // woken to become the writer, not because it was written
	done chan struct{} // capacity 1: one wake-up per wait
}

// send writes PDUs to the connection, filling StatSN, ExpCmdSN and
// MaxCmdSN, and returns once they are written. It is safe for concurrent
// use. Flat combining: a sender that finds another writing queues its PDUs
// and waits; the writer, after its own write, hands the writer role to the
// first waiting request, which writes everything queued meanwhile in one
// writev and wakes the others. So under load there is one writev per batch
// of responses, not one per response, and every sender is woken once.
// PDUs of one send are never split or reordered; StatSN follows the write
// order.
func (c *conn) send(pdus ...outPDU) error {
	return c.sendMayYield(false, pdus...)
}

// yieldMax is the largest command whose response may wait for others
// (sendMayYield): for small I/O the writev is most of the cost and worth
// batching; a large one would only be delayed (measured: 1 MiB at queue
// depth 8 was 0.82x with the yield).
const yieldMax = 64 << 10

// sendMayYield is send; with yield, a sender that becomes the writer while
// other commands are still in flight first lets them run once
// (runtime.Gosched), so that their responses join its batch.
func (c *conn) sendMayYield(yield bool, pdus ...outPDU) error {
	q := &c.wq
	q.Lock()
	var r *sendReq
	if n := len(q.free); n > 0 {
		r = q.free[n-1]
		q.free = q.free[:n-1]
	} else {
		r = &sendReq{done: make(chan struct{}, 1)}
	}
	r.pdus = append(r.pdus[:0], pdus...)
	r.err, r.lead = nil, false
	q.queue = append(q.queue, r)
	lead := !q.busy
	q.busy = true
	q.Unlock()
	if !lead {
		<-r.done
		lead = r.lead
	}
	if lead {
		if yield {
			// Other commands still running may be about to answer:
			// let them run first, so that they join this batch.
			c.mu.Lock()
			others := c.mu.inflight > 0
			c.mu.Unlock()
			if others {
				runtime.Gosched()
			}
		}
		c.writeQueued()
	}
	err := r.err
	clear(r.pdus) // drop references to caller data
	q.Lock()
	q.free = append(q.free, r)
	q.Unlock()
	return err
}

// writeQueued is run by the writer: it writes every queued request in one
// writev, passes the writer role on to the first request queued since (or
// ends it), and wakes the requests it wrote (but not the caller's own,
// which is the first of the batch).
func (c *conn) writeQueued() {
	q := &c.wq
	q.Lock()
	batch := q.queue
	q.queue = q.spare[:0]
	q.spare = nil
	q.Unlock()

	c.wmu.Lock()
	err := c.writeBatch(batch)
	c.wmu.Unlock()

	var next *sendReq
	for _, r := range batch {
		r.err = err
	}
	q.Lock()
	if len(q.queue) > 0 {
		next = q.queue[0]
		next.lead = true
	} else {
		q.busy = false
	}
	q.Unlock()
	for _, r := range batch[1:] {
		r.done <- struct{}{}
	}
	clear(batch)
	q.Lock()
	q.spare = batch[:0]
	q.Unlock()
	if next != nil {
		next.done <- struct{}{}
	}
}

// writeBatch writes the PDUs of reqs in one writev; a PDU whose data is
// in a file (outPDU.flen) ends the writev before it with its header, sent
// with MSG_MORE, then its data goes with sendfile (zerocopy.go). wmu held.
func (c *conn) writeBatch(reqs []*sendReq) error {
	if c.w.err != nil {
		return c.w.err
	}
	need := 0
	for _, r := range reqs {
		need += len(r.pdus) * slotLen
	}
	if cap(c.w.slots) < need {
		c.w.slots = make([]byte, need)
	}
	slots := c.w.slots[:need]
	iov := c.w.iov[:0]
	c.mu.Lock()
	exp, maxSN := c.windowLocked()
	c.mu.Unlock()
	// An initiator that stops reading its socket would block this send,
	// and with it the pinger (it waits for its turn), forever, while the
	// command keeps its Data-In buffer reserved: a few such sessions hold
	// the whole write buffer cap and every other session's commands get
	// TASK SET FULL. Taking longer than a ping may go unanswered is a
	// dead initiator: the connection is dropped and its buffers freed.
	// The deadline is moved only when less than 3/4 of NopTimeout is
	// left (setting it costs a timer update per write otherwise).
	now := time.Now()
	if to := c.srv.opts.NopTimeout; c.w.deadline.Sub(now) < to-to/4 {
		c.w.deadline = now.Add(to)
		c.nc.SetWriteDeadline(c.w.deadline)
	}
	c.writes.Add(1)
	var err error
	i := 0
	for _, r := range reqs {
		for j := range r.pdus {
			slot := slots[i*slotLen : (i+1)*slotLen]
			i++
			p := &r.pdus[j]
			iov = c.appendPDU(iov, slot, p, exp, maxSN)
			if p.flen > 0 && err == nil {
				iov, err = c.sendFilePDU(iov, p)
			}
		}
	}
	if err == nil && len(iov) > 0 {
		_, err = c.sock.Writev(iov)
	}
	// drop references to caller data
	clear(iov)
	c.w.iov = iov[:0]
	if err != nil {
		c.w.err = fmt.Errorf("write: %w", err)
		c.closeNow()
		return c.w.err
	}
	return nil
}

// appendPDU fills p's header into slot (StatSN, ExpCmdSN, MaxCmdSN,
// digests) and appends its iovecs. wmu held.
func (c *conn) appendPDU(iov net.Buffers, slot []byte, p *outPDU, exp, maxSN uint32) net.Buffers {
	h := slot[:pdu.BHSLen]
	copy(h, p.hdr[:])
	dl := uint32(len(p.data))
	if p.flen > 0 {
		dl = p.flen
	}
	h[5], h[6], h[7] = byte(dl>>16), byte(dl>>8), byte(dl)
	op := h[0] & 0x3f
	if op != pdu.OpLoginResp {
		switch p.stat {
		case statPeek:
			pdu.Put32(h[24:], c.w.statSN)
		case statTake:
			pdu.Put32(h[24:], c.w.statSN)
			c.w.statSN++
			c.statNext.Store(c.w.statSN)
		}
		pdu.Put32(h[28:], exp)
		pdu.Put32(h[32:], maxSN)
	}
	iov = append(iov, h)
	if c.lim.HeaderDigest {
		d := slot[pdu.BHSLen : pdu.BHSLen+pdu.DigestLen]
		binary.LittleEndian.PutUint32(d, pdu.CRC32C(h))
		iov = append(iov, d)
	}
	if p.flen > 0 {
		return iov // the data, its pad: sendFilePDU
	}
	if dl > 0 {
		iov = append(iov, p.data)
		pad := pdu.PadLen(dl)
		if pad > 0 {
			iov = append(iov, zeroPad[:pad])
		}
		if c.lim.DataDigest {
			d := slot[pdu.BHSLen+pdu.DigestLen : slotLen]
			sum := pdu.CRC32C(p.data)
			if pad > 0 {
				sum = crc32Update(sum, zeroPad[:pad])
			}
			binary.LittleEndian.PutUint32(d, sum)
			iov = append(iov, d)
		}
	}
	return iov
}

func crc32Update(sum uint32, b []byte) uint32 {
	return pdu.CRC32CUpdate(sum, b)
}

// newTTT returns a target transfer tag (never 0xffffffff).
func (c *conn) newTTT() uint32 {
	for {
		t := c.tttGen.Add(1)
		if t != pdu.ReservedTag {
			return t
		}
	}
}

// reject sends a Reject PDU carrying the offending header.
func (c *conn) reject(h *header, reason byte) error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpReject
	b[1] = pdu.FlagFinal
	b[2] = reason
	pdu.Put32(b[16:], pdu.ReservedTag)
	hdr := append([]byte(nil), h.B[:]...)
	c.log.Debug().Uint8("opcode", h.Opcode()).Uint8("reason", reason).Msg("reject")
	return c.send(outPDU{hdr: b, data: hdr[:], stat: statTake})
}

// startPinger starts the NOP-In pinger; the returned func stops it and
// waits for it.
func (c *conn) startPinger() func() {
	o := c.srv.opts
	if o.NopInterval < 0 {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				c.log.Error().Interface("panic", r).Msg("pinger panic")
				c.closeNow()
			}
		}()
		tick := min(o.NopInterval, o.NopTimeout) / 4
		tick = min(max(tick, 5*time.Millisecond), time.Second)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			now := time.Now().UnixNano()
			last := c.lastRecv.Load()
			c.mu.Lock()
			at := c.mu.pingAt
			if at != 0 && last > at {
				c.mu.pingAt, at = 0, 0
			}
			busy := c.mu.inlineBusy
			if busy && at != 0 {
				c.mu.pingAt, at = now, now // restart the clock after the command
			}
			c.mu.Unlock()
			if busy {
				continue
			}
			if at != 0 {
				if time.Duration(now-at) > o.NopTimeout {
					c.log.Warn().Dur("timeout", o.NopTimeout).Msg("initiator did not answer NOP-In; dropping connection")
					c.closeNow()
					return
				}
				continue
			}
			if time.Duration(now-last) < o.NopInterval {
				continue
			}
			ttt := c.newTTT()
			c.mu.Lock()
			c.mu.pingTTT, c.mu.pingAt = ttt, now
			c.mu.Unlock()
			var b [pdu.BHSLen]byte
			b[0] = pdu.OpNopIn
			b[1] = pdu.FlagFinal
			pdu.Put32(b[16:], pdu.ReservedTag)
			pdu.Put32(b[20:], ttt)
			if c.send(outPDU{hdr: b, stat: statPeek}) != nil {
				return
			}
		}
	}()
	return func() {
		close(quit)
		wg.Wait()
	}
}
