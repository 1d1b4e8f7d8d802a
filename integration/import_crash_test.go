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

// Import migrations under failure (issue 9): lmtgt (B) killed with kill -9
// while it migrates a LUN imported from Linux tgt (the old array) onto a
// local file, and (import_restart_test.go) the old array itself killed and
// restarted during the copy and during dual-write.

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

// TestImportCrashLoop: kill -9 of lmtgt at random moments of an import
// migration. Linux tgt holds the LUN's data; lmtgt imports it (adopt) and
// migrates it onto a local file while a host writes through lmtgt with
// every acknowledged write recorded. lmtgt is killed
// LMTGT_STRESS_IMPORT_KILLS times (default 10) during the copy and during
// dual-write, the last time around the split (LMTGT_STRESS_SEED replays
// the delays); after each restart the LUN holds every acknowledged write
// and the pair resumes (never faulty); after the split every acknowledged
// write is on the local file and the old array holds the LUN as it was.
func TestImportCrashLoop(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "tgtd")
	kills := int(stressInt(t, "LMTGT_STRESS_IMPORT_KILLS", 10))
	seed := stressInt(t, "LMTGT_STRESS_SEED", time.Now().UnixNano())
	t.Logf("import crash loop: %d kills, seed %d (LMTGT_STRESS_SEED=%d replays the kill delays)", kills, seed, seed)
	rng := rand.New(rand.NewSource(seed))

	const size = 32 << 20
	const nblocks = size / mBlock
	old := startOldArray(t, size, "", "")
	m := &lunModel{t: t, img: make(image, nblocks), next: 10}
	q0 := startQIO(t, "prefill", old.url())
	for b := 0; b < nblocks*3/4; b += 64 {
		prefill(t, q0, m.img, b, min(b+64, nblocks*3/4), byte(b/64+1))
	}
	q0.close()

	d := StartDaemon(t, "")
	d.OK("lun", "import", "imp", "--from", old.url())
	d.OK("lun", "create", "loc", "--size", "32MiB")
	iqn := testIQN("imp")
	d.OK("target", "create", iqn)
	d.OK("target", "map", iqn, "imp")
	d.OK("target", "allow", iqn, "ALL")
	m.url = d.URL(iqn, 0)
	portal := d.Portal
	vpd83 := vpd(t, m.url, 131)
	var blocks [][2]int
	for b := range nblocks {
		blocks = append(blocks, [2]int{0, b})
	}
	volImp, volLoc := d.lun("imp").Volume, d.lun("loc").Volume

	startHost := func() (*qio, *stream) {
		q := startQIO(t, "host", m.url)
		return q, runStream("host", rng.Int63(), []*qio{q}, blocks, m.next)
	}
	// crash kills lmtgt after delay, then the host; restarts lmtgt and
	// checks the LUN against the model.
	crash := func(i int, what string, delay time.Duration, q *qio, s *stream) {
		t.Helper()
		<-time.After(delay) // the random moment of the kill
		d.Kill()
		q.kill()
		pending, acked := m.absorb(s.stop())
		t.Logf("kill %d/%d during %s after %v: %d host writes acknowledged, in flight: %v", i+1, kills, what, delay, acked, pending)
		d.Start(portal)
		m.check(fmt.Sprintf("after kill %d (%s)", i+1, what), pending)
	}
	newPair := func() {
		t.Helper()
		d.OK("migration", "create", "--source", "imp", "--target", "loc", "--max-mbps", "16")
	}

	killedSplit := false // the split happened in the kill of the split phase
	for i := 0; i < kills; i++ {
		phase := []string{"copy", "copy", "dual-write"}[i%3]
		if i == kills-1 && kills > 1 {
			phase = "split"
		}
		st, _, ok := d.migTry("imp")
		switch {
		case !ok:
			newPair()
		case i%3 == 0 && st.State != "copying" && st.State != "queued":
			// A new cycle: the copy starts over onto the same local LUN.
			d.OK("migration", "cancel", "imp")
			newPair()
		}
		if phase == "copy" {
			if st := d.mig("imp"); st.State != "copying" && st.State != "queued" {
				phase = "dual-write" // the copy finished before this kill
			}
		}
		if phase != "copy" {
			d.OK("migration", "set", "imp", "--speed", "highest", "--max-mbps", "0")
			d.waitMig("imp", syncTimeout, "synced")
		}
		q, s := startHost()
		s.waitAcked(t, 3, "before kill "+fmt.Sprint(i+1))
		switch phase {
		case "copy":
			if st := d.mig("imp"); st.Vehicle != "remote-iscsi" && st.Vehicle != "" {
				t.Errorf("copy from an imported LUN: vehicle %q, want remote-iscsi", st.Vehicle)
			}
			crash(i, phase, time.Duration(rng.Int63n(int64(700*time.Millisecond))), q, s)
		case "dual-write":
			crash(i, phase, time.Duration(rng.Int63n(int64(300*time.Millisecond))), q, s)
		case "split":
			// The kill lands before, during or after the split: the delay
			// is drawn over three times a CLI round trip.
			t0 := time.Now()
			d.mig("imp")
			span := 3*time.Since(t0) + 5*time.Millisecond
			done := make(chan result, 1)
			go func() { // owned here: ends with the CLI process
				c := exec.Command(cliBin, "migration", "split", "imp")
				c.Env = append(os.Environ(), "LMTGT_ADMIN="+d.Admin)
				var out, errb strings.Builder
				c.Stdout, c.Stderr = &out, &errb
				c.Run()
				done <- result{Stdout: out.String(), Stderr: errb.String(), Code: c.ProcessState.ExitCode()}
			}()
			crash(i, phase, time.Duration(rng.Int63n(int64(span))), q, s)
			r := <-done
			st, _, ok := d.migTry("imp")
			li, ll := d.lun("imp"), d.lun("loc")
			if !ok || st.State == "split" {
				if li.Volume != volLoc || ll.Volume != volImp {
					t.Fatalf("after kill %d: the pair is gone but the volumes did not swap (imp %s, loc %s; before imp %s, loc %s)", i+1, li.Volume, ll.Volume, volImp, volLoc)
				}
				killedSplit = true
				t.Logf("kill %d: the split had happened (split command: %s)", i+1, strings.TrimSpace(r.Stdout+r.Stderr))
				continue
			}
			if r.Code == 0 {
				t.Fatalf("after kill %d: the split command succeeded (%s) but after the restart the pair is %s", i+1, strings.TrimSpace(r.Stdout), migString(st))
			}
			if li.Volume != volImp || ll.Volume != volLoc {
				t.Fatalf("after kill %d: the pair is still there (%s) but the volumes moved", i+1, migString(st))
			}
			t.Logf("kill %d: the split had not happened; pair %s", i+1, migString(st))
			continue
		}
		st, r, ok := d.migTry("imp")
		if !ok {
			t.Fatalf("after kill %d (%s) the pair is gone: %s", i+1, phase, r)
		}
		if st.State == "faulty" || st.State == "cancelled" || st.State == "split" {
			t.Fatalf("after kill %d (%s) the pair is %s", i+1, phase, migString(st))
		}
		waitFor(t, stateTimeout, fmt.Sprintf("the pair resumed after kill %d (%s)", i+1, phase), func() (bool, string) {
			st := d.mig("imp")
			return st.State == "copying" || st.State == "synced", migString(st)
		})
	}

	if !killedSplit {
		// Completion: synced under host writes, then the split.
		if _, _, ok := d.migTry("imp"); !ok {
			newPair()
		}
		d.OK("migration", "set", "imp", "--speed", "highest", "--max-mbps", "0")
		q, s := startHost()
		d.waitMig("imp", syncTimeout, "synced")
		s.waitAcked(t, 20, "in dual-write at the end")
		ws := s.stop()
		if err := s.firstErr(); err != nil {
			t.Fatal(err)
		}
		q.close()
		m.absorb(ws)
		var sr wire.SplitResult
		d.JSON(&sr, "migration", "split", "imp")
		t.Logf("final split: pause %.3f ms", sr.PauseMS)
	}
	li := d.lun("imp")
	if li.Volume != volLoc || li.VolumePath == "" {
		t.Fatalf("after the split imp is on volume %s (%q), want the local volume %s", li.Volume, li.VolumePath, volLoc)
	}
	m.check("after the split", nil)
	compareRef(t, "imported LUN's local file after the split", li.VolumePath, m.img, size)
	if !killedSplit {
		// The host was quiet at the final split: the old array holds the
		// LUN as it was then.
		compareRef(t, "the old array (the LUN as it was at the split)", old.url(), m.img, size)
	}
	if v := vpd(t, m.url, 131); v != vpd83 {
		t.Errorf("VPD 0x83 changed by the crashes and the split:\nbefore:\n%s\nafter:\n%s", vpd83, v)
	}
	d.Restart(false)
	compareRef(t, "imported LUN after a clean restart", m.url, m.img, size)
}
