package target

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// Options configures a Server.
type Options struct {
	// Portals are the "host:port" addresses to listen on.
	Portals []string
	Log     zerolog.Logger
	// Reservations persists persistent-reservation state per LUN ID; nil
	// keeps it in memory only.
	Reservations ReservationStore
	// QueueDepth is the per-session command window (transport default when 0).
	QueueDepth int
	// MaxWriteBuffer caps write buffers reserved by outstanding commands
	// across all sessions (transport default when 0).
	MaxWriteBuffer int64
	// IdlePoll: how long a connection polls for the host's next command
	// after one that ran alone (iscsi.Options; 0: the transport's default,
	// negative: never).
	IdlePoll time.Duration
	// OnLogin is told of every login and refused login (iscsi.Options);
	// lmtgt serve records them in lm's event log.
	OnLogin func(iscsi.LoginEvent)
}

// Errors returned by Apply.
var (
	ErrInvalidConfig = errors.New("invalid target configuration")
)

// maxLUNNumber bounds LUN numbers to SAM flat-space addressing.
const maxLUNNumber = 16383

// Server is the SCSI front end: it holds the targets and their LUNs, serves
// SCSI commands for the iSCSI transport (it implements iscsi.Backend) and
// runs that transport (serve.go).
type Server struct {
	opts Options
	log  zerolog.Logger

	// snap is the dispatch table: replaced as a whole on every change,
	// read without locks by every command.
	snap atomic.Pointer[snapshot]

	// mu guards the fields below and serializes Apply / CapacityChanged.
	// Never held during I/O.
	mu      sync.Mutex
	devs    map[string]*lunDev // by LUN ID: every LUN mapped in some target
	nexuses map[*nexus]struct{}

	transport transportState // serve.go

	// discoveryCHAP is the CHAP discovery sessions need (nil: none).
	discoveryCHAP atomic.Pointer[iscsi.CHAP]

	// cmds recycles Cmds (nexus.go Execute); chunks recycles 1 MiB
	// buffers for the handlers that read before they write or compare
	// (VERIFY, WRITE SAME, COMPARE AND WRITE, ORWRITE).
	cmds, chunks sync.Pool
}

// snapshot is an immutable view of the configuration.
type snapshot struct {
	targets map[string]*targetView
	order   []string // IQNs, sorted
	alua    aluaView // alua.go
}

// targetView is one target in a snapshot.
type targetView struct {
	cfg     Target
	allow   map[string]bool
	luns    map[uint64]*lunDev
	numbers []uint64 // sorted LUN numbers
	// group and port are the ALUA target port group and relative target
	// port ID; access holds the LUNs (by ID) whose state on this port is
	// not active/optimized (alua.go).
	group, port uint16
	access      map[string]AccessState
	// readOnly holds the write-protected LUN numbers and masks the LUN
	// numbers visible to listed initiators only (config.go LUN).
	readOnly map[uint64]bool
	masks    map[uint64]map[string]bool
}

// lun returns the logical unit initiator reaches at LUN number num (nil:
// none, or masked from that initiator). This is the one masking rule:
// Execute, REPORT LUNS, task management and EXTENDED COPY use it.
func (tv *targetView) lun(num uint64, initiator string) *lunDev {
	if tv == nil {
		return nil
	}
	d := tv.luns[num]
	if d == nil {
		return nil
	}
	if m := tv.masks[num]; m != nil && !m[initiator] {
		return nil
	}
	return d
}

// numbersFor lists the LUN numbers initiator sees, sorted.
func (tv *targetView) numbersFor(initiator string) []uint64 {
	if tv == nil {
		return nil
	}
	if len(tv.masks) == 0 {
		return tv.numbers
	}
	out := make([]uint64, 0, len(tv.numbers))
	for _, num := range tv.numbers {
		if tv.lun(num, initiator) != nil {
			out = append(out, num)
		}
	}
	return out
}

