//go:build !lockrank

package lm

import "sync"

// lockRankOn says whether lock ranks are checked (build tag lockrank).
const lockRankOn = false

// mutex is a sync.Mutex of rank R (lockrank.go); unchecked in this build.
type mutex[R ranker] struct{ sync.Mutex }

// rwMutex is a sync.RWMutex of rank R; unchecked in this build.
type rwMutex[R ranker] struct{ sync.RWMutex }

// rankAcquire and rankRelease mark a lock that is not a mutex (a gate, the
// stripes of a range lock) taken and released; nothing in this build.
func rankAcquire(lockRank) {}
func rankRelease(lockRank) {}
