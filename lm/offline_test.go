package lm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/rs/zerolog"
)

// offline edits the meta volume while the Manager is stopped (what an
// admin, a downgrade or a damaged record does), then starts it again.
func (e *env) offline(edit func(db *metavol.DB)) {
	e.t.Helper()
	e.close()
	db, err := metavol.Open(filepath.Join(e.dir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		e.t.Fatal(err)
	}
	edit(db)
	if err := db.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func setPairState(t testing.TB, db *metavol.DB, id, state string) {
	t.Helper()
	if err := db.Update(func(tx *metavol.Tx) error {
		p, err := tx.GetPair(id)
		if err != nil {
			return err
		}
		p.State = state
		return tx.PutPair(p)
	}); err != nil {
		t.Fatal(err)
	}
}

// offlinePair makes src (with data) and dst, pairs them and waits synced.
func offlinePair(e *env, size int64) (src, dst metavol.LUN, model map[int64]uint64, st PairStatus) {
	e.t.Helper()
	src, dst = e.lun("src", size), e.lun("dst", size)
	model = fill(e.t, e.handle(src), size, 3, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "dst", Speed: SpeedHighest}); err != nil {
		e.t.Fatal(err)
	}
	st = e.waitState("src", StateSynced, 30*time.Second)
	return src, dst, model, st
}

func wantOffline(t testing.TB, m *Manager, l metavol.LUN, why string) {
	t.Helper()
	s := m.LUNStatus(l.ID)
	if s.State != LUNOffline || !strings.Contains(s.Reason, why) {
		t.Fatalf("lun %s: status %s (%s), want offline with %q", l.Name, s.State, s.Reason, why)
	}
}

func wantOnline(t testing.TB, m *Manager, l metavol.LUN) {
	t.Helper()
	if s := m.LUNStatus(l.ID); s.State != LUNOnline {
		t.Fatalf("lun %s: %s (%s), want online", l.Name, s.State, s.Reason)
	}
}

// hostWrite writes one recognisable block as a host would. If the write is
// acknowledged, it goes into the model: it must survive everything after.
func hostWrite(t testing.TB, v volume.Volume, model map[int64]uint64, block int64, seq uint64) error {
	t.Helper()
	b := make([]byte, blk)
	pattern(b, block, seq)
	_, err := v.WriteAt(b, block*blk)
	if err == nil {
		model[block] = seq
	}
	return err
}

// Finding 1 (unit): a pair record with an unknown state used to be
// skipped at startup while its source was served plainly; a write then
// went untracked, and once the record loaded again (synced, empty DCL) the
// split handed the host the stale target: the acknowledged write was lost.
// Now the LUNs are offline: the write is refused, and nothing acknowledged
// is lost at the later split.
func TestUnloadablePairUnknownStateNeverLosesWrites(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 8 << 20
	src, dst, model, st := offlinePair(e, size)

	e.offline(func(db *metavol.DB) { setPairState(t, db, st.ID, "switched-by-a-newer-version") })

	wantOffline(t, e.m, src, "could not be loaded: unknown state")
	wantOffline(t, e.m, dst, "could not be loaded")
	h := e.handle(src)
	werr := hostWrite(t, h, model, 5, 99)
	if !errors.Is(werr, ErrOffline) {
		t.Errorf("host write to the source of an unloadable pair: %v, want ErrOffline", werr)
	}
	if _, err := h.ReadAt(make([]byte, blk), 0); !errors.Is(err, ErrOffline) {
		t.Errorf("host read: %v, want ErrOffline", err)
	}
	if err := h.Sync(); !errors.Is(err, ErrOffline) {
		t.Errorf("host sync: %v, want ErrOffline", err)
	}

	// Everything that would make the record unsafe is refused, naming why.
	e.lun("other", size)
	if _, err := e.m.ResizeLUN("src", 2*size); !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), st.ID) {
		t.Errorf("resize of an offline LUN: %v", err)
	}
	if err := e.m.DeleteLUN("dst"); !errors.Is(err, ErrOffline) {
		t.Errorf("delete of an offline LUN: %v", err)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "other"}); !errors.Is(err, ErrOffline) {
		t.Errorf("a second pair on the source: %v", err)
	}
	if _, err := e.m.Split([]string{"src"}, 0); !errors.Is(err, ErrOffline) {
		t.Errorf("split of an unloaded pair: %v", err)
	}
	ps, err := e.m.Pair("src")
	if err != nil || ps.State != PairOffline || !strings.Contains(ps.Reason, "could not be loaded") {
		t.Errorf("migration show: %+v, %v", ps, err)
	}
	found := false
	for _, p := range e.m.Pairs() {
		found = found || (p.ID == st.ID && p.State == PairOffline)
	}
	if !found {
		t.Errorf("migration list does not show the unloaded pair: %+v", e.m.Pairs())
	}

	// The record comes back as it was (a downgrade undone): the pair loads
	// synced, the split goes through, and every acknowledged write is on
	// the source LUN.
	e.offline(func(db *metavol.DB) { setPairState(t, db, st.ID, "synced") })
	wantOnline(t, e.m, src)
	e.waitState("src", StateSynced, 30*time.Second)
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source LUN after the split", e.handle(src), size, model)
}

