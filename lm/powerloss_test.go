package lm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/crashfs"
	"github.com/rs/zerolog"
)

// Power-loss test of a migration with the whole data dir (meta volume and
// data volumes) on a crashfs mount: host writers (SYNCHRONIZE CACHE every
// few writes), copy, dual-write and splits run until the power is cut at a
// random file system op; the next round recovers from the durable image
// (and may be cut during recovery). A host write is promised once a Sync
// that began after it returned before the cut: every promised write must
// be on LUN src after every cut, and at the end the pair must resync to a
// target equal to the source. Data volumes and meta volume are cut
// together, as a real power cut does.
//
// LMTGT_STRESS_LM_POWERCUTS sets the number of cuts (default plCuts).

const (
	plCuts       = 6
	plSize       = 8 * mib
	plBlocks     = plSize / blk
	plWriters    = 2
	plSyncEvery  = 8
	plCalibrated = 400 // host writes of the calibration round
)

type plHost struct {
	mu       sync.Mutex
	written  map[int64]map[uint64]bool // block -> every seq ever written (0: hole)
	promised map[int64]uint64          // block -> lowest seq it may hold
	seq      uint64
}

type plLM struct {
	t    *testing.T
	srv  *crashfs.Server
	back string
	mnt  string
	rng  *rand.Rand
	host *plHost
}

