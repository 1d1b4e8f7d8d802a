package dcl

import (
	"bufio"
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

func openMeta(t testing.TB, dir string) *metavol.DB {
	t.Helper()
	db, err := metavol.Open(dir, metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("open meta volume %s: %v", dir, err)
	}
	return db
}

func TestMarkLoadDrop(t *testing.T) {
	dir := t.TempDir()
	db := openMeta(t, dir)
	s := Open(db, Options{ClearInterval: -1})
	// 100 GiB at 1 MiB regions: several pages.
	size := int64(100 << 30)
	l := openLog(t, s, "p1", size, 0, nil)
	if l.Len() != 100<<10 {
		t.Fatalf("regions %d", l.Len())
	}
	marks := []int64{0, 1, 63, 64, 32767, 32768, 70000, l.Len() - 1}
	for _, r := range marks {
		if err := l.MarkDCL(r, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.BeginWrite(5, 7); err != nil {
		t.Fatal(err)
	}
	l.EndWrite(5, 7, false)
	d, m, inf := l.Counts()
	if d != int64(len(marks)) || m != int64(len(marks)+3) || inf != 0 {
		t.Fatalf("counts dcl=%d marked=%d inflight=%d", d, m, inf)
	}
	if _, err := s.Open("p1", size, 0, nil); err == nil {
		t.Fatal("second open of the same log succeeded")
	}
	if err := l.MarkDCL(l.Len(), l.Len()); err == nil {
		t.Fatal("mark past the end succeeded")
	}
	s.Close()
	db.Close()

	db = openMeta(t, dir)
	defer db.Close()
	s = Open(db, Options{ClearInterval: -1})
	defer s.Close()
	ids, err := s.PairIDs()
	if err != nil || len(ids) != 1 || ids[0] != "p1" {
		t.Fatalf("pair ids %v %v", ids, err)
	}
	l = openLog(t, s, "p1", size, 4096 /* ignored: stored size wins */, nil)
	if l.RegionSize() != DefaultRegionSize {
		t.Fatalf("region size %d", l.RegionSize())
	}
	got := l.Dirty(0, 1000)
	want := []int64{0, 1, 5, 6, 7, 63, 64, 32767, 32768, 70000, l.Len() - 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reload dirty = %v, want %v", got, want)
	}
	if got := l.Dirty(64, 2); fmt.Sprint(got) != "[64 32767]" {
		t.Fatalf("Dirty(64,2) = %v", got)
	}
	for _, r := range got {
		l.Cleaned(r)
	}
	if err := s.Drop("p1"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.PairIDs(); len(ids) != 0 {
		t.Fatalf("keys left after drop: %v", ids)
	}
	if err := l.MarkDCL(1, 1); err == nil {
		t.Fatal("mark on a dropped log succeeded")
	}
}

func TestLazyClear(t *testing.T) {
	_, s := newStore(t)
	flushed := 0
	l := openLog(t, s, "p", 64<<20, 0, func() error { flushed++; return nil })
	must(t, l.BeginWrite(1, 2)) // stays in flight
	must(t, l.BeginWrite(3, 3))
	l.EndWrite(3, 3, false)
	must(t, l.BeginWrite(4, 4))
	l.EndWrite(4, 4, true) // target failed: DCL
	must(t, l.BeginWrite(5, 5))
	l.EndWrite(5, 5, false)

	// A periodic pass does not clear regions touched during the interval.
	must(t, l.clearPass())
	if _, m, _ := l.Counts(); m != 5 {
		t.Fatalf("first pass cleared touched regions: marked=%d", m)
	}
	// Second pass: 3 and 5 are quiet now.
	must(t, l.clearPass())
	if _, m, _ := l.Counts(); m != 3 {
		t.Fatalf("marked=%d after second pass, want 3 (1,2 in flight, 4 in DCL)", m)
	}
	if flushed == 0 {
		t.Fatal("flush not called before clearing")
	}
	l.EndWrite(1, 2, false)
	must(t, l.ClearNow())
	if d, m, _ := l.Counts(); m != 1 || d != 1 {
		t.Fatalf("after ClearNow dcl=%d marked=%d, want 1,1", d, m)
	}
	l.Cleaned(4)
	must(t, l.ClearNow())
	if d, m, _ := l.Counts(); m != 0 || d != 0 {
		t.Fatalf("dcl=%d marked=%d, want 0", d, m)
	}
}

// newStore opens a fresh meta volume and a Store on it that clears only
// when told (ClearInterval -1); the test's cleanup closes both.
func newStore(t *testing.T) (*metavol.DB, *Store) {
	t.Helper()
	db := openMeta(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	s := Open(db, Options{ClearInterval: -1})
	t.Cleanup(func() { s.Close() })
	return db, s
}

// openLog opens the log of pairID on s (Store.Open) and fails t if it
// cannot.
func openLog(t *testing.T, s *Store, pairID string, size, regionSize int64, flush func() error) *Log {
	t.Helper()
	l, err := s.Open(pairID, size, regionSize, flush)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitFor polls cond until it holds and fails t after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// poll calls cond every millisecond until it holds or d has passed and
// reports whether it held (the one polling loop of the package's tests).
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentMarkers: many goroutines mark and clear concurrently; every
// mark that returned is durable after a reopen, and writes to already
// marked regions make no commits.
func TestConcurrentMarkers(t *testing.T) {
	dir := t.TempDir()
	db := openMeta(t, dir)
	s := Open(db, Options{ClearInterval: 5 * time.Millisecond})
	l := openLog(t, s, "p", 1<<30, 0, nil)
	var mu sync.Mutex
	dclSet := map[int64]bool{}
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(int64(g)))
			for i := 0; i < 300; i++ {
				r := rnd.Int63n(l.Len() - 2)
				if rnd.Intn(10) == 0 {
					if err := l.MarkDCL(r, r); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					dclSet[r] = true
					mu.Unlock()
					continue
				}
				if err := l.BeginWrite(r, r+1); err != nil {
					t.Error(err)
					return
				}
				if !l.isMarked(r) || !l.isMarked(r+1) {
					t.Errorf("region %d not marked during its write", r)
				}
				l.EndWrite(r, r+1, false)
			}
		}(g)
	}
	wg.Wait()
	s.Close()
	db.Close()
	db = openMeta(t, dir)
	defer db.Close()
	s = Open(db, Options{ClearInterval: -1})
	defer s.Close()
	l = openLog(t, s, "p", 1<<30, 0, nil)
	for r := range dclSet {
		if !l.IsDirty(r) {
			t.Errorf("region %d lost after reopen", r)
		}
	}
}

func (l *Log) isMarked(r int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bit(l.mu.marked, r)
}

// TestGroupCommit: marks of many writers share commits.
func TestGroupCommit(t *testing.T) {
	_, s := newStore(t)
	l := openLog(t, s, "p", 1<<30, 0, nil)
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				r := int64(g*8 + i)
				if err := l.BeginWrite(r, r); err != nil {
					t.Error(err)
				}
				l.EndWrite(r, r, false)
			}
		}(g)
	}
	wg.Wait()
	t.Logf("512 clean->dirty marks by 64 writers in %v", time.Since(start))
	// Writes to marked regions: no waiting at all, since they queue no
	// commit (counted, not timed: the batch being filled stays the same
	// and empty, and no page of the log is pending).
	s.mu.Lock()
	next := s.mu.next
	s.mu.Unlock()
	start = time.Now()
	for i := 0; i < 100000; i++ {
		r := int64(i % 512)
		must(t, l.BeginWrite(r, r))
		l.EndWrite(r, r, false)
	}
	t.Logf("100k writes to marked regions in %v", time.Since(start))
	s.mu.Lock()
	same, queued := s.mu.next == next, len(s.mu.next.pages)
	s.mu.Unlock()
	l.mu.Lock()
	pending := len(l.mu.pending)
	l.mu.Unlock()
	if !same || queued != 0 || pending != 0 {
		t.Fatalf("100k writes to marked regions queued commits: batch replaced %v, %d pages queued, %d pending", !same, queued, pending)
	}
}

