//go:build rbd

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

// TestRBDMigrationCrashLoop kills lmtgt with kill -9 at random moments of
// a migration between a file and an RBD image (LMTGT_RBD_KILLS times,
// default 10): during the copy, in dual-write and around the split, each
// time while a host writes. After every restart the image's exclusive
// lock, left by the killed process, is taken back without a takeover,
// every acknowledged write is on the LUN, and a split happened whole or
// not at all. Splits turn the direction around (file -> RBD, then RBD ->
// file). At the end the pair syncs, splits, and the LUN equals the model.
func TestRBDMigrationCrashLoop(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	kills := 10
	if v := os.Getenv("LMTGT_RBD_KILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LMTGT_RBD_KILLS=%q: want a positive number", v)
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
	t.Logf("rbd crash loop: %d kills, seed %d (LMTGT_STRESS_SEED replays the delays)", kills, seed)
	rng := rand.New(rand.NewSource(seed))

	c := startCeph(t)
	const size = 32 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "", "--ceph-conf", c.Conf)
	iqn := d.Export("ka", "32MiB", 512)
	d.OK("lun", "create", "kb", "--rbd", "rbd/kb", "--size", "32MiB")
	url := d.URL(iqn, 0)
	portal := d.Portal

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
	pat := 10

	// check matches the LUN against the model; the one write in flight at
	// the kill may be there, not there, or torn sector by sector.
	check := func(when string, pending *hostWrite) {
		t.Helper()
		raw := readRaw(t, url)
		img := blocksOf(raw)
		torn := -1
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
					torn = b
					continue
				}
			}
			t.Fatalf("%s: block %d (offset %d) holds %d, want %d (acknowledged); pending write: %v\n%s",
				when, b, int64(b)*mBlock, img[b], model[b], pending, diffImages([]image{model}, []image{img}))
		}
		if torn >= 0 { // make it uniform again
			q := startQIO(t, "repair", url)
			prefill(t, q, model, torn, torn+1, 0xee)
			q.close()
		}
	}
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
		for _, name := range []string{"ka", "kb"} {
			if v := d.rbdLUN(name); v.State != "online" || (v.RBD != nil && v.RBD.Lock != "held") {
				t.Fatalf("after kill %d: LUN %s is %s (%s), rbd %+v", i+1, name, v.State, v.Offline, v.RBD)
			}
		}
	}
	newPair := func(args ...string) {
		t.Helper()
		d.OK(append([]string{"migration", "create", "--source", "ka", "--target", "kb"}, args...)...)
	}

	for i := 0; i < kills; i++ {
		phase := []string{"copy", "dual-write", "copy", "split"}[i%4]
		if st, _, ok := d.migTry("ka"); !ok || st.State == "split" {
			newPair("--max-mbps", "16")
		}
		if phase == "copy" {
			if st := d.mig("ka"); st.State != "copying" && st.State != "queued" {
				// Copy again from the start: cancel (the target stays as
				// it is) and a new pair.
				d.OK("migration", "cancel", "ka")
				newPair("--max-mbps", "16")
			}
		}
		if phase != "copy" {
			d.OK("migration", "set", "ka", "--speed", "highest", "--max-mbps", "0")
			d.waitMig("ka", syncTimeout, "synced")
		}
		q := startQIO(t, "host", url)
		s := runStream("host", rng.Int63(), []*qio{q}, blocks, pat)
		s.waitAcked(t, 3, "before kill "+fmt.Sprint(i+1))
		switch phase {
		case "copy":
			crash(i, phase, time.Duration(rng.Int63n(int64(700*time.Millisecond))), q, s)
		case "dual-write":
			crash(i, phase, time.Duration(rng.Int63n(int64(300*time.Millisecond))), q, s)
		case "split":
			t0 := time.Now()
			d.mig("ka")
			span := 3*time.Since(t0) + 5*time.Millisecond
			done := make(chan result, 1)
			go func() { // owned here: ends with the CLI process
				cmd := exec.Command(cliBin, "migration", "split", "ka")
				cmd.Env = append(os.Environ(), "LMTGT_ADMIN="+d.Admin)
				var out, errb strings.Builder
				cmd.Stdout, cmd.Stderr = &out, &errb
				_ = cmd.Run()
				done <- result{Stdout: out.String(), Stderr: errb.String(), Code: cmd.ProcessState.ExitCode()}
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
				t.Logf("kill %d: the split had happened; ka is now on %s", i+1, la.VolumePath)
			default:
				if r.Code == 0 {
					t.Fatalf("after kill %d: the split command succeeded (%s) but after the restart the pair is %s", i+1, strings.TrimSpace(r.Stdout), migString(st))
				}
				if la.Volume != volA || lb.Volume != volB {
					t.Fatalf("after kill %d: the pair is still there (%s) but the volumes moved", i+1, migString(st))
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

	// Completion: synced under writes, split, the LUN equals the model.
	if st, _, ok := d.migTry("ka"); !ok || st.State == "split" {
		newPair("--speed", "highest")
	}
	d.OK("migration", "set", "ka", "--speed", "highest", "--max-mbps", "0")
	q, s := startQIO(t, "host", url), (*stream)(nil)
	s = runStream("host", rng.Int63(), []*qio{q}, blocks, pat)
	d.waitMig("ka", syncTimeout, "synced")
	s.waitAcked(t, 20, "in dual-write at the end")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	q.close()
	apply([]image{model}, ws)
	d.OK("migration", "split", "ka")
	t.Logf("final split: ka is on %s", d.lun("ka").VolumePath)
	compareRef(t, "LUN ka after the final split", url, model, size)
}
