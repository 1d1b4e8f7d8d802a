package iscsi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// Session errors, matched with errors.Is.
var (
	// ErrSessionDown: the session was lost and not re-established within
	// the replacement timeout; I/O fails fast until it is back.
	ErrSessionDown = errors.New("iscsi session down")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("iscsi client closed")
	// ErrTimeout: a command was sent MaxAttempts times without an answer.
	ErrTimeout = errors.New("iscsi command timed out")
	// ErrProtocol: the target broke the protocol; the connection is dropped.
	ErrProtocol = errors.New("iscsi protocol error")
)

// SessionState is where a Client's session is.
type SessionState int32

const (
	StateConnecting SessionState = iota // first login or re-login under way, I/O waits
	StateUp                             // logged in, I/O flows
	StateDown                           // lost for longer than the replacement timeout, I/O fails
	StateClosed                         // closed by Close
)

func (s SessionState) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("SessionState(%d)", int32(s))
}

// Stats are counters a Client keeps (for tests and status output).
type Stats struct {
	Logins      int64 // successful logins (the first one included)
	Reissued    int64 // commands sent again after a reconnect or an abort
	Aborts      int64 // ABORT TASK requests sent
	NopsIn      int64 // target pings answered
	NopsOut     int64 // our pings sent
	ConnDrops   int64 // connections dropped (lost or on purpose)
	Expired     int64 // commands failed by the replacement timeout
	TimedOut    int64 // commands failed after MaxAttempts
	MaxInFlight int64 // most commands in flight at once
}

// task is one SCSI command from submission to completion. The fields below
// "owner" are touched only by the owner goroutine until done is closed.
type task struct {
	cdb   [16]byte
	read  bool
	write bool
	data  []byte
	seq   uint64
	done  chan struct{}

	// results, valid after done is closed
	status   byte
	sense    []byte
	residual uint32
	under    bool
	over     bool
	err      error

	// owner
	itt       uint32
	cmdSN     uint32
	sentAt    time.Time
	attempts  int
	got       uint32 // Data-In bytes received in this attempt
	abortITT  uint32 // non-zero while an ABORT TASK for it is out
	abortedAt time.Time
}

// Client is an iSCSI initiator session to one target (error recovery level
// 0, one connection). Every method is safe for concurrent use.
//
// Ownership: one goroutine (run) owns the session state (connection,
// sequence numbers, the ITT table, the pending queue, timers); callers talk
// to it through reqs and wait on their task's done channel. Each connection
// owns a reader and a writer goroutine that the owner starts and stops
// (conn.go); a login attempt runs on its own goroutine that the owner
// waits for. No lock is held across I/O.
type Client struct {
	cfg  Config
	isid [6]byte
	log  *slog.Logger

	reqs    chan *task
	closing chan struct{}
	closeMu sync.Once
	done    chan struct{}
	seq     atomic.Uint64

	state  atomic.Int32
	params atomic.Pointer[Params]
	fence  fenceState // pr.go
	stats  struct {
		logins, reissued, aborts, nopsIn, nopsOut, drops, expired, timedOut, maxInFlight atomic.Int64
	}
}

// Dial logs in to the target and returns a Client with its session up. A
// refused first login (bad credentials, unknown target) is returned as is:
// it is not retried. log may be nil.
func Dial(ctx context.Context, cfg Config, log *slog.Logger) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: log.With("remote", cfg.String()), reqs: make(chan *task),
		closing: make(chan struct{}), done: make(chan struct{})}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, err
	}
	// ISID type "random" (RFC 7143 §11.12.5); kept for every re-login, so
	// the target reinstates (and cleans up) the previous session.
	c.isid = [6]byte{0x80, r[0], r[1], r[2], r[3], 0}
	if cfg.ISID != ([6]byte{}) {
		c.isid = cfg.ISID
	}
	li, err := dialLogin(ctx, cfg, c.isid, false)
	if err != nil {
		return nil, err
	}
	o := newOwner(c)
	o.up(li)
	go o.run()
	return c, nil
}

// Params returns the negotiated values of the current (or last) session.
func (c *Client) Params() Params { return *c.params.Load() }

