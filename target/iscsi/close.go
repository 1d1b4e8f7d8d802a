package iscsi

// CloseTargetSessions ends every session logged in to target, for a target
// that was deleted: each connection stops reading, lets its running
// commands answer, then closes (as in Shutdown). It returns the number of
// sessions it ended; the initiators find out when their connections close.
func (s *Server) CloseTargetSessions(target string) int {
	s.mu.Lock()
	var conns []*conn
	for _, ss := range s.mu.sessions {
		if ss.key.target == target && ss.conn != nil {
			conns = append(conns, ss.conn)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	return len(conns)
}
