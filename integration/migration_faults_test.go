package integration

import (
	"fmt"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMigrationTargetFull: the target volume lives on a 40 MiB tmpfs and
// the source holds 64 MiB of data. The copy fills the tmpfs; host writes
// keep succeeding, the pair goes interrupted and its DCL grows; once the
// tmpfs is enlarged the pair resyncs by itself to synced, and source and
// target are equal. No mocks: a real full filesystem.
func TestMigrationTargetFull(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "mount", "umount")
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=40M", "lmtgt-test", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -t tmpfs is not permitted here (%v: %s); this test needs root with CAP_SYS_ADMIN", err, strings.TrimSpace(string(out)))
	}
	// Registered before the daemon: cleanups run last-in first-out, so the
	// daemon is gone when the tmpfs is unmounted.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})

	const size = 96 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "")
	iqn := d.Export("fa", "96MiB", 512)
	tpath := filepath.Join(mnt, "fb.img")
	d.OK("lun", "create", "fb", "--size", "96MiB", "--path", tpath)
	url := d.URL(iqn, 0)

	// 64 MiB of data: 2 MiB of data, 1 MiB hole, and so on. The holes
	// below the copy cursor stay holes on the target, so host writes into
	// them need new space there while the tmpfs is full.
	base := []image{make(image, nblocks)}
	q := startQIO(t, "prefill", url)
	var holes [][2]int
	for mib := 0; mib < size>>20; mib++ {
		first := mib << 20 / mBlock
		if mib%3 == 2 {
			for b := first; b < first+16; b++ {
				holes = append(holes, [2]int{0, b})
			}
			continue
		}
		prefill(t, q, base[0], first, first+16, byte(0x30+mib%64))
	}
	q.close()

	d.OK("migration", "create", "--source", "fa", "--target", "fb", "--speed", "highest")
	st := d.waitMig("fa", stateTimeout, "interrupted")
	t.Logf("target full: %s", migString(st))
	if st.Reason == "" {
		t.Errorf("interrupted pair gives no reason: %s", migString(st))
	}
	dcl0 := st.DCLBytes
	// Only now the host writes into the holes, where the full target has
	// no room: holes below the copy cursor are not in the DCL yet (started
	// earlier, a slow copy could let the host fill every hole first, and
	// the DCL would have nothing left to grow by).
	qh := startQIO(t, "host", url)
	s := runStream("host", 4, []*qio{qh}, holes, 0)
	defer s.stop()
	s.waitAcked(t, 30, "while the target is full")
	var st1 wire.Migration
	waitFor(t, stateTimeout, "the DCL grows while the host writes to a full target", func() (bool, string) {
		if err := s.firstErr(); err != nil {
			t.Fatalf("a host write failed while only the target was full: %v", err)
		}
		st1 = d.mig("fa")
		return st1.DCLBytes > dcl0, migString(st1)
	})
	if st1.State != "interrupted" {
		t.Logf("note: pair left interrupted while the tmpfs is still full: %s", migString(st1))
	}
	t.Logf("DCL grew from %d to %d bytes: %s", dcl0, st1.DCLBytes, migString(st1))

	if out, err := exec.Command("mount", "-o", "remount,size=160M", mnt).CombinedOutput(); err != nil {
		t.Fatalf("enlarge the tmpfs: %v: %s", err, out)
	}
	st2 := d.waitMig("fa", syncTimeout, "synced")
	t.Logf("resynced after the tmpfs grew: %s", migString(st2))
	s.waitAcked(t, 20, "after the resync")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	qh.close()
	if st := d.mig("fa"); st.State != "synced" || st.DCLBytes != 0 {
		t.Errorf("pair after the host stopped: %s, want synced with an empty DCL", migString(st))
	}

	want := cloneImages(base)
	apply(want, ws)
	compareRef(t, "source LUN fa", url, want[0], size)
	// Both legs equal: the daemon is idle (no host I/O, pair synced).
	compareFiles(t, "source and target volume after the resync", d.lun("fa").VolumePath, tpath)

	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", "fa")
	compareRef(t, "fa after the split (on the tmpfs)", url, want[0], size)
	if got := d.lun("fa").VolumePath; got != tpath {
		t.Errorf("after the split fa's volume is %s, want %s", got, tpath)
	}
	d.noDrops(t)
}

