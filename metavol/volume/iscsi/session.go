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
	Commands    int64 // SCSI commands sent (re-issues included)
}

// task is one SCSI command from submission to completion. Tasks are pooled
// per Client (Do takes one and puts it back once it has read the results),
// so a command in steady state allocates nothing. The fields below
// "session" are guarded by Client.mu; data is written by the reader
// goroutine (Data-In) while the task is in flight on its connection, and
// only by it.
type task struct {
	cdb   [16]byte
	read  bool
	write bool
	data  []byte
	seq   uint64
	done  chan struct{} // cap 1: one send when the task is finished

	// results, valid after the send on done
	status   byte
	sense    []byte
	residual uint32
	under    bool
	over     bool
	err      error

	// session (Client.mu)
	itt       uint32
	cmdSN     uint32
	sentTick  uint64 // session.ticks when sent
	attempts  int
	abortITT  uint32           // non-zero while an ABORT TASK for it is out
	abortTick uint64           // session.ticks when the ABORT TASK was sent
	inFlight  bool             // in session.tasks
	hdr       [pdu.BHSLen]byte // the SCSI Command PDU header (built here, copied into the write queue)
}

// session is the state of the session shared by callers (Do issues its
// command itself), the connection's reader (it completes commands) and
// the owner goroutine (timers, drop, re-login, close). Guarded by
// Client.mu, which is never held across I/O.
type session struct {
	conn                       *conn // nil while down
	cmdSN, expStatSN, maxCmdSN uint32
	nextITT                    uint32
	tasks                      map[uint32]*task // in flight on conn, by ITT
	tmfs                       map[uint32]*task // ABORT TASK in flight, by the TMF's ITT
	pending                    []*task          // accepted, not sent (re-issues first)
	failFast                   bool             // replacement timeout passed: fail I/O at once
	closing                    bool             // Close called: refuse new commands
	waiters                    int              // callers waiting for room (MaxQueued)
	ticks                      uint64           // owner ticks: the clock of command and abort timeouts
	pingITT                    uint32           // our NOP-Out awaiting its NOP-In; 0 when none
	pingTick                   uint64
	logoutITT                  uint32
}

