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