// The way out: cancelling the unloaded pair deletes its record and DCL
// and brings its LUNs back online, for good.
func TestUnloadablePairCancelBringsLUNsOnline(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 4 << 20
	src, dst, model, st := offlinePair(e, size)
	e.offline(func(db *metavol.DB) { setPairState(t, db, st.ID, "bogus") })
	wantOffline(t, e.m, src, "unknown state")

	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	wantOnline(t, e.m, src)
	wantOnline(t, e.m, dst)
	if err := hostWrite(t, e.handle(src), model, 7, 5); err != nil {
		t.Fatalf("write after cancel: %v", err)
	}
	if err := e.db.View(func(tx *metavol.Tx) error {
		_, err := tx.GetPair(st.ID)
		return err
	}); !errors.Is(err, metavol.ErrNotFound) {
		t.Fatalf("the pair record is still there after cancel: %v", err)
	}
	if ids, _ := e.m.dcl.PairIDs(); len(ids) != 0 {
		t.Fatalf("DCL left after cancel: %v", ids)
	}
	e.reopen()
	wantOnline(t, e.m, src)
	checkModel(t, "source after cancel and restart", e.handle(src), size, model)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "dst", Speed: SpeedHighest}); err != nil {
		t.Fatalf("a new pair after cancel: %v", err)
	}
	e.waitState("src", StateSynced, 30*time.Second)
}

// Finding 1 (unit): a DCL page that fails to load (a corrupt page) makes
// the pair unloadable: its LUNs are offline, nothing written is lost, and
// once the DCL loads again the pair resumes and splits with every write.
func TestUnloadablePairBadDCLPage(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 8 << 20
	src, _, model, st := offlinePair(e, size)
	var orig []byte
	e.offline(func(db *metavol.DB) {
		if err := db.Update(func(tx *metavol.Tx) error {
			pages, err := tx.DCLPages(st.ID)
			if err != nil {
				return err
			}
			orig = pages[0]
			return tx.PutDCLPage(st.ID, 0, []byte("corrupt"))
		}); err != nil {
			t.Fatal(err)
		}
	})
	wantOffline(t, e.m, src, "corrupt")
	if err := hostWrite(t, e.handle(src), model, 3, 42); !errors.Is(err, ErrOffline) {
		t.Errorf("host write while the DCL cannot load: %v, want ErrOffline", err)
	}

	// The DCL is readable again (the transient fault is gone).
	e.offline(func(db *metavol.DB) {
		if orig == nil {
			orig = make([]byte, 8) // page 0 was never written: clean
		}
		if err := db.Update(func(tx *metavol.Tx) error { return tx.PutDCLPage(st.ID, 0, orig) }); err != nil {
			t.Fatal(err)
		}
	})
	wantOnline(t, e.m, src)
	if err := hostWrite(t, e.handle(src), model, 3, 43); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 30*time.Second)
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source after the split", e.handle(src), size, model)
}

