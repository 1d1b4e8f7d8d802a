package iscsi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// Portals are "host:port" addresses to listen on. An empty host means
	// all interfaces and must be asked for explicitly ("0.0.0.0:3260").
	Portals []string
	Backend Backend
	Log     zerolog.Logger
	// QueueDepth is the command window per session (default 128).
	QueueDepth int
	// TPGT is the target portal group tag (default 1).
	TPGT uint16
	// NopInterval: idle time after which the target pings the initiator
	// (default 10s, negative disables). NopTimeout: how long a ping may go
	// unanswered before the connection is dropped (default 30s).
	NopInterval, NopTimeout time.Duration
	// IdlePoll: after a command that ran with nothing else in flight, how
	// long the connection polls its socket for the host's next command
	// before it sleeps (idlepoll.go; default 100us, negative disables).
	IdlePoll time.Duration

	// MaxRecvDataSegmentLength the target declares (default 256 KiB).
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength / FirstBurstLength the target accepts at most
	// (defaults 1 MiB / 256 KiB; the initiator's lower values win).
	MaxBurstLength   uint32
	FirstBurstLength uint32
	// MaxOutstandingR2T the target accepts at most (default 8).
	MaxOutstandingR2T uint32
	// DisableDigests refuses CRC32C digests.
	DisableDigests bool
	// DisableUnsolicited answers InitialR2T=Yes and ImmediateData=No.
	DisableUnsolicited bool
	// MaxTransferLength caps one command's expected data transfer length
	// (default DefaultMaxTransferLength); longer commands get CHECK
	// CONDITION, ILLEGAL REQUEST, INVALID FIELD IN CDB. It bounds the
	// memory one command may pin.
	MaxTransferLength uint32
	// MaxWriteBuffer caps the bytes of data buffers (write data, Data-In
	// of reads) reserved by outstanding commands across all sessions (default
	// DefaultMaxWriteBuffer; at least MaxTransferLength). One session may
	// hold at most half of it. See budget.go.
	MaxWriteBuffer int64
	// LoginTimeout bounds the whole login phase (default 15s).
	LoginTimeout time.Duration
	// MaxConnections caps the connections served at once, logins in
	// progress included; more are closed as soon as they are accepted
	// (default defaultMaxConnections: a quarter of the open-file limit,
	// 64..4096), so that connections from outside cannot take every file
	// descriptor the meta volume, the data volumes and the admin API need.
	MaxConnections int
	// Time2Wait / Time2Retain the target offers (defaults 2 / 0 s: at
	// ErrorRecoveryLevel 0 a session ends with its connection).
	DefaultTime2Wait, DefaultTime2Retain uint32

	// OnLogin, if set, is told of every login that completed or was
	// refused (with the reason), on the connection's goroutine: it must
	// not block (lmtgt serve queues it in the event log).
	OnLogin func(LoginEvent)

	// now is the clock of the CHAP failure limiter (tests; default
	// time.Now).
	now func() time.Time
}

// LoginEvent is the outcome of one login (Options.OnLogin).
type LoginEvent struct {
	Initiator string // InitiatorName ("" if it sent none)
	Address   string // the initiator's host:port
	Target    string // TargetName ("" for discovery)
	Discovery bool
	OK        bool
	// Reason of a refusal: a Refused* class, ": ", the details.
	Reason string
}

// Classes of refused logins (the start of LoginEvent.Reason).
const (
	RefusedUnknownTarget = "unknown target"
	RefusedACL           = "ACL"
	RefusedCHAP          = "CHAP failure"
	RefusedRateLimited   = "rate limited"
	RefusedTargetError   = "target error"
	RefusedProtocol      = "protocol"
)

// DefaultMaxTransferLength is the default Options.MaxTransferLength. A
// backend should not advertise a larger MAXIMUM TRANSFER LENGTH (VPD B0).
const DefaultMaxTransferLength = 16 << 20

// DefaultMaxWriteBuffer is the default Options.MaxWriteBuffer. lmtgt serve
// passes its own default, a share of physical memory.
const DefaultMaxWriteBuffer = 256 << 20

