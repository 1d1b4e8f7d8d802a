package lm

import (
	"math/rand"
	"strconv"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

const benchSize = 64 * mib

// benchWrites issues writes of size bytes at random aligned offsets at
// queue depth 1.
func benchWrites(b *testing.B, h volume.Volume, size int64) {
	buf := make([]byte, size)
	rnd := rand.New(rand.NewSource(1))
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pattern(buf, int64(i), uint64(i))
		if _, err := h.WriteAt(buf, rnd.Int63n(benchSize/size)*size); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlainWrite(b *testing.B) {
	for _, size := range []int64{blk, 256 << 10} {
		b.Run(strconv.FormatInt(size>>10, 10)+"K", func(b *testing.B) {
			e := newEnv(b, Options{ClearInterval: 2 * time.Second}, false)
			l := e.lun("src", benchSize)
			h := e.handle(l)
			fill(b, h, benchSize, 1, 1)
			benchWrites(b, h, size)
		})
	}
}

// BenchmarkDualWrite is BenchmarkPlainWrite on the source of a synced
// pair (write-intent marks in place, as in steady dual-write).
func BenchmarkDualWrite(b *testing.B) {
	for _, size := range []int64{blk, 256 << 10} {
		b.Run(strconv.FormatInt(size>>10, 10)+"K", func(b *testing.B) { benchDual(b, size) })
	}
}

func benchDual(b *testing.B, size int64) {
	e := newEnv(b, Options{ClearInterval: 2 * time.Second}, false)
	l := e.lun("src", benchSize)
	e.lun("tgt", benchSize)
	h := e.handle(l)
	// Data everywhere, so that both legs write into allocated blocks as
	// the plain case does after its first pass.
	fill(b, h, benchSize, 1, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		b.Fatal(err)
	}
	e.waitState("src", StateSynced, 60*time.Second)
	benchWrites(b, h, size)
}
