package target

import (
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/lmtgt/lmtgt/lm/histogram"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// lunCounters are a LUN's I/O counters. They live on the lunDev (so they
// survive capacity and configuration changes, and start from zero when the
// LUN is mapped again after being unmapped everywhere) and are bumped by the
// SBC handlers after a command succeeds: a few atomic adds, no allocation.
type lunCounters struct {
	reads, writes, unmaps, syncs atomic.Uint64
	readBytes, writtenBytes      atomic.Uint64
	// latency and errors by I/O class, observed by Execute (observe)
	// for every command of the class that reached its handler.
	latency [numIOOps]*histogram.Histogram
	errors  [numIOOps]atomic.Uint64
}

// init makes the latency histograms (once, when the lunDev is made).
func (c *lunCounters) init() {
	for i := range c.latency {
		c.latency[i] = histogram.New(histogram.LatencyBounds())
	}
}

// IOOp is a class of data commands, as the latency histograms and the
// error counters see them.
type IOOp int

// I/O classes.
const (
	// OpNone: not a data command (INQUIRY, TEST UNIT READY, ...); not timed.
	OpNone IOOp = iota - 1
	// OpRead: READ(6/10/12/16).
	OpRead
	// OpWrite: WRITE(6/10/12/16), WRITE AND VERIFY, WRITE SAME without
	// UNMAP, COMPARE AND WRITE, ORWRITE.
	OpWrite
	// OpUnmap: UNMAP, WRITE SAME with UNMAP.
	OpUnmap
	// OpSync: SYNCHRONIZE CACHE(10/16).
	OpSync
	numIOOps = iota - 1
)

func (o IOOp) String() string {
	switch o {
	case OpNone:
		return "none"
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpUnmap:
		return "unmap"
	case OpSync:
		return "sync"
	}
	return fmt.Sprintf("IOOp(%d)", int(o))
}

// ioOpOf classifies a CDB (len(cdb) > 0). The opcodes are those that
// dispatch.go sends to read, write, writeSame, compareAndWrite, orWrite,
// unmap and syncCache (keep the two in step).
func ioOpOf(cdb []byte) IOOp {
	switch cdb[0] {
	case 0x08, 0x28, 0xa8, 0x88:
		return OpRead
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x89, 0x8b:
		return OpWrite
	case 0x41, 0x93: // WRITE SAME(10/16)
		if len(cdb) > 1 && cdb[1]&0x08 != 0 {
			return OpUnmap
		}
		return OpWrite
	case 0x42:
		return OpUnmap
	case 0x35, 0x91:
		return OpSync
	}
	return OpNone
}

// observe records a finished data command: its latency, and an error if
// it ended in CHECK CONDITION with a sense key that says the LUN's
// storage failed (NOT READY, MEDIUM ERROR, HARDWARE ERROR), as opposed to
// a refused request (ILLEGAL REQUEST) or a MISCOMPARE.
func (c *lunCounters) observe(op IOOp, d time.Duration, status samStatus, sense []byte) {
	c.latency[op].Observe(d)
	if status == statusCheckCondition {
		if key, _, ok := senseKeyASC(sense); ok && (key == keyNotReady || key == keyMediumError || key == keyHardwareError) {
			c.errors[op].Add(1)
		}
	}
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
	// Latency (from Execute's dispatch to the handler's answer, GOOD or
	// not) and Errors (storage failures, see lunCounters.observe),
	// indexed by IOOp (OpRead ... OpSync).
	Latency [numIOOps]histogram.Snapshot
	Errors  [numIOOps]uint64
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
	ZeroCopy iscsi.ZeroCopyStats
	IdlePoll iscsi.IdlePollStats
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
		l := &st.LUNs[len(st.LUNs)-1]
		for op := range numIOOps {
			l.Latency[op] = c.latency[op].Snapshot()
			l.Errors[op] = c.errors[op].Load()
		}
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
		st.ZeroCopy = ts.ZeroCopyStats()
		st.IdlePoll = ts.IdlePollStats()
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
