package target

import (
	"sort"
	"sync/atomic"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

// lunCounters are a LUN's I/O counters. They live on the lunDev (so they
// survive capacity and configuration changes, and start from zero when the
// LUN is mapped again after being unmapped everywhere) and are bumped by the
// SBC handlers after a command succeeds: a few atomic adds, no allocation.
type lunCounters struct {
	reads, writes, unmaps, syncs atomic.Uint64
	readBytes, writtenBytes      atomic.Uint64
}

func (c *lunCounters) read(n int) {
	c.reads.Add(1)
	c.readBytes.Add(uint64(n))
}

func (c *lunCounters) write(n int64) {
	c.writes.Add(1)
	c.writtenBytes.Add(uint64(n))
}

// LUNStats is a snapshot of one mapped LUN's I/O counters. Counters count
// commands that completed with GOOD status.
type LUNStats struct {
	ID        string
	Name      string
	SizeBytes int64 // the capacity the LUN serves
	BlockSize uint32
	// Reads: READ(6/10/12/16). Writes: WRITE(6/10/12/16), WRITE AND
	// VERIFY, WRITE SAME writing data, COMPARE AND WRITE, ORWRITE.
	// Unmaps: UNMAP and WRITE SAME with the UNMAP bit. Syncs:
	// SYNCHRONIZE CACHE(10/16).
	Reads, Writes, Unmaps, Syncs uint64
	ReadBytes, WrittenBytes      uint64
}

// TargetStats is the number of normal iSCSI sessions logged in to a target.
type TargetStats struct {
	IQN      string
	Sessions int
}

// Stats is a snapshot of the Server's counters, for metrics.
type Stats struct {
	LUNs []LUNStats // mapped LUNs, by name then ID
	// Targets lists every configured target (zero sessions too) and any
	// unconfigured one that still has sessions, by IQN.
	Targets  []TargetStats
	Sessions []iscsi.SessionInfo // nil before Start
	Logins   iscsi.LoginStats
}

// Stats snapshots the LUN counters and the transport's sessions and login
// counters. It takes Server.mu briefly and never waits for I/O.
func (s *Server) Stats() Stats {
	var st Stats
	s.mu.Lock()
	for _, d := range s.devs {
		cur := d.cur()
		c := &d.stats
		st.LUNs = append(st.LUNs, LUNStats{
			ID:           d.id,
			Name:         cur.cfg.Name,
			SizeBytes:    int64(cur.blocks << cur.shift),
			BlockSize:    cur.bs,
			Reads:        c.reads.Load(),
			Writes:       c.writes.Load(),
			Unmaps:       c.unmaps.Load(),
			Syncs:        c.syncs.Load(),
			ReadBytes:    c.readBytes.Load(),
			WrittenBytes: c.writtenBytes.Load(),
		})
	}
	s.mu.Unlock()
	sort.Slice(st.LUNs, func(i, j int) bool {
		a, b := st.LUNs[i], st.LUNs[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ID < b.ID
	})

	s.transport.mu.Lock()
	ts := s.transport.srv
	s.transport.mu.Unlock()
	if ts != nil {
		st.Sessions = ts.Sessions()
		st.Logins = ts.LoginStats()
	}
	count := map[string]int{}
	for _, iqn := range s.snap.Load().order {
		count[iqn] = 0
	}
	for _, ss := range st.Sessions {
		if !ss.Discovery {
			count[ss.Target]++
		}
	}
	for iqn, n := range count {
		st.Targets = append(st.Targets, TargetStats{IQN: iqn, Sessions: n})
	}
	sort.Slice(st.Targets, func(i, j int) bool { return st.Targets[i].IQN < st.Targets[j].IQN })
	return st
}