// State is the session's state now.
func (c *Client) State() SessionState { return SessionState(c.state.Load()) }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{Logins: s.logins.Load(), Reissued: s.reissued.Load(), Aborts: s.aborts.Load(),
		NopsIn: s.nopsIn.Load(), NopsOut: s.nopsOut.Load(), ConnDrops: s.drops.Load(),
		Expired: s.expired.Load(), TimedOut: s.timedOut.Load(), MaxInFlight: s.maxInFlight.Load()}
}

// Close logs out and ends the session; commands still queued fail with
// ErrClosed. It waits for the owner goroutine to finish.
func (c *Client) Close() error {
	c.closeMu.Do(func() { close(c.closing) })
	<-c.done
	return nil
}

// Command is one SCSI command. Data is the buffer read into (Read) or
// written from (Write); its length is the expected data transfer length.
type Command struct {
	CDB   []byte
	Data  []byte
	Read  bool
	Write bool
}

// Response is a completed command's outcome.
type Response struct {
	Status   byte
	Sense    []byte
	Residual uint32
	Underrun bool
	Overrun  bool
}

// Do sends one command and waits for its answer. A transport failure is
// returned once the replacement timeout has passed (ErrSessionDown) or the
// client is closed (ErrClosed); a SCSI status comes back in Response.
func (c *Client) Do(cmd Command) (Response, error) {
	if len(cmd.CDB) == 0 || len(cmd.CDB) > 16 {
		return Response{}, fmt.Errorf("iscsi %s: cdb of %d bytes (1..16 supported)", c.cfg, len(cmd.CDB))
	}
	if cmd.Read && cmd.Write {
		return Response{}, fmt.Errorf("iscsi %s: bidirectional commands are not supported", c.cfg)
	}
	t := &task{read: cmd.Read, write: cmd.Write, data: cmd.Data, done: make(chan struct{}), seq: c.seq.Add(1)}
	copy(t.cdb[:], cmd.CDB)
	select {
	case c.reqs <- t:
	case <-c.done:
		return Response{}, fmt.Errorf("iscsi %s: %w", c.cfg, ErrClosed)
	}
	<-t.done
	if t.err != nil {
		return Response{}, fmt.Errorf("iscsi %s: scsi op 0x%02x: %w", c.cfg, t.cdb[0], t.err)
	}
	return Response{Status: t.status, Sense: t.sense, Residual: t.residual, Underrun: t.under, Overrun: t.over}, nil
}

// connectResult is the outcome of one background login attempt.
type connectResult struct {
	li  *loggedIn
	err error
}

// owner is the state of the run goroutine; nothing else touches it.
type owner struct {
	c   *Client
	cfg Config

	conn                       *conn
	cmdSN, expStatSN, maxCmdSN uint32
	nextITT                    uint32
	tasks                      map[uint32]*task // in flight on conn, by ITT
	tmfs                       map[uint32]*task // ABORT TASK in flight, by the TMF's ITT
	pending                    []*task          // accepted, not sent (re-issues first)

	downSince   time.Time // when the connection was lost; zero while up
	failFast    bool      // replacement timeout passed: fail I/O at once
	connecting  bool
	connCh      chan connectResult
	connCancel  context.CancelFunc
	backoff     time.Duration
	lastRecv    time.Time
	pingITT     uint32 // our NOP-Out awaiting its NOP-In; 0 when none
	pingSent    time.Time
	logoutITT   uint32
	closeBefore time.Time
}

func newOwner(c *Client) *owner {
	return &owner{c: c, cfg: c.cfg, tasks: map[uint32]*task{}, tmfs: map[uint32]*task{},
		connCh: make(chan connectResult, 1), nextITT: 1}
}

func (o *owner) up(li *loggedIn) {
	o.conn = newConn(li)
	o.cmdSN, o.maxCmdSN, o.expStatSN = li.cmdSN, li.maxCmdSN, li.expStatSN
	o.downSince = time.Time{}
	o.failFast = false
	o.backoff = 0
	o.lastRecv = time.Now()
	o.pingITT = 0
	p := li.p
	o.c.params.Store(&p)
	o.c.stats.logins.Add(1)
	o.c.state.Store(int32(StateUp))
}

