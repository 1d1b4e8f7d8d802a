package iscsi

// CloseTargetSessions ends every session logged in to target, for a target
// that was deleted: each connection stops reading, lets its running
// commands answer, then closes (as in Shutdown). It returns the number of
// sessions it ended; the initiators find out when their connections close.
func (s *Server) CloseTargetSessions(target string) int {
	return s.closeSessions(func(k sessionKey, _ *conn) bool { return k.target == target })
}

// CloseInitiatorSessions ends every session initiator has on target (all
// its connections, whatever the ISID), as CloseTargetSessions does, and
// returns how many it ended. The initiator may log in again: keeping it
// out is the ACL's job.
func (s *Server) CloseInitiatorSessions(target, initiator string) int {
	return s.closeSessions(func(k sessionKey, _ *conn) bool { return k.target == target && k.initiator == initiator })
}

// ClosePortalSessions ends every session logged in to target through a
// portal onPortal refuses (after the target's portal group shrank) and
// returns how many it ended.
func (s *Server) ClosePortalSessions(target string, onPortal func(portal string) bool) int {
	return s.closeSessions(func(k sessionKey, c *conn) bool { return k.target == target && !onPortal(c.portal) })
}

// closeSessions drains the connection of every session whose key matches.
func (s *Server) closeSessions(match func(sessionKey, *conn) bool) int {
	s.mu.Lock()
	var conns []*conn
	for _, ss := range s.mu.sessions {
		if ss.conn != nil && match(ss.key, ss.conn) {
			conns = append(conns, ss.conn)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	return len(conns)
}
