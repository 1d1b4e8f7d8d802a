package integration

import (
	"fmt"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Import migrations under failure (issue 9): lmtgt (B) killed with kill -9
// while it migrates a LUN imported from Linux tgt (the old array) onto a
// local file, and (import_restart_test.go) the old array itself killed and
// restarted during the copy and during dual-write.

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
	kills, rng := crashSchedule(t, "import crash loop", "LMTGT_STRESS_IMPORT_KILLS", 10)

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
	iqn := old.importForMigration(d, "32MiB")
	m.url = d.URL(iqn, 0)
	vpd83 := vpd(t, m.url, 131)
	c := newCrashLoop(t, d, m, rng, kills, "imp", "loc")
	volLoc := c.volDst

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
		case !ok || st.State == "cancelled": // cancelled: shown from the history
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
		var vehicle func() // checked during the copy
		if phase == "copy" {
			vehicle = func() {
				if st := d.mig("imp"); st.Vehicle != "remote-iscsi" && st.Vehicle != "" {
					t.Errorf("copy from an imported LUN: vehicle %q, want remote-iscsi", st.Vehicle)
				}
			}
		}
		if c.kill(i, phase, vehicle) {
			killedSplit = true
		}
		if phase == "split" {
			continue
		}
		waitFor(t, stateTimeout, fmt.Sprintf("the pair resumed after kill %d (%s)", i+1, phase), func() (bool, string) {
			st := d.mig("imp")
			return st.State == "copying" || st.State == "synced", migString(st)
		})
	}

	if !killedSplit {
		// Completion: synced under host writes, then the split.
		c.syncUnderWrites(newPair)
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
