package integration

// Scale tests (issue 7, "Scale"): a consistent split of 2048 pairs
// (SmartMigration's limit per command) in one `lmtgt migration split`
// command under host writes, a kill -9 in the middle of one, and 64 LUNs
// each with its own iSCSI session writing while their pairs copy.
//
// The LUNs are small sparse files (mostly holes), so the copies are quick
// and the cost is in the number of objects: 4096 LUNs, 2048 pairs, 2048
// DCLs, one meta volume transaction with 6144 records. The setup goes
// through the admin API (client) rather than 8000 CLI processes; the split
// itself is the CLI command an administrator would type.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// scalePairs is the number of pairs of the 2048-pair tests: the issue asks
// for 2048 in one command (SmartMigration's limit), in CI too.
const scalePairs = 2048

// scaleLUNSize is every LUN of the 2048-pair tests: 1 MiB, 16 model blocks.
const scaleLUNSize = 1 << 20

// scaleHostLUNs source LUNs of the 2048 are exported and written by one
// serial host during the split.
const scaleHostLUNs = 8

// needNOFILE skips the test unless the daemon can open want files: one
// per data volume plus the meta store's and the sessions' (4096 LUNs need more
// than the common default of 1024). A Go program raises its soft
// RLIMIT_NOFILE to the hard limit at start (Go 1.19 and later), so lmtgt
// serve needs only the hard limit to be high enough; the systemd unit
// sets LimitNOFILE=65536.
func needNOFILE(t testing.TB, want uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Max < want {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d this test needs (ulimit -Hn)", rl.Max, want)
	}
}