func (o *Options) setDefaults() {
	if o.QueueDepth <= 0 {
		o.QueueDepth = 128
	}
	if o.TPGT == 0 {
		o.TPGT = 1
	}
	if o.NopInterval == 0 {
		o.NopInterval = 10 * time.Second
	}
	if o.NopTimeout <= 0 {
		o.NopTimeout = 30 * time.Second
	}
	if o.IdlePoll == 0 {
		o.IdlePoll = defaultIdlePoll
	}
	if o.MaxRecvDataSegmentLength == 0 {
		o.MaxRecvDataSegmentLength = 256 << 10
	}
	o.MaxRecvDataSegmentLength = min(max(o.MaxRecvDataSegmentLength, 512), 1<<24-1)
	if o.MaxBurstLength == 0 {
		o.MaxBurstLength = 1 << 20
	}
	o.MaxBurstLength = min(max(o.MaxBurstLength, 512), 1<<24-1)
	if o.FirstBurstLength == 0 {
		o.FirstBurstLength = 256 << 10
	}
	o.FirstBurstLength = min(max(o.FirstBurstLength, 512), o.MaxBurstLength)
	if o.MaxOutstandingR2T == 0 {
		o.MaxOutstandingR2T = 8
	}
	if o.MaxTransferLength == 0 {
		o.MaxTransferLength = DefaultMaxTransferLength
	}
	if o.MaxWriteBuffer == 0 {
		o.MaxWriteBuffer = max(DefaultMaxWriteBuffer, int64(o.MaxTransferLength))
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = 15 * time.Second
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = defaultMaxConnections()
	}
	if o.DefaultTime2Wait == 0 {
		o.DefaultTime2Wait = 2
	}
}

// defaultMaxConnections is a quarter of the open-file limit, within
// 64..4096.
func defaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return int(min(max(rl.Cur/4, 64), 4096))
}

// Server is the iSCSI transport: portals, sessions and connections.
type Server struct {
	opts Options
	log  zerolog.Logger
	pool *bufPool
	// budget caps write buffers across sessions (budget.go).
	budget *writeBudget
	// authLimit counts failed CHAP logins (authlimit.go).
	authLimit *authLimiter

	mu struct {
		sync.Mutex
		started   bool
		closing   bool
		listeners []net.Listener
		conns     map[*conn]struct{}
		full      bool                    // MaxConnections reached (logged once until below)
		sessions  map[uint16]*session     // by TSIH
		byISID    map[sessionKey]*session // for reinstatement
		nextTSIH  uint16
	}
	// logins counts login phases (sessions.go).
	logins loginCounters
	// noInline makes every command run on its own goroutine (tests).
	noInline bool
	// zeroCopy lets large READs go out with sendfile (zerocopy.go). Off:
	// not enabled in the daemon until a referenced page's lifetime ends
	// with the initiator's acknowledgement, not with the send (the
	// socket keeps referring to the pages, and a split can hand the file
	// to another LUN meanwhile: docs/design.md "Zero-copy Data-In").
	// Tests turn it on.
	zeroCopy bool
	// zc counts zero-copy Data-In (zerocopy.go).
	zc zeroCopyCounters
	// rtcSlow: an inline command that took longer turns held writes off
	// for a while (rtc.go; tests set 0).
	rtcSlow time.Duration
	// idle counts idle polls; spinMax, when a test sets it, caps how
	// many run at once (idlepoll.go pollMax).
	idle    idlePollCounters
	spinMax int32
	// activity counts the connections receiving PDUs (idlepoll.go).
	activity activity
	// wg counts accept loops and connection goroutines.
	wg sync.WaitGroup
}

// sessionKey identifies a session for reinstatement (RFC 7143 §6.3.5).
type sessionKey struct {
	initiator string
	isid      [6]byte
	target    string
}

// NewServer checks opts and returns a Server that is not yet listening.
func NewServer(opts Options) (*Server, error) {
	if opts.Backend == nil {
		return nil, errors.New("iscsi: Options.Backend is nil")
	}
	if len(opts.Portals) == 0 {
		return nil, errors.New("iscsi: no portals")
	}
	for _, p := range opts.Portals {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return nil, fmt.Errorf("iscsi: portal %q: %w", p, err)
		}
	}
	opts.setDefaults()
	if opts.MaxWriteBuffer < int64(opts.MaxTransferLength) {
		return nil, fmt.Errorf("iscsi: MaxWriteBuffer %d is below MaxTransferLength %d: one command could never get its buffer",
			opts.MaxWriteBuffer, opts.MaxTransferLength)
	}
	s := &Server{opts: opts, log: opts.Log.With().Str("component", "iscsi").Logger()}
	s.rtcSlow = rtcSlowDefault
	s.pool = newBufPool(int(opts.MaxTransferLength))
	s.budget = newWriteBudget(opts.MaxWriteBuffer, int64(opts.MaxTransferLength))
	s.authLimit = newAuthLimiter(opts.now)
	s.mu.conns = make(map[*conn]struct{})
	s.mu.sessions = make(map[uint16]*session)
	s.mu.byISID = make(map[sessionKey]*session)
	return s, nil
}

