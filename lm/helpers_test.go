package lm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/rs/zerolog"
)

const blk = 4096

// env is a Manager on a real meta volume and real sparse files.
type env struct {
	t    testing.TB
	dir  string
	db   *metavol.DB
	m    *Manager
	opts Options
	// meta: where the meta volume lives (default dir/meta) and its
	// options (newEnvMeta).
	metaDir  string
	metaOpts metavol.Options
	// faulty wrappers by volume ID (only with wrap=true)
	fmu    sync.Mutex
	faulty map[string]*volume.Faulty
}

func testLogger(t testing.TB) zerolog.Logger {
	if os.Getenv("LM_TEST_LOG") != "" {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
	return zerolog.Nop()
}

func newEnv(t testing.TB, opts Options, wrap bool) *env {
	t.Helper()
	return newEnvMeta(t, opts, wrap, "", metavol.Options{})
}

// newEnvMeta is newEnv with the meta volume in metaDir (if not empty) and
// opened with metaOpts (its seams: BeforeCommit, FreeSpace).
func newEnvMeta(t testing.TB, opts Options, wrap bool, metaDir string, metaOpts metavol.Options) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), faulty: map[string]*volume.Faulty{}, metaDir: metaDir, metaOpts: metaOpts}
	if e.metaDir == "" {
		e.metaDir = filepath.Join(e.dir, "meta")
	}
	opts.DataDir = e.dir
	opts.Log = testLogger(t)
	if opts.RetryMin == 0 {
		opts.RetryMin = 10 * time.Millisecond
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 100 * time.Millisecond
	}
	if opts.ClearInterval == 0 {
		opts.ClearInterval = 50 * time.Millisecond
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = 100 * time.Millisecond
	}
	if wrap {
		opts.WrapVolume = func(id string, v volume.Volume) volume.Volume {
			f := volume.NewFaulty(v)
			e.fmu.Lock()
			e.faulty[id] = f
			e.fmu.Unlock()
			return f
		}
	}
	e.opts = opts
	e.open()
	t.Cleanup(func() { e.close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	mo := e.metaOpts
	mo.Log = zerolog.Nop()
	db, err := metavol.Open(e.metaDir, mo)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := Open(db, e.opts)
	if err != nil {
		db.Close()
		e.t.Fatal(err)
	}
	e.db, e.m = db, m
}

func (e *env) close() {
	if e.m != nil {
		if err := e.m.Close(); err != nil {
			e.t.Errorf("close manager: %v", err)
		}
		e.m = nil
	}
	if e.db != nil {
		e.db.Close()
		e.db = nil
	}
}

func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) lun(name string, size int64) metavol.LUN {
	e.t.Helper()
	l, err := e.m.CreateLUN(CreateLUNRequest{Name: name, Size: size})
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

func (e *env) handle(l metavol.LUN) volume.Volume {
	e.t.Helper()
	h, err := e.m.LUN(l.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// faultyOf returns the fault injector of a LUN's current data volume.
func (e *env) faultyOf(name string) *volume.Faulty {
	e.t.Helper()
	l := lunRecord(e.t, e.db, name)
	e.fmu.Lock()
	defer e.fmu.Unlock()
	f := e.faulty[l.VolumeID]
	if f == nil {
		e.t.Fatalf("no fault injector for %s", name)
	}
	return f
}

// waitState waits until the pair of source is in state want.
func (e *env) waitState(source string, want PairState, d time.Duration) PairStatus {
	e.t.Helper()
	return waitPair(e.t, e.m, source, want, d)
}

// waitPair waits until the pair of source is in state want and fails t
// with the last status otherwise.
func waitPair(t testing.TB, m *Manager, source string, want PairState, d time.Duration) PairStatus {
	t.Helper()
	var st PairStatus
	var err error
	if !poll(d, func() bool {
		st, err = m.Pair(source)
		return err == nil && st.State == want.String()
	}) {
		t.Fatalf("pair %s: not %s within %v: last status %+v (err %v)", source, want, d, st, err)
	}
	return st
}

// pattern fills a block with (block, seq) so every write is recognisable.
func pattern(b []byte, block int64, seq uint64) {
	for i := 0; i+16 <= len(b); i += 16 {
		binary.LittleEndian.PutUint64(b[i:], uint64(block))
		binary.LittleEndian.PutUint64(b[i+8:], seq)
	}
}

// fill writes data to a volume in runs of 16 blocks: every stride-th run
// gets patterns, the rest stays a hole. (Runs, not single blocks: badly
// fragmented files take seconds to delete on a busy disk.)
func fill(t testing.TB, v volume.Volume, size int64, stride int64, seq uint64) map[int64]uint64 {
	t.Helper()
	const run = 16
	model := map[int64]uint64{}
	b := make([]byte, run*blk)
	for r := int64(0); r*run*blk < size; r += stride {
		for i := int64(0); i < run; i++ {
			pattern(b[i*blk:(i+1)*blk], r*run+i, seq)
			model[r*run+i] = seq
		}
		if _, err := v.WriteAt(b, r*run*blk); err != nil {
			t.Fatal(err)
		}
	}
	return model
}

// checkModel compares a volume with the model (blocks not in it are zero).
func checkModel(t testing.TB, what string, v volume.Volume, size int64, model map[int64]uint64) {
	t.Helper()
	b := make([]byte, blk)
	want := make([]byte, blk)
	bad := 0
	for bl := int64(0); bl*blk < size; bl++ {
		if _, err := v.ReadAt(b, bl*blk); err != nil {
			t.Fatalf("%s: read block %d: %v", what, bl, err)
		}
		seq, ok := model[bl]
		if ok {
			pattern(want, bl, seq)
		} else {
			clear(want)
		}
		if !bytes.Equal(b, want) {
			if bad < 5 {
				t.Errorf("%s: block %d: got (block %d, seq %d), want seq %d (present=%v)", what, bl,
					binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]), seq, ok)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d blocks differ", what, bad)
	}
}

// sameContent compares two volumes byte by byte over size.
func sameContent(t testing.TB, what string, a, b volume.Volume, size int64) {
	t.Helper()
	x := make([]byte, 1<<20)
	y := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(x)) {
		n := min(int64(len(x)), size-off)
		if _, err := a.ReadAt(x[:n], off); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReadAt(y[:n], off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x[:n], y[:n]) {
			for i := int64(0); i < n; i++ {
				if x[i] != y[i] {
					t.Fatalf("%s: differ at byte %d", what, off+i)
				}
			}
		}
	}
}

// lunRecord is the record of LUN name.
func lunRecord(t testing.TB, db *metavol.DB, name string) metavol.LUN {
	t.Helper()
	var l metavol.LUN
	if err := db.View(func(tx *metavol.Tx) error {
		var err error
		l, err = tx.LUNByName(name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

// volumePath is the path of the data volume LUN name is on.
func volumePath(t testing.TB, db *metavol.DB, name string) string {
	t.Helper()
	var path string
	if err := db.View(func(tx *metavol.Tx) error {
		l, err := tx.LUNByName(name)
		if err != nil {
			return err
		}
		v, err := tx.GetVolume(l.VolumeID)
		path = v.Path
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return path
}

// sameLUNs checks that LUNs a and b hold the same size bytes, reading
// their volume files directly.
func sameLUNs(t testing.TB, db *metavol.DB, what, a, b string, size int64) {
	t.Helper()
	x, y := openRaw(t, volumePath(t, db, a)), openRaw(t, volumePath(t, db, b))
	defer x.Close()
	defer y.Close()
	sameContent(t, what, x, y, size)
}

// rawVolume opens a LUN's current data volume file directly.
func (e *env) rawVolume(name string) volume.Volume {
	e.t.Helper()
	f := openRaw(e.t, volumePath(e.t, e.db, name))
	e.t.Cleanup(func() { f.Close() })
	return f
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return fmt.Sprint(err)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// poll calls cond every 2 ms until it holds or d has passed and reports
// whether it held. It is the one polling loop of the package's tests:
// waitFor and waitPair fail the test when it gives false; the crash
// children, which exit rather than fail, and loops that must clean up
// first call it directly.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// loopUntil runs step over and over in a goroutine counted by wg, until
// stop is closed or step returns false.
func loopUntil(wg *sync.WaitGroup, stop <-chan struct{}, step func() bool) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !step() {
				return
			}
		}
	}()
}

func renameFile(from, to string) error { return os.Rename(from, to) }

func openRaw(t testing.TB, path string) *volume.File {
	t.Helper()
	f, err := volume.Open(path, volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}