func (o *owner) tick() time.Duration {
	d := min(o.cfg.CommandTimeout, o.cfg.NopInterval, o.cfg.NopTimeout, o.cfg.ReplacementTimeout, o.cfg.AbortTimeout) / 4
	return max(min(d, time.Second), 5*time.Millisecond)
}

func (o *owner) run() {
	defer close(o.c.done)
	tk := time.NewTicker(o.tick())
	defer tk.Stop()
	closing := o.c.closing
	for {
		var in chan inPDU
		var errc chan error
		if o.conn != nil {
			in, errc = o.conn.in, o.conn.errc
		}
		reqs := o.c.reqs
		if len(o.pending)+len(o.tasks) >= o.cfg.MaxQueued || closing == nil {
			reqs = nil // bounded: callers wait
		}
		select {
		case t := <-reqs:
			if o.failFast {
				o.finish(t, ErrSessionDown)
			} else {
				o.pending = append(o.pending, t)
			}
		case p := <-in:
			o.lastRecv = time.Now()
			if err := o.handle(p); err != nil {
				o.drop(err)
			}
		case err := <-errc:
			o.drop(err)
		case r := <-o.connCh:
			o.connecting = false
			o.connCancel()
			if r.err != nil {
				o.c.log.Warn("iscsi re-login failed", "err", r.err)
			} else if closing == nil {
				r.li.nc.Close()
			} else {
				o.up(r.li)
				o.c.log.Info("iscsi session re-established", "requeued", len(o.pending))
			}
		case <-tk.C:
			o.timers()
		case <-closing:
			closing = nil
			o.startLogout()
		}
		if closing == nil && o.finishClose() {
			return
		}
		if o.conn == nil && !o.connecting && closing != nil {
			o.reconnect()
		}
		o.issue()
	}
}

// finishClose reports whether closing is complete (logout answered, timed
// out or impossible) and, if so, fails everything left.
func (o *owner) finishClose() bool {
	if o.conn != nil && o.logoutITT != 0 && time.Now().Before(o.closeBefore) {
		return false
	}
	if o.connecting {
		o.connCancel()
		r := <-o.connCh
		o.connecting = false
		if r.li != nil {
			r.li.nc.Close()
		}
	}
	if o.conn != nil {
		o.conn.stop()
		o.conn = nil
	}
	for _, t := range o.tasks {
		o.finish(t, ErrClosed)
	}
	for _, t := range o.pending {
		o.finish(t, ErrClosed)
	}
	o.tasks, o.pending = nil, nil
	o.c.state.Store(int32(StateClosed))
	return true
}

func (o *owner) startLogout() {
	if o.conn == nil {
		return
	}
	o.logoutITT = o.newITT()
	o.closeBefore = time.Now().Add(2 * time.Second)
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpLogoutReq | pdu.FlagImmed
	b[1] = pdu.FlagFinal // reason 0: close the session
	pdu.Put32(b[16:], o.logoutITT)
	pdu.Put32(b[24:], o.cmdSN)
	pdu.Put32(b[28:], o.expStatSN)
	o.conn.send(&b, nil)
}

// reconnect starts one background login attempt after the backoff.
func (o *owner) reconnect() {
	delay := o.backoff
	o.backoff = min(max(o.backoff*2, o.cfg.ReconnectMin), o.cfg.ReconnectMax)
	ctx, cancel := context.WithCancel(context.Background())
	o.connCancel = cancel
	o.connecting = true
	cfg, isid, ch := o.cfg, o.c.isid, o.connCh
	go func() {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				ch <- connectResult{err: ctx.Err()}
				return
			}
		}
		li, err := dialLogin(ctx, cfg, isid, false)
		ch <- connectResult{li: li, err: err}
	}()
}

// drop ends the current connection: every command in flight goes back to
// the head of the pending queue, to be re-issued after the next login.
func (o *owner) drop(err error) {
	if o.conn == nil {
		return
	}
	o.c.log.Warn("iscsi connection lost", "err", err, "in_flight", len(o.tasks))
	o.conn.stop()
	o.conn = nil
	o.c.stats.drops.Add(1)
	if o.logoutITT != 0 {
		return
	}
	requeue := make([]*task, 0, len(o.tasks)+len(o.pending))
	for _, t := range o.tasks {
		requeue = append(requeue, t)
	}
	sortBySeq(requeue)
	o.pending = append(requeue, o.pending...)
	clear(o.tasks)
	clear(o.tmfs)
	for _, t := range o.pending {
		t.abortITT = 0
	}
	o.downSince = time.Now()
	o.c.state.Store(int32(StateConnecting))
}

