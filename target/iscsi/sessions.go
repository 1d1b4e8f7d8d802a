package iscsi

import (
	"encoding/hex"
	"sort"
	"sync/atomic"
)

// SessionInfo describes one logged-in session (a snapshot, for metrics
// and diagnostics).
type SessionInfo struct {
	Target    string // "" for a discovery session
	Initiator string
	ISID      string // 12 hex digits
	TSIH      uint16
	Remote    string // the initiator's address
	Discovery bool
	// HeaderDigest / DataDigest: CRC32C negotiated.
	HeaderDigest, DataDigest bool
}

// LoginStats counts login phases since the Server was created.
type LoginStats struct {
	// Logins that reached full feature phase.
	Normal, Discovery uint64
	// Failures: logins the target refused with a non-success status
	// (authentication, authorization, unknown target or TSIH, ...).
	Failures uint64
}

// loginCounters are the Server's login counters (see LoginStats).
type loginCounters struct {
	normal, discovery, failures atomic.Uint64
}

// loggedIn counts a login that reached full feature phase.
func (l *loginCounters) loggedIn(discovery bool) {
	if discovery {
		l.discovery.Add(1)
	} else {
		l.normal.Add(1)
	}
}

// LoginStats snapshots the login counters.
func (s *Server) LoginStats() LoginStats {
	return LoginStats{
		Normal:    s.logins.normal.Load(),
		Discovery: s.logins.discovery.Load(),
		Failures:  s.logins.failures.Load(),
	}
}

// Sessions lists the sessions in full feature phase, by target, initiator
// and TSIH. A session still logging in or already closing is left out.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	live := make([]*session, 0, len(s.mu.sessions))
	for _, ss := range s.mu.sessions {
		if ss.conn != nil {
			live = append(live, ss)
		}
	}
	s.mu.Unlock()
	out := make([]SessionInfo, 0, len(live))
	for _, ss := range live {
		c := ss.conn
		// The login fields are written before the state turns full
		// feature (an atomic store) and are read-only after it.
		if connState(c.state.Load()) != stateFullFeature {
			continue
		}
		out = append(out, SessionInfo{
			Target:       c.target,
			Initiator:    c.initiator,
			ISID:         hex.EncodeToString(ss.key.isid[:]),
			TSIH:         ss.tsih,
			Remote:       c.remote,
			Discovery:    c.discovery,
			HeaderDigest: c.p.HeaderDigest,
			DataDigest:   c.p.DataDigest,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Target != b.Target {
			return a.Target < b.Target
		}
		if a.Initiator != b.Initiator {
			return a.Initiator < b.Initiator
		}
		return a.TSIH < b.TSIH
	})
	return out
}