// New creates a Server with no targets. Start binds the portals.
func New(opts Options) (*Server, error) {
	glueInit(opts.Log)
	s := &Server{
		opts:    opts,
		log:     opts.Log.With().Str("component", "scsi").Logger(),
		devs:    map[string]*lunDev{},
		nexuses: map[*nexus]struct{}{},
	}
	s.cmds.New = func() any { return new(Cmd) }
	s.chunks.New = func() any { b := make([]byte, 1<<20); return &b }
	s.snap.Store(&snapshot{targets: map[string]*targetView{}})
	return s, nil
}

// Apply replaces the whole target configuration live. New LUN mappings
// raise REPORTED LUNS DATA HAS CHANGED on the existing nexuses of the
// target; unmapped LUNs answer LOGICAL UNIT NOT SUPPORTED from then on.
// Persistent reservations of a LUN are loaded when it first appears.
// Sessions logged in to a target that is no longer in the configuration
// are ended (their running commands answer first).
func (s *Server) Apply(targets []Target) error {
	gone, err := s.apply(targets)
	if err != nil {
		return err
	}
	s.transport.mu.Lock()
	ts := s.transport.srv
	s.transport.mu.Unlock()
	if ts == nil {
		return nil
	}
	for _, iqn := range gone {
		if n := ts.CloseTargetSessions(iqn); n > 0 {
			s.log.Info().Str("iqn", iqn).Int("sessions", n).Msg("target removed: sessions closed")
		}
	}
	// Sessions on a portal no longer in their target's portal group.
	snap := s.snap.Load()
	for _, t := range targets {
		if len(t.Portals) == 0 {
			continue
		}
		tv := snap.targets[t.IQN]
		if n := ts.ClosePortalSessions(t.IQN, tv.onPortal); n > 0 {
			s.log.Info().Str("iqn", t.IQN).Int("sessions", n).Msg("portal removed from the target: sessions on it closed")
		}
	}
	return nil
}

// apply is Apply's configuration swap; it returns the IQNs removed.
func (s *Server) apply(targets []Target) (gone []string, err error) {
	if err := validate(targets); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	old := s.snap.Load()
	devs := map[string]*lunDev{}
	var created []*lunDev
	for _, t := range targets {
		for _, l := range t.LUNs {
			if devs[l.ID] != nil {
				if err := devs[l.ID].sameConfig(l); err != nil {
					return nil, err
				}
				continue
			}
			d := s.devs[l.ID]
			if d == nil {
				nd, err := newLunDev(s, l)
				if err != nil {
					return nil, err
				}
				d = nd
				created = append(created, d)
			} else if d.needsRebuild(l) {
				if err := d.rebuild(l, d.cur().vol != l.Volume); err != nil {
					return nil, err
				}
			}
			devs[l.ID] = d
		}
	}

	snap := &snapshot{targets: map[string]*targetView{}}
	ports := portsOf(targets)
	for _, t := range targets {
		gp := ports[t.IQN]
		tv := &targetView{
			cfg:      t,
			allow:    map[string]bool{},
			luns:     map[uint64]*lunDev{},
			group:    gp[0],
			port:     gp[1],
			readOnly: map[uint64]bool{},
			masks:    map[uint64]map[string]bool{},
		}
		for _, ini := range t.Initiators {
			tv.allow[ini] = true
		}
		for _, l := range t.LUNs {
			d := devs[l.ID]
			tv.luns[l.Number] = d
			tv.numbers = append(tv.numbers, l.Number)
			if l.ReadOnly {
				tv.readOnly[l.Number] = true
			}
			if len(l.Initiators) > 0 {
				m := map[string]bool{}
				for _, ini := range l.Initiators {
					m[ini] = true
				}
				tv.masks[l.Number] = m
			}
		}
		sort.Slice(tv.numbers, func(i, j int) bool { return tv.numbers[i] < tv.numbers[j] })
		snap.targets[t.IQN] = tv
		snap.order = append(snap.order, t.IQN)
	}
	sort.Strings(snap.order)
	snap.buildALUA(targets)

	s.devs = devs
	s.snap.Store(snap)
	for _, d := range created {
		s.log.Info().Str("lun_id", d.id).Msg("logical unit online")
	}

	for iqn := range old.targets {
		if snap.targets[iqn] == nil {
			gone = append(gone, iqn)
		}
	}

	// REPORTED LUNS DATA HAS CHANGED for every existing nexus of a target
	// whose LUN inventory changed.
	for n := range s.nexuses {
		nt := snap.targets[n.info.Target]
		ot := old.targets[n.info.Target]
		if nt == nil || !lunSetChanged(ot, nt) {
			continue
		}
		for _, num := range nt.numbersFor(n.info.Initiator) {
			n.addUA(nt.luns[num].id, ascReportedLUNsDataChanged)
		}
	}
	s.aluaChangeUAs(old, snap)
	return gone, nil
}

