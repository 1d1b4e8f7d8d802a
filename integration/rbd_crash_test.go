//go:build rbd

package integration

import "testing"

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
	kills, rng := crashSchedule(t, "rbd crash loop", "LMTGT_RBD_KILLS", 10)

	ceph := startCeph(t)
	const size = 32 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "", "--ceph-conf", ceph.Conf)
	iqn := d.Export("ka", "32MiB", 512)
	d.OK("lun", "create", "kb", "--rbd", "rbd/kb", "--size", "32MiB")

	m := prefilledModel(t, d.URL(iqn, 0), nblocks)
	c := newCrashLoop(t, d, m, rng, kills, "ka", "kb")
	// After every restart the images' exclusive locks, left by the killed
	// process, are held again.
	c.afterRestart = func(i int) {
		t.Helper()
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
		if st, _, ok := d.migTry("ka"); !ok || st.State == "split" || st.State == "cancelled" {
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
		c.kill(i, phase, nil)
	}

	// Completion: synced under writes, split, the LUN equals the model.
	c.syncUnderWrites(func() { newPair("--speed", "highest") })
	d.OK("migration", "split", "ka")
	t.Logf("final split: ka is on %s", d.lun("ka").VolumePath)
	compareRef(t, "LUN ka after the final split", m.url, m.img, size)
}
