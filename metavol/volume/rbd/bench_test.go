//go:build rbd

package rbd

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cpuTime is this process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRBDVolume: 4 KiB random reads and writes on one volume at
// queue depth 1 and 32 (that many goroutines), and 1 MiB at depth 8, over
// 64 MiB of written data (the object map answers reads of absent objects
// without an OSD). It reports this process's CPU per I/O (cpu-us/op),
// which the machine's load disturbs less than the throughput.
//
//	go test -tags rbd,pacific -run '^$' -bench RBDVolume ./metavol/volume/rbd/
func BenchmarkRBDVolume(b *testing.B) {
	c := testClient(b)
	const span = 64 * mib
	v := open(b, c, newImage(b, c, span), OpenOptions{Owner: "bench"})
	fill := pattern(4*mib, 1)
	for off := int64(0); off < span; off += int64(len(fill)) {
		if _, err := v.WriteAt(fill, off); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		write  bool
		qd, bs int
	}{{false, 1, 4096}, {true, 1, 4096}, {false, 32, 4096}, {true, 32, 4096}, {false, 8, mib}, {true, 8, mib}} {
		op := "read"
		if bc.write {
			op = "write"
		}
		b.Run(fmt.Sprintf("%s-%dk-qd%d", op, bc.bs>>10, bc.qd), func(b *testing.B) {
			b.SetBytes(int64(bc.bs))
			var next sync.Mutex
			left := b.N
			take := func() bool {
				next.Lock()
				defer next.Unlock()
				left--
				return left >= 0
			}
			errs := make(chan error, bc.qd)
			cpu0 := cpuTime(b)
			b.ResetTimer()
			var wg sync.WaitGroup
			for range bc.qd {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := make([]byte, bc.bs)
					for take() {
						off := rand.Int64N(span/int64(bc.bs)) * int64(bc.bs)
						var err error
						if bc.write {
							_, err = v.WriteAt(p, off)
						} else {
							_, err = v.ReadAt(p, off)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		})
	}
}
