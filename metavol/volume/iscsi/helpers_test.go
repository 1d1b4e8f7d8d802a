package iscsi

import "time"

// poll calls cond every 10 ms until it holds or d has passed and reports
// whether it held: the one polling loop of the package's tests (the
// callers fail with what they saw last).
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// cdbRW16s is cdbRW16 as a slice (for Command).
func cdbRW16s(op byte, lba uint64, blocks uint32) []byte {
	b := cdbRW16(op, lba, blocks)
	return b[:]
}
