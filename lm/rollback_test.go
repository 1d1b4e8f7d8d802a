package lm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// writeSome writes n blocks (spread over the LUN) with sequence numbers
// from seq on, into the model, and syncs.
func writeSome(t *testing.T, h interface {
	WriteAt([]byte, int64) (int, error)
	Sync() error
}, size int64, n int64, seq uint64, stride int64, model map[int64]uint64) {
	t.Helper()
	for i := int64(0); i < n; i++ {
		bl := (i*stride + int64(seq)) % (size / blk)
		if err := writeBlock(h, bl, seq+uint64(i)); err != nil {
			t.Fatalf("host write of block %d: %v", bl, err)
		}
		model[bl] = seq + uint64(i)
	}
	if err := h.Sync(); err != nil {
		t.Fatalf("host sync: %v", err)
	}
}

func pairRecord(t *testing.T, db *metavol.DB, source string) metavol.Pair {
	t.Helper()
	var out metavol.Pair
	found := false
	if err := db.View(func(tx *metavol.Tx) error {
		l, err := tx.LUNByName(source)
		if err != nil {
			return err
		}
		ps, err := tx.Pairs()
		for _, p := range ps {
			if p.SourceLUN == l.ID && (!found || p.Created.After(out.Created)) {
				out, found = p, true
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("no pair record of %s", source)
	}
	return out
}

// TestSplitKeepSourceRollbackCommit is the whole life of a pair that is
// switched, mirrored back, restarted, rolled back, switched again and
// committed: at every step the LUN reads what the host wrote and the
// secondary volume equals it.
func TestSplitKeepSourceRollbackCommit(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(8 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	oldVol := lunRecord(t, e.db, "src").VolumeID
	newVol := lunRecord(t, e.db, "tgt").VolumeID

	res, err := e.m.SplitKeepSource([]string{"src"}, time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	st := e.waitState("src", StateSwitched, time.Second)
	if !st.Switched || res.PauseMS <= 0 {
		t.Fatalf("after split --keep-source: status %+v, result %+v", st, res)
	}
	if s, tg := lunRecord(t, e.db, "src").VolumeID, lunRecord(t, e.db, "tgt").VolumeID; s != newVol || tg != oldVol {
		t.Fatalf("after the switch src is on %s, tgt on %s; want %s and %s", s, tg, newVol, oldVol)
	}
	h := e.handle(l)
	writeSome(t, h, size, 300, 1000, 37, model)
	checkModel(t, "LUN src (switched)", h, size, model)
	checkModel(t, "new volume (primary)", e.rawVolume("src"), size, model)
	checkModel(t, "old volume (mirrored back)", e.rawVolume("tgt"), size, model)

	// The refusals of a switched pair: they change nothing.
	if _, err := e.m.Split([]string{"src"}, 0); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "switched") {
		t.Fatalf("split of a switched pair: %v", err)
	}
	if _, err := e.m.SplitKeepSource([]string{"src"}, 0, false); !errors.Is(err, ErrState) {
		t.Fatalf("split --keep-source of a switched pair: %v", err)
	}
	if err := e.m.Cancel("src"); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "roll it back or commit") {
		t.Fatalf("cancel of a switched pair: %v", err)
	}
	e.waitState("src", StateSwitched, time.Second)

	// A restart keeps the pair switched, its legs reversed.
	e.reopen()
	e.waitState("src", StateSwitched, 10*time.Second)
	h = e.handle(l)
	writeSome(t, h, size, 300, 2000, 41, model)
	checkModel(t, "old volume after a restart", e.rawVolume("tgt"), size, model)
	checkModel(t, "new volume after a restart", e.rawVolume("src"), size, model)

	// Rollback: the LUN is on the old volume again, the pair synced and
	// mirroring to the new one.
	if _, err := e.m.Rollback([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	st = e.waitState("src", StateSynced, time.Second)
	if st.Switched {
		t.Fatalf("after rollback: %+v", st)
	}
	if s, tg := lunRecord(t, e.db, "src").VolumeID, lunRecord(t, e.db, "tgt").VolumeID; s != oldVol || tg != newVol {
		t.Fatalf("after the rollback src is on %s, tgt on %s; want %s and %s", s, tg, oldVol, newVol)
	}
	if _, err := e.m.Rollback([]string{"src"}, 0); !errors.Is(err, ErrState) {
		t.Fatalf("rollback of a synced pair: %v", err)
	}
	if _, err := e.m.Commit([]string{"src"}); !errors.Is(err, ErrState) {
		t.Fatalf("commit of a synced pair: %v", err)
	}
	writeSome(t, h, size, 300, 3000, 43, model)
	checkModel(t, "LUN src (rolled back)", h, size, model)
	checkModel(t, "old volume (primary again)", e.rawVolume("src"), size, model)
	checkModel(t, "new volume (secondary again)", e.rawVolume("tgt"), size, model)

	// Switch again, then commit: the pair is split and the old volume no
	// longer follows.
	if _, err := e.m.SplitKeepSource([]string{"src"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSwitched, time.Second)
	writeSome(t, h, size, 100, 4000, 47, model)
	if _, err := e.m.Commit([]string{"src"}); err != nil {
		t.Fatal(err)
	}
	st, err = e.m.Pair("src")
	if err != nil || st.State != StateSplit.String() || st.Switched {
		t.Fatalf("after commit: %+v, %v", st, err)
	}
	old := map[int64]uint64{}
	for k, v := range model {
		old[k] = v
	}
	writeSome(t, h, size, 100, 5000, 53, model)
	checkModel(t, "LUN src (committed)", h, size, model)
	checkModel(t, "old volume frozen at the commit", e.rawVolume("tgt"), size, old)
	if ids, err := e.m.dcl.PairIDs(); err != nil || len(ids) != 0 {
		t.Fatalf("DCLs after commit: %v, %v", ids, err)
	}
	e.reopen()
	checkModel(t, "LUN src after a restart", e.handle(l), size, model)
}

// TestSwitchedOldVolumeFails: the old volume fails while mirrored back;
// host writes succeed, the pair is interrupted, rollback is refused, and
// once the old volume answers the DCL is re-copied new → old and the pair
// is switched again (not synced), and can roll back with nothing lost.
func TestSwitchedOldVolumeFails(t *testing.T) {
	e := newEnv(t, Options{}, true)
	size := int64(8 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	if _, err := e.m.SplitKeepSource([]string{"src"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSwitched, time.Second)
	h := e.handle(l)
	old := e.faultyOf("tgt") // the old volume, now the target LUN's
	old.FailWrites(syscall.EIO)
	writeSome(t, h, size, 200, 100, 97, model)
	st := e.waitState("src", StateInterrupted, 10*time.Second)
	if st.DCLBytes == 0 || !st.Switched {
		t.Fatalf("interrupted status %+v", st)
	}
	if _, err := e.m.Rollback([]string{"src"}, 0); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("rollback with the old volume failing: %v", err)
	}
	old.Heal()
	e.waitState("src", StateSwitched, 20*time.Second)
	checkModel(t, "old volume after the re-copy", e.rawVolume("tgt"), size, model)
	if _, err := e.m.Rollback([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Second)
	checkModel(t, "LUN after the rollback", h, size, model)
	sameContent(t, "new == old", e.rawVolume("src"), e.rawVolume("tgt"), size)
}

// TestRollbackCutShortByRestart: a restart in rolling-back (its swap
// transaction not written) comes back switched, on the new volume, still
// mirroring back.
func TestRollbackCutShortByRestart(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(4 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	newVol := lunRecord(t, e.db, "tgt").VolumeID
	if _, err := e.m.SplitKeepSource([]string{"src"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	writeSome(t, e.handle(l), size, 50, 100, 13, model)
	rec := pairRecord(t, e.db, "src")
	e.close()
	// The record as a crash in rolling-back leaves it.
	rec.State = StateRollingBack.String()
	db, err := metavol.Open(e.metaDir, metavol.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *metavol.Tx) error { return tx.PutPair(rec) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.open()
	e.waitState("src", StateSwitched, 10*time.Second)
	if got := lunRecord(t, e.db, "src").VolumeID; got != newVol {
		t.Fatalf("after a restart in rolling-back src is on %s, want the new volume %s", got, newVol)
	}
	h := e.handle(l)
	writeSome(t, h, size, 50, 200, 17, model)
	checkModel(t, "old volume", e.rawVolume("tgt"), size, model)
	if _, err := e.m.Rollback([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "LUN after the rollback", h, size, model)
}

// TestRetireAndDeleteRecords: retire after a plain split deletes the old
// LUN and (owned) its file; after a commit of an existing file it keeps
// the file unless DeleteVolume, and a scrub leaves it all zeros; a pair
// in progress is refused; migration delete forgets the split records.
func TestRetireAndDeleteRecords(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(4 * mib)
	_, modelA := syncedPair(t, e, "a", "a2", size)
	if _, err := e.m.Retire("a", RetireOptions{}); !errors.Is(err, ErrState) {
		t.Fatalf("retire with the pair in progress: %v", err)
	}
	oldA := volumePath(t, e.db, "a")
	if _, err := e.m.Split([]string{"a"}, time.Second); err != nil {
		t.Fatal(err)
	}
	// A mapped old LUN is refused, naming the mapping, and nothing is
	// deleted or scrubbed.
	if err := e.m.CreateTarget(testIQN); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.MapLUN(testIQN, "a2", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Retire("a", RetireOptions{Scrub: true}); !errors.Is(err, ErrMapped) || !strings.Contains(err.Error(), testIQN) {
		t.Fatalf("retire of a mapped old LUN: %v", err)
	}
	f0 := openRaw(t, oldA)
	checkModel(t, "old volume after a refused retire (not scrubbed)", f0, size, modelA)
	f0.Close()
	if err := e.m.UnmapLUN(testIQN, "a2"); err != nil {
		t.Fatal(err)
	}
	res, err := e.m.Retire("a", RetireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.LUN != "a2" || !res.VolumeDeleted || res.Path != oldA {
		t.Fatalf("retire result %+v", res)
	}
	if _, err := os.Stat(oldA); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old volume file of a: %v", err)
	}
	if _, err := e.m.Retire("a", RetireOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second retire: %v", err)
	}

	// An existing file as the source: switched, committed, retired with
	// a scrub; the file is kept (not created by lmtgt), all zeros.
	path := filepath.Join(t.TempDir(), "old.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	b, err := e.m.CreateLUN(CreateLUNRequest{Name: "b", Size: size, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	e.lun("b2", size)
	model := fill(t, e.handle(b), size, 2, 7)
	if _, err := e.m.CreatePair(PairRequest{Source: "b", Target: "b2", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState("b", StateSynced, 20*time.Second)
	if _, err := e.m.SplitKeepSource([]string{"b"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Retire("b", RetireOptions{}); !errors.Is(err, ErrState) {
		t.Fatalf("retire of a switched pair: %v", err)
	}
	if _, err := e.m.Commit([]string{"b"}); err != nil {
		t.Fatal(err)
	}
	res, err = e.m.Retire("b", RetireOptions{Scrub: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.LUN != "b2" || res.VolumeDeleted || res.Scrub == "" || res.Path != path {
		t.Fatalf("retire result %+v", res)
	}
	f := openRaw(t, path)
	checkModel(t, "scrubbed old volume", f, size, map[int64]uint64{})
	f.Close()
	checkModel(t, "LUN b", e.handle(b), size, model)

	ids, err := e.m.DeletePairRecords("b")
	if err != nil || len(ids) != 1 {
		t.Fatalf("migration delete b: %v, %v", ids, err)
	}
	if _, err := e.m.Pair("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pair of b after delete: %v", err)
	}
	if _, err := e.m.DeletePairRecords("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestSessionKeepSourceRollbackCommit: a session's pairs switch, roll
// back and commit as one; the session is switched, synced again, then
// split.
func TestSessionKeepSourceRollbackCommit(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(4 * mib)
	la, lb := e.lun("a", size), e.lun("b", size)
	e.lun("a2", size)
	e.lun("b2", size)
	ma, mb := fill(t, e.handle(la), size, 3, 1), fill(t, e.handle(lb), size, 4, 2)
	if _, err := e.m.CreateSession(SessionRequest{Name: "wave", Speed: SpeedHighest,
		Pairs: []PairRequest{{Source: "a", Target: "a2"}, {Source: "b", Target: "b2"}}}); err != nil {
		t.Fatal(err)
	}
	waitSession := func(want SessionState) {
		t.Helper()
		var st SessionStatus
		if !poll(20*time.Second, func() bool {
			st, _ = e.m.Session("wave")
			return st.State == want.String()
		}) {
			t.Fatalf("session not %s: %+v", want, st)
		}
	}
	waitSession(SessionSynced)
	if _, err := e.m.Rollback([]string{"a"}, 0); !errors.Is(err, ErrState) {
		t.Fatalf("rollback of a synced session pair: %v", err)
	}
	// The session-integrity rule (sessionref.go): a member is switched,
	// rolled back and committed through its session only.
	_, err := e.m.SplitKeepSource([]string{"a"}, time.Second, false)
	wantRefusal(t, "lone split --keep-source of a member", err, ErrState, "migration a",
		"pair a → a2 belongs to session wave: split it with `lmtgt session split wave --keep-source` (or force a lone split --keep-source with --force")
	if _, err := e.m.SplitKeepSourceSession("wave", time.Second); err != nil {
		t.Fatal(err)
	}
	waitSession(SessionSwitched)
	_, err = e.m.Rollback([]string{"a2"}, time.Second) // named by its target
	wantRefusal(t, "lone rollback of a member", err, ErrState, "migration a2",
		"pair a → a2 belongs to session wave: roll it back with `lmtgt session rollback wave`")
	_, err = e.m.Commit([]string{"b"})
	wantRefusal(t, "lone commit of a member", err, ErrState, "migration b",
		"pair b → b2 belongs to session wave: commit it with `lmtgt session commit wave`")
	for _, s := range []string{"a", "b"} {
		if st, err := e.m.Pair(s); err != nil || st.State != StateSwitched.String() || !st.Switched {
			t.Fatalf("pair %s after the refused lone operations: %+v, %v", s, st, err)
		}
	}
	// session pause pauses switched pairs too: the mirroring back stops
	// (host writes are marked), resume re-copies them new → old and the
	// pairs are switched again.
	if _, err := e.m.PauseSession("wave"); err != nil {
		t.Fatal(err)
	}
	waitSession(SessionPaused)
	for _, s := range []string{"a", "b"} {
		if st, err := e.m.Pair(s); err != nil || st.State != StatePaused.String() || !st.Switched {
			t.Fatalf("pair %s after session pause: %+v, %v", s, st, err)
		}
	}
	writeSome(t, e.handle(la), size, 30, 400, 5, ma)
	if st, _ := e.m.Pair("a"); st.DCLBytes == 0 {
		t.Fatalf("writes while paused are not marked for the old volume: %+v", st)
	}
	if _, err := e.m.RollbackSession("wave", time.Second); !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), "is paused") {
		t.Fatalf("rollback of a paused session: %v", err)
	}
	if _, err := e.m.ResumeSession("wave"); err != nil {
		t.Fatal(err)
	}
	waitSession(SessionSwitched)
	checkModel(t, "a2 (old volume) re-copied after the resume", e.rawVolume("a2"), size, ma)
	writeSome(t, e.handle(la), size, 50, 100, 7, ma)
	writeSome(t, e.handle(lb), size, 50, 200, 11, mb)
	if _, err := e.m.RollbackSession("wave", time.Second); err != nil {
		t.Fatal(err)
	}
	waitSession(SessionSynced)
	checkModel(t, "a on its old volume", e.handle(la), size, ma)
	checkModel(t, "b on its old volume", e.handle(lb), size, mb)
	checkModel(t, "a2 (new volume, mirrored)", e.rawVolume("a2"), size, ma)
	if _, err := e.m.SplitKeepSourceSession("wave", time.Second); err != nil {
		t.Fatal(err)
	}
	writeSome(t, e.handle(la), size, 50, 300, 13, ma)
	if _, err := e.m.CommitSession("wave"); err != nil {
		t.Fatal(err)
	}
	waitSession(SessionSplit)
	for _, s := range []string{"a", "b"} {
		if st, err := e.m.Pair(s); err != nil || st.State != StateSplit.String() {
			t.Fatalf("pair %s after the session commit: %+v, %v", s, st, err)
		}
	}
	checkModel(t, "a after the commit", e.handle(la), size, ma)
	checkModel(t, "b after the commit", e.handle(lb), size, mb)
}

// TestRollbackRefusedWhenOldVolumeMissesARegion: a region the old volume
// missed (in the DCL) found inside the rollback's pause refuses the
// rollback: the LUN stays on the new volume, the pair switched, and once
// the region is re-copied new → old the rollback goes through with
// nothing lost.
func TestRollbackRefusedWhenOldVolumeMissesARegion(t *testing.T) {
	e := newEnv(t, Options{}, false)
	size := int64(4 * mib)
	l, model := syncedPair(t, e, "src", "tgt", size)
	newVol := lunRecord(t, e.db, "tgt").VolumeID
	if _, err := e.m.SplitKeepSource([]string{"src"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	h := e.handle(l)
	writeSome(t, h, size, 40, 100, 29, model)
	// The old volume misses region 1 (as after a failed mirrored write
	// during the drain): it differs there and the DCL says so.
	p, err := e.m.findPair(bySource("src"))
	if err != nil {
		t.Fatal(err)
	}
	e.m.hooks.splitDrained = func() {
		e.m.hooks.splitDrained = nil
		old, _ := p.legs().tgt.get()
		if _, err := old.v.WriteAt(make([]byte, blk), mib); err != nil {
			t.Error(err)
		}
		if err := p.log.MarkDCL(1, 1); err != nil {
			t.Error(err)
		}
	}
	if _, err := e.m.Rollback([]string{"src"}, time.Second); !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), "DCL") {
		t.Fatalf("rollback with a DCL region found in the pause: %v", err)
	}
	if got := lunRecord(t, e.db, "src").VolumeID; got != newVol {
		t.Fatalf("after the refused rollback src is on %s, want the new volume %s", got, newVol)
	}
	checkModel(t, "LUN after the refused rollback", h, size, model)
	// Re-copied new → old: switched with an empty DCL (the state alone
	// says switched again as soon as the rollback is refused).
	waitFor(t, 10*time.Second, "the missed region re-copied", func() bool {
		st, err := e.m.Pair("src")
		return err == nil && st.State == StateSwitched.String() && st.DCLBytes == 0
	})
	if _, err := e.m.Rollback([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "LUN after the rollback", h, size, model)
}

// TestSwitchedRequeuedByMaxActive: switched pairs re-copying new → old
// (their old volumes failed, then answered) go back to queued when max
// active is lowered, and stay switched pairs there: a queued one commits
// (the commit rule: every non-final state of a switched pair), the other
// copies on when a slot frees and ends switched (p.inSync), not synced,
// and rolls back with nothing lost.
func TestSwitchedRequeuedByMaxActive(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 3}, true)
	size := int64(32 * mib)
	names := []string{"a", "b", "c"}
	luns := map[string]metavol.LUN{}
	models := map[string]map[int64]uint64{}
	for _, n := range names {
		luns[n], models[n] = syncedPair(t, e, n, n+"2", size)
	}
	if _, err := e.m.SplitKeepSource(names, time.Second, false); err != nil {
		t.Fatal(err)
	}
	one, slow := int64(1), SpeedLow
	for i, n := range names {
		e.waitState(n, StateSwitched, time.Second)
		prio := 9 - i // a highest: it keeps its slot
		if _, err := e.m.Set(n, SetRequest{MaxMBps: &one, Speed: &slow, Priority: &prio}); err != nil {
			t.Fatal(err)
		}
		old := e.faultyOf(n + "2")
		old.FailWrites(syscall.EIO)
		writeSome(t, e.handle(luns[n]), size, 256, 1000, 61, models[n]) // regions all over the LUN: seconds at 1 MB/s
		e.waitState(n, StateInterrupted, 10*time.Second)
		old.Heal()
	}
	for _, n := range names {
		if st := e.waitState(n, StateCopying, 10*time.Second); !st.Switched || st.DCLBytes < 4*mib {
			t.Fatalf("pair %s re-copying: %+v, want switched with MiBs to re-copy", n, st)
		}
	}
	limit := 1
	if _, err := e.m.SetLimits(LimitsRequest{MaxActive: &limit}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b", "c"} {
		st := e.waitState(n, StateQueued, 10*time.Second)
		if !st.Switched || !strings.Contains(st.Reason, "max active lowered to 1") {
			t.Fatalf("pair %s requeued: %+v, want a switched pair waiting for a slot", n, st)
		}
	}
	if st, _ := e.m.Pair("a"); st.State != StateCopying.String() {
		t.Fatalf("pair a (highest priority) lost its slot: %+v", st)
	}
	// c commits while it waits: the LUN stays on the new volume.
	if _, err := e.m.Commit([]string{"c"}); err != nil {
		t.Fatalf("commit of a queued switched pair: %v", err)
	}
	if st, err := e.m.Pair("c"); err != nil || st.State != StateSplit.String() || st.Switched {
		t.Fatalf("pair c after the commit: %+v, %v", st, err)
	}
	checkModel(t, "c after the commit", e.handle(luns["c"]), size, models["c"])
	// a and b copy on at full speed: each ends switched.
	fast := SpeedHighest
	zero := int64(0)
	for _, n := range []string{"a", "b"} {
		if _, err := e.m.Set(n, SetRequest{MaxMBps: &zero, Speed: &fast}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a", "b"} {
		if st := e.waitState(n, StateSwitched, 30*time.Second); !st.Switched || st.DCLBytes != 0 {
			t.Fatalf("pair %s after its re-copy: %+v", n, st)
		}
		checkModel(t, n+"'s old volume after the re-copy", e.rawVolume(n+"2"), size, models[n])
	}
	if _, err := e.m.Rollback([]string{"b"}, time.Second); err != nil {
		t.Fatal(err)
	}
	e.waitState("b", StateSynced, time.Second)
	checkModel(t, "b after the rollback", e.handle(luns["b"]), size, models["b"])
}
