//go:build lockrank

package lm

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
)

// This file is only in builds with the tag lockrank (tests of the lock
// order): every mutex and rwMutex of package lm, and the gates and range
// locks through rankAcquire, record the ranks each goroutine holds, and
// taking a lock of a lower rank than one held panics with both names.
//
// held is the one mutable package-level variable of lm, and only in this
// debug build: a lock order is a property of goroutines, and Go gives a
// goroutine no place of its own to keep what it holds.

const lockRankOn = true

var held sync.Map // goroutine ID → *[]lockRank (only that goroutine touches the slice)

func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic("lockrank: cannot parse the goroutine ID: " + err.Error())
	}
	return id
}

// rankAcquire is called before a lock of rank r is taken (before it may
// block, so that an order that could deadlock panics instead).
func rankAcquire(r lockRank) {
	g := goid()
	v, _ := held.LoadOrStore(g, new([]lockRank))
	hs := v.(*[]lockRank)
	for _, h := range *hs {
		if h > r {
			panic(fmt.Sprintf("lock order: goroutine %d takes %v while it holds %v (%v); the order is in lm/doc.go", g, r, h, *hs))
		}
	}
	*hs = append(*hs, r)
}

// rankRelease is called after a lock of rank r was released.
func rankRelease(r lockRank) {
	g := goid()
	v, ok := held.Load(g)
	if !ok {
		panic(fmt.Sprintf("lock order: goroutine %d releases %v, which it does not hold", g, r))
	}
	hs := v.(*[]lockRank)
	for i := len(*hs) - 1; i >= 0; i-- {
		if (*hs)[i] == r {
			*hs = append((*hs)[:i], (*hs)[i+1:]...)
			if len(*hs) == 0 {
				held.Delete(g)
			}
			return
		}
	}
	panic(fmt.Sprintf("lock order: goroutine %d releases %v, which it does not hold (%v)", g, r, *hs))
}

type mutex[R ranker] struct{ mu sync.Mutex }

func (m *mutex[R]) Lock() {
	var r R
	rankAcquire(r.rank())
	m.mu.Lock()
}

func (m *mutex[R]) Unlock() {
	m.mu.Unlock()
	var r R
	rankRelease(r.rank())
}

type rwMutex[R ranker] struct{ mu sync.RWMutex }

func (m *rwMutex[R]) Lock() {
	var r R
	rankAcquire(r.rank())
	m.mu.Lock()
}

func (m *rwMutex[R]) Unlock() {
	m.mu.Unlock()
	var r R
	rankRelease(r.rank())
}

func (m *rwMutex[R]) RLock() {
	var r R
	rankAcquire(r.rank())
	m.mu.RLock()
}

func (m *rwMutex[R]) RUnlock() {
	m.mu.RUnlock()
	var r R
	rankRelease(r.rank())
}
