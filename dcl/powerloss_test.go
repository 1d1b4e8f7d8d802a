package dcl_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/dcl"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/crashfs"
	"github.com/rs/zerolog"
)

// Power-loss test of the meta volume (metavol + dcl, its key-value store underneath) on
// a crashfs mount: commits run until the power is cut at a random op of
// the file system; the durable image is then opened and every commit that
// returned before the cut must be there. Each iteration starts empty and
// cuts the power several times in a row (so recovery itself is cut too).
//
// LMTGT_STRESS_CRASHPOINTS sets the number of crash points (default
// ciCrashPoints); LMTGT_CRASHFS_SEED replays a run.

const (
	ciCrashPoints   = 100
	roundsPerIter   = 3
	plPairID        = "pair1"
	plPairSize      = 1 << 30
	plRegionSize    = 1 << 20
	plRegions       = plPairSize / plRegionSize
	plStepsPerRound = 24
	plBigEvery      = 15 // every plBigEvery-th iteration writes large values (memtable flush, value log)
	plBigSteps      = 40 // steps of a round with large values (~20 MiB: more than a memtable)
)

// plAcked is what the acknowledged commits promise.
type plAcked struct {
	luns     map[string]bool // name -> acked present (true) or acked deleted (false)
	unsure   map[string]bool // names whose last op was cut: either state
	blobs    map[string]int  // acked big values: name -> size
	bw       map[int64]bool  // regions whose BeginWrite returned (since the last ClearNow began)
	dclMarks map[int64]bool  // regions whose MarkDCL returned
	pairOpen bool            // the DCL's meta key was committed
	cursor   int64           // the pair record's acked cursor, -1: none
	seq      int
}

func newPLModel() *plAcked {
	return &plAcked{luns: map[string]bool{}, unsure: map[string]bool{}, blobs: map[string]int{},
		bw: map[int64]bool{}, dclMarks: map[int64]bool{}, cursor: -1}
}

// blob is the content of a big value: derived from its name.
func blob(name string, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(len(name)), uint64(n)))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	copy(b, name)
	return b
}

type plRun struct {
	t     *testing.T
	rng   *rand.Rand
	seed  uint64
	model plFSModel
}