// A pair whose target LUN record vanished: the source is offline (its
// writes would not be tracked), and cancel by the source name frees it.
func TestUnloadablePairMissingLUN(t *testing.T) {
	e := newEnv(t, Options{}, false)
	src, dst, _, st := offlinePair(e, 4<<20)
	e.offline(func(db *metavol.DB) {
		if err := db.Update(func(tx *metavol.Tx) error { return tx.DeleteLUN(dst.ID) }); err != nil {
			t.Fatal(err)
		}
	})
	wantOffline(t, e.m, src, "target LUN "+dst.ID+" does not exist")
	if _, err := e.handle(src).WriteAt(make([]byte, blk), 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("write: %v, want ErrOffline", err)
	}
	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	wantOnline(t, e.m, src)
	if _, err := e.m.Pair("src"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pair %s still listed: %v", st.ID, err)
	}
}

// Finding 6 (unit): the target of a synced pair truncated underneath
// lmtgt used to stay synced and split, handing the host zeros. Now the
// split is refused naming the reason, the pair is interrupted, the target
// LUN is offline and the source keeps every byte.
func TestTruncatedTargetRefusesSplit(t *testing.T) {
	e := newEnv(t, Options{VerifyInterval: -1}, false)
	const size = 8 << 20
	src, dst, model, _ := offlinePair(e, size)
	if err := os.Truncate(volumePath(t, e.db, "dst"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Split([]string{"src"}, time.Second)
	if !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), "shrank") || !strings.Contains(err.Error(), "target") {
		t.Fatalf("split over a truncated target: %v, want refused (target shrank)", err)
	}
	st := e.waitState("src", StateInterrupted, 30*time.Second)
	if !strings.Contains(st.Reason, "shrank") {
		t.Errorf("interrupted reason %q does not say the target shrank", st.Reason)
	}
	wantOffline(t, e.m, dst, "shrank")
	wantOnline(t, e.m, src)
	// Host writes go on, to the source (tracked in the DCL).
	if err := hostWrite(t, e.handle(src), model, 9, 7); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source", e.handle(src), size, model)
	if _, err := e.m.Split([]string{"src"}, time.Second); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("second split: %v, want refused", err)
	}
	// The retries never bring the lost target back: a probe that rewrote
	// one region would otherwise let the pair "sync" over the zeros.

	e.m.mu.Lock()
	d := e.m.mu.vols[dstVolumeID(t, e)]
	e.m.mu.Unlock()
	if _, gerr := d.get(); !errors.Is(gerr, ErrOffline) {
		t.Fatalf("lost target volume usable again: %v", gerr)
	}
	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source after cancel", e.handle(src), size, model)
}