func sortBySeq(ts []*task) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].seq < ts[j-1].seq; j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

func (o *owner) finish(t *task, err error) {
	t.err = err
	close(t.done)
}

func (o *owner) newITT() uint32 {
	for {
		o.nextITT++
		itt := o.nextITT
		if itt == 0 || itt == pdu.ReservedTag {
			continue
		}
		if _, busy := o.tasks[itt]; busy {
			continue
		}
		if _, busy := o.tmfs[itt]; busy {
			continue
		}
		return itt
	}
}

// timers runs the periodic checks: replacement timeout, command timeouts,
// abort timeouts, NOP pings.
func (o *owner) timers() {
	now := time.Now()
	if o.conn == nil {
		if !o.downSince.IsZero() && now.Sub(o.downSince) >= o.cfg.ReplacementTimeout && !o.failFast {
			o.failFast = true
			o.c.state.Store(int32(StateDown))
			o.c.log.Error("iscsi session not back within the replacement timeout: failing I/O",
				"timeout", o.cfg.ReplacementTimeout, "failed", len(o.pending))
			for _, t := range o.pending {
				o.c.stats.expired.Add(1)
				o.finish(t, fmt.Errorf("%w for %v", ErrSessionDown, o.cfg.ReplacementTimeout))
			}
			o.pending = nil
		}
		return
	}
	if o.logoutITT != 0 {
		return
	}
	for _, t := range o.tasks {
		if t.abortITT != 0 {
			if now.Sub(t.abortedAt) >= o.cfg.AbortTimeout {
				o.drop(fmt.Errorf("ABORT TASK for ITT %#x unanswered after %v", t.itt, o.cfg.AbortTimeout))
				return
			}
			continue
		}
		if now.Sub(t.sentAt) >= o.cfg.CommandTimeout {
			o.abort(t)
		}
	}
	if o.pingITT != 0 {
		if now.Sub(o.pingSent) >= o.cfg.NopTimeout {
			o.drop(fmt.Errorf("NOP-Out unanswered after %v", o.cfg.NopTimeout))
		}
		return
	}
	if now.Sub(o.lastRecv) >= o.cfg.NopInterval {
		o.ping()
	}
}

func (o *owner) ping() {
	o.pingITT = o.newITT()
	o.pingSent = time.Now()
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpNopOut | pdu.FlagImmed
	b[1] = pdu.FlagFinal
	pdu.Put32(b[16:], o.pingITT)
	pdu.Put32(b[20:], pdu.ReservedTag)
	pdu.Put32(b[24:], o.cmdSN)
	pdu.Put32(b[28:], o.expStatSN)
	o.conn.send(&b, nil)
	o.c.stats.nopsOut.Add(1)
}

// abort sends ABORT TASK for a command that got no answer in time.
func (o *owner) abort(t *task) {
	itt := o.newITT()
	t.abortITT = itt
	t.abortedAt = time.Now()
	o.tmfs[itt] = t
	o.c.stats.aborts.Add(1)
	o.c.log.Warn("iscsi command timed out: aborting it", "itt", t.itt, "op", t.cdb[0], "after", o.cfg.CommandTimeout)
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpTMFReq | pdu.FlagImmed
	b[1] = pdu.FlagFinal | 1 // ABORT TASK
	lun := encodeLUN(o.cfg.LUN)
	copy(b[8:16], lun[:])
	pdu.Put32(b[16:], itt)
	pdu.Put32(b[20:], t.itt)
	pdu.Put32(b[24:], o.cmdSN)
	pdu.Put32(b[28:], o.expStatSN)
	pdu.Put32(b[32:], t.cmdSN)
	o.conn.send(&b, nil)
}

