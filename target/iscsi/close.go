package iscsi

// CloseTargetSessions ends every session logged in to target, for a target
// that was deleted: each connection stops reading, lets its running
// commands answer, then closes (as in Shutdown). It returns the number of
// sessions it ended; the initiators find out when their connections close.
func (s *Server) CloseTargetSessions(target string) int {
	return s.closeSessions(func(k sessionKey) bool { return k.target == target })
}

// CloseInitiatorSessions ends every session initiator has on target (all
// its connections, whatever the ISID), as CloseTargetSessions does, and
// returns how many it ended. The initiator may log in again: keeping it
// out is the ACL's job.
func (s *Server) CloseInitiatorSessions(target, initiator string) int {
	return s.closeSessions(func(k sessionKey) bool { return k.target == target && k.initiator == initiator })
}

// closeSessions drains the connection of every session whose key matches.
func (s *Server) closeSessions(match func(sessionKey) bool) int {
	s.mu.Lock()
	var conns []*conn
	for _, ss := range s.mu.sessions {
		if match(ss.key) && ss.conn != nil {
			conns = append(conns, ss.conn)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	return len(conns)
}
