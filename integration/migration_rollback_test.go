package integration

// Rollback after the switch (issue 11), end to end: the real daemon,
// qemu-io hosts writing over iscsi:// all along, the CLI.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestMigrationRollbackUnderWrites: under two concurrent host streams,
// split --keep-source (the LUN switches to the new volume, host writes are
// mirrored back), write more, rollback (back on the old volume, nothing
// lost), compare the LUN and both volume files with what the hosts
// wrote; then split --keep-source again, commit --retire: the old LUN and
// its volume file are gone and the LUN holds every write.
func TestMigrationRollbackUnderWrites(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	const size = 32 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "")
	iqn := d.Export("ra", "32MiB", 512)
	d.OK("lun", "create", "rb", "--size", "32MiB")
	url := d.URL(iqn, 0)
	ra0, rb0 := d.lun("ra"), d.lun("rb")
	if ra0.VolumePath == "" || rb0.VolumePath == "" {
		t.Fatalf("lun show gives no volume paths: %+v %+v", ra0, rb0)
	}
	oldPath, newPath := ra0.VolumePath, rb0.VolumePath

	base := []image{make(image, nblocks)}
	q0 := startQIO(t, "prefill", url)
	prefill(t, q0, base[0], 0, nblocks/2, 0x22)
	q0.close()
	even, odd := evenOddBlocks(nblocks)
	q1, q2 := startQIO(t, "host1", url), startQIO(t, "host2", url)
	s1 := runStream("host1", 11, []*qio{q1}, even, 0)
	s2 := runStream("host2", 12, []*qio{q2}, odd, 100)
	defer s1.stop()
	defer s2.stop()
	both := func(n int, what string) {
		t.Helper()
		s1.waitAcked(t, n, what)
		s2.waitAcked(t, n, what)
	}
	both(10, "before the pair is created")

	d.OK("migration", "create", "--source", "ra", "--target", "rb", "--speed", "highest")
	d.waitMig("ra", syncTimeout, "synced")
	both(20, "in dual-write")

	// Switch, keeping the old volume mirrored.
	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", "ra", "--keep-source")
	if sr.State != "switched" || sr.PauseMS <= 0 {
		t.Fatalf("split --keep-source: %+v (want state switched, a measured pause)", sr)
	}
	st := d.mig("ra")
	if st.State != "switched" || !st.Switched {
		t.Fatalf("after split --keep-source: %s switched=%v", migString(st), st.Switched)
	}
	if l := d.lun("ra"); l.Volume != rb0.Volume || l.VolumePath != newPath {
		t.Fatalf("after the switch ra is on %s (%s), want the new volume %s (%s)", l.Volume, l.VolumePath, rb0.Volume, newPath)
	}
	both(40, "while switched (mirrored back)")
	// The refusals of a switched pair.
	d.Fail(1, []string{"switched", "roll it back or commit"}, "migration", "cancel", "ra")
	d.Fail(1, []string{"switched"}, "migration", "split", "ra")

	d.JSON(&sr, "migration", "rollback", "ra")
	if sr.State != "synced" || sr.PauseMS <= 0 {
		t.Fatalf("rollback: %+v (want state synced, a measured pause)", sr)
	}
	if st := d.mig("ra"); st.State != "synced" || st.Switched {
		t.Fatalf("after rollback: %s switched=%v", migString(st), st.Switched)
	}
	if l := d.lun("ra"); l.Volume != ra0.Volume {
		t.Fatalf("after the rollback ra is on %s, want the old volume %s", l.Volume, ra0.Volume)
	}
	// Refusals of a synced pair and of bad flag sets; nothing changes.
	d.Fail(1, []string{"not switched"}, "migration", "rollback", "ra")
	d.Fail(1, []string{"not switched"}, "migration", "commit", "ra")
	d.Fail(2, []string{"--retire"}, "migration", "commit", "ra", "--scrub")
	d.Fail(2, []string{"--keep-source"}, "migration", "split", "ra", "--keep-source", "--retire")
	if st := d.mig("ra"); st.State != "synced" {
		t.Fatalf("after refused commands: %s", migString(st))
	}
	both(30, "after the rollback")
	w1, w2 := s1.stop(), s2.stop()
	for _, s := range []*stream{s1, s2} {
		if err := s.firstErr(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("host writes: %d + %d, all acknowledged", len(w1), len(w2))
	want := cloneImages(base)
	apply(want, w1)
	apply(want, w2)
	compareRef(t, "LUN ra after the rollback", url, want[0], size)
	compareRef(t, "old volume file (what the hosts wrote)", oldPath, want[0], size)
	compareFiles(t, "old and new volume files (in sync again)", oldPath, newPath)

	// Split again (switched), write, commit with --retire.
	s3 := runStream("host3", 13, []*qio{q1}, even, 200)
	defer s3.stop()
	s3.waitAcked(t, 10, "before the second switch")
	d.JSON(&sr, "migration", "split", "ra", "--keep-source")
	s3.waitAcked(t, 20, "switched again")
	r := d.OK("migration", "commit", "ra", "--retire", "-o", "json")
	if err := json.Unmarshal([]byte(r), &sr); err != nil {
		t.Fatalf("commit -o json: %v\n%s", err, r)
	}
	if sr.State != "split" || len(sr.Retired) != 1 || sr.Retired[0].LUN != "rb" || !sr.Retired[0].VolumeDeleted || sr.Retired[0].Error != "" {
		t.Fatalf("commit --retire: %+v", sr)
	}
	s3.waitAcked(t, 20, "after the commit")
	w3 := s3.stop()
	if err := s3.firstErr(); err != nil {
		t.Fatal(err)
	}
	q1.close()
	q2.close()
	if st := d.mig("ra"); st.State != "split" {
		t.Fatalf("after commit: %s", migString(st))
	}
	if res := d.Run("lun", "show", "rb"); res.Code == 0 {
		t.Fatalf("the old LUN rb is still there after commit --retire:\n%s", res.Stdout)
	}
	if _, err := os.Stat(oldPath); !os.IsNotExist(err) {
		t.Fatalf("the old volume file %s after commit --retire: %v", oldPath, err)
	}
	apply(want, w3)
	compareRef(t, "LUN ra after the commit", url, want[0], size)
	compareRef(t, "new volume file after the commit", newPath, want[0], size)

	// Retired already: a second retire says so; then the ended records go.
	d.Fail(1, []string{"gone already"}, "migration", "retire", "ra")
	out := d.OK("migration", "delete", "ra")
	if !strings.Contains(out, "1 ended pair record") {
		t.Fatalf("migration delete: %s", out)
	}
	d.Fail(1, []string{"ra"}, "migration", "show", "ra")
	d.noDrops(t)
}

// TestMigrationSwitchedCrashLoop: kill -9 at random moments of the
// mirrored-back phase (a switched pair under host writes) and around the
// rollback and split --keep-source commands (the crash-loop harness,
// crashloop_test.go). After every restart the LUN holds every
// acknowledged write, a pair killed while switched is still switched (or
// re-copying new → old, still switched), and a pair killed around a
// rollback or a switch is on exactly one of its volumes with the state
// that says so. At the end the old volume equals the LUN, and rollback,
// a second switch and commit lose nothing.
func TestMigrationSwitchedCrashLoop(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	kills, rng := crashSchedule(t, "switched crash loop", "LMTGT_STRESS_SWITCHED_KILLS", 12)
	const size = 16 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "")
	iqn := d.Export("wa", "16MiB", 512)
	d.OK("lun", "create", "wb", "--size", "16MiB")
	m := prefilledModel(t, d.URL(iqn, 0), nblocks)
	c := newCrashLoop(t, d, m, rng, kills, "wa", "wb")
	oldVol, newVol := c.volSrc, c.volDst

	d.OK("migration", "create", "--source", "wa", "--target", "wb", "--speed", "highest")
	d.waitMig("wa", syncTimeout, "synced")
	// --max-pause 2s everywhere: the pause budget is not what this tests,
	// and a deferral on a loaded machine would only fail the loop.
	d.OK("migration", "split", "wa", "--keep-source", "--max-pause", "2s")
	switched := true
	// onVolumes checks that wa runs on the volume its pair's orientation
	// says, after kill i.
	onVolumes := func(i int, st wire.Migration) {
		t.Helper()
		want := oldVol
		if st.Switched {
			want = newVol
		}
		if l := d.lun("wa"); l.Volume != want {
			t.Fatalf("after kill %d: the pair is %s (switched=%v) but wa is on %s, want %s", i+1, migString(st), st.Switched, l.Volume, want)
		}
	}
	for i := 0; i < kills; i++ {
		if i%3 == 2 {
			// Around a rollback, or every other time around a switch.
			d.waitMig("wa", syncTimeout, map[bool]string{true: "switched", false: "synced"}[switched])
			if (i/3)%2 == 1 && switched {
				d.OK("migration", "rollback", "wa", "--max-pause", "2s")
				switched = false
			}
			q, s := c.startHost()
			s.waitAcked(t, 3, fmt.Sprintf("before kill %d", i+1))
			what, args := "rollback", []string{"migration", "rollback", "wa"}
			if !switched {
				what, args = "split --keep-source", []string{"migration", "split", "wa", "--keep-source"}
			}
			r := c.crashInCommand(i, what, q, s, args...)
			st := d.waitMig("wa", syncTimeout, "switched", "synced")
			onVolumes(i, st)
			if r.Code == 0 && st.Switched == switched {
				t.Fatalf("after kill %d: %s answered %q but the pair is %s", i+1, what, strings.TrimSpace(r.Stdout), migString(st))
			}
			t.Logf("kill %d around %s: the pair is %s (command: %s)", i+1, what, st.State, strings.TrimSpace(r.Stdout+r.Stderr))
			switched = st.Switched
			continue
		}
		if !switched {
			d.waitMig("wa", syncTimeout, "synced")
			d.OK("migration", "split", "wa", "--keep-source", "--max-pause", "2s")
			switched = true
		}
		// A kill in the mirrored-back phase: within 300 ms of host writes.
		q, s := c.startHost()
		s.waitAcked(t, 3, fmt.Sprintf("before kill %d", i+1))
		c.crash(i, "switched", c.delay(300*time.Millisecond), q, s)
		st := d.mig("wa")
		if !st.Switched || (st.State != "switched" && st.State != "copying") {
			t.Fatalf("after kill %d in the switched phase the pair is %s (switched=%v), want switched (or re-copying)", i+1, migString(st), st.Switched)
		}
		onVolumes(i, st)
	}

	// The end: switched and quiet, the old volume equals the LUN; then
	// rollback, a second switch and commit under writes lose nothing.
	if !switched {
		d.waitMig("wa", syncTimeout, "synced")
		d.OK("migration", "split", "wa", "--keep-source", "--max-pause", "2s")
	}
	q, s := c.startHost()
	d.waitMig("wa", syncTimeout, "switched")
	s.waitAcked(t, 20, "switched at the end")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	q.close()
	c.m.absorb(ws)
	d.waitMig("wa", syncTimeout, "switched")
	pNew, pOld := d.lun("wa").VolumePath, d.lun("wb").VolumePath
	d.Stop()
	compareFiles(t, "new (primary) and old (mirrored back) volumes of the switched pair", pNew, pOld)
	compareRef(t, "old volume", pOld, m.img, size)
	d.Start(c.portal)
	d.waitMig("wa", syncTimeout, "switched")

	q, s = c.startHost()
	s.waitAcked(t, 10, "before the final rollback")
	d.OK("migration", "rollback", "wa", "--max-pause", "2s")
	s.waitAcked(t, 10, "after the final rollback")
	d.OK("migration", "split", "wa", "--keep-source", "--max-pause", "2s")
	s.waitAcked(t, 10, "switched again")
	d.OK("migration", "commit", "wa")
	s.waitAcked(t, 10, "after the commit")
	ws = s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	q.close()
	c.m.absorb(ws)
	c.m.check("after rollback, switch and commit", nil)
	if st := d.mig("wa"); st.State != "split" {
		t.Fatalf("after commit: %s", migString(st))
	}
}