func dstVolumeID(t testing.TB, e *env) string {
	t.Helper()
	var id string
	if err := e.db.View(func(tx *metavol.Tx) error {
		l, err := tx.LUNByName("dst")
		id = l.VolumeID
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// Finding 6 (unit): a truncated plain LUN: a read of the lost range fails
// (never zeros) and takes the LUN offline; so does the periodic check
// before any read, and a write can then no longer re-extend the file over
// the lost data.
func TestTruncatedPlainLUNGoesOffline(t *testing.T) {
	e := newEnv(t, Options{VerifyInterval: -1}, false)
	const size = 4 << 20
	a := e.lun("a", size)
	fill(t, e.handle(a), size, 1, 1)
	if err := os.Truncate(volumePath(t, e.db, "a"), size/2); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, blk)
	if _, err := e.handle(a).ReadAt(b, size-blk); err == nil {
		t.Fatalf("read past the new end returned %d bytes of zeros without an error", len(b))
	}
	wantOffline(t, e.m, a, "shrank")
	if _, err := e.handle(a).ReadAt(b, 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("read of an offline LUN: %v, want ErrOffline", err)
	}
	if _, err := e.handle(a).WriteAt(b, size-blk); !errors.Is(err, ErrOffline) {
		t.Fatalf("write to an offline LUN: %v, want ErrOffline", err)
	}
	if fi, err := os.Stat(volumePath(t, e.db, "a")); err != nil || fi.Size() != size/2 {
		t.Fatalf("the truncated file was written to: %v %v", fi.Size(), err)
	}
	// Resize cannot bring it back silently either.
	if _, err := e.m.ResizeLUN("a", 2*size); err == nil {
		t.Fatal("resize of a LUN whose volume shrank succeeded")
	}
	// At a restart the recorded size still refuses the short file.
	e.reopen()
	wantOffline(t, e.m, a, "shrank")
	if _, err := e.handle(a).ReadAt(b, 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("read after restart: %v, want ErrOffline", err)
	}

	// GET LBA STATUS asks NextData: "no data past the new end" would make
	// the host read zeros without reading (qemu does). It fails instead.
	g := e.lun("g", size)
	fill(t, e.handle(g), size, 1, 3)
	if err := os.Truncate(volumePath(t, e.db, "g"), size/4); err != nil {
		t.Fatal(err)
	}
	nd := e.handle(g).(interface {
		NextData(off int64) (int64, int64, error)
	})
	if s, en, err := nd.NextData(size / 2); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("NextData past the new end: [%d,%d) %v, want an error", s, en, err)
	}
	wantOffline(t, e.m, g, "shrank")

	// The periodic check, before any I/O: the first write past the new
	// end would otherwise extend the file and leave holes where data was.
	c := e.lun("c", size)
	fill(t, e.handle(c), size, 1, 2)
	if err := os.Truncate(volumePath(t, e.db, "c"), 0); err != nil {
		t.Fatal(err)
	}
	e.m.VerifyVolumes()
	wantOffline(t, e.m, c, "shrank")
	if _, err := e.handle(c).WriteAt(b, size-blk); !errors.Is(err, ErrOffline) {
		t.Fatalf("write after the check: %v, want ErrOffline", err)
	}
}

// Unlinking a volume's file, and putting another file at its path, are
// detected by the check (periodic, on error, before a split).
func TestVanishedAndReplacedVolume(t *testing.T) {
	e := newEnv(t, Options{VerifyInterval: 10 * time.Millisecond}, false)
	const size = 1 << 20
	a, c := e.lun("a", size), e.lun("c", size)
	pa, pc := volumePath(t, e.db, "a"), volumePath(t, e.db, "c")
	if err := os.Remove(pa); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(pc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pc, make([]byte, size), 0o600); err != nil { // same size, same path
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the periodic check to take both LUNs offline", func() bool {
		return e.m.LUNStatus(a.ID).State == LUNOffline && e.m.LUNStatus(c.ID).State == LUNOffline
	})
	wantOffline(t, e.m, a, "vanished")
	wantOffline(t, e.m, c, "vanished")
	if _, err := e.handle(c).WriteAt(make([]byte, blk), 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("write: %v, want ErrOffline", err)
	}
	// A deleted LUN whose volume was lost can still be deleted.
	if err := e.m.DeleteLUN("a"); err != nil {
		t.Fatalf("delete of a LUN whose volume vanished: %v", err)
	}
	_ = volume.ErrVanished
}

