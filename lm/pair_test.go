package lm

import (
	"errors"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

const mib = 1 << 20

func TestMigrateSparseAndSplit(t *testing.T) {
	for _, veh := range []string{VehicleGeneric, VehicleAuto} {
		t.Run(veh, func(t *testing.T) {
			e := newEnv(t, Options{}, false)
			size := int64(32 * mib)
			src := e.lun("src", size)
			tgt := e.lun("tgt", 48*mib)
			h := e.handle(src)
			// Every 64th block: 128 blocks of data (512 KiB) in 32 MiB.
			model := fill(t, h, size, 64, 1)
			// Old junk on the target must be overwritten (holes too).
			junk := fill(t, e.rawVolume("tgt"), size, 50, 99)
			_ = junk
			// One all-zero data chunk on the source (allocated but zero).
			if _, err := h.WriteAt(make([]byte, mib), 20*mib); err != nil {
				t.Fatal(err)
			}
			for bl := int64(20 * mib / blk); bl < 21*mib/blk; bl++ {
				delete(model, bl)
			}
			before := src
			st, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: veh})
			if err != nil {
				t.Fatal(err)
			}
			if st.State != "queued" && st.State != "copying" {
				t.Fatalf("new pair state %s", st.State)
			}
			st = e.waitState("src", StateSynced, 20*time.Second)
			if st.DoneBytes != size || st.TotalBytes != size || st.DCLBytes != 0 {
				t.Fatalf("synced status %+v", st)
			}
			limit := int64(len(model)) * blk * 2
			if veh == VehicleAuto {
				// copy_file_range does not read the data, so an allocated
				// all-zero extent is copied (holes are still skipped).
				limit += mib
			}
			if st.DataBytes > limit {
				t.Fatalf("copied %d bytes for %d bytes of data: holes or zero chunk copied", st.DataBytes, len(model)*blk)
			}
			wantVeh := VehicleGeneric
			if veh == VehicleAuto {
				wantVeh = VehicleCopyFileRange
			}
			if st.Vehicle != wantVeh {
				t.Fatalf("vehicle %q, want %q", st.Vehicle, wantVeh)
			}
			sameContent(t, "source vs target", e.rawVolume("src"), e.rawVolume("tgt"), size)
			// The target LUN refuses host writes while in the pair.
			if _, err := e.handle(tgt).WriteAt(make([]byte, blk), 0); !errors.Is(err, ErrInPair) {
				t.Fatalf("write to target LUN: %v", err)
			}
			if err := e.m.DeleteLUN("tgt"); !errors.Is(err, ErrInPair) {
				t.Fatalf("delete target LUN: %v", err)
			}
			if _, err := e.m.ResizeLUN("src", 64*mib); !errors.Is(err, ErrInPair) {
				t.Fatalf("resize source LUN: %v", err)
			}
			res, err := e.m.Split([]string{"src"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("split pause %.3f ms, data copied %d bytes", res.PauseMS, st.DataBytes)
			var after, tafter metavol.LUN
			e.db.View(func(tx *metavol.Tx) error {
				after, _ = tx.GetLUN(src.ID)
				tafter, _ = tx.GetLUN(tgt.ID)
				return nil
			})
			if after.NAA != before.NAA || after.Serial != before.Serial || after.VolumeID != tgt.VolumeID || tafter.VolumeID != src.VolumeID {
				t.Fatalf("after split: src %+v tgt %+v", after, tafter)
			}
			if tafter.NAA != tgt.NAA {
				t.Fatal("target identity moved")
			}
			checkModel(t, "source LUN after split", h, size, model)
			checkModel(t, "target LUN after split", e.handle(tgt), size, model)
			ps, err := e.m.Pair("src")
			if err != nil || ps.State != "split" || ps.SplitPauseMS <= 0 {
				t.Fatalf("status after split %+v %v", ps, err)
			}
			// Writes now land on the new volume only.
			b := make([]byte, blk)
			pattern(b, 3, 5)
			if _, err := h.WriteAt(b, 3*blk); err != nil {
				t.Fatal(err)
			}
			model[3] = 5
			checkModel(t, "new volume", e.rawVolume("src"), size, model)
			// A new pair on the same LUNs works again after the split.
			e.reopen()
			checkModel(t, "source LUN after restart", e.handle(src), size, model)
			if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
				t.Fatal(err)
			}
			e.waitState("src", StateSynced, 20*time.Second)
		})
	}
}

