package lm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/rs/zerolog"
)

const (
	crashDirEnv   = "LM_CRASH_DIR"
	crashRoundEnv = "LM_CRASH_ROUND"
	crashSize     = 8 * mib
	crashWriters  = 4
)

func crashOptions(dir string) Options {
	return Options{
		DataDir:            dir,
		Log:                zerolog.Nop(),
		ClearInterval:      20 * time.Millisecond,
		CheckpointInterval: 50 * time.Millisecond,
		CheckpointBytes:    2 * mib,
		RetryMin:           10 * time.Millisecond,
		RetryMax:           50 * time.Millisecond,
	}
}

// TestCrashChild is the process TestCrashLoop kills: it runs migrations
// (copy, dual-write, split, a new pair, ...) under host writes and logs
// every acknowledged write, fsynced after the ack.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("only run as a child of TestCrashLoop")
	}
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	fail := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "crash child: "+f+"\n", a...)
		os.Exit(2)
	}
	db, err := metavol.Open(filepath.Join(dir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		fail("%v", err)
	}
	m, err := Open(db, crashOptions(dir))
	if err != nil {
		fail("%v", err)
	}
	var src metavol.LUN
	db.View(func(tx *metavol.Tx) error { src, err = tx.LUNByName("src"); return nil })
	if errors.Is(err, metavol.ErrNotFound) {
		if src, err = m.CreateLUN(CreateLUNRequest{Name: "src", Size: crashSize}); err != nil {
			fail("%v", err)
		}
		if _, err = m.CreateLUN(CreateLUNRequest{Name: "tgt", Size: crashSize}); err != nil {
			fail("%v", err)
		}
		h, _ := m.LUN(src.ID)
		// Data in the first 3/4, in 256 KiB runs (a hole after each);
		// the host writes below fill the holes.
		b := make([]byte, blk)
		for bl := int64(0); bl < crashSize/blk*3/4; bl++ {
			if bl%128 >= 64 {
				continue
			}
			pattern(b, bl, 1)
			if _, err := h.WriteAt(b, bl*blk); err != nil {
				fail("%v", err)
			}
		}
		if err := h.Sync(); err != nil {
			fail("%v", err)
		}
	} else if err != nil {
		fail("%v", err)
	}
	h, err := m.LUN(src.ID)
	if err != nil {
		fail("%v", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "acked"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fail("%v", err)
	}
	var logMu sync.Mutex
	for i := 0; i < crashWriters; i++ {
		go func(i int) {
			rnd := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)))
			b := make([]byte, blk)
			seq := uint64(round+1)*1_000_000_000 + uint64(i)*10_000_000
			for {
				bl := rnd.Int63n(crashSize/blk/crashWriters)*crashWriters + int64(i)
				seq++
				pattern(b, bl, seq)
				if _, err := h.WriteAt(b, bl*blk); err != nil {
					fail("host write: %v", err)
				}
				logMu.Lock()
				fmt.Fprintf(logf, "%d %d\n", bl, seq)
				logf.Sync()
				logMu.Unlock()
			}
		}(i)
	}
	// The controller: pair, wait for sync, split (sometimes), pair again.
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	for {
		if _, err := m.Pair("src"); err != nil || isFinished(m) {
			speed := []Speed{SpeedMedium, SpeedHigh, SpeedHighest}[rnd.Intn(3)]
			if _, err := m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: speed}); err != nil {
				fail("create pair: %v", err)
			}
		}
		var st PairStatus
		if !poll(60*time.Second, func() bool {
			var err error
			if st, err = m.Pair("src"); err != nil {
				fail("%v", err)
			}
			return st.State == "synced"
		}) {
			fail("not synced: %+v", st)
		}
		if rnd.Intn(2) == 0 {
			if _, err := m.Split([]string{"src"}, time.Second); err != nil && !errors.Is(err, ErrSplitTimeout) && !errors.Is(err, ErrNotSynced) {
				fail("split: %v", err)
			}
		} else {
			time.Sleep(time.Duration(rnd.Intn(100)) * time.Millisecond) // dual-write for a while
		}
	}
}

func isFinished(m *Manager) bool {
	st, err := m.Pair("src")
	if err != nil {
		return true
	}
	s, _ := ParseState(st.State)
	return s.Final()
}