// parallel runs f(0..n-1) on a few workers and fails the test on the
// first error.
func parallel(t testing.TB, n, workers int, what string, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errs <- fmt.Errorf("%s %d: %w", what, i, err):
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		select {
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatal(err)
		case next <- i:
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// scaleSet is n pairs src[i] → tgt[i] of small sparse LUNs on one daemon,
// the first scaleHostLUNs sources exported on one target.
type scaleSet struct {
	d        *Daemon
	cl       *client.Client
	iqn      string
	src, tgt []string
	vol      map[string]string // LUN name → data volume ID at creation
}

func newScaleSet(t testing.TB, d *Daemon, n int) *scaleSet {
	t.Helper()
	s := &scaleSet{d: d, cl: d.Client(), iqn: testIQN("scale"), vol: map[string]string{}}
	for i := range n {
		s.src = append(s.src, fmt.Sprintf("s%04d", i))
		s.tgt = append(s.tgt, fmt.Sprintf("t%04d", i))
	}
	ctx := context.Background()
	t0 := time.Now()
	var mu sync.Mutex
	parallel(t, 2*n, 4, "lun create", func(i int) error {
		name := s.src[i/2]
		if i%2 == 1 {
			name = s.tgt[i/2]
		}
		l, err := s.cl.CreateLUN(ctx, wire.CreateLUN{Name: name, Size: scaleLUNSize})
		if err == nil {
			mu.Lock()
			s.vol[name] = l.Volume
			mu.Unlock()
		}
		return err
	})
	t.Logf("%d LUNs created in %v", 2*n, time.Since(t0).Round(time.Millisecond))
	if _, err := s.cl.CreateTarget(ctx, s.iqn); err != nil {
		t.Fatal(err)
	}
	for i := range min(n, scaleHostLUNs) {
		num := uint64(i)
		if _, err := s.cl.Map(ctx, s.iqn, s.src[i], &num); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.cl.Allow(ctx, s.iqn, "ALL"); err != nil {
		t.Fatal(err)
	}
	s.createPairs(t)
	return s
}

// createPairs creates the n pairs src[i] → tgt[i] and waits until all are
// synced.
func (s *scaleSet) createPairs(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now()
	parallel(t, len(s.src), 4, "migration create", func(i int) error {
		_, err := s.cl.CreateMigration(ctx, wire.CreateMigration{Source: s.src[i], Target: s.tgt[i], Speed: "highest"})
		return err
	})
	t.Logf("%d pairs created in %v", len(s.src), time.Since(t0).Round(time.Millisecond))
	s.waitAll(t, 5*time.Minute, "synced")
	t.Logf("%d pairs synced %v after the first was created", len(s.src), time.Since(t0).Round(time.Millisecond))
}

// pairs lists the pairs by source LUN name.
func (s *scaleSet) pairs(t testing.TB) map[string]wire.Migration {
	t.Helper()
	ms, err := s.cl.Migrations(context.Background())
	if err != nil {
		t.Fatalf("migration list: %v", err)
	}
	out := map[string]wire.Migration{}
	for _, m := range ms {
		if prev, ok := out[m.Source]; ok && prev.State != "split" && prev.State != "cancelled" {
			continue // the active pair of the source wins over older records
		}
		out[m.Source] = m
	}
	return out
}

// waitAll polls until every pair of the set is in state want.
func (s *scaleSet) waitAll(t testing.TB, timeout time.Duration, want string) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("all %d pairs %s", len(s.src), want), func() (bool, string) {
		ps := s.pairs(t)
		count := map[string]int{}
		for _, src := range s.src {
			m, ok := ps[src]
			st := "none"
			if ok {
				st = m.State
			}
			if st == "faulty" || st == "cancelled" {
				t.Fatalf("pair %s went %s (%s) while waiting for %s", src, st, m.Reason, want)
			}
			count[st]++
		}
		return count[want] == len(s.src), fmt.Sprint(count)
	})
}

// splitCount counts the pairs whose LUNs now have each other's volumes
// (split); the others must have their own (not split): anything else
// fails the test.
func (s *scaleSet) splitCount(t testing.TB) int {
	t.Helper()
	luns, err := s.cl.LUNs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vol := map[string]wire.LUN{}
	for _, l := range luns {
		vol[l.Name] = l
	}
	n := 0
	for i := range s.src {
		a, b := vol[s.src[i]], vol[s.tgt[i]]
		switch {
		case a.Volume == s.vol[s.tgt[i]] && b.Volume == s.vol[s.src[i]]:
			n++
		case a.Volume == s.vol[s.src[i]] && b.Volume == s.vol[s.tgt[i]]:
		default:
			t.Fatalf("pair %s→%s: volumes %s/%s, neither the original %s/%s nor swapped", s.src[i], s.tgt[i],
				a.Volume, b.Volume, s.vol[s.src[i]], s.vol[s.tgt[i]])
		}
	}
	return n
}

// swapVols records that every pair was split (its LUNs exchanged volumes).
func (s *scaleSet) swapVols() {
	for i := range s.src {
		a, b := s.src[i], s.tgt[i]
		s.vol[a], s.vol[b] = s.vol[b], s.vol[a]
	}
}

// scaleHost is one serial host (one qemu-io per LUN) writing at random
// over the exported sources (its writes wait for each other, so the targets of a
// consistent split must hold one prefix of them).
type scaleHost struct {
	qs     []*qio
	blocks [][2]int
	base   []image
	s      *stream
}

func (s *scaleSet) startHost(t testing.TB, base []image, seed int64, firstPat int) *scaleHost {
	t.Helper()
	h := &scaleHost{base: base}
	for i := range len(base) {
		h.qs = append(h.qs, startQIO(t, s.src[i], s.d.URL(s.iqn, i)))
		for b := range len(base[i]) {
			h.blocks = append(h.blocks, [2]int{i, b})
		}
	}
	h.s = runStream("scale-host", seed, h.qs, h.blocks, firstPat)
	return h
}

// splitCLI runs `lmtgt migration split SRC...` with every source in one
// command and returns its result and how long the command took.
func (s *scaleSet) splitCLI(t testing.TB) (wire.SplitResult, time.Duration) {
	t.Helper()
	return splitAll(t, s.d, s.src)
}

// splitAll runs `lmtgt migration split SRC... -o json` with the default
// pause budget. A split deferred because in-flight I/O did not drain
// within the budget changed nothing; it is retried a few times as an
// administrator would (on this shared machine a host write waiting for
// its durable DCL mark may outlast 100 ms). It returns the result and how
// long the successful command took.
func splitAll(t testing.TB, d *Daemon, srcs []string) (wire.SplitResult, time.Duration) {
	t.Helper()
	args := append([]string{"migration", "split"}, srcs...)
	args = append(args, "-o", "json")
	for try := 1; ; try++ {
		t0 := time.Now()
		r := d.Run(args...)
		took := time.Since(t0)
		if r.Code == 0 {
			var sr wire.SplitResult
			if err := json.Unmarshal([]byte(r.Stdout), &sr); err != nil {
				t.Fatalf("migration split -o json: %v\n%s", err, r.Stdout)
			}
			return sr, took
		}
		if !strings.Contains(r.Stderr, "split deferred") || try == 5 {
			t.Fatalf("migration split of %d sources (try %d): %s", len(srcs), try, r)
		}
		t.Logf("migration split of %d sources deferred (try %d), retrying: %s", len(srcs), try, strings.TrimSpace(r.Stderr))
	}
}

// TestScaleConsistentSplit2048: 4096 LUNs, 2048 synced pairs, one
// `lmtgt migration split` naming all 2048 sources while a host writes to
// eight of them. Every pair is split with one recorded pause, every LUN
// moved to its new volume, the sources hold every acknowledged write and
// the eight exported targets one common prefix of the host's writes.
func TestScaleConsistentSplit2048(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	needNOFILE(t, 8192)
	start := time.Now()
	d := StartDaemon(t, "", "--max-active", "16")
	s := newScaleSet(t, d, scalePairs)

	base := make([]image, scaleHostLUNs)
	for i := range base {
		base[i] = make(image, scaleLUNSize/mBlock)
	}
	h := s.startHost(t, base, 2048, 0)
	defer h.s.stop()
	h.s.waitAcked(t, 40, "before the split")

	from := time.Now()
	sr, took := s.splitCLI(t)
	to := time.Now()
	t.Logf("consistent split of %d pairs in one command: host I/O pause %.3f ms (command %v)", len(sr.Pairs), sr.PauseMS, took.Round(time.Millisecond))
	if got := slices.Sorted(slices.Values(sr.Pairs)); !slices.Equal(got, s.src) {
		t.Fatalf("split result names %d pairs, want all %d", len(sr.Pairs), len(s.src))
	}
	if sr.PauseMS <= 0 {
		t.Errorf("split pause %.3f ms: not measured", sr.PauseMS)
	}
	h.s.waitAcked(t, 40, "after the split")
	ws := h.s.stop()
	if err := h.s.firstErr(); err != nil {
		t.Fatal(err)
	}
	for _, q := range h.qs {
		q.close()
	}

	// Every pair split with the one pause; every LUN on its new volume.
	ps := s.pairs(t)
	for _, src := range s.src {
		if m, ok := ps[src]; ok && (m.State != "split" || m.SplitPauseMS != sr.PauseMS) {
			t.Fatalf("pair %s after the consistent split: %s (%s) pause %.3f ms, want split with pause %.3f ms", src, m.State, m.Reason, m.SplitPauseMS, sr.PauseMS)
		}
	}
	if n := s.splitCount(t); n != len(s.src) {
		t.Fatalf("%d of %d pairs have their volumes swapped", n, len(s.src))
	}
	// What the host saw: its longest write while the split command ran.
	var longest time.Duration
	for _, w := range ws {
		if !w.acked.IsZero() && w.acked.After(from) && w.issued.Before(to) {
			longest = max(longest, w.acked.Sub(w.issued))
		}
	}
	t.Logf("longest host write during the split command: %.3f ms (recorded pause %.3f ms)", float64(longest)/1e6, sr.PauseMS)
	s.checkHostData(t, base, h, ws, from, to)
	t.Logf("%d host writes, all acknowledged and on the sources; whole test %v", len(ws), time.Since(start).Round(time.Second))
	d.noDrops(t)
}

// checkHostData checks the exported sources hold every acknowledged write
// (qemu-img compare) and their targets one common prefix of the host's
// writes between from and to.
func (s *scaleSet) checkHostData(t testing.TB, base []image, h *scaleHost, ws []hostWrite, from, to time.Time) {
	t.Helper()
	want := cloneImages(base)
	apply(want, ws)
	for i := range base {
		compareRef(t, s.src[i]+" after the split", s.d.URL(s.iqn, i), want[i], scaleLUNSize)
	}
	iqnB := testIQN("scale-b")
	s.d.OK("target", "create", iqnB)
	s.d.OK("target", "allow", iqnB, "ALL")
	got := make([]image, len(base))
	for i := range base {
		s.d.OK("target", "map", iqnB, s.tgt[i], "--lun", fmt.Sprint(i))
		got[i] = readImage(t, s.d.URL(iqnB, i))
	}
	k, err := cutOf(base, got, h.blocks, ws, from, to)
	if err != nil {
		t.Fatalf("the %d exported target LUNs do not hold one common point of the host's writes: not one consistent split: %v", len(base), err)
	}
	t.Logf("the %d exported targets hold exactly the host's first %d of %d writes", len(base), k, len(ws))
}

// TestScaleKillDuringSplit2048: kill -9 of the daemon in the middle of a
// 2048-pair consistent split under host writes, a few times. After each
// restart: all or nothing (every pair split and every LUN on its new
// volume, or no pair split and every pair still there), every
// acknowledged write on the sources; at the end the unsplit pairs split
// in one command.
//
// The kills are a real race, no test hook in the daemon: round 1 kills
// at a random delay after the split request; later rounds watch for the
// split holding its pairs (while it runs, from persisting the pairs as
// splitting until the swap is committed, `migration show` of one of them
// answers at once with the state splitting) and kill at a random delay
// after that. The rounds go on until one kill landed inside the split
// (the restarted daemon logs every pair "split cut short by a restart")
// and at least two kills (LMTGT_SCALE_KILLS under make stress) were tried; a kill after the commit counts as
// "after" (new pairs are created for the next round), one before the
// splitting state was persisted as "before".
func TestScaleKillDuringSplit2048(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	needNOFILE(t, 8192)
	start := time.Now()
	d := StartDaemon(t, "", "--max-active", "16")
	s := newScaleSet(t, d, scalePairs)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("random seed %d", seed)

	model := make([]image, scaleHostLUNs)
	for i := range model {
		model[i] = make(image, scaleLUNSize/mBlock)
	}
	outcomes := map[string]int{}
	minRounds := 2
	if v := os.Getenv("LMTGT_SCALE_KILLS"); v != "" { // make stress
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LMTGT_SCALE_KILLS=%q: want a positive number", v)
		}
		minRounds = n
	}
	maxRounds := minRounds + 6
	// The delay after the split was seen holding its pairs is adapted:
	// a kill before the splitting state was durable lengthens it, one
	// after the commit shortens it.
	lo, hi := time.Duration(0), 600*time.Millisecond
	for round := 1; round <= maxRounds && (outcomes["inside"] == 0 || round <= minRounds); round++ {
		h := s.startHost(t, model, int64(round), round*37)
		h.s.waitAcked(t, 20, "before the split")
		done := make(chan struct{})
		var splitErr error
		t0 := time.Now()
		go func() { // owned by this round: ends when the request fails (kill) or returns
			defer close(done)
			_, splitErr = s.cl.Split(context.Background(), s.src, 0)
		}()
		var trigger string
		var delay time.Duration
		if round == 1 {
			delay = time.Duration(rng.Int63n(int64(1500 * time.Millisecond)))
			trigger = "the split request"
		} else {
			delay = lo + time.Duration(rng.Int63n(int64(hi-lo)+1))
			trigger = "the split held its pairs"
			if !s.waitSplitHolds(t, done) {
				trigger = "the split returned (not seen holding its pairs)"
			}
		}
		time.Sleep(delay) // the race under test: kill -9 at an arbitrary moment
		d.Kill()
		select {
		case <-done:
		case <-time.After(cmdTimeout):
			t.Fatalf("round %d: the split request did not end after the kill", round)
		}
		for _, q := range h.qs { // first: the write in flight at the kill would wait for its timeout
			q.kill()
		}
		ws := h.s.stop()
		portal := d.Portal
		tr := time.Now()
		d.Start(portal)
		s.cl = d.Client()
		t.Logf("round %d: restarted in %v", round, time.Since(tr).Round(time.Millisecond))

		n := s.splitCount(t)
		ps := s.pairs(t)
		var outcome string
		switch n {
		case len(s.src):
			outcome = "after"
			for _, src := range s.src {
				if m, ok := ps[src]; ok && m.State != "split" {
					t.Fatalf("round %d: every LUN swapped but pair %s is %s (%s)", round, src, m.State, m.Reason)
				}
			}
			s.swapVols()
		case 0:
			// Pairs whose DCL held marks of the writes in flight at the
			// kill re-copy them first.
			s.waitAll(t, syncTimeout, "synced")
			ps = s.pairs(t)
			for _, src := range s.src {
				m, ok := ps[src]
				if !ok || m.State != "synced" {
					t.Fatalf("round %d: no LUN swapped but pair %s is %v %s (%s), want synced", round, src, ok, m.State, m.Reason)
				}
			}
			// Recovery logs each pair it found splitting (the reason
			// shown may since have changed, e.g. by a DCL re-copy).
			switch cut := d.lastLogCount(`"from":"splitting"`, "split cut short by a restart"); cut {
			case 0:
				outcome = "before"
			case len(s.src):
				outcome = "inside"
			default:
				t.Fatalf("round %d: %d of %d pairs were splitting when killed: the splitting state was not one transaction", round, cut, len(s.src))
			}
		default:
			t.Fatalf("round %d: kill -9 %v after %s left %d of %d pairs split: not all or nothing", round, delay, trigger, n, len(s.src))
		}
		outcomes[outcome]++
		t.Logf("round %d: kill -9 %v after %s (%v after the request): %s (split request: %v)", round,
			delay.Round(time.Millisecond), trigger, time.Since(t0).Round(time.Millisecond), outcome, splitErr)

		// Every acknowledged write is on the sources; the one in flight
		// at the kill may or may not be.
		got := make([]image, len(model))
		for i := range model {
			got[i] = readImage(t, d.URL(s.iqn, i))
		}
		far := time.Now().Add(time.Hour)
		k, err := cutOf(model, got, h.blocks, ws, far, far)
		if err != nil {
			t.Fatalf("round %d (%s): the sources lost acknowledged writes: %v", round, outcome, err)
		}
		model = got
		t.Logf("round %d: the sources hold the host's first %d of %d writes (%d acknowledged)", round, k, len(ws), h.s.acked())
		if outcome == "after" {
			s.createPairs(t) // new pairs in the same direction for the next round
		}
		if round > 1 {
			switch outcome {
			case "before":
				lo, hi = delay, max(hi, delay+600*time.Millisecond)
			case "after":
				hi = max(delay, lo+50*time.Millisecond)
			}
		}
	}
	if outcomes["inside"] == 0 {
		t.Fatalf("no kill landed inside the split in %d rounds (%v)", maxRounds, outcomes)
	}
	// The pairs left by the last kill split in one command, and the
	// sources still hold the data.
	if s.splitCount(t) == 0 {
		sr, took := s.splitCLI(t)
		t.Logf("after the kills: consistent split of %d pairs, pause %.3f ms (command %v)", len(sr.Pairs), sr.PauseMS, took.Round(time.Millisecond))
		if n := s.splitCount(t); n != len(s.src) {
			t.Fatalf("after the kills the split moved %d of %d pairs", n, len(s.src))
		}
		for i := range model {
			compareRef(t, s.src[i]+" after the final split", d.URL(s.iqn, i), model[i], scaleLUNSize)
		}
	}
	t.Logf("outcomes %v; whole test %v", outcomes, time.Since(start).Round(time.Second))
}

