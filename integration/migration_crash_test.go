package integration

import (
	"os"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"
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
	kills, rng := crashSchedule(t, "crash loop", "LMTGT_STRESS_KILLS", 20)

	const size = 32 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "")
	iqn := d.Export("ka", "32MiB", 512)
	d.OK("lun", "create", "kb", "--size", "32MiB")

	// model: what every block must hold (acknowledged writes).
	m := prefilledModel(t, d.URL(iqn, 0), nblocks)
	c := newCrashLoop(t, d, m, rng, kills, "ka", "kb")

	newPair := func(speed ...string) {
		t.Helper()
		d.OK(append([]string{"migration", "create", "--source", "ka", "--target", "kb"}, speed...)...)
	}

	for i := 0; i < kills; i++ {
		phase := []string{"copy", "copy", "dual-write", "split"}[i%4]
		st, _, ok := d.migTry("ka")
		switch {
		case !ok || st.State == "split" || st.State == "cancelled": // cancelled: shown from the history
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
		c.kill(i, phase, nil)
	}

	// Completion: synced under writes, then quiet; the two data files are
	// equal; the split; every acknowledged write read back with read -P.
	c.syncUnderWrites(func() { newPair("--speed", "highest") })
	st := d.mig("ka")
	if st.State != "synced" {
		t.Fatalf("pair not synced at the end: %s", migString(st))
	}
	pa, pb := d.lun("ka").VolumePath, d.lun("kb").VolumePath
	d.Stop()
	compareFiles(t, "source and target data volumes of the synced pair", pa, pb)
	compareRef(t, "source data volume", pa, m.img, size)
	d.Start(c.portal)
	// A restart re-copies whatever the intent log still marks.
	d.waitMig("ka", syncTimeout, "synced")
	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", "ka")
	t.Logf("final split: pause %.3f ms", sr.PauseMS)
	q := startQIO(t, "verify", m.url)
	for b, v := range m.img {
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
