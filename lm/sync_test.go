package lm

import (
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// trackVol counts completed changes and the changes a successful Sync
// covered, and can fail the next Sync.
type trackVol struct {
	volume.Volume
	mu       sync.Mutex
	changes  int64 // completed writes and unmaps
	synced   int64 // changes covered by a successful Sync
	failNext error
}

func (v *trackVol) changed() {
	v.mu.Lock()
	v.changes++
	v.mu.Unlock()
}

func (v *trackVol) WriteAt(b []byte, off int64) (int, error) {
	n, err := v.Volume.WriteAt(b, off)
	v.changed()
	return n, err
}

func (v *trackVol) Unmap(off, n int64) error {
	err := v.Volume.Unmap(off, n)
	v.changed()
	return err
}

func (v *trackVol) Sync() error {
	v.mu.Lock()
	c, fail := v.changes, v.failNext
	v.failNext = nil
	v.mu.Unlock()
	if fail != nil {
		return fail
	}
	err := v.Volume.Sync()
	if err == nil {
		v.mu.Lock()
		v.synced = max(v.synced, c)
		v.mu.Unlock()
	}
	return err
}

// unsynced is the number of changes no successful Sync covered.
func (v *trackVol) unsynced() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changes - v.synced
}

func (v *trackVol) failSync(err error) {
	v.mu.Lock()
	v.failNext = err
	v.mu.Unlock()
}

// newTrackEnv is an env whose data volumes are trackVols.
func newTrackEnv(t *testing.T, opts Options) (*env, func(name string) *trackVol) {
	var mu sync.Mutex
	vols := map[string]*trackVol{}
	opts.WrapVolume = func(id string, v volume.Volume) volume.Volume {
		tv := &trackVol{Volume: v}
		mu.Lock()
		vols[id] = tv
		mu.Unlock()
		return tv
	}
	e := newEnv(t, opts, false)
	return e, func(name string) *trackVol {
		t.Helper()
		id := lunRecord(t, e.db, name).VolumeID
		mu.Lock()
		defer mu.Unlock()
		if vols[id] == nil {
			t.Fatalf("no tracked volume for LUN %s", name)
		}
		return vols[id]
	}
}

// The split makes the target the source LUN's data: what the DCL
// re-copy wrote there must be synced before the swap.
func TestSplitSyncsTargetFirst(t *testing.T) {
	e, vol := newTrackEnv(t, Options{ClearInterval: -1})
	size := int64(4 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	h := e.handle(l)
	if err := e.m.Pause("src"); err != nil {
		t.Fatal(err)
	}
	for bl := int64(0); bl < size/blk; bl += 97 {
		if err := writeBlock(h, bl, 5); err != nil {
			t.Fatal(err)
		}
		model[bl] = 5
	}
	if err := h.Sync(); err != nil { // the host made its writes durable
		t.Fatal(err)
	}
	if err := e.m.Resume("src"); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 10*time.Second)
	tv := vol("tgt")
	if tv.unsynced() == 0 {
		t.Fatal("test setup: the re-copy left nothing unsynced on the target")
	}
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	if n := tv.unsynced(); n != 0 {
		t.Fatalf("the split swapped in a target with %d changes not synced", n)
	}
	checkModel(t, "source LUN after the split", h, size, model)
}

// After a failed sync of the target, writes that completed there may not
// be on its disk even if the next sync succeeds: their regions must be
// re-copied, not lazily cleared.
func TestFailedTargetSyncRecopies(t *testing.T) {
	e, vol := newTrackEnv(t, Options{})
	size := int64(4 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	h := e.handle(l)
	for bl := int64(0); bl < size/blk; bl += 300 {
		if err := writeBlock(h, bl, 6); err != nil {
			t.Fatal(err)
		}
		model[bl] = 6
	}
	vol("tgt").failSync(errInjected)
	if err := h.Sync(); err != nil {
		t.Fatalf("a target failure must not fail the host's sync: %v", err)
	}
	waitFor(t, 5*time.Second, "the written regions re-copied", func() bool {
		st, _ := e.m.Pair("src")
		return st.RecopiedBytes > 0
	})
	e.waitState("src", StateSynced, 10*time.Second)
	checkModel(t, "target", e.rawVolume("tgt"), size, model)
}

// A failed sync at a checkpoint does not let a later checkpoint pass over
// what the copier wrote since the last one.
func TestFailedCheckpointSyncRecopies(t *testing.T) {
	e, vol := newTrackEnv(t, Options{CheckpointBytes: 2 * mib, CheckpointInterval: time.Hour, InFlight: 1})
	size := int64(8 * mib)
	l := e.lun("src", size)
	e.lun("tgt", size)
	model := fill(t, e.handle(l), size, 1, 1)
	var once sync.Once
	e.m.hooks.beforeJob = func(p *pair, j job) {
		if j.start == 3*mib {
			// Chunks 0-2 are copied; the next checkpoint's sync fails.
			once.Do(func() { vol("tgt").failSync(errInjected) })
		}
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	st := e.waitState("src", StateSynced, 10*time.Second)
	if st.RecopiedBytes == 0 {
		t.Fatalf("nothing re-copied after a failed checkpoint sync: %+v", st)
	}
	checkModel(t, "target", e.rawVolume("tgt"), size, model)
}
