package target

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

// transportState is the iSCSI transport the Server runs.
type transportState struct {
	mu  sync.Mutex
	srv *iscsi.Server
}

// ErrNotStarted is returned by Shutdown before Start.
var ErrNotStarted = errors.New("target server not started")

// Start binds every portal and starts serving iSCSI.
func (s *Server) Start() error {
	s.transport.mu.Lock()
	defer s.transport.mu.Unlock()
	if s.transport.srv != nil {
		return errors.New("target server already started")
	}
	ts, err := iscsi.NewServer(iscsi.Options{
		Portals:        s.opts.Portals,
		Backend:        s,
		Log:            s.opts.Log,
		QueueDepth:     s.opts.QueueDepth,
		MaxWriteBuffer: s.opts.MaxWriteBuffer,
		IdlePoll:       s.opts.IdlePoll,
		TPGT:           tpgt,
		OnLogin:        s.opts.OnLogin,
	})
	if err != nil {
		return fmt.Errorf("iscsi transport: %w", err)
	}
	if err := ts.Start(); err != nil {
		return fmt.Errorf("iscsi transport: %w", err)
	}
	s.transport.srv = ts
	return nil
}

// Addrs lists the bound portal addresses (nil before Start).
func (s *Server) Addrs() []net.Addr {
	s.transport.mu.Lock()
	defer s.transport.mu.Unlock()
	if s.transport.srv == nil {
		return nil
	}
	return s.transport.srv.Addrs()
}

// Portals lists the bound portal addresses as "ip:port" (nil before
// Start): the names a Target's Portals use.
func (s *Server) Portals() []string {
	var out []string
	for _, a := range s.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// OnPortal implements iscsi.PortalFilter: target is served on portal
// when its portal group is empty or lists portal.
func (s *Server) OnPortal(target, portal string) bool {
	tv := s.snap.Load().targets[target]
	return tv == nil || tv.onPortal(portal)
}

// onPortal reports whether the target is served on portal.
func (tv *targetView) onPortal(portal string) bool {
	if len(tv.cfg.Portals) == 0 {
		return true
	}
	for _, p := range tv.cfg.Portals {
		if SamePortal(p, portal) {
			return true
		}
	}
	return false
}

// SamePortal reports whether two "ip:port" portal names are the same
// address (IPv6 spellings and zero-padded forms compare equal).
func SamePortal(a, b string) bool {
	if a == b {
		return true
	}
	pa, err1 := netip.ParseAddrPort(a)
	pb, err2 := netip.ParseAddrPort(b)
	return err1 == nil && err2 == nil && pa.Addr().Unmap() == pb.Addr().Unmap() && pa.Port() == pb.Port()
}

// Shutdown stops accepting, drains in-flight commands and closes sessions.
func (s *Server) Shutdown(ctx context.Context) error {
	s.transport.mu.Lock()
	ts := s.transport.srv
	s.transport.mu.Unlock()
	if ts == nil {
		return ErrNotStarted
	}
	return ts.Shutdown(ctx)
}

// Sessions lists the normal sessions logged in now (nil before Start).
func (s *Server) Sessions() []iscsi.SessionInfo {
	s.transport.mu.Lock()
	ts := s.transport.srv
	s.transport.mu.Unlock()
	if ts == nil {
		return nil
	}
	var out []iscsi.SessionInfo
	for _, si := range ts.Sessions() {
		if !si.Discovery {
			out = append(out, si)
		}
	}
	return out
}

// Logout ends every session initiator has on target (all connections)
// and returns how many it ended (0 before Start). The initiator may log
// in again unless the ACL or a mapping mask keeps it out.
func (s *Server) Logout(target, initiator string) int {
	s.transport.mu.Lock()
	ts := s.transport.srv
	s.transport.mu.Unlock()
	if ts == nil {
		return 0
	}
	n := ts.CloseInitiatorSessions(target, initiator)
	if n > 0 {
		s.log.Info().Str("iqn", target).Str("initiator", initiator).Int("sessions", n).Msg("initiator logged out by the administrator")
	}
	return n
}

var _ iscsi.PortalFilter = (*Server)(nil)
