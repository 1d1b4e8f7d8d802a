package lm

import (
	"slices"
	"sync"
)

// lockStripes is the number of reader/writer locks a pair's regions are
// spread over (region r uses stripe r % lockStripes).
const lockStripes = 256

// rangeLock is a pair's region range lock (DESIGN §3a): host writes take it
// shared for the regions they touch, the copier exclusive for the chunk it
// copies. Regions share striped locks; every caller takes its stripes in
// ascending order, so there is no deadlock, only (rare) false sharing.
type rangeLock struct {
	stripes [lockStripes]sync.RWMutex
}

// stripes returns the sorted distinct stripes of regions [first,last].
func stripesOf(first, last int64, buf []int) []int {
	if last-first+1 >= lockStripes {
		buf = buf[:0]
		for i := 0; i < lockStripes; i++ {
			buf = append(buf, i)
		}
		return buf
	}
	buf = buf[:0]
	for r := first; r <= last; r++ {
		buf = append(buf, int(r%lockStripes))
	}
	slices.Sort(buf)
	return slices.Compact(buf)
}

// rlock takes regions [first,last] shared; runlock releases them. (No
// closure: this is the host write path.)
func (l *rangeLock) rlock(first, last int64) {
	rankAcquire(lockRange)
	if first == last {
		l.stripes[first%lockStripes].RLock()
		return
	}
	var buf [8]int
	for _, i := range stripesOf(first, last, buf[:0]) {
		l.stripes[i].RLock()
	}
}

func (l *rangeLock) runlock(first, last int64) {
	if first == last {
		l.stripes[first%lockStripes].RUnlock()
	} else {
		var buf [8]int
		for _, i := range stripesOf(first, last, buf[:0]) {
			l.stripes[i].RUnlock()
		}
	}
	rankRelease(lockRange)
}

// lock takes regions [first,last] exclusively and returns the unlock function.
func (l *rangeLock) lock(first, last int64) func() {
	rankAcquire(lockRange)
	s := stripesOf(first, last, make([]int, 0, 8))
	for _, i := range s {
		l.stripes[i].Lock()
	}
	return func() {
		for _, i := range s {
			l.stripes[i].Unlock()
		}
		rankRelease(lockRange)
	}
}