// open mounts the image and opens the meta volume and the Manager. ok is
// false when the power was cut before they opened (they are closed).
func (p *plLM) open(opts crashfs.Options) (fs *crashfs.FS, db *metavol.DB, m *Manager, ok bool) {
	t := p.t
	fs = p.srv.MountAt(t, p.back, p.mnt, opts)
	db, err := metavol.Open(filepath.Join(p.mnt, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		if fs.IsCut() {
			return fs, nil, nil, false
		}
		t.Fatalf("open the meta volume after a power cut: %v", err)
	}
	m, err = Open(db, crashOptions(p.mnt))
	if err != nil {
		db.Close()
		if fs.IsCut() {
			return fs, nil, nil, false
		}
		t.Fatalf("recover after a power cut: %v", err)
	}
	return fs, db, m, true
}

// checkPromised reads every promised block through LUN src.
func (p *plLM) checkPromised(db *metavol.DB, m *Manager, where string) {
	t := p.t
	var src metavol.LUN
	if err := db.View(func(tx *metavol.Tx) error {
		var err error
		src, err = tx.LUNByName("src")
		return err
	}); err != nil {
		t.Fatalf("%s: LUN src: %v", where, err)
	}
	h, err := m.LUN(src.ID)
	if err != nil {
		t.Fatalf("%s: LUN src: %v", where, err)
	}
	p.host.mu.Lock()
	defer p.host.mu.Unlock()
	b := make([]byte, blk)
	for bl, want := range p.host.promised {
		if _, err := h.ReadAt(b, bl*blk); err != nil {
			t.Fatalf("%s: read block %d: %v", where, bl, err)
		}
		gotBl, gotSeq := leU64(b), leU64(b[8:])
		if gotSeq == 0 && gotBl == 0 {
			gotBl = uint64(bl) // a hole
		}
		if gotBl != uint64(bl) || gotSeq < want || !p.host.written[bl][gotSeq] {
			t.Fatalf("%s: block %d holds (block %d, seq %d); seq %d was written and synced before the cut", where, bl, gotBl, gotSeq, want)
		}
		for i := 0; i+16 <= blk; i += 16 {
			if leU64(b[i:]) != leU64(b) || leU64(b[i+8:]) != gotSeq {
				t.Fatalf("%s: block %d is torn", where, bl)
			}
		}
	}
}

// workload runs host writers and the pair controller until the power is
// cut or maxWrites host writes were done. Returns the writes done.
func (p *plLM) workload(fs *crashfs.FS, db *metavol.DB, m *Manager, maxWrites int64) int64 {
	t := p.t
	var src metavol.LUN
	err := db.View(func(tx *metavol.Tx) error {
		var err error
		src, err = tx.LUNByName("src")
		return err
	})
	if errors.Is(err, metavol.ErrNotFound) {
		if src, err = m.CreateLUN(CreateLUNRequest{Name: "src", Size: plSize}); err != nil {
			if fs.IsCut() {
				return 0
			}
			t.Fatal(err)
		}
		if _, err = m.CreateLUN(CreateLUNRequest{Name: "tgt", Size: plSize}); err != nil {
			if fs.IsCut() {
				return 0
			}
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	h, err := m.LUN(src.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.host.written) == 0 {
		// Data for the copier: every other run of 16 blocks (seq 1).
		p.host.mu.Lock()
		model := fill(t, h, plSize, 2, 1)
		for bl := range model {
			p.host.written[bl] = map[uint64]bool{0: true, 1: true}
		}
		p.host.seq = 1
		p.host.mu.Unlock()
		if err := h.Sync(); err != nil {
			if fs.IsCut() {
				return 0
			}
			t.Fatal(err)
		}
		if fs.IsCut() {
			return 0
		}
		p.host.mu.Lock()
		for bl := range model {
			p.host.promised[bl] = 1
		}
		p.host.mu.Unlock()
	}
	cut := func() bool {
		st, err := fs.Status()
		return err != nil || st.State != crashfs.Running
	}
	var writes atomic.Int64
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	errs := make(chan error, plWriters+1)
	var wg sync.WaitGroup
	for w := range plWriters {
		wg.Add(1)
		rng := rand.New(rand.NewPCG(p.rng.Uint64(), uint64(w)))
		go func() {
			defer wg.Done()
			b := make([]byte, blk)
			type ack struct {
				bl  int64
				seq uint64
			}
			var pend []ack
			for !stopped() && !cut() && writes.Load() < maxWrites {
				bl := rng.Int64N(plBlocks/plWriters)*plWriters + int64(w)
				p.host.mu.Lock()
				p.host.seq++
				seq := p.host.seq
				if p.host.written[bl] == nil {
					p.host.written[bl] = map[uint64]bool{0: true}
				}
				p.host.written[bl][seq] = true
				p.host.mu.Unlock()
				pattern(b, bl, seq)
				if _, err := h.WriteAt(b, bl*blk); err != nil {
					errs <- fmt.Errorf("host write block %d with the power on: %w", bl, err)
					return
				}
				writes.Add(1)
				pend = append(pend, ack{bl, seq})
				if len(pend) < plSyncEvery {
					continue
				}
				if err := h.Sync(); err != nil {
					errs <- fmt.Errorf("host sync with the power on: %w", err)
					return
				}
				if cut() {
					return
				}
				p.host.mu.Lock()
				for _, a := range pend {
					p.host.promised[a.bl] = max(p.host.promised[a.bl], a.seq)
				}
				p.host.mu.Unlock()
				pend = pend[:0]
			}
		}()
	}
	// The controller: a pair, synced, split or dual-write a while, again.
	wg.Add(1)
	crng := rand.New(rand.NewPCG(p.rng.Uint64(), 99))
	go func() {
		defer wg.Done()
		for !stopped() && !cut() {
			st, err := m.Pair("src")
			if err != nil || func() bool { s, _ := ParseState(st.State); return s.Final() }() {
				if _, err := m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: "generic"}); err != nil {
					if !cut() {
						errs <- fmt.Errorf("create pair with the power on: %w", err)
					}
					return
				}
				continue
			}
			if st.State != "synced" {
				time.Sleep(2 * time.Millisecond) // poll the pair's state
				continue
			}
			if crng.IntN(2) == 0 {
				if _, err := m.Split([]string{"src"}, time.Second); err != nil && !errors.Is(err, ErrSplitTimeout) && !errors.Is(err, ErrNotSynced) && !cut() {
					errs <- fmt.Errorf("split with the power on: %w", err)
					return
				}
				continue
			}
			// Dual-write for a few host writes.
			until := writes.Load() + 20
			for !stopped() && !cut() && writes.Load() < until && writes.Load() < maxWrites {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	if !poll(2*time.Minute, func() bool { // the cut
		if cut() || writes.Load() >= maxWrites {
			return true
		}
		select {
		case err := <-errs:
			close(stop)
			wg.Wait()
			t.Fatal(err)
		default:
		}
		return false
	}) {
		close(stop)
		wg.Wait()
		t.Fatalf("workload: %d of %d host writes in 2 minutes", writes.Load(), maxWrites)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	return writes.Load()
}

// plBackingDir is the backing directory: on tmpfs when there is one (a
// real disk's fsync latency would dominate the run), else t.TempDir().
func plBackingDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "lmtgt-powerloss-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestPowerLossMigration: see the comment at the top.
func TestPowerLossMigration(t *testing.T) {
	cuts := plCuts
	if s := os.Getenv("LMTGT_STRESS_LM_POWERCUTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("LMTGT_STRESS_LM_POWERCUTS=%q", s)
		}
		cuts = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LMTGT_CRASHFS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LMTGT_CRASHFS_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d", seed)
	p := &plLM{
		t: t, srv: crashfs.StartServer(t), back: plBackingDir(t), mnt: t.TempDir(),
		rng:  rand.New(rand.NewPCG(seed, 2)),
		host: &plHost{written: map[int64]map[uint64]bool{}, promised: map[int64]uint64{}},
	}
	fsOpts := crashfs.Options{OrderedMetadata: true}

	// Calibration: how many file system ops do plCalibrated host writes take
	// (with the pair created, copying and synced)?
	fs, db, m, _ := p.open(fsOpts)
	p.workload(fs, db, m, plCalibrated)
	m.Close()
	db.Close()
	span := fs.Crash().Ops
	t.Logf("calibration: %d ops for %d host writes", span, plCalibrated)

	for cut := range cuts {
		opts := fsOpts
		opts.CrashAtOp = 1 + p.rng.Int64N(span)
		opts.PartialWriteback = p.rng.IntN(2) == 0
		opts.Seed = p.rng.Int64()
		where := fmt.Sprintf("seed %d cut %d (before op %d, partial writeback %v)", seed, cut, opts.CrashAtOp, opts.PartialWriteback)
		fs, db, m, ok := p.open(opts)
		if ok {
			p.checkPromised(db, m, where+": after recovery")
			n := p.workload(fs, db, m, 4*plCalibrated)
			state := "none"
			if st, err := m.Pair("src"); err == nil {
				state = st.State
			}
			p.host.mu.Lock()
			promised := len(p.host.promised)
			p.host.mu.Unlock()
			t.Logf("%s: %d host writes, pair %s at the cut, %d blocks promised", where, n, state, promised)
			m.Close()
			db.Close()
		}
		fs.Crash()
	}

	// The last recovery: every promised write there, the pair resyncs and
	// the target equals the source.
	fs, db, m, _ = p.open(fsOpts)
	defer fs.Unmount()
	defer db.Close()
	defer m.Close()
	p.checkPromised(db, m, "final recovery")
	{
		st, err := m.Pair("src")
		if s, _ := ParseState(st.State); err != nil || s.Final() {
			if _, err := m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest, Vehicle: "generic"}); err != nil {
				t.Fatalf("final pair: %v", err)
			}
		}
		waitPair(t, m, "src", StateSynced, time.Minute) // resynced after the last cut
		sameLUNs(t, db, "after the last cut: target == source", "src", "tgt", plSize)
	}
}
