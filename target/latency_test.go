package target

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// timedVolume is a real file volume that records the host latencies the
// SCSI layer reports (what lm's LUN handle does with them).
type timedVolume struct {
	*volume.File
	n    atomic.Int64
	last atomic.Int64 // ns
}

func (v *timedVolume) ObserveHostLatency(d time.Duration) {
	v.n.Add(1)
	v.last.Store(int64(d))
}

func (v *timedVolume) count() int { return int(v.n.Load()) }

// READ and WRITE are timed from their arrival (iscsi.Command.Arrived) to
// their status; other commands are not; a volume that does not observe
// is simply not told.
func TestHostLatencyObserved(t *testing.T) {
	v := &timedVolume{File: newTestVolume(t, "lun0", 4<<20)}
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("L0", 0, v, 512)}})
	n := openNexus(t, s, "iqn.test:a", 1)
	mustGood(t, exec(n, 0, cdb10(0x2a, 8, 8, 0), make([]byte, 4096), 0)) // WRITE(10)
	mustGood(t, exec(n, 0, cdb10(0x28, 8, 8, 0), nil, 4096))             // READ(10)
	if got := v.count(); got != 2 {
		t.Fatalf("%d latencies after a WRITE and a READ, want 2", got)
	}
	mustGood(t, exec(n, 0, []byte{0x00, 0, 0, 0, 0, 0}, nil, 0))   // TEST UNIT READY
	mustGood(t, exec(n, 0, cdb10(0x35, 0, 0, 0), nil, 0))          // SYNCHRONIZE CACHE(10)
	mustGood(t, exec(n, 0, []byte{0x12, 0, 0, 0, 96, 0}, nil, 96)) // INQUIRY
	if got := v.count(); got != 2 {
		t.Fatalf("%d latencies after TUR, SYNCHRONIZE CACHE and INQUIRY, want still 2", got)
	}
	// The time runs from the command's arrival, not from Execute.
	c := &iscsi.Command{LUN: 0, CDB: cdb10(0x28, 8, 8, 0), DataIn: make([]byte, 0, 4096), ExpectedReadLength: 4096,
		Arrived: time.Now().Add(-50 * time.Millisecond)}
	n.Execute(c)
	mustGood(t, c)
	if last := time.Duration(v.last.Load()); last < 50*time.Millisecond {
		t.Errorf("a READ that arrived 50 ms ago was timed %v", last)
	}
	// Timing allocates nothing.
	wr := cdb10(0x2a, 8, 8, 0)
	buf := make([]byte, 4096)
	c = exec(n, 0, wr, buf, 0)
	allocs := testing.AllocsPerRun(200, func() {
		c.CDB, c.DataOut, c.DataIn, c.Arrived = wr, buf, c.DataIn[:0], time.Now()
		n.Execute(c)
	})
	mustGood(t, c)
	if allocs > 0 {
		t.Errorf("a timed WRITE: %.1f allocations per command, want 0", allocs)
	}
}
