package lm

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// directOf reports whether the data volume a LUN routes to now is open
// with O_DIRECT, and what its volume record says.
func (e *env) directOf(name string) (open, rec bool) {
	e.t.Helper()
	var l metavol.LUN
	var v metavol.Volume
	if err := e.db.View(func(tx *metavol.Tx) error {
		var err error
		if l, err = tx.LUNByName(name); err != nil {
			return err
		}
		v, err = tx.GetVolume(l.VolumeID)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	e.m.mu.Lock()
	ent := e.m.mu.luns[l.ID]
	e.m.mu.Unlock()
	if ent == nil {
		e.t.Fatalf("lun %s not loaded", name)
	}
	if ent.vol.rec.ID != l.VolumeID {
		e.t.Fatalf("lun %s routes to volume %s, record says %s", name, ent.vol.rec.ID, l.VolumeID)
	}
	o, err := ent.vol.get()
	if err != nil {
		e.t.Fatal(err)
	}
	return o.local.Direct(), v.Direct
}

func TestDirectLUN(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(4 * mib)
	d, err := e.m.CreateLUN(CreateLUNRequest{Name: "d", Size: size, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	plain := e.lun("p", size)
	if open, rec := e.directOf("d"); !open || !rec {
		t.Fatalf("direct LUN: open with O_DIRECT %v, record %v", open, rec)
	}
	if open, rec := e.directOf("p"); open || rec {
		t.Fatalf("plain LUN: open with O_DIRECT %v, record %v", open, rec)
	}
	h := e.handle(d)
	// Aligned writes and a small unaligned one (bounce buffer, RMW).
	model := fill(t, h, size, 3, 1)
	odd := []byte("not aligned to anything")
	if _, err := h.WriteAt(odd, 3*blk+7); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(odd))
	if _, err := h.ReadAt(got, 3*blk+7); err != nil || !bytes.Equal(got, odd) {
		t.Fatalf("unaligned read back %q, %v", got, err)
	}
	b := make([]byte, blk)
	pattern(b, 3, 2)
	if _, err := h.WriteAt(b, 3*blk); err != nil {
		t.Fatal(err)
	}
	model[3] = 2
	checkModel(t, "direct LUN", h, size, model)
	if err := h.Sync(); err != nil {
		t.Fatal(err)
	}

	e.reopen()
	if open, rec := e.directOf("d"); !open || !rec {
		t.Fatalf("direct LUN after restart: open with O_DIRECT %v, record %v", open, rec)
	}
	if open, _ := e.directOf("p"); open {
		t.Fatal("plain LUN opened with O_DIRECT after restart")
	}
	checkModel(t, "direct LUN after restart", e.handle(d), size, model)
	if _, err := e.m.ResizeLUN("d", 2*size); err != nil {
		t.Fatal(err)
	}
	if open, rec := e.directOf("d"); !open || !rec {
		t.Fatalf("direct LUN after resize: open with O_DIRECT %v, record %v", open, rec)
	}
	checkModel(t, "plain LUN", e.handle(plain), size, nil)

	// Records written before the field existed read as not direct.
	var old metavol.Volume
	if err := json.Unmarshal([]byte(`{"id":"x","path":"/p","kind":"file","size":1,"owned":true}`), &old); err != nil || old.Direct {
		t.Fatalf("old record: %+v %v", old, err)
	}
}

// TestDirectMigration moves a LUN from an O_DIRECT volume to a page-cache
// one and back, with both vehicles. Each volume keeps its own setting; after
// a split the LUN goes with the mode of the volume it now uses.
func TestDirectMigration(t *testing.T) {
	for _, veh := range []string{VehicleGeneric, VehicleAuto} {
		t.Run(veh, func(t *testing.T) {
			e := newEnv(t, Options{}, false)
			size := int64(8 * mib)
			src, err := e.m.CreateLUN(CreateLUNRequest{Name: "src", Size: size, Direct: true})
			if err != nil {
				t.Fatal(err)
			}
			tgt := e.lun("tgt", size)
			h := e.handle(src)
			model := fill(t, h, size, 4, 1)
			fill(t, e.rawVolume("tgt"), size, 5, 99) // junk to overwrite

			migrate := func(from, to string, fromDirect bool, seq uint64) {
				t.Helper()
				if _, err := e.m.CreatePair(PairRequest{Source: from, Target: to, Speed: SpeedHighest, Vehicle: veh}); err != nil {
					t.Fatal(err)
				}
				// Host writes during the pair go to both legs.
				b := make([]byte, 2*blk)
				for bl := int64(0); bl < 2; bl++ {
					pattern(b[bl*blk:(bl+1)*blk], 10+bl, seq)
					model[10+bl] = seq
				}
				if _, err := h.WriteAt(b, 10*blk); err != nil {
					t.Fatal(err)
				}
				st := e.waitState(from, StateSynced, 20*time.Second)
				want := VehicleGeneric
				if veh == VehicleAuto {
					want = VehicleCopyFileRange // aligned extents: works with O_DIRECT
				}
				if st.Vehicle != want {
					t.Fatalf("%s -> %s: vehicle %q, want %q", from, to, st.Vehicle, want)
				}
				sameContent(t, from+" vs "+to, e.rawVolume(from), e.rawVolume(to), size)
				if _, err := e.m.Split([]string{from}, 0); err != nil {
					t.Fatal(err)
				}
				if open, rec := e.directOf(from); open != !fromDirect || rec != !fromDirect {
					t.Fatalf("after split %s uses O_DIRECT %v (record %v), want %v", from, open, rec, !fromDirect)
				}
				if open, rec := e.directOf(to); open != fromDirect || rec != fromDirect {
					t.Fatalf("after split %s uses O_DIRECT %v (record %v), want %v", to, open, rec, fromDirect)
				}
				checkModel(t, from+" after split", h, size, model)
			}
			migrate("src", "tgt", true, 2)  // direct -> page cache
			migrate("src", "tgt", false, 3) // and back
			e.reopen()
			if open, _ := e.directOf("src"); !open {
				t.Fatal("src not back on its O_DIRECT volume after restart")
			}
			if open, _ := e.directOf("tgt"); open {
				t.Fatal("tgt opened with O_DIRECT after restart")
			}
			checkModel(t, "src after restart", e.handle(src), size, model)
			_ = tgt
		})
	}
}

// alignOf is the direct I/O alignment of a LUN's current data volume.
func (e *env) alignOf(l metavol.LUN) int64 {
	e.t.Helper()
	e.m.mu.Lock()
	ent := e.m.mu.luns[l.ID]
	e.m.mu.Unlock()
	o, err := ent.vol.get()
	if err != nil {
		e.t.Fatal(err)
	}
	return o.local.Alignment()
}

// TestDirectOddTail: a 512-byte-block LUN whose size is not a multiple of
// 4096, migrated from an O_DIRECT volume to a page-cache one and back, with
// data in the last 512 bytes. copy_file_range on an O_DIRECT descriptor
// works when offsets and lengths are aligned to the direct I/O alignment
// (512 on most disks, so here too); where it refuses the tail (EINVAL, on
// 4096-byte alignment) the copy falls back to the generic vehicle and the
// status says so. Either way the content is equal.
func TestDirectOddTail(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(4*mib + 512)
	src, err := e.m.CreateLUN(CreateLUNRequest{Name: "src", Size: size, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "tgt", Size: size}); err != nil {
		t.Fatal(err)
	}
	align := e.alignOf(src)
	h := e.handle(src)
	data := bytes.Repeat([]byte("tail"), 128)
	for _, off := range []int64{0, mib + 512, size - 512} {
		if _, err := h.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
			t.Fatal(err)
		}
		st := e.waitState("src", StateSynced, 20*time.Second)
		t.Logf("migration %d: direct I/O alignment %d, vehicle %s", i+1, align, st.Vehicle)
		want := []string{VehicleCopyFileRange, VehicleGeneric}
		if align <= 512 {
			want = want[:1]
		}
		if !slices.Contains(want, st.Vehicle) {
			t.Fatalf("migration %d: vehicle %q, want one of %q", i+1, st.Vehicle, want)
		}
		sameContent(t, "src vs tgt", e.rawVolume("src"), e.rawVolume("tgt"), size)
		if _, err := e.m.Split([]string{"src"}, 0); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		if _, err := h.ReadAt(got, size-512); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("migration %d: tail after split: %v", i+1, err)
		}
	}
}
