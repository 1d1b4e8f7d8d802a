package target

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// TestStatsCounters drives READ/WRITE/WRITE SAME/UNMAP/SYNCHRONIZE CACHE
// through Execute and checks the LUN counters and the target list.
func TestStatsCounters(t *testing.T) {
	s, _ := oneLUN(t, 4<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)

	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 8, 0), pattern(4096, 1), 0))    // WRITE(10) 4 KiB
	mustGood(t, exec(n, 0, cdb16(0x8a, 16, 2, 0), pattern(1024, 2), 0))   // WRITE(16) 1 KiB
	mustGood(t, exec(n, 0, cdb10(0x28, 0, 8, 0), nil, 4096))              // READ(10) 4 KiB
	mustGood(t, exec(n, 0, cdb16(0x88, 0, 1, 0), nil, 512))               // READ(16) 512
	mustGood(t, exec(n, 0, cdb16(0x93, 64, 4, 0), pattern(512, 3), 0))    // WRITE SAME(16) 2 KiB
	mustGood(t, exec(n, 0, cdb16(0x93, 64, 4, 0x08), pattern(512, 0), 0)) // WRITE SAME, UNMAP bit
	p := unmapParams([2]uint64{128, 8})
	mustGood(t, exec(n, 0, unmapCDB(len(p)), p, 0))       // UNMAP
	mustGood(t, exec(n, 0, cdb10(0x35, 0, 0, 0), nil, 0)) // SYNCHRONIZE CACHE(10)
	// Failed commands are not counted.
	mustSense(t, exec(n, 0, cdb10(0x28, 1<<20, 8, 0), nil, 4096), keyIllegalRequest, ascLBAOutOfRange)

	st := s.Stats()
	if len(st.LUNs) != 1 {
		t.Fatalf("LUNs = %+v", st.LUNs)
	}
	want := LUNStats{ID: "L0", Name: "lun-L0", SizeBytes: 4 << 20, BlockSize: 512,
		Reads: 2, Writes: 3, Unmaps: 2, Syncs: 1, ReadBytes: 4096 + 512, WrittenBytes: 4096 + 1024 + 2048}
	got := st.LUNs[0]
	lat, errs := got.Latency, got.Errors
	got.Latency, got.Errors = want.Latency, want.Errors
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LUN stats\n got %+v\nwant %+v", got, want)
	}
	// Every data command that reached its handler is timed, the refused
	// READ too; a refused request is not a storage error.
	for op, n := range map[IOOp]uint64{OpRead: 3, OpWrite: 3, OpUnmap: 2, OpSync: 1} {
		if lat[op].Count != n || errs[op] != 0 {
			t.Errorf("%v: %d timed, %d errors; want %d timed, 0 errors", op, lat[op].Count, errs[op], n)
		}
	}
	if len(st.Targets) != 1 || st.Targets[0] != (TargetStats{IQN: testIQN}) {
		t.Fatalf("targets = %+v, want %s with 0 sessions (transport not started)", st.Targets, testIQN)
	}
	if st.Sessions != nil {
		t.Fatalf("sessions before Start: %+v", st.Sessions)
	}
}

// TestStatsLatencyAndErrors: a command's latency lands in the bucket of
// its duration, and a failed volume call is counted as an error of its
// class (MEDIUM ERROR, NOT READY), a refused request is not.
func TestStatsLatencyAndErrors(t *testing.T) {
	const bs = 512
	v := &offlineVol{Faulty: volume.NewFaulty(newTestVolume(t, "lun0", 1<<20))}
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("L0", 0, v, bs)}})
	n := openNexus(t, s, "iqn.test:a", 1)
	exec(n, 0, make([]byte, 6), nil, 0) // the new nexus's unit attention

	const delay = 30 * time.Millisecond
	v.Delay(delay)
	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 1, 0), pattern(bs, 1), 0))
	v.Delay(0)
	v.FailReads(errors.New("injected read failure"))
	mustSense(t, exec(n, 0, cdb10(0x28, 0, 1, 0), nil, bs), keyMediumError, ascReadError)
	mustSense(t, exec(n, 0, cdb10(0x28, 1<<20, 1, 0), nil, bs), keyIllegalRequest, ascLBAOutOfRange)
	v.setOffline()
	mustSense(t, exec(n, 0, cdb10(0x2a, 0, 1, 0), pattern(bs, 2), 0), keyNotReady, ascNotReadyManual)

	l := s.Stats().LUNs[0]
	w := l.Latency[OpWrite]
	if w.Count != 2 || l.Errors[OpWrite] != 1 {
		t.Fatalf("writes: %d timed, %d errors; want 2 timed, 1 error (NOT READY)", w.Count, l.Errors[OpWrite])
	}
	if w.Sum < delay {
		t.Fatalf("write latency sum %v, want at least the injected %v", w.Sum, delay)
	}
	// The delayed write is above the 25 ms bound.
	cum := w.Cumulative()
	for i, b := range w.Bounds {
		if b == 25*time.Millisecond && cum[i] > 1 {
			t.Fatalf("write latency: %d commands at or below 25 ms, want at most 1 (buckets %v)", cum[i], w.Counts)
		}
	}
	if r := l.Latency[OpRead]; r.Count != 2 || l.Errors[OpRead] != 1 {
		t.Fatalf("reads: %d timed, %d errors; want 2 timed, 1 error (MEDIUM ERROR; the out-of-range one is the host's)", r.Count, l.Errors[OpRead])
	}
}