// TestMigrationPauseResumeNoRecopy: a sparse source with 16 MiB of data in
// a 64 MiB LUN, a slow copy paused in the middle, host writes while paused
// (below and above the copy cursor), then resume: the copy transfers no
// byte twice, only the data plus what the DCL re-copies.
func TestMigrationPauseResumeNoRecopy(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	const size = 64 << 20
	const nblocks = size / mBlock
	const data = 16 << 20
	d := StartDaemon(t, "")
	iqn := d.Export("pa", "64MiB", 512)
	d.OK("lun", "create", "pb", "--size", "64MiB")
	url := d.URL(iqn, 0)

	// 16 extents of 1 MiB at every 4 MiB.
	base := []image{make(image, nblocks)}
	q := startQIO(t, "host", url)
	for i := range 16 {
		first := (i * 4 << 20) / mBlock
		prefill(t, q, base[0], first, first+16, byte(0x40+i))
	}

	d.OK("migration", "create", "--source", "pa", "--target", "pb", "--max-mbps", "1")
	var st wire.Migration
	waitFor(t, stateTimeout, "the slow copy transfers 1 MiB", func() (bool, string) {
		st = d.mig("pa")
		return st.DataBytes >= 1<<20, migString(st)
	})
	pause := time.Now()
	d.OK("migration", "pause", "pa")
	if took := time.Since(pause); took > 2*time.Second {
		t.Errorf("migration pause of a copy throttled to 1 MB/s took %v: it should not wait for the throttle", took)
	}
	st = d.waitMig("pa", stateTimeout, "paused")
	t.Logf("paused: %s", migString(st))
	if st.DataBytes >= data || st.CursorBytes >= size {
		t.Fatalf("the copy finished before the pause (%s): make it slower", migString(st))
	}
	cursor := st.CursorBytes
	if cursor == 0 {
		cursor = st.DoneBytes
	}

	// While paused: 3 writes inside extents below the cursor (copied, so
	// they must go into the DCL) and 3 inside extents above it. All inside
	// the existing data, so the LUN still holds 16 MiB of data.
	var ws []hostWrite
	wr := func(block int, pat byte) {
		if err := q.write(int64(block)*mBlock, mBlock, pat); err != nil {
			t.Fatalf("write while paused: %v", err)
		}
		ws = append(ws, hostWrite{block: block, count: 1, pat: pat})
	}
	var below, above int
	for i := range 16 {
		first := (i * 4 << 20) / mBlock
		if int64(first+16)*mBlock <= cursor && below < 3 {
			wr(first+3+below, byte(0xa0+below))
			below++
		} else if int64(first)*mBlock >= cursor && above < 3 {
			wr(first+5+above, byte(0xb0+above))
			above++
		}
	}
	if below == 0 || above == 0 {
		t.Fatalf("cursor %d: no whole extent below or above it", cursor)
	}
	stp := d.mig("pa")
	t.Logf("paused after %d writes below and %d above the cursor: %s", below, above, migString(stp))
	if stp.DCLBytes < int64(below)*mBlock {
		t.Errorf("DCL holds %d bytes after %d paused 64 KiB writes below the cursor, want at least %d", stp.DCLBytes, below, below*mBlock)
	}
	if stp.DataBytes != st.DataBytes {
		t.Errorf("a paused pair copied data: %d -> %d bytes", st.DataBytes, stp.DataBytes)
	}

	d.OK("migration", "set", "pa", "--speed", "highest", "--max-mbps", "0")
	d.OK("migration", "resume", "pa")
	end := d.waitMig("pa", syncTimeout, "synced")
	t.Logf("synced: %s", migString(end))
	total := end.DataBytes + end.RecopiedBytes
	if end.DataBytes > data {
		t.Errorf("the initial copy transferred %d bytes of a LUN holding %d: something was copied twice (%s)", end.DataBytes, data, migString(end))
	}
	if total > data+stp.DCLBytes {
		t.Errorf("copied %d bytes in all (data %d + re-copied %d), more than the LUN's data %d + the DCL %d (%s)",
			total, end.DataBytes, end.RecopiedBytes, data, stp.DCLBytes, migString(end))
	}
	if end.RecopiedBytes < int64(below)*mBlock {
		t.Errorf("re-copied %d bytes, but %d regions below the cursor changed while paused", end.RecopiedBytes, below)
	}

	q.close()
	want := cloneImages(base)
	apply(want, ws)
	compareRef(t, "source LUN pa", url, want[0], size)
	compareFiles(t, "source and target after the resume", d.lun("pa").VolumePath, d.lun("pb").VolumePath)
}