// Start binds every portal and starts accepting. On error nothing stays bound.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.started {
		return errors.New("iscsi: server already started")
	}
	var ls []net.Listener
	for _, p := range s.opts.Portals {
		l, err := net.Listen("tcp", p)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return fmt.Errorf("iscsi: portal %s: %w", p, err)
		}
		ls = append(ls, l)
	}
	s.mu.started = true
	s.mu.listeners = ls
	for _, l := range ls {
		s.wg.Add(1)
		go s.acceptLoop(l)
		s.log.Info().Str("portal", l.Addr().String()).Msg("listening")
	}
	return nil
}

// Addrs returns the bound portal addresses (after Start).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, 0, len(s.mu.listeners))
	for _, l := range s.mu.listeners {
		out = append(out, l.Addr())
	}
	return out
}

func (s *Server) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.mu.closing
			s.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return
			}
			// temporary errors (EMFILE ...): back off, keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn().Err(err).Str("portal", l.Addr().String()).Msg("accept failed")
			t := time.NewTimer(backoff)
			<-t.C
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.mu.closing {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		if len(s.mu.conns) >= s.opts.MaxConnections {
			first := !s.mu.full
			s.mu.full = true
			s.mu.Unlock()
			nc.Close()
			if first {
				s.log.Warn().Int("max", s.opts.MaxConnections).Msg("connection limit reached: new connections are closed until some end")
			}
			continue
		}
		c := newConn(s, nc, l.Addr().String())
		s.mu.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

func (s *Server) connDone(c *conn) {
	s.mu.Lock()
	delete(s.mu.conns, c)
	if len(s.mu.conns) < s.opts.MaxConnections {
		s.mu.full = false
	}
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, lets in-flight commands finish, closes every
// session and waits for all goroutines. When ctx ends first, remaining
// connections are closed hard and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.mu.closing = true
	ls := s.mu.listeners
	s.mu.listeners = nil
	conns := make([]*conn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, c := range conns {
		c.drain()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.mu.conns {
			c.closeNow()
		}
		s.mu.Unlock()
		// Sockets are closed; a command stuck in the backend may still
		// hold its goroutine. Give it a moment, then stop waiting.
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			s.log.Warn().Msg("shutdown: commands still running in the backend")
		}
		return fmt.Errorf("iscsi: shutdown: %w", ctx.Err())
	}
}

// session is one iSCSI session (one connection: MaxConnections=1).
type session struct {
	key   sessionKey
	tsih  uint16
	conn  *conn
	nexus Nexus
}

// register adds a new session for c, reinstating (closing) an old session
// with the same initiator, ISID and target. When tsih is nonzero the login
// names an existing session: it must exist and belong to the same
// initiator/ISID/target (errNoSession otherwise); its connection is
// replaced and the TSIH kept. It returns the old connection the caller must
// wait for, if any.
func (s *Server) register(key sessionKey, tsih uint16, c *conn) (*session, *conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closing {
		return nil, nil, errShuttingDown
	}
	var old *conn
	if tsih != 0 {
		prev := s.mu.sessions[tsih]
		if prev == nil || prev.key != key {
			return nil, nil, errNoSession
		}
		old = prev.conn
		ss := &session{key: key, tsih: tsih, conn: c}
		s.mu.sessions[tsih] = ss
		s.mu.byISID[key] = ss
		return ss, old, nil
	}
	if prev := s.mu.byISID[key]; prev != nil {
		old = prev.conn
		delete(s.mu.byISID, key)
		delete(s.mu.sessions, prev.tsih)
	}
	if len(s.mu.sessions) >= 65535 {
		return nil, nil, errors.New("no free TSIH")
	}
	for {
		s.mu.nextTSIH++
		if s.mu.nextTSIH == 0 {
			s.mu.nextTSIH = 1
		}
		if _, used := s.mu.sessions[s.mu.nextTSIH]; !used {
			break
		}
	}
	ss := &session{key: key, tsih: s.mu.nextTSIH, conn: c}
	s.mu.sessions[ss.tsih] = ss
	s.mu.byISID[key] = ss
	return ss, old, nil
}

// lookupTSIH returns the session with tsih, if it exists.
func (s *Server) lookupTSIH(tsih uint16) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.sessions[tsih]
}

// release forgets ss (its TSIH becomes free).
func (s *Server) release(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.sessions[ss.tsih] == ss {
		delete(s.mu.sessions, ss.tsih)
	}
	if s.mu.byISID[ss.key] == ss {
		delete(s.mu.byISID, ss.key)
	}
}

// sessionCount reports the number of live sessions (tests).
func (s *Server) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.sessions)
}

var (
	errShuttingDown = errors.New("server shutting down")
	errNoSession    = errors.New("session does not exist")
)