// The check made inside the split's pause: a target truncated after the
// check before the pause (here: once the gates are drained) still refuses
// the split, and nothing was swapped.
func TestTruncatedTargetInsideThePause(t *testing.T) {
	e := newEnv(t, Options{VerifyInterval: -1}, false)
	const size = 4 << 20
	src, _, model, _ := offlinePair(e, size)
	path := volumePath(t, e.db, "dst")
	e.m.hooks.splitDrained = func() {
		if err := os.Truncate(path, size/2); err != nil {
			t.Error(err)
		}
	}
	_, err := e.m.Split([]string{"src"}, 10*time.Second)
	if !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), "shrank") {
		t.Fatalf("split with the target truncated inside the pause: %v, want refused (shrank)", err)
	}
	e.waitState("src", StateInterrupted, 30*time.Second)
	if l := lunRecord(t, e.db, src.Name); l.VolumeID == dstVolumeID(t, e) {
		t.Fatal("the source LUN was switched to the truncated volume")
	}
	checkModel(t, "source", e.handle(src), size, model)
}

// Without any check in between, a host write at the end of a truncated
// plain LUN would give the file back its full size, holes where the data
// was, and nothing could tell afterwards. The write is refused and the
// LUN goes offline.
func TestTailWriteOfTruncatedLUN(t *testing.T) {
	e := newEnv(t, Options{VerifyInterval: -1}, false)
	const size = 4 << 20
	a := e.lun("a", size)
	fill(t, e.handle(a), size, 1, 1)
	path := volumePath(t, e.db, "a")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.handle(a).WriteAt(make([]byte, blk), size-blk); err == nil {
		t.Fatal("a write at the end of a truncated LUN was acknowledged")
	}
	wantOffline(t, e.m, a, "shrank")
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("the truncated file was extended: %v %v", fi.Size(), err)
	}
}

// A file replaced (or unlinked) underneath lmtgt: host writes made before
// the periodic check notices go to the old inode, and used to be called
// durable by the next SYNCHRONIZE CACHE; after a restart they were gone
// (found by the attack pass on issue 7: qemu-io's write and flush
// succeeded, the data was not in the file). The sync now checks the
// volume after the fsync and fails, taking the LUN offline; on a pair it
// is the source that must hold the host's data.
func TestSyncAfterReplacedVolumeFails(t *testing.T) {
	e := newEnv(t, Options{VerifyInterval: -1}, false)
	const size = 1 << 20
	for _, how := range []string{"replaced", "unlinked"} {
		a := e.lun("a-"+how, size)
		p := volumePath(t, e.db, "a-"+how)
		if how == "replaced" {
			if err := os.WriteFile(p+".new", make([]byte, size), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(p+".new", p); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		h := e.handle(a)
		if _, err := h.WriteAt(bytes.Repeat([]byte{7}, blk), 0); err != nil {
			t.Fatalf("%s: write before the check: %v", how, err)
		}
		if err := h.Sync(); err == nil {
			t.Fatalf("%s: sync reported the write durable; it went to the old inode", how)
		}
		if st := e.m.LUNStatus(a.ID); st.State != LUNOffline {
			t.Fatalf("%s: LUN state %v after the failed sync, want offline", how, st.State)
		}
	}

	// A pair's source replaced: the host's sync fails too.
	src, _, _, _ := offlinePair(e, size)
	p := volumePath(t, e.db, "src")
	if err := os.WriteFile(p+".new", make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}
	h := e.handle(src)
	if _, err := h.WriteAt(bytes.Repeat([]byte{8}, blk), 0); err != nil {
		t.Fatalf("pair: write before the check: %v", err)
	}
	if err := h.Sync(); err == nil {
		t.Fatal("pair: sync reported the write durable; the source's file was replaced")
	}
	// The pair is interrupted by its source, and says so (it used to read
	// "target failed: source data volume lost").
	st := e.waitState("src", StateInterrupted, 30*time.Second)
	if !strings.HasPrefix(st.Reason, "source data volume lost") {
		t.Fatalf("interrupted reason %q, want it to start with the source's loss", st.Reason)
	}
}