// issue sends pending commands while the CmdSN window and the queue depth
// allow.
func (o *owner) issue() {
	if o.conn == nil || o.logoutITT != 0 {
		return
	}
	for len(o.pending) > 0 && len(o.tasks) < o.cfg.QueueDepth && int32(o.maxCmdSN-o.cmdSN) >= 0 {
		t := o.pending[0]
		o.pending[0] = nil
		o.pending = o.pending[1:]
		if t.attempts >= o.cfg.MaxAttempts {
			o.c.stats.timedOut.Add(1)
			o.finish(t, fmt.Errorf("%w: sent %d times", ErrTimeout, t.attempts))
			continue
		}
		if t.attempts > 0 {
			o.c.stats.reissued.Add(1)
		}
		t.attempts++
		o.send(t)
	}
	if len(o.pending) == 0 {
		o.pending = nil // let the backing array go
	}
	if n := int64(len(o.tasks)); n > o.c.stats.maxInFlight.Load() {
		o.c.stats.maxInFlight.Store(n)
	}
}

func (o *owner) send(t *task) {
	p := &o.conn.p
	t.itt = o.newITT()
	t.cmdSN = o.cmdSN
	o.cmdSN++
	t.sentAt = time.Now()
	t.got = 0
	t.abortITT = 0
	o.tasks[t.itt] = t
	edtl := uint32(len(t.data))
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpSCSICmd
	b[1] = 1 // simple task attribute
	if t.read {
		b[1] |= pdu.FlagRead
	}
	if t.write {
		b[1] |= pdu.FlagWrite
	}
	lun := encodeLUN(o.cfg.LUN)
	copy(b[8:16], lun[:])
	pdu.Put32(b[16:], t.itt)
	pdu.Put32(b[20:], edtl)
	pdu.Put32(b[24:], t.cmdSN)
	pdu.Put32(b[28:], o.expStatSN)
	copy(b[32:48], t.cdb[:])
	var imm, unsol uint32
	if t.write && edtl > 0 {
		if p.ImmediateData {
			imm = min(edtl, p.FirstBurst, p.TargetMRDSL)
		}
		unsol = imm
		if !p.InitialR2T {
			unsol = min(edtl, p.FirstBurst)
		}
	}
	if unsol == imm {
		b[1] |= pdu.FlagFinal
	}
	o.conn.send(&b, t.data[:imm])
	if unsol > imm {
		o.dataOut(t, pdu.ReservedTag, imm, unsol-imm)
	}
}

// dataOut sends [off, off+n) of t's data as one Data-Out sequence.
func (o *owner) dataOut(t *task, ttt, off, n uint32) {
	seg := o.conn.p.TargetMRDSL
	lun := encodeLUN(o.cfg.LUN)
	var sn uint32
	for end := off + n; off < end; sn++ {
		l := min(seg, end-off)
		var b [pdu.BHSLen]byte
		b[0] = pdu.OpDataOut
		if off+l == end {
			b[1] = pdu.FlagFinal
		}
		copy(b[8:16], lun[:])
		pdu.Put32(b[16:], t.itt)
		pdu.Put32(b[20:], ttt)
		pdu.Put32(b[28:], o.expStatSN)
		pdu.Put32(b[36:], sn)
		pdu.Put32(b[40:], off)
		o.conn.send(&b, t.data[off:off+l])
		off += l
	}
}