// round opens the meta volume on mnt and commits until the power is cut
// (or plStepsPerRound steps), recording in m what was acknowledged before
// the cut. It closes everything at the end (after the cut that is harmless:
// the image is frozen).
func (p *plRun) round(fs *crashfs.FS, m *plAcked, round int, big bool) {
	t := p.t
	mnt := fs.Mountpoint()
	db, err := metavol.Open(filepath.Join(mnt, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		if fs.IsCut() {
			return // the open itself was cut: nothing promised
		}
		t.Fatalf("open the meta volume on crashfs (power still on): %v", err)
	}
	defer db.Close()
	store := dcl.Open(db, dcl.Options{Log: zerolog.Nop(), ClearInterval: -1})
	defer store.Close()
	log, err := store.Open(plPairID, plPairSize, plRegionSize, nil)
	if fs.IsCut() {
		return
	}
	if err != nil {
		t.Fatalf("dcl open (power still on): %v", err)
	}
	m.pairOpen = true

	steps := plStepsPerRound
	if big {
		steps = plBigSteps
	}
	for step := 0; step < steps; step++ {
		m.seq++
		var err error
		var ack func()
		switch op := p.rng.IntN(11); {
		case big && op < 8:
			// Some above the meta store's value threshold (value log), most below
			// (memtable): a round of them fills a memtable and flushes it.
			name := fmt.Sprintf("blob-%d", m.seq)
			n := 700 << 10
			if op == 0 {
				n = 1200 << 10
			}
			err = db.Update(func(tx *metavol.Tx) error { return tx.PutMeta(name, blob(name, n)) })
			ack = func() { m.blobs[name] = n }
		case op < 3:
			name := fmt.Sprintf("lun-%d-%d", round, m.seq)
			l := metavol.LUN{ID: metavol.NewID(), Name: name, Size: int64(m.seq) << 20, BlockSize: 512, VolumeID: metavol.NewID()}
			m.unsure[name] = true
			err = db.Update(func(tx *metavol.Tx) error {
				if err := tx.PutVolume(metavol.Volume{ID: l.VolumeID, Path: name, Kind: "file", Size: l.Size}); err != nil {
					return err
				}
				return tx.PutLUN(l)
			})
			ack = func() { m.luns[name] = true; delete(m.unsure, name) }
		case op == 3:
			var name string
			for n, present := range m.luns {
				if present && !m.unsure[n] {
					name = n
					break
				}
			}
			if name == "" {
				continue
			}
			m.unsure[name] = true
			err = db.Update(func(tx *metavol.Tx) error {
				l, err := tx.LUNByName(name)
				if err != nil {
					return err
				}
				if err := tx.DeleteVolume(l.VolumeID); err != nil {
					return err
				}
				return tx.DeleteLUN(l.ID)
			})
			ack = func() { m.luns[name] = false; delete(m.unsure, name) }
		case op == 4:
			cur := int64(m.seq)
			err = db.Update(func(tx *metavol.Tx) error {
				return tx.PutPair(metavol.Pair{ID: plPairID, State: "copying", Cursor: cur, RegionSize: plRegionSize})
			})
			ack = func() { m.cursor = cur }
		case op <= 7:
			r := p.rng.Int64N(plRegions)
			err = log.BeginWrite(r, r)
			if err == nil {
				log.EndWrite(r, r, false)
			}
			ack = func() { m.bw[r] = true }
		case op == 8:
			r := p.rng.Int64N(plRegions - 2)
			err = log.MarkDCL(r, r+2)
			ack = func() { m.dclMarks[r], m.dclMarks[r+1], m.dclMarks[r+2] = true, true, true }
		case op == 9:
			// Concurrent writers: one group commit for several marks.
			rs := make([]int64, 4)
			errs := make([]error, len(rs))
			var wg sync.WaitGroup
			for i := range rs {
				rs[i] = p.rng.Int64N(plRegions)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if errs[i] = log.BeginWrite(rs[i], rs[i]); errs[i] == nil {
						log.EndWrite(rs[i], rs[i], false)
					}
				}()
			}
			wg.Wait()
			err = errors.Join(errs...)
			ack = func() {
				for _, r := range rs {
					m.bw[r] = true
				}
			}
		default:
			// From here on the BeginWrite marks may be cleared (they are
			// quiet, not in the DCL): no longer promised.
			clear(m.bw)
			err = log.ClearNow()
			ack = func() {}
		}
		if fs.IsCut() {
			return // this op may or may not have made it: m.unsure says which
		}
		if err != nil {
			t.Fatalf("commit failed with the power on: %v", err)
		}
		ack()
	}
}