// Client is an iSCSI initiator session to one target (error recovery level
// 0, one connection). Every method is safe for concurrent use.
//
// Ownership: the session state (sequence numbers, the ITT table, the
// pending queue) is guarded by mu. A caller issues its own command (Do:
// under mu it takes an ITT and a CmdSN and queues the PDUs, then writes
// them itself unless a write is already under way) and waits on its
// task's done channel; the connection's reader completes the command
// directly (no hop through another goroutine). The owner goroutine (run)
// owns the connection's life: login, drop, re-login, close, and the timer
// scan (one ticker for every command's timeout, pings and the replacement
// timeout). No lock is held across I/O.
type Client struct {
	cfg  Config
	isid [6]byte
	lun  [8]byte
	log  *slog.Logger

	closing chan struct{}
	closeMu sync.Once
	done    chan struct{}
	seq     atomic.Uint64
	pool    sync.Pool // *task

	mu    sync.Mutex
	s     session
	space sync.Cond // on mu: room in the queue (MaxQueued), or closing

	state  atomic.Int32
	params atomic.Pointer[Params]
	fence  fenceState // pr.go
	stats  struct {
		logins, reissued, aborts, nopsIn, nopsOut, drops, expired, timedOut, maxInFlight, commands atomic.Int64
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
	c := &Client{cfg: cfg, log: log.With("remote", cfg.String()), lun: encodeLUN(cfg.LUN),
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
		Expired: s.expired.Load(), TimedOut: s.timedOut.Load(), MaxInFlight: s.maxInFlight.Load(),
		Commands: s.commands.Load()}
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

// request is a Command with its CDB held by value, so that building one
// does not allocate (a Command's CDB slice escapes with its Data).
type request struct {
	cdb    [16]byte
	cdbLen int
	data   []byte
	read   bool
	write  bool
}

func (cmd *Command) request() (request, error) {
	if len(cmd.CDB) == 0 || len(cmd.CDB) > 16 {
		return request{}, fmt.Errorf("cdb of %d bytes (1..16 supported)", len(cmd.CDB))
	}
	if cmd.Read && cmd.Write {
		return request{}, fmt.Errorf("bidirectional commands are not supported")
	}
	r := request{cdbLen: len(cmd.CDB), data: cmd.Data, read: cmd.Read, write: cmd.Write}
	copy(r.cdb[:], cmd.CDB)
	return r, nil
}

// Do sends one command and waits for its answer. A transport failure is
// returned once the replacement timeout has passed (ErrSessionDown) or the
// client is closed (ErrClosed); a SCSI status comes back in Response.
func (c *Client) Do(cmd Command) (Response, error) {
	r, err := cmd.request()
	if err != nil {
		return Response{}, fmt.Errorf("iscsi %s: %w", c.cfg, err)
	}
	return c.do(r)
}

func (c *Client) do(req request) (Response, error) {
	t, cn, err := c.issue(req)
	if err != nil {
		return Response{}, err
	}
	if cn != nil {
		cn.flush() // write it ourselves unless a write is under way
	}
	return c.await(t)
}

// issue accepts req and queues its PDUs (or queues the task while the
// session is down or the window is closed); the caller writes the queue
// (cn.flush, when cn is not nil) and then must await the task: its
// buffer is the target's until then.
func (c *Client) issue(req request) (*task, *conn, error) {
	t, _ := c.pool.Get().(*task)
	if t == nil {
		t = &task{done: make(chan struct{}, 1)}
	}
	*t = task{cdb: req.cdb, read: req.read, write: req.write, data: req.data, done: t.done}
	s := &c.s
	c.mu.Lock()
	for !s.closing && !s.failFast && len(s.pending)+len(s.tasks) >= c.cfg.MaxQueued {
		s.waiters++
		c.space.Wait() // bounded: callers wait
		s.waiters--
	}
	var refused error
	switch {
	case s.closing:
		refused = ErrClosed
	case s.failFast:
		refused = ErrSessionDown
	}
	if refused != nil {
		c.mu.Unlock()
		c.pool.Put(t)
		return nil, nil, fmt.Errorf("iscsi %s: scsi op 0x%02x: %w", c.cfg, req.cdb[0], refused)
	}
	t.seq = c.seq.Add(1)
	var cn *conn
	if len(s.pending) == 0 && c.canSendLocked() {
		// the common case: straight onto the wire, no queue
		t.attempts = 1
		c.sendLocked(t)
		cn = s.conn
		if n := int64(len(s.tasks)); n > c.stats.maxInFlight.Load() {
			c.stats.maxInFlight.Store(n)
		}
	} else {
		s.pending = append(s.pending, t)
		cn = c.issueLocked()
	}
	c.mu.Unlock()
	return t, cn, nil
}

// await waits for t to finish, returns its results and puts it back in
// the pool.
func (c *Client) await(t *task) (Response, error) {
	<-t.done
	var r Response
	err := t.err
	if err != nil {
		err = fmt.Errorf("iscsi %s: scsi op 0x%02x: %w", c.cfg, t.cdb[0], err)
	} else {
		r = Response{Status: t.status, Sense: t.sense, Residual: t.residual, Underrun: t.under, Overrun: t.over}
	}
	*t = task{done: t.done}
	c.pool.Put(t)
	return r, err
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

	cur         *conn // the connection the owner started (Client.s.conn, read without mu)
	downSince   time.Time
	connecting  bool
	connCh      chan connectResult
	connCancel  context.CancelFunc
	backoff     time.Duration
	lastRecv    time.Time
	loggingOut  bool
	closeBefore time.Time
}

func newOwner(c *Client) *owner {
	c.s.tasks, c.s.tmfs, c.s.nextITT = map[uint32]*task{}, map[uint32]*task{}, 1
	c.space.L = &c.mu
	return &owner{c: c, cfg: c.cfg, connCh: make(chan connectResult, 1)}
}

func (o *owner) up(li *loggedIn) {
	cn := newConn(li, o.c)
	o.cur = cn
	o.downSince = time.Time{}
	o.backoff = 0
	o.lastRecv = time.Now()
	p := li.p
	o.c.params.Store(&p)
	o.c.stats.logins.Add(1)
	s := &o.c.s
	o.c.mu.Lock()
	s.conn = cn
	s.cmdSN, s.maxCmdSN, s.expStatSN = li.cmdSN, li.maxCmdSN, li.expStatSN
	s.failFast = false
	s.pingITT = 0
	o.c.state.Store(int32(StateUp))
	kick := o.c.issueLocked()
	o.c.mu.Unlock()
	cn.start()
	if kick != nil {
		kick.kick()
	}
}

func (o *owner) tick() time.Duration {
	d := min(o.cfg.CommandTimeout, o.cfg.NopInterval, o.cfg.NopTimeout, o.cfg.ReplacementTimeout, o.cfg.AbortTimeout) / 4
	return max(min(d, time.Second), 5*time.Millisecond)
}

func (o *owner) run() {
	defer close(o.c.done)
	tick := o.tick()
	tk := time.NewTicker(tick)
	defer tk.Stop()
	closing := o.c.closing
	for {
		var errc chan error
		if o.cur != nil {
			errc = o.cur.errc
		}
		select {
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
				o.c.mu.Lock()
				n := len(o.c.s.pending) + len(o.c.s.tasks)
				o.c.mu.Unlock()
				o.c.log.Info("iscsi session re-established", "requeued", n)
			}
		case <-tk.C:
			o.timers(tick)
		case <-closing:
			closing = nil
			o.startLogout()
		}
		if closing == nil && o.finishClose() {
			return
		}
		if o.cur == nil && !o.connecting && closing != nil {
			o.reconnect()
		}
	}
}

// finishClose reports whether closing is complete (logout answered, timed
// out or impossible) and, if so, fails everything left.
func (o *owner) finishClose() bool {
	if o.cur != nil && o.loggingOut && time.Now().Before(o.closeBefore) {
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
	if o.cur != nil {
		o.cur.stop()
		o.cur = nil
	}
	c := o.c
	c.mu.Lock()
	c.s.conn = nil
	for _, t := range c.s.tasks {
		c.finishLocked(t, ErrClosed)
	}
	for _, t := range c.s.pending {
		c.finishLocked(t, ErrClosed)
	}
	c.s.tasks, c.s.pending = nil, nil
	clear(c.s.tmfs)
	c.space.Broadcast()
	c.mu.Unlock()
	c.state.Store(int32(StateClosed))
	return true
}

func (o *owner) startLogout() {
	c := o.c
	c.mu.Lock()
	c.s.closing = true
	c.space.Broadcast()
	cn := c.s.conn
	if cn == nil {
		c.mu.Unlock()
		return
	}
	c.s.logoutITT = c.newITTLocked()
	o.loggingOut = true
	o.closeBefore = time.Now().Add(2 * time.Second)
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpLogoutReq | pdu.FlagImmed
	b[1] = pdu.FlagFinal // reason 0: close the session
	pdu.Put32(b[16:], c.s.logoutITT)
	pdu.Put32(b[24:], c.s.cmdSN)
	pdu.Put32(b[28:], c.s.expStatSN)
	cn.queue(&b, nil)
	c.mu.Unlock()
	cn.kick()
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
// the head of the pending queue, to be re-issued after the next login. It
// stops the connection (its reader and writers are done with every
// caller's buffer) before it takes mu.
func (o *owner) drop(err error) {
	cn := o.cur
	if cn == nil {
		return
	}
	cn.stop()
	o.cur = nil
	c := o.c
	c.stats.drops.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.s
	s.conn = nil
	s.pingITT = 0
	if o.loggingOut {
		return
	}
	c.log.Warn("iscsi connection lost", "err", err, "in_flight", len(s.tasks))
	requeue := make([]*task, 0, len(s.tasks)+len(s.pending))
	for _, t := range s.tasks {
		t.inFlight = false
		requeue = append(requeue, t)
	}
	sortBySeq(requeue)
	s.pending = append(requeue, s.pending...)
	clear(s.tasks)
	clear(s.tmfs)
	for _, t := range s.pending {
		t.abortITT = 0
	}
	o.downSince = time.Now()
	c.state.Store(int32(StateConnecting))
}

func sortBySeq(ts []*task) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].seq < ts[j-1].seq; j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// finishLocked ends t with err (nil: its status is set) and wakes its
// caller; nothing references t afterwards. mu is held.
func (c *Client) finishLocked(t *task, err error) {
	t.err = err
	t.done <- struct{}{}
	if c.s.waiters > 0 {
		c.space.Signal()
	}
}

func (c *Client) newITTLocked() uint32 {
	s := &c.s
	for {
		s.nextITT++
		itt := s.nextITT
		if itt == 0 || itt == pdu.ReservedTag {
			continue
		}
		if _, busy := s.tasks[itt]; busy {
			continue
		}
		if _, busy := s.tmfs[itt]; busy {
			continue
		}
		if itt == s.pingITT || itt == s.logoutITT {
			continue
		}
		return itt
	}
}

// timers runs the periodic checks: replacement timeout, command timeouts,
// abort timeouts, NOP pings. Timeouts are counted in ticks: a command
// times out after at least CommandTimeout and at most one tick more.
func (o *owner) timers(tick time.Duration) {
	now := time.Now()
	c := o.c
	s := &c.s
	c.mu.Lock()
	s.ticks++
	if o.cur == nil {
		if !o.downSince.IsZero() && now.Sub(o.downSince) >= o.cfg.ReplacementTimeout && !s.failFast {
			s.failFast = true
			c.state.Store(int32(StateDown))
			c.log.Error("iscsi session not back within the replacement timeout: failing I/O",
				"timeout", o.cfg.ReplacementTimeout, "failed", len(s.pending))
			for _, t := range s.pending {
				c.stats.expired.Add(1)
				c.finishLocked(t, fmt.Errorf("%w for %v", ErrSessionDown, o.cfg.ReplacementTimeout))
			}
			s.pending = nil
			c.space.Broadcast()
		}
		c.mu.Unlock()
		return
	}
	if o.loggingOut {
		c.mu.Unlock()
		return
	}
	if o.cur.heard.Swap(false) {
		o.lastRecv = now
	}
	// elapsed(t0) is a lower bound of the time since tick t0.
	elapsed := func(t0 uint64) time.Duration {
		if s.ticks <= t0 {
			return 0
		}
		return time.Duration(s.ticks-t0-1) * tick
	}
	var dropErr error
	for _, t := range s.tasks {
		if t.abortITT != 0 {
			if elapsed(t.abortTick) >= o.cfg.AbortTimeout {
				dropErr = fmt.Errorf("ABORT TASK for ITT %#x unanswered after %v", t.itt, o.cfg.AbortTimeout)
				break
			}
			continue
		}
		if elapsed(t.sentTick) >= o.cfg.CommandTimeout {
			c.abortLocked(t)
		}
	}
	if dropErr == nil {
		if s.pingITT != 0 {
			if elapsed(s.pingTick) >= o.cfg.NopTimeout {
				dropErr = fmt.Errorf("NOP-Out unanswered after %v", o.cfg.NopTimeout)
			}
		} else if now.Sub(o.lastRecv) >= o.cfg.NopInterval {
			c.pingLocked()
		}
	}
	cn := s.conn
	c.mu.Unlock()
	if dropErr != nil {
		o.drop(dropErr)
		return
	}
	cn.kick()
}

func (c *Client) pingLocked() {
	s := &c.s
	s.pingITT = c.newITTLocked()
	s.pingTick = s.ticks
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpNopOut | pdu.FlagImmed
	b[1] = pdu.FlagFinal
	pdu.Put32(b[16:], s.pingITT)
	pdu.Put32(b[20:], pdu.ReservedTag)
	pdu.Put32(b[24:], s.cmdSN)
	pdu.Put32(b[28:], s.expStatSN)
	s.conn.queue(&b, nil)
	c.stats.nopsOut.Add(1)
}

// abortLocked sends ABORT TASK for a command that got no answer in time.
func (c *Client) abortLocked(t *task) {
	s := &c.s
	itt := c.newITTLocked()
	t.abortITT = itt
	t.abortTick = s.ticks
	s.tmfs[itt] = t
	c.stats.aborts.Add(1)
	c.log.Warn("iscsi command timed out: aborting it", "itt", t.itt, "op", t.cdb[0], "after", c.cfg.CommandTimeout)
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpTMFReq | pdu.FlagImmed
	b[1] = pdu.FlagFinal | 1 // ABORT TASK
	copy(b[8:16], c.lun[:])
	pdu.Put32(b[16:], itt)
	pdu.Put32(b[20:], t.itt)
	pdu.Put32(b[24:], s.cmdSN)
	pdu.Put32(b[28:], s.expStatSN)
	pdu.Put32(b[32:], t.cmdSN)
	s.conn.queue(&b, nil)
}

// issueLocked sends pending commands while the CmdSN window and the queue
// depth allow. It returns the connection when it queued PDUs on it (the
// caller flushes or kicks it after unlocking mu), else nil.
func (c *Client) issueLocked() *conn {
	s := &c.s
	cn := s.conn
	if cn == nil || s.logoutITT != 0 {
		return nil
	}
	sent := false
	for len(s.pending) > 0 && c.canSendLocked() {
		t := s.pending[0]
		s.pending[0] = nil
		s.pending = s.pending[1:]
		if t.attempts >= c.cfg.MaxAttempts {
			c.stats.timedOut.Add(1)
			c.finishLocked(t, fmt.Errorf("%w: sent %d times", ErrTimeout, t.attempts))
			continue
		}
		if t.attempts > 0 {
			c.stats.reissued.Add(1)
		}
		t.attempts++
		c.sendLocked(t)
		sent = true
	}
	if len(s.pending) == 0 && cap(s.pending) > 4*c.cfg.QueueDepth {
		s.pending = nil // let a large backing array go
	}
	if n := int64(len(s.tasks)); n > c.stats.maxInFlight.Load() {
		c.stats.maxInFlight.Store(n)
	}
	if !sent {
		return nil
	}
	return cn
}

// canSendLocked: the connection is up and the queue depth and the
// target's CmdSN window have room for one more command.
func (c *Client) canSendLocked() bool {
	s := &c.s
	return s.conn != nil && s.logoutITT == 0 && len(s.tasks) < c.cfg.QueueDepth && int32(s.maxCmdSN-s.cmdSN) >= 0
}

func (c *Client) sendLocked(t *task) {
	s := &c.s
	p := &s.conn.p
	c.stats.commands.Add(1)
	t.itt = c.newITTLocked()
	t.cmdSN = s.cmdSN
	s.cmdSN++
	t.sentTick = s.ticks
	t.abortITT = 0
	t.inFlight = true
	s.tasks[t.itt] = t
	edtl := uint32(len(t.data))
	b := &t.hdr
	*b = [pdu.BHSLen]byte{}
	b[0] = pdu.OpSCSICmd
	b[1] = 1 // simple task attribute
	if t.read {
		b[1] |= pdu.FlagRead
	}
	if t.write {
		b[1] |= pdu.FlagWrite
	}
	copy(b[8:16], c.lun[:])
	pdu.Put32(b[16:], t.itt)
	pdu.Put32(b[20:], edtl)
	pdu.Put32(b[24:], t.cmdSN)
	pdu.Put32(b[28:], s.expStatSN)
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
	s.conn.queue(b, t.data[:imm])
	if unsol > imm {
		c.dataOutLocked(t, pdu.ReservedTag, imm, unsol-imm)
	}
}

// dataOutLocked sends [off, off+n) of t's data as one Data-Out sequence.
func (c *Client) dataOutLocked(t *task, ttt, off, n uint32) {
	s := &c.s
	seg := s.conn.p.TargetMRDSL
	var sn uint32
	for end := off + n; off < end; sn++ {
		l := min(seg, end-off)
		var b [pdu.BHSLen]byte
		b[0] = pdu.OpDataOut
		if off+l == end {
			b[1] = pdu.FlagFinal
		}
		copy(b[8:16], c.lun[:])
		pdu.Put32(b[16:], t.itt)
		pdu.Put32(b[20:], ttt)
		pdu.Put32(b[28:], s.expStatSN)
		pdu.Put32(b[36:], sn)
		pdu.Put32(b[40:], off)
		s.conn.queue(&b, t.data[off:off+l])
		off += l
	}
}

// seqLocked updates ExpStatSN and MaxCmdSN from a PDU of the target
// (RFC 7143 §4.2.2.1): StatSN advances on responses, not on R2T, Data-In
// without status or a target's NOP-In ping.
func (c *Client) seqLocked(h *pdu.Header) {
	s := &c.s
	switch op := h.Opcode(); {
	case op == pdu.OpDataIn && h.Flags()&0x01 == 0, op == pdu.OpR2T, op == pdu.OpNopIn && h.ITT() == pdu.ReservedTag:
	default:
		if sn := h.StatSN(); int32(sn+1-s.expStatSN) > 0 {
			s.expStatSN = sn + 1
		}
	}
	if exp, mx := h.ExpCmdSN(), h.MaxCmdSN(); int32(mx-exp) >= -1 && int32(mx-s.maxCmdSN) > 0 {
		s.maxCmdSN = mx
	}
}

// dataInTarget returns the task a Data-In PDU belongs to and checks that
// its segment fits the task's buffer (nil, nil: a task we gave up on).
func (c *Client) dataInTargetLocked(h *pdu.Header) (*task, error) {
	t := c.s.tasks[h.ITT()]
	if t == nil {
		return nil, nil
	}
	off, n := h.BufferOffset(), h.DataLen()
	if !t.read || uint64(off)+uint64(n) > uint64(len(t.data)) {
		return nil, fmt.Errorf("Data-In [%d,+%d) outside the %d-byte buffer of ITT %#x: %w", off, n, len(t.data), t.itt, ErrProtocol)
	}
	return t, nil
}

// handleLocked processes one PDU from the target other than a Data-In
// segment (whose data the reader placed already). data is the PDU's own
// data segment. An error drops the connection; errLoggedOut ends it
// after our logout was answered.
func (c *Client) handleLocked(cn *conn, h *pdu.Header, data []byte) error {
	s := &c.s
	switch op := h.Opcode(); op {
	case pdu.OpDataIn: // the status of a Data-In with S set
		t := s.tasks[h.ITT()]
		if t == nil {
			return nil
		}
		t.status = h.B[3]
		t.residual = h.ResidualCount()
		t.under = h.Flags()&0x02 != 0
		t.over = h.Flags()&0x04 != 0
		c.completeLocked(t)
	case pdu.OpSCSIResp:
		t := s.tasks[h.ITT()]
		if t == nil {
			return nil
		}
		if h.B[2] != 0 {
			// iSCSI "target failure": the command did not run; re-issue.
			c.requeueLocked(t)
			return nil
		}
		t.status = h.B[3]
		t.residual = h.ResidualCount()
		t.under = h.Flags()&0x02 != 0
		t.over = h.Flags()&0x04 != 0
		if len(data) >= 2 {
			sl := int(data[0])<<8 | int(data[1])
			if sl > len(data)-2 {
				sl = len(data) - 2
			}
			t.sense = append([]byte(nil), data[2:2+sl]...)
		}
		c.completeLocked(t)
	case pdu.OpR2T:
		t := s.tasks[h.ITT()]
		if t == nil {
			return nil
		}
		off, n := h.BufferOffset(), h.U32(44)
		if !t.write || n == 0 || uint64(off)+uint64(n) > uint64(len(t.data)) || n > cn.p.MaxBurst {
			return fmt.Errorf("R2T [%d,+%d) outside the %d-byte write of ITT %#x or over MaxBurstLength: %w", off, n, len(t.data), t.itt, ErrProtocol)
		}
		c.dataOutLocked(t, h.TTT(), off, n)
	case pdu.OpNopIn:
		if h.ITT() != pdu.ReservedTag {
			if h.ITT() == s.pingITT {
				s.pingITT = 0
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
			pdu.Put32(b[24:], s.cmdSN)
			pdu.Put32(b[28:], s.expStatSN)
			cn.queue(&b, data)
			c.stats.nopsIn.Add(1)
		}
	case pdu.OpTMFResp:
		t := s.tmfs[h.ITT()]
		if t == nil {
			return nil
		}
		delete(s.tmfs, h.ITT())
		t.abortITT = 0
		switch resp := h.B[2]; resp {
		case 0, 1: // function complete, task does not exist
			if t.inFlight && s.tasks[t.itt] == t { // no answer came: send it again
				c.requeueLocked(t)
			}
		default:
			return fmt.Errorf("ABORT TASK of ITT %#x answered %d: dropping the session", t.itt, resp)
		}
	case pdu.OpLogoutResp:
		if h.ITT() == s.logoutITT {
			return errLoggedOut
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

// errLoggedOut: our logout was answered; the owner ends the connection.
var errLoggedOut = errors.New("logged out")

func (c *Client) completeLocked(t *task) {
	s := &c.s
	delete(s.tasks, t.itt)
	t.inFlight = false
	if t.abortITT != 0 {
		delete(s.tmfs, t.abortITT)
	}
	c.finishLocked(t, nil)
}

// requeueLocked takes t off the wire and puts it at the head of the queue.
func (c *Client) requeueLocked(t *task) {
	s := &c.s
	delete(s.tasks, t.itt)
	t.inFlight = false
	s.pending = append(s.pending, nil)
	copy(s.pending[1:], s.pending)
	s.pending[0] = t
}