// waitSplitHolds returns true once `migration show` of the first source
// shows it splitting (the split persisted its pairs as splitting and runs:
// its syncs, its pause), false if the split request ended first.
func (s *scaleSet) waitSplitHolds(t testing.TB, done <-chan struct{}) bool {
	t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		m, err := s.cl.Migration(ctx, s.src[0])
		cancel()
		if err != nil {
			t.Fatalf("migration show %s during the split: %v", s.src[0], err)
		}
		if m.State == "splitting" {
			return true
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	t.Fatalf("the split neither showed its pairs splitting nor ended within %v", cmdTimeout)
	return false
}

// TestScale64Sessions: 64 LUNs, each written by its own qemu-io (its own
// iSCSI session) while 64 pairs copy them (at most 4 at a time,
// --max-active), then one consistent split of the 64 under the writes.
// Every source holds its host's acknowledged writes (qemu-img compare).
func TestScale64Sessions(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	const n = 64
	const size = 4 << 20
	const nblocks = size / mBlock
	start := time.Now()
	d := StartDaemon(t, "", "--max-active", "4")
	cl := d.Client()
	ctx := context.Background()
	iqn := testIQN("s64")
	if _, err := cl.CreateTarget(ctx, iqn); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allow(ctx, iqn, "ALL"); err != nil {
		t.Fatal(err)
	}
	// Each source starts with data (a file the LUN is created on, every
	// block written), so the copies take a while.
	dir := t.TempDir()
	base := make([]image, n)
	srcs := make([]string, n)
	for i := range n {
		srcs[i] = fmt.Sprintf("h%02d", i)
		base[i] = make(image, nblocks)
		for b := range base[i] {
			base[i][b] = 1 + (i+b)%200
		}
		path := fmt.Sprintf("%s/%s.img", dir, srcs[i])
		writeRef(t, path, base[i], size)
		if _, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: srcs[i], Path: path}); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: fmt.Sprintf("g%02d", i), Size: size}); err != nil {
			t.Fatal(err)
		}
		num := uint64(i)
		if _, err := cl.Map(ctx, iqn, srcs[i], &num); err != nil {
			t.Fatal(err)
		}
	}
	qs := make([]*qio, n)
	ss := make([]*stream, n)
	for i := range n {
		qs[i] = startQIO(t, srcs[i], d.URL(iqn, i))
	}
	for i := range n { // every session logged in and answering
		if err := qs[i].read(0, mBlock, byte(base[i][0])); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		var blocks [][2]int // LUN 0 of the stream's one qemu-io
		for b := range nblocks {
			blocks = append(blocks, [2]int{0, b})
		}
		ss[i] = runStream(srcs[i], int64(i), qs[i:i+1], blocks, 201)
		defer ss[i].stop()
	}
	// One pair copies while the 64 are created (the run-time limit), so
	// pairs are queued however slowly a loaded machine creates them;
	// then the 4 of --max-active.
	one, four := 1, 4
	if _, err := cl.SetLimits(ctx, wire.SetLimits{MaxActive: &one}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := cl.CreateMigration(ctx, wire.CreateMigration{Source: srcs[i], Target: fmt.Sprintf("g%02d", i), MaxMBps: 8}); err != nil {
			t.Fatal(err)
		}
	}
	if lim, err := cl.Limits(ctx); err != nil || lim.Waiting == 0 {
		t.Fatalf("no pair waits for a copy slot after creating %d with max active 1: %+v (%v)", n, lim, err)
	}
	if _, err := cl.SetLimits(ctx, wire.SetLimits{MaxActive: &four}); err != nil {
		t.Fatal(err)
	}
	// The hosts write while the pairs copy (8 MB/s each, so 4 MiB takes
	// half a second): at most 4 copying at a time, the others queued.
	totalAcked := func() int {
		n := 0
		for _, s := range ss {
			n += s.acked()
		}
		return n
	}
	maxCopying, maxQueued := 0, 0
	firstAcked, lastAcked := -1, -1 // acknowledged writes when pairs were first and last seen copying
	waitFor(t, 5*time.Minute, "all 64 pairs synced", func() (bool, string) {
		ms, err := cl.Migrations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, m := range ms {
			if m.State == "faulty" || m.State == "cancelled" {
				t.Fatalf("pair %s went %s (%s)", m.Source, m.State, m.Reason)
			}
			count[m.State]++
		}
		maxCopying = max(maxCopying, count["copying"])
		maxQueued = max(maxQueued, count["queued"])
		if count["copying"] > 0 {
			a := totalAcked()
			if firstAcked < 0 {
				firstAcked = a
			}
			lastAcked = a
		}
		for _, s := range ss {
			if err := s.firstErr(); err != nil {
				t.Fatalf("host write failed while the pairs copy: %v", err)
			}
		}
		return count["synced"] == n, fmt.Sprint(count)
	})
	if maxCopying > 4 {
		t.Errorf("%d pairs copying at once with --max-active 4", maxCopying)
	}
	if maxQueued == 0 || lastAcked-firstAcked <= 0 {
		t.Errorf("the test did not do what it says: at most %d pairs queued seen, %d host writes acknowledged while pairs were seen copying", maxQueued, lastAcked-firstAcked)
	}
	t.Logf("64 pairs synced; the 64 sessions wrote %d blocks, %d while pairs were seen copying (at most %d copying and %d queued at once)",
		totalAcked(), lastAcked-firstAcked, maxCopying, maxQueued)
	for _, s := range ss {
		s.waitAcked(t, 3, "in dual-write")
	}
	sr, _ := splitAll(t, d, srcs)
	t.Logf("consistent split of %d pairs: pause %.3f ms", len(sr.Pairs), sr.PauseMS)
	if len(sr.Pairs) != n {
		t.Fatalf("split %d pairs, want %d", len(sr.Pairs), n)
	}
	for _, s := range ss {
		s.waitAcked(t, 3, "after the split")
	}
	want := cloneImages(base)
	for i, s := range ss {
		ws := s.stop()
		if err := s.firstErr(); err != nil {
			t.Fatal(err)
		}
		qs[i].close()
		apply(want[i:i+1], ws)
	}
	for i := range n {
		compareRef(t, srcs[i]+" after the split", d.URL(iqn, i), want[i], size)
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Second))
	d.noDrops(t)
}

// lastLogCount counts the lines of the daemon's latest log that contain
// every one of subs.
func (d *Daemon) lastLogCount(subs ...string) int {
	d.mu.Lock()
	l := d.logs[len(d.logs)-1]
	d.mu.Unlock()
	b, err := os.ReadFile(l)
	if err != nil {
		d.t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}