// handle processes one PDU from the target. An error drops the connection.
func (o *owner) handle(p inPDU) error {
	h := &p.h
	op := h.Opcode()
	// sequence numbers (RFC 7143 §4.2.2.1): StatSN advances on responses,
	// not on R2T, Data-In without status or a target's NOP-In ping.
	switch {
	case op == pdu.OpDataIn && h.Flags()&0x01 == 0, op == pdu.OpR2T, op == pdu.OpNopIn && h.ITT() == pdu.ReservedTag:
	default:
		if sn := h.StatSN(); int32(sn+1-o.expStatSN) > 0 {
			o.expStatSN = sn + 1
		}
	}
	if exp, mx := h.ExpCmdSN(), h.MaxCmdSN(); int32(mx-exp) >= -1 && int32(mx-o.maxCmdSN) > 0 {
		o.maxCmdSN = mx
	}
	switch op {
	case pdu.OpDataIn:
		t := o.tasks[h.ITT()]
		if t == nil {
			return nil // a task we gave up on (aborted)
		}
		off := h.BufferOffset()
		if !t.read || uint64(off)+uint64(len(p.data)) > uint64(len(t.data)) {
			return fmt.Errorf("Data-In [%d,+%d) outside the %d-byte buffer of ITT %#x: %w", off, len(p.data), len(t.data), t.itt, ErrProtocol)
		}
		copy(t.data[off:], p.data)
		t.got += uint32(len(p.data))
		if h.Flags()&0x01 != 0 { // S: status included
			t.status = h.B[3]
			t.residual = h.ResidualCount()
			t.under = h.Flags()&0x02 != 0
			t.over = h.Flags()&0x04 != 0
			o.complete(t)
		}
	case pdu.OpSCSIResp:
		t := o.tasks[h.ITT()]
		if t == nil {
			return nil
		}
		if h.B[2] != 0 {
			// iSCSI "target failure": the command did not run; re-issue.
			o.requeue(t)
			return nil
		}
		t.status = h.B[3]
		t.residual = h.ResidualCount()
		t.under = h.Flags()&0x02 != 0
		t.over = h.Flags()&0x04 != 0
		if len(p.data) >= 2 {
			sl := int(p.data[0])<<8 | int(p.data[1])
			if sl > len(p.data)-2 {
				sl = len(p.data) - 2
			}
			t.sense = append([]byte(nil), p.data[2:2+sl]...)
		}
		o.complete(t)
	case pdu.OpR2T:
		t := o.tasks[h.ITT()]
		if t == nil {
			return nil
		}
		off, n := h.BufferOffset(), h.U32(44)
		if !t.write || n == 0 || uint64(off)+uint64(n) > uint64(len(t.data)) || n > o.conn.p.MaxBurst {
			return fmt.Errorf("R2T [%d,+%d) outside the %d-byte write of ITT %#x or over MaxBurstLength: %w", off, n, len(t.data), t.itt, ErrProtocol)
		}
		o.dataOut(t, h.TTT(), off, n)
	case pdu.OpNopIn:
		if h.ITT() != pdu.ReservedTag {
			if h.ITT() == o.pingITT {
				o.pingITT = 0
			}
			return nil
		}
		if h.TTT() != pdu.ReservedTag { // the target pings us: answer
			var b [pdu.BHSLen]byte
			b[0] = pdu.OpNopOut | pdu.FlagImmed
			b[1] = pdu.FlagFinal
			copy(b[8:16], h.B[8:16])
			pdu.Put32(b[16:], pdu.ReservedTag)
			pdu.Put32(b[20:], h.TTT())
			pdu.Put32(b[24:], o.cmdSN)
			pdu.Put32(b[28:], o.expStatSN)
			o.conn.send(&b, p.data)
			o.c.stats.nopsIn.Add(1)
		}
	case pdu.OpTMFResp:
		t := o.tmfs[h.ITT()]
		if t == nil {
			return nil
		}
		delete(o.tmfs, h.ITT())
		t.abortITT = 0
		switch resp := h.B[2]; resp {
		case 0, 1: // function complete, task does not exist
			if o.tasks[t.itt] == t { // no answer came: send it again
				o.requeue(t)
			}
		default:
			return fmt.Errorf("ABORT TASK of ITT %#x answered %d: dropping the session", t.itt, resp)
		}
	case pdu.OpLogoutResp:
		if h.ITT() == o.logoutITT {
			o.conn.stop()
			o.conn = nil
		}
	case pdu.OpAsyncMsg:
		switch ev := h.B[36]; ev {
		case 1, 2, 3: // logout requested, connection or session to be dropped
			return fmt.Errorf("target asked to end the session (async event %d)", ev)
		}
	case pdu.OpReject:
		reason := h.B[2]
		return fmt.Errorf("target rejected a PDU (reason 0x%02x): %w", reason, ErrProtocol)
	case pdu.OpTextResp:
		// no text requests in the full feature phase
	default:
		return fmt.Errorf("unexpected opcode 0x%02x: %w", op, ErrProtocol)
	}
	return nil
}

func (o *owner) complete(t *task) {
	delete(o.tasks, t.itt)
	if t.abortITT != 0 {
		delete(o.tmfs, t.abortITT)
	}
	close(t.done)
}

// requeue takes t off the wire and puts it at the head of the queue.
func (o *owner) requeue(t *task) {
	delete(o.tasks, t.itt)
	o.pending = append([]*task{t}, o.pending...)
}
