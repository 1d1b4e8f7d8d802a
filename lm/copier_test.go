package lm

import (
	"sync"
	"testing"
	"time"
)

// A host write that lands in a source hole after the copier planned a hole
// job there (but before the job took the range lock) must reach the
// target: the job may not punch the target blindly.
func TestHoleJobSeesHostWrite(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(4 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	h := e.handle(l)
	model := fill(t, h, mib, 1, 1) // data in the first chunk only
	bl := int64(2*mib/blk + 3)
	var once sync.Once
	e.m.hooks.beforeJob = func(p *pair, j job) {
		if j.hole && j.start <= bl*blk && bl*blk < j.end {
			once.Do(func() {
				if err := writeBlock(h, bl, 7); err != nil {
					t.Error(err)
				}
			})
		}
	}
	model[bl] = 7
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 10*time.Second)
	checkModel(t, "source", h, size, model)
	checkModel(t, "target", e.rawVolume("tgt"), size, model)
}

// Chunks finished in an earlier run are not copied again, even when the
// worker copying the chunk before them merges them into the done cursor
// before the dispatcher looks at them.
func TestResumeSkipsMergedChunks(t *testing.T) {
	e := newEnv(t, Options{InFlight: 2}, false)
	size := int64(4 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	h := e.handle(l)
	model := fill(t, h, size, 1, 1) // all data
	started, release := make(chan struct{}), make(chan struct{})
	var run1 sync.Once
	var second sync.Once
	var resumed bool // set before the resume, read by the run goroutine after a wake
	var mu sync.Mutex
	e.m.hooks.beforeJob = func(p *pair, j job) {
		mu.Lock()
		r := resumed
		mu.Unlock()
		if j.start == 0 && !r {
			run1.Do(func() {
				close(started)
				<-release
			})
		}
	}
	e.m.hooks.dispatched = func(p *pair, j job) {
		mu.Lock()
		r := resumed
		mu.Unlock()
		if j.start == 0 && r {
			second.Do(func() {
				// Let the worker finish chunk 0 and merge the rest.
				poll(10*time.Second, func() bool { return p.done.Load() >= size })
			})
		}
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	<-started
	waitFor(t, 10*time.Second, "chunks 1-3 copied", func() bool {
		st, _ := e.m.Pair("src")
		return st.DataBytes >= 3*mib
	})
	// Chunk 0 is held before its throttle wait; throttle hard so that the
	// pause makes it give up.
	one := int64(1)
	if _, err := e.m.Set("src", SetRequest{MaxMBps: &one}); err != nil {
		t.Fatal(err)
	}
	paused := make(chan error, 1)
	go func() { paused <- e.m.Pause("src") }()
	waitFor(t, 10*time.Second, "paused", func() bool {
		st, _ := e.m.Pair("src")
		return st.State == "paused"
	})
	close(release)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	st, _ := e.m.Pair("src")
	if st.DoneBytes != 0 || st.DataBytes != 3*mib {
		t.Fatalf("after the pause: done %d, data %d; want 0 and 3 MiB", st.DoneBytes, st.DataBytes)
	}
	mu.Lock()
	resumed = true
	mu.Unlock()
	hi, zero := SpeedHighest, int64(0)
	if _, err := e.m.Set("src", SetRequest{Speed: &hi, MaxMBps: &zero}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Resume("src"); err != nil {
		t.Fatal(err)
	}
	st = e.waitState("src", StateSynced, 10*time.Second)
	if st.DataBytes != size {
		t.Fatalf("initial copy moved %d bytes for %d bytes of data: a chunk was copied twice", st.DataBytes, size)
	}
	checkModel(t, "target", e.rawVolume("tgt"), size, model)
}
