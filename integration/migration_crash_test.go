package integration

import (
	"fmt"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMigrationCrashLoop kills the daemon with kill -9 at random moments
// of the copy, of dual-write and of the split (LMTGT_STRESS_KILLS times,
// default 20; LMTGT_STRESS_SEED replays the delays), each time while a
// host writes, restarts it on the same data dir, and checks that every
// acknowledged write is on the LUN, that a split either happened whole
// or not at all, and at the end that the pair completes with source and
// target equal.
func TestMigrationCrashLoop(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	kills := 20
	if v := os.Getenv("LMTGT_STRESS_KILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LMTGT_STRESS_KILLS=%q: want a positive number", v)
		}
		kills = n
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("LMTGT_STRESS_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("LMTGT_STRESS_SEED=%q: want a number", v)
		}
		seed = n
	}
	t.Logf("crash loop: %d kills, seed %d (LMTGT_STRESS_SEED=%d replays the kill delays)", kills, seed, seed)
	rng := rand.New(rand.NewSource(seed))

	const size = 32 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "")
	iqn := d.Export("ka", "32MiB", 512)
	d.OK("lun", "create", "kb", "--size", "32MiB")
	url := d.URL(iqn, 0)
	portal := d.Portal

	// model: what every block must hold (acknowledged writes).
	model := make(image, nblocks)
	q := startQIO(t, "prefill", url)
	for b := 0; b < nblocks; b += 64 {
		prefill(t, q, model, b, b+64, byte(b/64+1))
	}
	q.close()
	var blocks [][2]int
	for b := range nblocks {
		blocks = append(blocks, [2]int{0, b})
	}
	volA, volB := d.lun("ka").Volume, d.lun("kb").Volume
	pat := 10 // next stream's first pattern

	// check reads the LUN and matches it against the model; the one write
	// that was in flight at the kill may or may not be there (even in part,
	// sector by sector: it was never acknowledged).
	check := func(when string, pending *hostWrite) {
		t.Helper()
		raw := readRaw(t, url)
		img := blocksOf(raw)
		for b := range model {
			if img[b] == model[b] {
				continue
			}
			if pending != nil && b >= pending.block && b < pending.block+pending.count {
				if img[b] == int(pending.pat) {
					model[b] = int(pending.pat)
					continue
				}
				if sectorsEither(raw[b*mBlock:(b+1)*mBlock], byte(model[b]), pending.pat) {
					model[b] = -2 // torn unacknowledged write: rewritten below
					continue
				}
			}
			t.Fatalf("%s: block %d (offset %d) holds %d, want %d (acknowledged); pending write: %v\n%s",
				when, b, int64(b)*mBlock, img[b], model[b], pending, diffImages([]image{model}, []image{img}))
		}
		for b := range model {
			if model[b] == -2 { // make it uniform again
				q := startQIO(t, "repair", url)
				prefill(t, q, model, b, b+1, 0xee)
				q.close()
			}
		}
	}

	startHost := func() (*qio, *stream) {
		q := startQIO(t, "host", url)
		s := runStream("host", rng.Int63(), []*qio{q}, blocks, pat)
		return q, s
	}
	// crash: kill -9 the daemon after delay, then the host; the host's
	// acknowledged writes go into the model, its last unanswered one is
	// pending. Then restart and check.
	crash := func(i int, what string, delay time.Duration, q *qio, s *stream) {
		t.Helper()
		<-time.After(delay)
		d.Kill()
		q.kill()
		ws := s.stop()
		var pending *hostWrite
		acked := 0
		for j := range ws {
			if !ws[j].acked.IsZero() {
				apply([]image{model}, ws[j:j+1])
				acked++
			} else {
				pending = &ws[j]
			}
		}
		pat += len(ws)
		t.Logf("kill %d/%d during %s after %v: %d host writes acknowledged, in flight: %v", i+1, kills, what, delay, acked, pending)
		d.Start(portal)
		check(fmt.Sprintf("after kill %d (%s)", i+1, what), pending)
	}

	newPair := func(speed ...string) {
		t.Helper()
		d.OK(append([]string{"migration", "create", "--source", "ka", "--target", "kb"}, speed...)...)
	}

	for i := 0; i < kills; i++ {
		phase := []string{"copy", "copy", "dual-write", "split"}[i%4]
		st, _, ok := d.migTry("ka")
		switch {
		case !ok || st.State == "split":
			newPair("--max-mbps", "16")
		case i%4 == 0 && st.State != "copying":
			// a new cycle: start the copy over
			d.OK("migration", "cancel", "ka")
			newPair("--max-mbps", "16")
		}
		if phase == "copy" {
			if st := d.mig("ka"); st.State != "copying" && st.State != "queued" {
				phase = "dual-write" // the copy finished before this kill
			}
		}
		if phase != "copy" {
			d.OK("migration", "set", "ka", "--speed", "highest", "--max-mbps", "0")
			d.waitMig("ka", syncTimeout, "synced")
		}
		q, s := startHost()
		s.waitAcked(t, 3, "before kill "+fmt.Sprint(i+1))
		switch phase {
		case "copy":
			crash(i, phase, time.Duration(rng.Int63n(int64(700*time.Millisecond))), q, s)
		case "dual-write":
			crash(i, phase, time.Duration(rng.Int63n(int64(300*time.Millisecond))), q, s)
		case "split":
			// The kill lands before, during or after the split: the delay
			// is drawn over three times a CLI round trip here
			// (a race-built binary starts much slower).
			t0 := time.Now()
			d.mig("ka")
			span := 3*time.Since(t0) + 5*time.Millisecond
			done := make(chan result, 1)
			go func() { // owned here: ends with the CLI process
				c := exec.Command(lmtgtBin, "migration", "split", "ka")
				c.Env = append(os.Environ(), "LMTGT_ADMIN="+d.Admin)
				var out, errb strings.Builder
				c.Stdout, c.Stderr = &out, &errb
				err := c.Run()
				done <- result{Stdout: out.String(), Stderr: errb.String(), Code: c.ProcessState.ExitCode()}
				_ = err
			}()
			crash(i, phase, time.Duration(rng.Int63n(int64(span))), q, s)
			r := <-done
			st, _, ok := d.migTry("ka")
			la, lb := d.lun("ka"), d.lun("kb")
			switch {
			case !ok || st.State == "split":
				if la.Volume != volB || lb.Volume != volA {
					t.Fatalf("after kill %d: the pair is gone but the volumes did not swap (ka %s, kb %s; before ka %s, kb %s)", i+1, la.Volume, lb.Volume, volA, volB)
				}
				volA, volB = volB, volA
				t.Logf("kill %d: the split had happened (split command: %s)", i+1, strings.TrimSpace(r.Stdout+r.Stderr))
			default:
				if r.Code == 0 {
					t.Fatalf("after kill %d: the split command succeeded (%s) but after the restart the pair is %s", i+1, strings.TrimSpace(r.Stdout), migString(st))
				}
				if la.Volume != volA || lb.Volume != volB {
					t.Fatalf("after kill %d: the pair is still there (%s) but the volumes moved (ka %s, kb %s; before ka %s, kb %s)", i+1, migString(st), la.Volume, lb.Volume, volA, volB)
				}
				t.Logf("kill %d: the split had not happened; pair %s", i+1, migString(st))
			}
			continue
		}
		st, r, ok := d.migTry("ka")
		if !ok {
			t.Fatalf("after kill %d (%s) the pair is gone: %s", i+1, phase, r)
		}
		if st.State == "faulty" || st.State == "cancelled" || st.State == "split" {
			t.Fatalf("after kill %d (%s) the pair is %s", i+1, phase, migString(st))
		}
	}

	// Completion: synced under writes, then quiet; the two data files are
	// equal; the split; every acknowledged write read back with read -P.
	if st, _, ok := d.migTry("ka"); !ok || st.State == "split" {
		newPair("--speed", "highest")
	}
	d.OK("migration", "set", "ka", "--speed", "highest", "--max-mbps", "0")
	q, s := startHost()
	d.waitMig("ka", syncTimeout, "synced")
	s.waitAcked(t, 20, "in dual-write at the end")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	q.close()
	apply([]image{model}, ws)
	st := d.mig("ka")
	if st.State != "synced" {
		t.Fatalf("pair not synced at the end: %s", migString(st))
	}
	pa, pb := d.lun("ka").VolumePath, d.lun("kb").VolumePath
	d.Stop()
	compareFiles(t, "source and target data volumes of the synced pair", pa, pb)
	compareRef(t, "source data volume", pa, model, size)
	d.Start(portal)
	// A restart re-copies whatever the intent log still marks.
	d.waitMig("ka", syncTimeout, "synced")
	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", "ka")
	t.Logf("final split: pause %.3f ms", sr.PauseMS)
	q = startQIO(t, "verify", url)
	for b, v := range model {
		if err := q.read(int64(b)*mBlock, mBlock, byte(v)); err != nil {
			t.Fatalf("after the final split, block %d: %v", b, err)
		}
	}
	q.close()
}

// readRaw reads a whole LUN through iSCSI (qemu-img convert).
func readRaw(t testing.TB, url string) []byte {
	t.Helper()
	f := t.TempDir() + "/read.img"
	tool(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, f)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sectorsEither: every 512-byte sector of blk is all a or all b.
func sectorsEither(blk []byte, a, b byte) bool {
	for s := 0; s < len(blk); s += 512 {
		v := blk[s]
		if v != a && v != b {
			return false
		}
		for _, c := range blk[s : s+512] {
			if c != v {
				return false
			}
		}
	}
	return true
}