// verify opens the image in backing (directly, no FUSE) and checks m; then
// settles what m left unsure from the image.
func (p *plRun) verify(backing string, m *plAcked, where string) {
	t := p.t
	db, err := metavol.Open(filepath.Join(backing, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("%s: the meta volume does not open after the power cut: %v", where, err)
	}
	defer db.Close()
	err = db.View(func(tx *metavol.Tx) error {
		for name, present := range m.luns {
			l, err := tx.LUNByName(name)
			switch {
			case m.unsure[name]:
			case present && err != nil:
				return fmt.Errorf("acked LUN %s lost: %w", name, err)
			case !present && !errors.Is(err, metavol.ErrNotFound):
				return fmt.Errorf("acked delete of LUN %s undone: %v", name, err)
			case present:
				if _, err := tx.GetVolume(l.VolumeID); err != nil {
					return fmt.Errorf("acked LUN %s without its volume: %w", name, err)
				}
			}
		}
		// All or nothing: no LUN without its volume, acked or not.
		luns, err := tx.LUNs()
		if err != nil {
			return err
		}
		for _, l := range luns {
			if _, err := tx.GetVolume(l.VolumeID); err != nil {
				return fmt.Errorf("LUN %s without its volume (half a transaction): %w", l.Name, err)
			}
		}
		for name, n := range m.blobs {
			b, err := tx.GetMeta(name)
			if err != nil {
				return fmt.Errorf("acked value %s lost: %w", name, err)
			}
			if !bytes.Equal(b, blob(name, n)) {
				return fmt.Errorf("acked value %s: %d bytes, content differs", name, len(b))
			}
		}
		if m.cursor >= 0 {
			pr, err := tx.GetPair(plPairID)
			if err != nil {
				return fmt.Errorf("acked pair record lost: %w", err)
			}
			if pr.Cursor < m.cursor {
				return fmt.Errorf("pair cursor %d, acked %d", pr.Cursor, m.cursor)
			}
		}
		// Settle the unsure names from what the image holds.
		for name := range m.unsure {
			_, err := tx.LUNByName(name)
			m.luns[name] = err == nil
			delete(m.unsure, name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if !m.pairOpen {
		return
	}
	store := dcl.Open(db, dcl.Options{Log: zerolog.Nop(), ClearInterval: -1})
	defer store.Close()
	ids, err := store.PairIDs()
	if err != nil || len(ids) != 1 || ids[0] != plPairID {
		t.Fatalf("%s: DCL of the pair: ids %v, %v", where, ids, err)
	}
	log, err := store.Open(plPairID, plPairSize, plRegionSize, nil)
	if err != nil {
		t.Fatalf("%s: open the DCL: %v", where, err)
	}
	for _, marks := range []map[int64]bool{m.bw, m.dclMarks} {
		for r := range marks {
			if !log.IsDirty(r) {
				t.Fatalf("%s: region %d: its mark was acked (BeginWrite/MarkDCL returned) but is not durable", where, r)
			}
		}
	}
}

// dir makes an empty backing directory. On strict POSIX semantics the
// "meta" directory is made in it before the first mount (so it is
// durable): metavol.Open does not fsync the parent of the directory it
// creates (TestMetaDirCreatedDurably).
func (p *plRun) dir(base string) string {
	dir, err := os.MkdirTemp(base, "it")
	if err != nil {
		p.t.Fatal(err)
	}
	if !p.model.ordered {
		if err := os.Mkdir(filepath.Join(dir, "meta"), 0o700); err != nil {
			p.t.Fatal(err)
		}
	}
	return dir
}

// plBase is where the backing directories go: tmpfs when there is one
// (the image is opened directly there, and a real disk's fsync latency
// would dominate the run), else t.TempDir().
func plBase(t *testing.T) string {
	base, err := os.MkdirTemp("/dev/shm", "lmtgt-powerloss-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	return base
}

func plSeed(t *testing.T) uint64 {
	if s := os.Getenv("LMTGT_CRASHFS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LMTGT_CRASHFS_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// TestMetaPowerLoss: every commit of the meta volume (records, DCL marks)
// that returned before a power cut survives it, and the meta volume opens
// after every cut, including cuts during the recovery of the previous one.
// The file system orders metadata like ext4 and xfs do (a journal commit
// with every fsync): that is what the meta store needs (TestMetaPowerLossStrictPOSIX).
func TestMetaPowerLoss(t *testing.T) {
	runPowerLoss(t, plFSModel{ordered: true})
}

// findingsEnv runs the tests that reproduce what the power-loss loop found
// in the meta store and metavol (docs/design.md, "How durability is tested").
const findingsEnv = "LMTGT_CRASHFS_FINDINGS"

// TestMetaPowerLossJournalTimer runs the loop with journal commits at
// random moments too (ext4's commit timer, another program's fsync): a
// commit between the meta store's creat and ftruncate of a new memtable or value
// log leaves a zero-length file after the cut, and the meta store (v4.9.6) refuses
// to open it ("Create a new file"); metavol.Open removes such files
// (metavol TestEmptyLogFileAfterPowerCut).
func TestMetaPowerLossJournalTimer(t *testing.T) {
	runPowerLoss(t, plFSModel{ordered: true, background: true})
}

// TestMetaPowerLossStrictPOSIX runs the same loop on strict POSIX
// semantics: a directory entry is durable only after its directory is
// fsynced. the meta store (v4.9.6) does not fsync the directory after writing a new
// L0 table in a memtable flush (db.go handleMemTableFlush; compactions do,
// levels.go) before the MANIFEST names it, so a cut there leaves a MANIFEST
// naming a table that is not there and the meta store refuses to open ("file does
// not exist for table 1"). ext4 and xfs commit the directory change with
// the MANIFEST's fsync, so it does not happen there; see docs/design.md
// ("How durability is tested"). Run with LMTGT_CRASHFS_FINDINGS=1.
func TestMetaPowerLossStrictPOSIX(t *testing.T) {
	if os.Getenv(findingsEnv) != "1" {
		t.Skip("the meta store's memtable flush does not fsync the directory (see the comment); " + findingsEnv + "=1 reproduces it")
	}
	runPowerLoss(t, plFSModel{})
}

// TestMetaDirCreatedDurably: metavol.Open creates its directory and must
// fsync the parent, or on strict POSIX semantics a cut after commits
// returned can lose the whole meta volume (ext4 and xfs commit the mkdir
// with the first fsync inside the new directory anyway).
func TestMetaDirCreatedDurably(t *testing.T) {
	backing := t.TempDir()
	fs, mnt := crashfs.Mount(t, backing, crashfs.Options{})
	db, err := metavol.Open(filepath.Join(mnt, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *metavol.Tx) error { return tx.PutMeta("acked", []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	fs.Cut()
	db.Close()
	fs.Crash()
	if _, err := os.Stat(filepath.Join(backing, "meta")); err != nil {
		t.Fatalf("an Update returned, then the power went: the meta volume's directory is gone: %v", err)
	}
}

// plFSModel is the file system model of a run (crashfs.Options).
type plFSModel struct {
	ordered    bool // OrderedMetadata
	background bool // BackgroundCommits
}

func (m plFSModel) opts() crashfs.Options {
	return crashfs.Options{OrderedMetadata: m.ordered, BackgroundCommits: m.background}
}

func runPowerLoss(t *testing.T, model plFSModel) {
	points := ciCrashPoints
	if s := os.Getenv("LMTGT_STRESS_CRASHPOINTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("LMTGT_STRESS_CRASHPOINTS=%q", s)
		}
		points = n
	}
	seed := plSeed(t)
	t.Logf("seed %d (LMTGT_CRASHFS_SEED=%d replays it; the kernel's writeback timing may still differ)", seed, seed)
	p := &plRun{t: t, rng: rand.New(rand.NewPCG(seed, 1)), seed: seed, model: model}
	srv := crashfs.StartServer(t)
	base := plBase(t)

	// Calibrate: how many file system ops does one round take, empty and
	// after a previous round, small and big? The crash points are drawn
	// over that range (and a bit beyond: the cut then hits the close).
	calib := func(big bool) int64 {
		dir := p.dir(base)
		m := newPLModel()
		var most int64
		for round := range 2 {
			opts := p.model.opts()
			opts.Seed = p.rng.Int64()
			fs := srv.Mount(t, dir, opts)
			p.round(fs, m, round, big)
			st := fs.Crash()
			most = max(most, st.Ops)
			p.verify(dir, m, fmt.Sprintf("calibration round %d (no cut before the crash)", round))
		}
		os.RemoveAll(dir)
		return most
	}
	opsSmall, opsBig := calib(false), calib(true)
	t.Logf("ops per round: %d small, %d with large values", opsSmall, opsBig)

	start := time.Now()
	done := 0
	for it := 0; done < points; it++ {
		big := it%plBigEvery == plBigEvery-1
		span := opsSmall
		if big {
			span = opsBig
		}
		dir := p.dir(base)
		m := newPLModel()
		for round := 0; round < roundsPerIter && done < points; round++ {
			k := 1 + p.rng.Int64N(span+span/8)
			opts := p.model.opts()
			opts.CrashAtOp, opts.PartialWriteback, opts.Seed = k, p.rng.IntN(2) == 0, p.rng.Int64()
			fs := srv.Mount(t, dir, opts)
			p.round(fs, m, round, big)
			st := fs.Crash()
			done++
			p.verify(dir, m, fmt.Sprintf("seed %d iteration %d round %d: cut before op %d of %d (partial writeback %v, seed %d)",
				seed, it, round, k, st.Ops, opts.PartialWriteback, opts.Seed))
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d crash points in %v", done, time.Since(start).Round(time.Millisecond))
}