// TestSessionRollback: a session's pairs switch (session split
// --keep-source), roll back and commit (--retire) as one, through the
// CLI; each LUN reads what the host wrote, before and after each step.
func TestSessionRollback(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	var iqns, pairs []string
	for i := range 2 {
		src, dst := fmt.Sprintf("rs%d", i), fmt.Sprintf("rs%d-new", i)
		iqn := d.Export(src, "8MiB", 512)
		iqns = append(iqns, iqn)
		d.OK("lun", "create", dst, "--size", "8MiB")
		qemuIOOK(t, d.URL(iqn, 0), fmt.Sprintf("write -P 0x%x 0 3M", 0x11*(i+1)))
		pairs = append(pairs, "--pair", src+":"+dst)
	}
	d.OK(append([]string{"session", "create", "back", "--speed", "highest"}, pairs...)...)
	state := func() wire.MigrationSession {
		var s wire.MigrationSession
		d.JSON(&s, "session", "show", "back")
		return s
	}
	waitFor(t, syncTimeout, "session synced", func() (bool, string) {
		s := state()
		return s.State == "synced", s.State
	})
	var sr wire.SplitResult
	d.JSON(&sr, "session", "split", "back", "--keep-source")
	if sr.State != "switched" || len(sr.Pairs) != 2 {
		t.Fatalf("session split --keep-source: %+v", sr)
	}
	if s := state(); s.State != "switched" {
		t.Fatalf("session after split --keep-source: %s", s.State)
	}
	qemuIOOK(t, d.URL(iqns[0], 0), "write -P 0x5a 1M 512k")
	qemuIOOK(t, d.URL(iqns[1], 0), "write -P 0x5b 6M 1M")
	d.Fail(1, []string{"switched"}, "session", "cancel", "back")
	// A member is rolled back and committed through its session only.
	d.Fail(1, []string{"migration rs0", "belongs to session back", "roll it back with `lmtgt session rollback back`"}, "migration", "rollback", "rs0")
	d.Fail(1, []string{"migration rs1-new", "belongs to session back", "commit it with `lmtgt session commit back`"}, "migration", "commit", "rs1-new")
	// session pause pauses the switched pairs; resume makes them switched again.
	d.OK("session", "pause", "back")
	if s := state(); s.State != "paused" || s.Pairs[0].State != "paused" || !s.Pairs[0].Switched || s.Pairs[1].State != "paused" {
		t.Fatalf("session after pause: %s, pairs %s %s", s.State, s.Pairs[0].State, s.Pairs[1].State)
	}
	d.OK("session", "resume", "back")
	waitFor(t, syncTimeout, "session switched again", func() (bool, string) {
		s := state()
		return s.State == "switched", s.State
	})
	d.JSON(&sr, "session", "rollback", "back")
	if sr.State != "synced" || len(sr.Pairs) != 2 {
		t.Fatalf("session rollback: %+v", sr)
	}
	if s := state(); s.State != "synced" {
		t.Fatalf("session after rollback: %s", s.State)
	}
	check := func(what string) {
		t.Helper()
		t.Logf("reading back both LUNs %s", what)
		qemuIOOK(t, d.URL(iqns[0], 0), "read -P 0x11 0 1M", "read -P 0x5a 1M 512k", "read -P 0x11 1536k 1536k", "read -P 0 3M 5M")
		qemuIOOK(t, d.URL(iqns[1], 0), "read -P 0x22 0 3M", "read -P 0 3M 3M", "read -P 0x5b 6M 1M", "read -P 0 7M 1M")
	}
	check("after the rollback")
	d.JSON(&sr, "session", "split", "back", "--keep-source")
	r := d.OK("session", "commit", "back", "--retire", "-o", "json")
	if err := json.Unmarshal([]byte(r), &sr); err != nil {
		t.Fatalf("session commit -o json: %v\n%s", err, r)
	}
	if sr.State != "split" || len(sr.Retired) != 2 {
		t.Fatalf("session commit --retire: %+v", sr)
	}
	for _, x := range sr.Retired {
		if x.Error != "" || !x.VolumeDeleted {
			t.Errorf("retire: %+v", x)
		}
	}
	if s := state(); s.State != "split" {
		t.Fatalf("session after commit: %s", s.State)
	}
	check("after the commit")
	for i := range 2 {
		if res := d.Run("lun", "show", fmt.Sprintf("rs%d-new", i)); res.Code == 0 {
			t.Errorf("old LUN rs%d-new still there after commit --retire", i)
		}
	}
}
