package target

import (
	"context"
	"errors"
	"fmt"
	"net"
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
