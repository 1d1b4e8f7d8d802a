package iscsi

import (
	"math/bits"
	"sync"
)

// bufPool hands out data buffers by power-of-two size class so the hot path
// does not allocate per command. Buffers larger than the largest class are
// allocated and dropped. A bufPool belongs to one Server.
type bufPool struct {
	minShift, maxShift int
	classes            []sync.Pool
}

func newBufPool(maxSize int) *bufPool {
	p := &bufPool{minShift: 12}
	p.maxShift = max(bits.Len(uint(maxSize-1)), p.minShift)
	p.classes = make([]sync.Pool, p.maxShift-p.minShift+1)
	return p
}

func (p *bufPool) class(n int) int {
	if n <= 1<<p.minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - p.minShift
}

// get returns a buffer of length n (contents undefined).
func (p *bufPool) get(n int) *[]byte {
	if n == 0 {
		b := []byte{}
		return &b
	}
	c := p.class(n)
	if c >= len(p.classes) {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+p.minShift))
	return &b
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b *[]byte) {
	if b == nil {
		return
	}
	c := cap(*b)
	if c == 0 || c&(c-1) != 0 {
		return
	}
	idx := bits.Len(uint(c)) - 1 - p.minShift
	if idx < 0 || idx >= len(p.classes) {
		return
	}
	*b = (*b)[:0]
	p.classes[idx].Put(b)
}