func lunSetChanged(a, b *targetView) bool {
	if a == nil {
		return len(b.numbers) > 0
	}
	if len(a.numbers) != len(b.numbers) {
		return true
	}
	for num, d := range b.luns {
		if a.luns[num] != d || len(a.masks[num]) != len(b.masks[num]) {
			return true
		}
		for ini := range b.masks[num] {
			if !a.masks[num][ini] {
				return true
			}
		}
	}
	return false
}

func validate(targets []Target) error {
	if err := validateALUA(targets); err != nil {
		return err
	}
	iqns := map[string]bool{}
	for _, t := range targets {
		if t.IQN == "" {
			return fmt.Errorf("%w: target with an empty IQN", ErrInvalidConfig)
		}
		if iqns[t.IQN] {
			return fmt.Errorf("%w: target %s listed twice", ErrInvalidConfig, t.IQN)
		}
		iqns[t.IQN] = true
		nums := map[uint64]bool{}
		for _, l := range t.LUNs {
			switch {
			case l.ID == "":
				return fmt.Errorf("%w: target %s: LUN %d has no ID", ErrInvalidConfig, t.IQN, l.Number)
			case l.Number > maxLUNNumber:
				return fmt.Errorf("%w: target %s: LUN number %d above %d", ErrInvalidConfig, t.IQN, l.Number, maxLUNNumber)
			case nums[l.Number]:
				return fmt.Errorf("%w: target %s: LUN number %d mapped twice", ErrInvalidConfig, t.IQN, l.Number)
			case l.Volume == nil:
				return fmt.Errorf("%w: target %s: LUN %s has no volume", ErrInvalidConfig, t.IQN, l.ID)
			case l.BlockSize != 0 && l.BlockSize != 512 && l.BlockSize != 4096:
				return fmt.Errorf("%w: target %s: LUN %s: block size %d (want 512 or 4096)", ErrInvalidConfig, t.IQN, l.ID, l.BlockSize)
			}
			nums[l.Number] = true
		}
	}
	return nil
}

// CapacityChanged re-reads the size of LUN lunID's volume and raises
// CAPACITY DATA HAS CHANGED on every nexus that sees the LUN.
func (s *Server) CapacityChanged(lunID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devs[lunID]
	if d == nil {
		return
	}
	st := d.cur()
	if err := d.rebuild(st.cfg, false); err != nil {
		s.log.Error().Err(err).Str("lun_id", lunID).Msg("capacity change")
		return
	}
	s.log.Info().Str("lun_id", lunID).Uint64("blocks", d.cur().blocks).Msg("capacity changed")
	s.raiseUALocked(d, ascCapacityDataChanged, nil)
}

// raiseUALocked queues a unit attention for d on every open nexus that maps
// d, except skip (may be nil). s.mu must be held.
func (s *Server) raiseUALocked(d *lunDev, code asc, skip *nexus) {
	snap := s.snap.Load()
	for n := range s.nexuses {
		if n == skip || !snap.maps(n.info.Target, d) {
			continue
		}
		n.addUA(d.id, code)
	}
}

// raiseUA is raiseUALocked taking s.mu.
func (s *Server) raiseUA(d *lunDev, code asc, skip *nexus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raiseUALocked(d, code, skip)
}

// raiseUAFor queues code for d on the open nexuses whose I_T nexus key is
// in keys.
func (s *Server) raiseUAFor(d *lunDev, code asc, keys map[string]bool) {
	if len(keys) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.nexuses {
		if keys[n.key] {
			n.addUA(d.id, code)
		}
	}
}