func TestCrashLoop(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		t.Skip("child")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rounds := 10
	if testing.Short() {
		rounds = 4
	}
	acked := 0
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(exe, "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		want := acked + 20 + rand.Intn(400)
		if !poll(60*time.Second, func() bool {
			if countLines(filepath.Join(dir, "acked")) >= want {
				return true
			}
			select {
			case err := <-exited:
				t.Fatalf("round %d: child exited early: %v\n%s", round, err, out.String())
			default:
			}
			return false
		}) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("round %d: child too slow\n%s", round, out.String())
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		acked = countLines(filepath.Join(dir, "acked"))
		crashCheck(t, dir, round)
	}
}

// crashCheck reopens after a kill: every acknowledged write must be on the
// source LUN; the pair must reach synced with the target equal to the
// source.
func crashCheck(t *testing.T, dir string, round int) {
	t.Helper()
	db, err := metavol.Open(filepath.Join(dir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	opts := crashOptions(dir)
	opts.Log = testLogger(t)
	m, err := Open(db, opts)
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	defer m.Close()
	// Synced means the DCL is empty, from the moment Open returns: the
	// comparison below trusts it (TestRecoverSyncedWithDCL).
	if st, err := m.Pair("src"); err == nil && st.State == StateSynced.String() && st.DCLBytes > 0 {
		t.Fatalf("round %d: recovered synced with %d DCL bytes to re-copy", round, st.DCLBytes)
	}
	var src metavol.LUN
	if err := db.View(func(tx *metavol.Tx) error { src, err = tx.LUNByName("src"); return err }); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	h, _ := m.LUN(src.ID)
	last := readAckedWrites(t, filepath.Join(dir, "acked"))
	b := make([]byte, blk)
	for bl, seq := range last {
		if _, err := h.ReadAt(b, bl*blk); err != nil {
			t.Fatal(err)
		}
		gotBl, gotSeq := leU64(b), leU64(b[8:])
		if gotBl != uint64(bl) || gotSeq < seq {
			t.Fatalf("round %d: block %d holds (block %d, seq %d), acknowledged seq %d is lost", round, bl, gotBl, gotSeq, seq)
		}
		for i := 0; i+16 <= blk; i += 16 {
			if leU64(b[i:]) != gotBl || leU64(b[i+8:]) != gotSeq {
				t.Fatalf("round %d: block %d is torn", round, bl)
			}
		}
	}
	st, err := m.Pair("src")
	state := "none"
	if err == nil {
		state = st.State
	}
	if err == nil && st.State != "split" {
		st := waitPair(t, m, "src", StateSynced, 60*time.Second)
		crashSame(t, db, round, st, last)
	}
	t.Logf("round %d: killed with pair %s; %d blocks with acknowledged writes all present; synced and equal", round, state, len(last))
}

// crashSame compares the legs of the synced pair block by block and
// names the first block that differs: what each leg holds (block, seq),
// the acknowledged seq of the block (0: none; a higher seq on the source
// is a write in flight at the kill) and the pair's status.
func crashSame(t *testing.T, db *metavol.DB, round int, st PairStatus, last map[int64]uint64) {
	t.Helper()
	x, y := openRaw(t, volumePath(t, db, "src")), openRaw(t, volumePath(t, db, "tgt"))
	defer x.Close()
	defer y.Close()
	a, b := make([]byte, blk), make([]byte, blk)
	for bl := int64(0); bl < crashSize/blk; bl++ {
		if _, err := x.ReadAt(a, bl*blk); err != nil {
			t.Fatal(err)
		}
		if _, err := y.ReadAt(b, bl*blk); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("round %d: target != source at byte %d (block %d): source (block %d, seq %d), target (block %d, seq %d), acknowledged seq %d; pair %s, DCL %d bytes, cursor %d, reason %q",
				round, bl*blk, bl, leU64(a), leU64(a[8:]), leU64(b), leU64(b[8:]), last[bl],
				st.State, st.DCLBytes, st.CursorBytes, st.Reason)
		}
	}
}

func readAckedWrites(t *testing.T, p string) map[int64]uint64 {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	last := map[int64]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var bl int64
		var seq uint64
		if n, _ := fmt.Sscanf(sc.Text(), "%d %d", &bl, &seq); n != 2 {
			continue // torn last line
		}
		if seq > last[bl] {
			last[bl] = seq
		}
	}
	return last
}

func countLines(p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}