const crashEnv = "DCL_CRASH_CHILD_DIR"

// TestCrashChild is the child of TestCrashKill; it does nothing unless run
// by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("only run as a child of TestCrashKill")
	}
	db, err := metavol.Open(filepath.Join(dir, "db"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s := Open(db, Options{ClearInterval: 3 * time.Millisecond, Log: zerolog.Nop()})
	l, err := s.Open("crash", 4<<30, 0, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	f, err := os.OpenFile(filepath.Join(dir, "acked"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(time.Now().UnixNano() + int64(g)))
			for {
				r := rnd.Int63n(l.Len())
				kind := "dcl"
				if rnd.Intn(2) == 0 {
					if err := l.MarkDCL(r, r); err != nil {
						os.Exit(3)
					}
				} else {
					// A write in flight that never ends: must stay marked.
					kind = "inflight"
					if err := l.BeginWrite(r, r); err != nil {
						os.Exit(3)
					}
				}
				// Also churn: writes that end and get cleared lazily.
				q := rnd.Int63n(l.Len())
				if err := l.BeginWrite(q, q); err == nil {
					l.EndWrite(q, q, false)
				}
				mu.Lock()
				fmt.Fprintf(f, "%s %d\n", kind, r)
				f.Sync()
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
}

func TestCrashKill(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("child")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 5; round++ {
		dir := t.TempDir()
		cmd := exec.Command(exe, "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a random number of acknowledged marks.
		want := 50 + rand.Intn(400)
		if !poll(30*time.Second, func() bool { return countLines(filepath.Join(dir, "acked")) >= want }) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child acknowledged only %d marks in 30s", round, countLines(filepath.Join(dir, "acked")))
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		acked := readAcked(t, filepath.Join(dir, "acked"))
		db := openMeta(t, filepath.Join(dir, "db"))
		s := Open(db, Options{ClearInterval: -1})
		l := openLog(t, s, "crash", 4<<30, 0, nil)
		for _, a := range acked {
			if !l.IsDirty(a) {
				t.Errorf("round %d: acknowledged mark of region %d lost", round, a)
			}
		}
		t.Logf("round %d: %d acknowledged marks, all present", round, len(acked))
		s.Close()
		db.Close()
	}
}

func countLines(p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

func readAcked(t *testing.T, p string) []int64 {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) != 2 {
			continue // torn last line
		}
		n, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	return out
}

func TestMarkedToDCL(t *testing.T) {
	_, s := newStore(t)
	l := openLog(t, s, "p", 300<<20, 0, nil)
	for _, r := range []int64{1, 64, 200} {
		must(t, l.BeginWrite(r, r))
		l.EndWrite(r, r, false)
	}
	must(t, l.MarkDCL(64, 65))
	l.MarkedToDCL()
	if d, m, _ := l.Counts(); d != 4 || m != 4 {
		t.Fatalf("dcl=%d marked=%d, want 4,4", d, m)
	}
	if got := l.Dirty(0, 10); fmt.Sprint(got) != "[1 64 65 200]" {
		t.Fatalf("dirty %v", got)
	}
	must(t, l.ClearNow())
	if _, m, _ := l.Counts(); m != 4 {
		t.Fatalf("a clear took %d regions of the DCL", 4-m)
	}
}
