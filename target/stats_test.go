package target

import (
	"testing"
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
	if st.LUNs[0] != want {
		t.Fatalf("LUN stats\n got %+v\nwant %+v", st.LUNs[0], want)
	}
	if len(st.Targets) != 1 || st.Targets[0] != (TargetStats{IQN: testIQN}) {
		t.Fatalf("targets = %+v, want %s with 0 sessions (transport not started)", st.Targets, testIQN)
	}
	if st.Sessions != nil {
		t.Fatalf("sessions before Start: %+v", st.Sessions)
	}
}