func TestCreatePairRefusals(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("a", 16*mib)
	e.lun("small", 8*mib)
	b4k, err := e.m.CreateLUN(CreateLUNRequest{Name: "b4k", Size: 16 * mib, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	_ = b4k
	mapped := e.lun("mapped", 16*mib)
	e.lun("b", 16*mib)
	e.lun("c", 16*mib)
	if err := e.db.Update(func(tx *metavol.Tx) error {
		return tx.PutTarget(metavol.Target{IQN: "iqn.2024-01.t:x", Mappings: []metavol.Mapping{{LUN: 3, LUNID: mapped.ID}}})
	}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		req  PairRequest
		want error
		text string
	}{
		{PairRequest{Source: "a", Target: "small"}, ErrInvalid, "smaller"},
		{PairRequest{Source: "a", Target: "b4k"}, ErrInvalid, "block sizes differ"},
		{PairRequest{Source: "a", Target: "mapped"}, ErrMapped, "mapped to target iqn.2024-01.t:x"},
		{PairRequest{Source: "a", Target: "a"}, ErrInvalid, "same"},
		{PairRequest{Source: "a", Target: "nope"}, ErrNotFound, "nope"},
		{PairRequest{Source: "a", Target: "b", Speed: "warp"}, ErrInvalid, "speed"},
	}
	for _, c := range cases {
		_, err := e.m.CreatePair(c.req)
		if !errors.Is(err, c.want) || !strings.Contains(errString(err), c.text) {
			t.Errorf("CreatePair(%+v) = %v, want %v mentioning %q", c.req, err, c.want, c.text)
		}
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "a", Target: "b", Speed: SpeedLow}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []PairRequest{{Source: "a", Target: "c"}, {Source: "c", Target: "b"}, {Source: "b", Target: "c"}} {
		if _, err := e.m.CreatePair(r); !errors.Is(err, ErrInPair) {
			t.Errorf("CreatePair(%+v) with a LUN in a pair: %v", r, err)
		}
	}
	// Unreachable volume.
	var cl metavol.LUN
	e.db.View(func(tx *metavol.Tx) error { cl, _ = tx.LUNByName("c"); return nil })
	e.m.mu.Lock()
	ce := e.m.mu.luns[cl.ID]
	e.m.mu.Unlock()
	o := ce.vol.cur.Swap(nil)
	why := "gone for the test"
	ce.vol.why.Store(&why)
	saved := ce.vol.rec.Path
	ce.vol.rec.Path = "/nonexistent/volume"
	_, err = e.m.CreatePair(PairRequest{Source: "c", Target: "small"})
	if err == nil {
		t.Fatal("pair with an unreachable volume created")
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "mapped", Target: "c"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("unreachable target volume: %v", err)
	}
	ce.vol.rec.Path = saved
	ce.vol.cur.Store(o)
	// Cancel leaves the target as it was and frees both LUNs.
	if err := e.m.Cancel("a"); err != nil {
		t.Fatal(err)
	}
	// The pair is gone; show says the last pair of a was cancelled.
	if st, err := e.m.Pair("a"); err != nil || st.State != StateCancelled.String() {
		t.Fatalf("pair after cancel: %+v, %v; want cancelled", st, err)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "b", Target: "c", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState("b", StateSynced, 10*time.Second)
	if err := e.m.Cancel("b"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := e.m.dcl.PairIDs(); len(ids) != 0 {
		t.Fatalf("DCL keys left after cancel: %v", ids)
	}
}

// writer is a host writing random blocks of its own block set with a
// model of what was acknowledged.
type writer struct {
	mu    sync.Mutex
	model map[int64]uint64
	errs  atomic.Int64
	acks  atomic.Int64
}

// hostWriters starts n writers on h over blocks [0, nblocks) (writer i
// owns the blocks ≡ i mod n) until stop is closed.
func hostWriters(t *testing.T, h interface {
	WriteAt([]byte, int64) (int, error)
}, n int, nblocks int64, stop chan struct{}, w *writer, wg *sync.WaitGroup) {
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(int64(i) + time.Now().UnixNano()))
			b := make([]byte, blk)
			seq := uint64(1000 * (i + 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				bl := rnd.Int63n(nblocks/int64(n))*int64(n) + int64(i)
				seq++
				pattern(b, bl, seq)
				if _, err := h.WriteAt(b, bl*blk); err != nil {
					w.errs.Add(1)
					continue
				}
				w.acks.Add(1)
				w.mu.Lock()
				w.model[bl] = seq
				w.mu.Unlock()
			}
		}(i)
	}
}

func TestMigrateUnderWrites(t *testing.T) {
	e := newEnv(t, Options{InFlight: 3}, false)
	size := int64(16 * mib)
	src := e.lun("src", size)
	e.lun("tgt", size)
	h := e.handle(src)
	w := &writer{model: fill(t, h, size, 3, 1)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hostWriters(t, h, 6, size/blk, stop, w, &wg)
	// Throttled so the copy and the writes overlap for a while.
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedLow, MaxMBps: 20}); err != nil {
		t.Fatal(err)
	}
	// Raise the speed live.
	waitFor(t, 20*time.Second, "copy progress under writes", func() bool {
		st, _ := e.m.Pair("src")
		return st.DoneBytes >= 4*mib
	})
	hi := SpeedHighest
	zero := int64(0)
	if _, err := e.m.Set("src", SetRequest{Speed: &hi, MaxMBps: &zero}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 30*time.Second)
	// Dual-write for a while, then split while the writers keep going.
	start := w.acks.Load()
	waitFor(t, 20*time.Second, "writes in dual-write", func() bool { return w.acks.Load() >= start+500 })
	res, err := e.m.Split([]string{"src"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start = w.acks.Load()
	waitFor(t, 20*time.Second, "writes after the split", func() bool { return w.acks.Load() >= start+200 })
	close(stop)
	wg.Wait()
	if w.errs.Load() != 0 {
		t.Fatalf("%d host write errors", w.errs.Load())
	}
	t.Logf("%d acknowledged writes, split pause %.3f ms", w.acks.Load(), res.PauseMS)
	checkModel(t, "source LUN", h, size, w.model)
}