// TestMigrationRefusals: every refused pair or split names its condition,
// and nothing changed.
func TestMigrationRefusals(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("ra", "32MiB", 512)
	d.OK("lun", "create", "rsmall", "--size", "16MiB")
	d.OK("lun", "create", "r4k", "--size", "32MiB", "--block-size", "4096")
	d.OK("lun", "create", "rmapped", "--size", "32MiB")
	d.OK("target", "map", iqn, "rmapped", "--lun", "1")
	d.OK("lun", "create", "rb", "--size", "32MiB")
	d.OK("lun", "create", "rc", "--size", "32MiB")
	q := startQIO(t, "host", d.URL(iqn, 0))
	prefill(t, q, make(image, 32<<20/mBlock), 0, 128, 0x55) // 8 MiB
	q.close()

	create := func(src, tgt string) []string {
		return []string{"migration", "create", "--source", src, "--target", tgt, "--max-mbps", "1"}
	}
	d.Fail(1, []string{"rsmall", "smaller"}, create("ra", "rsmall")...)
	d.Fail(1, []string{"r4k", "block size"}, create("ra", "r4k")...)
	d.Fail(1, []string{"rmapped", "mapped", iqn}, create("ra", "rmapped")...)

	d.OK(create("ra", "rb")...)
	d.Fail(1, []string{"ra", "pair"}, create("ra", "rc")...)
	d.Fail(1, []string{"rb", "pair"}, create("rc", "rb")...)
	d.Fail(1, []string{"ra", "pair"}, create("rc", "ra")...)
	d.Fail(1, []string{"ra", "not synced"}, "migration", "split", "ra")
	d.OK("migration", "pause", "ra")
	d.Fail(1, []string{"ra", "not synced", "paused"}, "migration", "split", "ra")
	d.Fail(1, []string{"rb", "migration"}, "target", "map", iqn, "rb", "--lun", "2")
	d.Fail(1, []string{"rb", "pair"}, "lun", "delete", "rb")

	var list []wire.Migration
	d.JSON(&list, "migration", "list")
	if len(list) != 1 || list[0].Source != "ra" || list[0].Target != "rb" || list[0].State != "paused" {
		t.Errorf("after the refusals, migration list: %+v, want only ra -> rb paused", list)
	}
	var tg wire.Target
	d.JSON(&tg, "target", "show", iqn)
	if len(tg.LUNs) != 2 {
		t.Errorf("target %s after the refused map: %+v, want ra and rmapped only", iqn, tg.LUNs)
	}
	// Cancel: the target LUN can be mapped again, the source is untouched.
	d.OK("migration", "cancel", "ra")
	d.OK("target", "map", iqn, "rb", "--lun", "2")
	qemuIOOK(t, d.URL(iqn, 0), fmt.Sprintf("read -P %d 0 8M", 0x55))
}
