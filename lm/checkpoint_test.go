package lm

import (
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// gateVol holds its Syncs while armed (a disk slow to take a checkpoint's
// sync); everything else goes to the real volume.
type gateVol struct {
	volume.Volume
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // closed when a Sync is held
	release chan struct{} // closed to let held Syncs go
}

func (v *gateVol) arm() {
	v.mu.Lock()
	v.armed = true
	v.mu.Unlock()
}

func (v *gateVol) Sync() error {
	v.mu.Lock()
	armed := v.armed
	if armed {
		v.armed = false
		close(v.held)
	}
	v.mu.Unlock()
	if armed {
		<-v.release
	}
	return v.Volume.Sync()
}

// A checkpoint's sync does not stall the initial copy: while the target's
// disk takes the sync of one checkpoint, the dispatcher keeps the workers
// fed and the rest of the LUN is copied (it waited for the sync before,
// so a copy stood still once per 64 MiB; scripts/bench import).
func TestCheckpointSyncDoesNotStallCopy(t *testing.T) {
	var mu sync.Mutex
	vols := map[string]*gateVol{}
	opts := Options{InFlight: 2, CheckpointBytes: 1 << 20, CheckpointInterval: time.Hour,
		WrapVolume: func(id string, v volume.Volume) volume.Volume {
			g := &gateVol{Volume: v, held: make(chan struct{}), release: make(chan struct{})}
			mu.Lock()
			vols[id] = g
			mu.Unlock()
			return g
		}}
	e := newEnv(t, opts, false)
	size := int64(16 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	h := e.handle(l)
	model := fill(t, h, size, 1, 1) // all data
	mu.Lock()
	tg := vols[lunRecord(t, e.db, "tgt").VolumeID]
	mu.Unlock()
	var once sync.Once
	released := false
	defer func() {
		if !released {
			close(tg.release)
		}
	}()
	e.m.hooks.beforeJob = func(p *pair, j job) {
		if j.start >= 2*mib { // the copy runs: the next target sync is a checkpoint's
			once.Do(tg.arm)
		}
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: VehicleGeneric}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tg.held:
	case <-time.After(20 * time.Second):
		t.Fatal("no checkpoint synced the target within 20 s of the copy's start")
	}
	var st PairStatus
	if !poll(20*time.Second, func() bool { st, _ = e.m.Pair("src"); return st.DataBytes >= size }) {
		t.Fatalf("the copy stalled behind a checkpoint's sync: %d of %d bytes copied after 20 s with the target's sync held", st.DataBytes, size)
	}
	close(tg.release)
	released = true
	e.waitState("src", StateSynced, 20*time.Second)
	checkModel(t, "target", e.rawVolume("tgt"), size, model)
}
