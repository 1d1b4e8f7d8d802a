package lm

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkSplitPause measures the pause (gates closed to gates open) of
// one consistent split of n synced pairs while a host writes to the
// sources (issue 13: the pause must not grow with the pair count). Run
// with -benchtime=1x; the figure is the pause-ms metric.
func BenchmarkSplitPause(b *testing.B) {
	for _, n := range []int{64, 2048} {
		b.Run(fmt.Sprintf("pairs=%d", n), func(b *testing.B) {
			var total, drain, commit time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				p, d, c := splitPauseOnce(b, n)
				total, drain, commit = total+p, drain+d, commit+c
				b.StartTimer()
			}
			b.ReportMetric(float64(total)/float64(b.N)/1e6, "pause-ms")
			b.ReportMetric(float64(drain)/float64(b.N)/1e6, "drained-ms")
			b.ReportMetric(float64(commit)/float64(b.N)/1e6, "committed-ms")
		})
	}
}

// splitPauseOnce returns the pause and when, from the split's start, the
// gates were drained and the split journal committed.
func splitPauseOnce(b *testing.B, n int) (pause, drained, committed time.Duration) {
	e := newEnv(b, Options{MaxActive: 64}, false)
	const size = mib
	names := make([]string, n)
	ids := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("s%04d", i)
		ids[i] = e.lun(names[i], size).ID
		e.lun(fmt.Sprintf("t%04d", i), size)
		if _, err := e.m.CreatePair(PairRequest{Source: names[i], Target: fmt.Sprintf("t%04d", i), Speed: SpeedHighest}); err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, 5*time.Minute, "every pair synced", func() bool {
		for _, st := range e.m.Pairs() {
			if st.State != "synced" {
				return false
			}
		}
		return true
	})
	// A host writes to a few sources while the split runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		h, err := e.m.LUN(ids[w*(n/4)])
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, blk)
			for k := int64(0); ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				pattern(buf, k, uint64(k))
				h.WriteAt(buf, (k%(size/blk))*blk)
			}
		}()
	}
	var t0, td, tc time.Time
	e.m.hooks.splitDrained = func() { td = time.Now() }
	e.m.hooks.splitJournaled = func() { tc = time.Now() }
	t0 = time.Now()
	res, err := e.m.Split(names, 10*time.Second)
	close(stop)
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	// From the drain to the commit is inside the pause; the drain's start
	// is t0 + (the time before the pause), not measured here.
	return res.Pause, td.Sub(t0), tc.Sub(t0)
}