func (sn *snapshot) maps(iqn string, d *lunDev) bool {
	tv := sn.targets[iqn]
	if tv == nil {
		return false
	}
	for _, x := range tv.luns {
		if x == d {
			return true
		}
	}
	return false
}

// ---- iscsi.Backend ----

var _ iscsi.Backend = (*Server)(nil)

func (tv *targetView) allows(initiator string) bool {
	return tv.cfg.AllowAll || tv.allow[initiator]
}

// Targets lists the targets initiator may log in to.
func (s *Server) Targets(initiator string) []iscsi.TargetInfo {
	snap := s.snap.Load()
	var out []iscsi.TargetInfo
	for _, iqn := range snap.order {
		tv := snap.targets[iqn]
		if !tv.allows(initiator) {
			continue
		}
		ti := iscsi.TargetInfo{Name: iqn}
		for _, p := range tv.cfg.Portals {
			ti.Portals = append(ti.Portals, fmt.Sprintf("%s,%d", p, tpgt))
		}
		out = append(out, ti)
	}
	return out
}

// Login authorizes initiator on target.
func (s *Server) Login(target, initiator string) (iscsi.Auth, error) {
	tv := s.snap.Load().targets[target]
	if tv == nil {
		return iscsi.Auth{}, fmt.Errorf("target %s: %w", target, iscsi.ErrTargetNotFound)
	}
	if !tv.allows(initiator) {
		return iscsi.Auth{}, fmt.Errorf("target %s, initiator %s: %w", target, initiator, iscsi.ErrNotAuthorized)
	}
	if tv.cfg.CHAP != nil {
		c := *tv.cfg.CHAP
		return iscsi.Auth{CHAP: &c}, nil
	}
	return iscsi.Auth{}, nil
}

// DiscoveryAuth returns what discovery (SendTargets) sessions must
// authenticate with: CHAP when SetDiscoveryCHAP set it, else nothing (the
// default: discovery lists only the targets the initiator's ACL allows).
func (s *Server) DiscoveryAuth(string) iscsi.Auth {
	if c := s.discoveryCHAP.Load(); c != nil {
		cc := *c
		return iscsi.Auth{CHAP: &cc}
	}
	return iscsi.Auth{}
}

// SetDiscoveryCHAP sets (nil: clears) the CHAP credentials discovery
// sessions need. Sessions already logged in are not affected.
func (s *Server) SetDiscoveryCHAP(c *iscsi.CHAP) {
	if c != nil {
		cc := *c
		c = &cc
	}
	s.discoveryCHAP.Store(c)
}

// OpenNexus creates the SCSI side of a session in full feature phase.
func (s *Server) OpenNexus(info iscsi.NexusInfo) (iscsi.Nexus, error) {
	if s.snap.Load().targets[info.Target] == nil {
		return nil, fmt.Errorf("target %s: %w", info.Target, iscsi.ErrTargetNotFound)
	}
	n := newNexus(s, info)
	s.mu.Lock()
	s.nexuses[n] = struct{}{}
	s.mu.Unlock()
	s.log.Debug().Str("nexus", n.key).Msg("nexus open")
	return n, nil
}

// closeNexus forgets n and drops what SCSI ties to the I_T nexus (SPC-2
// reservations); persistent reservations stay.
func (s *Server) closeNexus(n *nexus) {
	s.mu.Lock()
	_, ok := s.nexuses[n]
	delete(s.nexuses, n)
	var devs []*lunDev
	if ok && !s.keyOpenLocked(n.key) {
		for _, d := range s.devs {
			devs = append(devs, d)
		}
	}
	s.mu.Unlock()
	for _, d := range devs {
		d.res.releaseSPC2(n.key)
	}
	if ok {
		s.log.Debug().Str("nexus", n.key).Msg("nexus closed")
	}
}

// keyOpenLocked reports whether a nexus with I_T nexus key is open.
func (s *Server) keyOpenLocked(key string) bool {
	for n := range s.nexuses {
		if n.key == key {
			return true
		}
	}
	return false
}

// volumeOf is used by tests and diagnostics.
func (s *Server) volumeOf(lunID string) volume.Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.devs[lunID]; d != nil {
		return d.cur().vol
	}
	return nil
}
