package integration

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The kill -9 loops (TestMigrationCrashLoop, TestImportCrashLoop,
// TestRBDMigrationCrashLoop) share what does not depend on their setup:
// the kill schedule (how many kills, the seed of the random delays), the
// model of the acknowledged writes (lunModel), the kill and restart with
// its check (crashLoop.crash), the kill around a split and its verdict,
// the check that a pair survived a kill, and the final sync under host
// writes. Each test adds only its setup and the phases it drives.

// stressInt reads a positive whole number from the environment variable
// name, or returns def when it is not set.
func stressInt(t testing.TB, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// lunModel is what every 64 KiB block of one LUN must hold: the patterns
// of the acknowledged host writes over the prefilled content.
type lunModel struct {
	t    testing.TB
	url  string // read through lmtgt
	img  image
	next int // the next stream's first pattern
}

// absorb adds a stopped stream's writes to the model: the acknowledged
// ones for sure; it returns the one that was not acknowledged (in flight
// at a kill, or failed), which may or may not be on the LUN.
func (m *lunModel) absorb(ws []hostWrite) (pending *hostWrite, acked int) {
	for j := range ws {
		if !ws[j].acked.IsZero() {
			apply([]image{m.img}, ws[j:j+1])
			acked++
		} else {
			pending = &ws[j]
		}
	}
	m.next += len(ws)
	return pending, acked
}

// prefilledModel writes a distinct pattern onto every run of 64 blocks
// of the LUN at url and returns the model of it (the first stream's
// patterns start at 10).
func prefilledModel(t testing.TB, url string, nblocks int) *lunModel {
	t.Helper()
	m := &lunModel{t: t, url: url, img: make(image, nblocks), next: 10}
	q := startQIO(t, "prefill", url)
	for b := 0; b < nblocks; b += 64 {
		prefill(t, q, m.img, b, b+64, byte(b/64+1))
	}
	q.close()
	return m
}

// check reads the whole LUN and matches it against the model. The blocks
// of the pending (unacknowledged) write may hold the old or the new
// pattern, even sector by sector (a torn write); the model takes what is
// there, and a torn block is rewritten uniform so the model stays exact.
func (m *lunModel) check(when string, pending *hostWrite) {
	t := m.t
	t.Helper()
	raw := readRaw(t, m.url)
	got := blocksOf(raw)
	var torn []int
	for b := range m.img {
		if got[b] == m.img[b] {
			continue
		}
		if pending != nil && b >= pending.block && b < pending.block+pending.count {
			if got[b] == int(pending.pat) {
				m.img[b] = int(pending.pat)
				continue
			}
			if sectorsEither(raw[b*mBlock:(b+1)*mBlock], byte(m.img[b]), pending.pat) {
				torn = append(torn, b)
				continue
			}
		}
		t.Fatalf("%s: block %d (offset %d) holds %d, want %d (acknowledged); unacknowledged write: %v\n%s",
			when, b, int64(b)*mBlock, got[b], m.img[b], pending, diffImages([]image{m.img}, []image{got}))
	}
	if len(torn) > 0 {
		q := startQIO(t, "repair", m.url)
		for _, b := range torn {
			prefill(t, q, m.img, b, b+1, 0xee)
		}
		q.close()
	}
}

// crashSchedule reads how many kills a loop makes (the environment
// variable killsVar, default def) and the seed of its random delays
// (LMTGT_STRESS_SEED, default the clock), and logs both so a run can be
// replayed.
func crashSchedule(t testing.TB, label, killsVar string, def int) (kills int, rng *rand.Rand) {
	t.Helper()
	kills = int(stressInt(t, killsVar, int64(def)))
	seed := stressInt(t, "LMTGT_STRESS_SEED", time.Now().UnixNano())
	t.Logf("%s: %d kills, seed %d (LMTGT_STRESS_SEED=%d replays the kill delays)", label, kills, seed, seed)
	return kills, rand.New(rand.NewSource(seed))
}

// allBlocks lists every 64 KiB block of a one-LUN image for runStream.
func allBlocks(nblocks int) [][2]int {
	blocks := make([][2]int, 0, nblocks)
	for b := range nblocks {
		blocks = append(blocks, [2]int{0, b})
	}
	return blocks
}

// crashLoop kills one daemon with kill -9 while a host writes to the
// source LUN of one pair and checks the LUN against the model after each
// restart.
type crashLoop struct {
	t      testing.TB
	d      *Daemon
	portal string // the daemon restarts on it
	m      *lunModel
	rng    *rand.Rand
	kills  int
	blocks [][2]int
	// src and dst are the pair's LUNs; volSrc and volDst their data
	// volumes (a split swaps them).
	src, dst       string
	volSrc, volDst string
	// afterRestart, when set, adds checks after each restart (kill i).
	afterRestart func(i int)
}

// newCrashLoop is the crash loop of the pair src -> dst of d, whose host
// writes to src (m.url) through d.
func newCrashLoop(t testing.TB, d *Daemon, m *lunModel, rng *rand.Rand, kills int, src, dst string) *crashLoop {
	t.Helper()
	return &crashLoop{t: t, d: d, portal: d.Portal, m: m, rng: rng, kills: kills, blocks: allBlocks(len(m.img)),
		src: src, dst: dst, volSrc: d.lun(src).Volume, volDst: d.lun(dst).Volume}
}

// startHost starts a host writing random blocks through the LUN.
func (c *crashLoop) startHost() (*qio, *stream) {
	q := startQIO(c.t, "host", c.m.url)
	return q, runStream("host", c.rng.Int63(), []*qio{q}, c.blocks, c.m.next)
}

// delay draws the random moment of a kill below max.
func (c *crashLoop) delay(max time.Duration) time.Duration {
	return time.Duration(c.rng.Int63n(int64(max)))
}

// kill is kill i of the loop, in phase "copy", "dual-write" (the pair is
// synced first) or "split", while a host writes: the daemon is killed at
// a random moment (within 700 ms of the copy, 300 ms of dual-write, or
// around a split command), restarted and checked (crash). After a kill in
// copy or dual-write the pair must still be there; after one around the
// split, the split happened whole or not at all (splitVerdict), which kill
// reports. beforeKill, when set, runs once the host writes, before the
// kill.
func (c *crashLoop) kill(i int, phase string, beforeKill func()) (split bool) {
	t := c.t
	t.Helper()
	if phase != "copy" {
		c.d.OK("migration", "set", c.src, "--speed", "highest", "--max-mbps", "0")
		c.d.waitMig(c.src, syncTimeout, "synced")
	}
	q, s := c.startHost()
	s.waitAcked(t, 3, "before kill "+fmt.Sprint(i+1))
	if beforeKill != nil {
		beforeKill()
	}
	switch phase {
	case "copy":
		c.crash(i, phase, c.delay(700*time.Millisecond), q, s)
	case "dual-write":
		c.crash(i, phase, c.delay(300*time.Millisecond), q, s)
	case "split":
		return c.splitVerdict(i, c.crashInSplit(i, q, s))
	default:
		t.Fatalf("crash loop: no phase %q", phase)
	}
	c.pairSurvived(i, phase)
	return false
}

// crash kills the daemon after delay, then the host; the host's
// acknowledged writes go into the model, its last unanswered one is
// pending. Then it restarts the daemon and checks the LUN.
func (c *crashLoop) crash(i int, what string, delay time.Duration, q *qio, s *stream) {
	t := c.t
	t.Helper()
	<-time.After(delay) // the random moment of the kill
	c.d.Kill()
	q.kill()
	pending, acked := c.m.absorb(s.stop())
	t.Logf("kill %d/%d during %s after %v: %d host writes acknowledged, in flight: %v", i+1, c.kills, what, delay, acked, pending)
	c.d.Start(c.portal)
	c.m.check(fmt.Sprintf("after kill %d (%s)", i+1, what), pending)
	if c.afterRestart != nil {
		c.afterRestart(i)
	}
}

// crashInSplit runs `migration split` and kills the daemon before, during
// or after it: the delay is drawn over three times a CLI round trip (a
// race-built daemon answers much slower). It returns what the split
// command said.
func (c *crashLoop) crashInSplit(i int, q *qio, s *stream) result {
	c.t.Helper()
	return c.crashInCommand(i, "split", q, s, "migration", "split", c.src)
}

// crashInCommand is crashInSplit for any CLI command (args), kill i in
// phase what.
func (c *crashLoop) crashInCommand(i int, what string, q *qio, s *stream, args ...string) result {
	c.t.Helper()
	t0 := time.Now()
	c.d.mig(c.src)
	span := 3*time.Since(t0) + 5*time.Millisecond
	done := make(chan result, 1)
	go func() { // owned here: ends with the CLI process
		cmd := exec.Command(cliBin, args...)
		cmd.Env = append(os.Environ(), "LMTGT_ADMIN="+c.d.Admin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		_ = cmd.Run() // the exit code tells
		done <- result{Stdout: out.String(), Stderr: errb.String(), Code: cmd.ProcessState.ExitCode()}
	}()
	c.crash(i, what, c.delay(span), q, s)
	return <-done
}

// splitVerdict checks that a split killed at kill i happened whole or not
// at all: either the pair is gone and the volumes of src and dst swapped,
// or the pair is there, the split command (r) failed and the volumes
// stayed. It reports whether the split happened.
func (c *crashLoop) splitVerdict(i int, r result) bool {
	t := c.t
	t.Helper()
	st, _, ok := c.d.migTry(c.src)
	ls, ld := c.d.lun(c.src), c.d.lun(c.dst)
	if !ok || st.State == "split" {
		if ls.Volume != c.volDst || ld.Volume != c.volSrc {
			t.Fatalf("after kill %d: the pair is gone but the volumes did not swap (%s %s, %s %s; before %s %s, %s %s)",
				i+1, c.src, ls.Volume, c.dst, ld.Volume, c.src, c.volSrc, c.dst, c.volDst)
		}
		c.volSrc, c.volDst = c.volDst, c.volSrc
		t.Logf("kill %d: the split had happened (split command: %s); %s is now on %s", i+1, strings.TrimSpace(r.Stdout+r.Stderr), c.src, ls.VolumePath)
		return true
	}
	if r.Code == 0 {
		t.Fatalf("after kill %d: the split command succeeded (%s) but after the restart the pair is %s", i+1, strings.TrimSpace(r.Stdout), migString(st))
	}
	if ls.Volume != c.volSrc || ld.Volume != c.volDst {
		t.Fatalf("after kill %d: the pair is still there (%s) but the volumes moved (%s %s, %s %s; before %s %s, %s %s)",
			i+1, migString(st), c.src, ls.Volume, c.dst, ld.Volume, c.src, c.volSrc, c.dst, c.volDst)
	}
	t.Logf("kill %d: the split had not happened; pair %s", i+1, migString(st))
	return false
}

// pairSurvived checks that the pair is still there after kill i of phase
// and neither faulty, cancelled nor split.
func (c *crashLoop) pairSurvived(i int, phase string) {
	t := c.t
	t.Helper()
	st, r, ok := c.d.migTry(c.src)
	if !ok {
		t.Fatalf("after kill %d (%s) the pair is gone: %s", i+1, phase, r)
	}
	if st.State == "faulty" || st.State == "cancelled" || st.State == "split" {
		t.Fatalf("after kill %d (%s) the pair is %s", i+1, phase, migString(st))
	}
}

// syncUnderWrites ends a loop: a pair (newPair when there is none or it
// split), at the highest speed, synced while a host writes; the host's
// writes go into the model. The host is quiet when it returns.
func (c *crashLoop) syncUnderWrites(newPair func()) {
	t := c.t
	t.Helper()
	if st, _, ok := c.d.migTry(c.src); !ok || st.State == "split" || st.State == "cancelled" {
		newPair()
	}
	c.d.OK("migration", "set", c.src, "--speed", "highest", "--max-mbps", "0")
	q, s := c.startHost()
	c.d.waitMig(c.src, syncTimeout, "synced")
	s.waitAcked(t, 20, "in dual-write at the end")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	q.close()
	c.m.absorb(ws)
}
