package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// kill kills tgtd with kill -9 (the old array crashes: its connections are
// reset, nothing is logged out) and waits until it is gone. Its backing
// file keeps what tgtd wrote (the page cache survives a kill -9).
func (g *oldArray) kill() { g.Kill(stopTimeout) }

// remoteOf is the remote path state of LUN name as `lun show` gives it:
// the JSON session state and the text line.
func remoteOf(t testing.TB, d *Daemon, name string) (wire.LUN, string) {
	t.Helper()
	var l wire.LUN
	d.JSON(&l, "lun", "show", name)
	text := d.OK("lun", "show", name)
	if l.Remote == nil {
		t.Fatalf("lun show %s: no remote: %+v", name, l)
	}
	return l, text
}

// waitPathUp waits until lun show says the remote path of LUN name is up.
func waitPathUp(t testing.TB, d *Daemon, name string) {
	t.Helper()
	waitFor(t, stateTimeout, "lun show: the remote path of "+name+" up", func() (bool, string) {
		l, text := remoteOf(t, d, name)
		return l.Remote.Session == "up" && strings.Contains(text, "path up"), l.Remote.Session
	})
}

// TestImportRemoteRestart: Linux tgt, the other array, is killed (kill -9)
// and restarted while lmtgt migrates, during the initial copy and during
// dual-write, with a host writing through lmtgt, in both directions:
//   - import: tgt's LUN, imported, is the pair's source (a local file the
//     target);
//   - export: a local LUN is the source and tgt's LUN, imported with
//     --identity own, the target.
//
// lmtgt runs with --remote-replacement-timeout 2s. With tgt down, lun show
// says the path is down (within the deadline, which the 30 s default
// would not meet) and the pair goes interrupted; host writes keep
// succeeding when the remote is the target, and fail (after the 2 s) when
// it is the source. When tgt is back the pair resumes by itself, syncs
// and splits, and the LUN, its new data volume and the old one all hold
// every acknowledged write.
func TestImportRemoteRestart(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "tgtd")
	for _, dir := range []string{"import", "export"} {
		for _, phase := range []string{"copy", "dual-write"} {
			t.Run(dir+"/"+phase, func(t *testing.T) { remoteRestart(t, dir == "import", phase) })
		}
	}
}

func remoteRestart(t *testing.T, imp bool, phase string) {
	const size = 32 << 20
	const nblocks = size / mBlock
	old := startOldArray(t, size, "", "")
	d := StartDaemon(t, "", "--remote-replacement-timeout", "2s")
	m := &lunModel{t: t, img: make(image, nblocks), next: 10}

	// src is the pair's source LUN (the one hosts use), dst its target;
	// remote names the one on tgt.
	var src, dst, remote, iqn string
	if imp {
		src, dst, remote = "imp", "loc", "imp"
		q0 := startQIO(t, "prefill", old.url())
		prefill(t, q0, m.img, 0, nblocks*3/4, 0x21)
		q0.close()
		iqn = old.importForMigration(d, "32MiB")
		m.url = d.URL(iqn, 0)
	} else {
		src, dst, remote = "src", "far", "far"
		iqn = d.Export("src", "32MiB", 512)
		m.url = d.URL(iqn, 0)
		q0 := startQIO(t, "prefill", m.url)
		prefill(t, q0, m.img, 0, nblocks*3/4, 0x21)
		q0.close()
		d.OK("lun", "import", "far", "--from", old.url(), "--identity", "own")
	}
	volSrc, volDst := d.lun(src).Volume, d.lun(dst).Volume
	if l, text := remoteOf(t, d, remote); l.Remote.Session != "up" || !strings.Contains(text, "path up") {
		t.Fatalf("before the outage: lun show %s: session %q, want up:\n%s", remote, l.Remote.Session, text)
	}

	var blocks [][2]int
	for b := range nblocks {
		blocks = append(blocks, [2]int{0, b})
	}
	seed := time.Now().UnixNano()
	t.Logf("host stream seed %d", seed)
	startHost := func() (*qio, *stream) {
		q := startQIO(t, "host", m.url)
		seed++
		return q, runStream("host", seed, []*qio{q}, blocks, m.next)
	}

	if phase == "copy" {
		// 32 MiB at 2 MB/s: the copy is still running when tgt dies.
		d.OK("migration", "create", "--source", src, "--target", dst, "--max-mbps", "2")
		waitFor(t, stateTimeout, "the copy under way", func() (bool, string) {
			st := d.mig(src)
			return st.State == "copying" && st.CopiedBytes > 0, migString(st)
		})
	} else {
		d.OK("migration", "create", "--source", src, "--target", dst, "--speed", "highest")
		d.waitMig(src, syncTimeout, "synced")
	}
	if st := d.mig(src); st.Vehicle != "remote-iscsi" {
		t.Errorf("pair with a leg on tgt: vehicle %q, want remote-iscsi (%s)", st.Vehicle, migString(st))
	}
	q, s := startHost()
	s.waitAcked(t, 5, "before tgt is killed")

	killed := time.Now()
	old.kill()
	t.Logf("tgt killed during %s", phase)
	waitFor(t, 20*time.Second, "lun show: the remote path down (--remote-replacement-timeout 2s)", func() (bool, string) {
		l, text := remoteOf(t, d, remote)
		return l.Remote.Session == "down" && strings.Contains(text, "path down"), l.Remote.Session
	})
	t.Logf("path down %v after the kill", time.Since(killed).Round(time.Millisecond))
	if time.Since(killed) < 2*time.Second {
		t.Errorf("the path went down %v after the kill, before the 2s replacement timeout", time.Since(killed))
	}
	st := d.waitMig(src, stateTimeout, "interrupted")
	t.Logf("pair with tgt down: %s", migString(st))
	if st.State != "interrupted" || st.Reason == "" {
		t.Fatalf("pair with tgt down: %s, want interrupted with a reason", migString(st))
	}
	if imp {
		// The remote is the source: host writes fail once the path is
		// down (the first one after the replacement timeout).
		waitFor(t, ioTimeout, "a host write failing with the source down", func() (bool, string) {
			return s.firstErr() != nil, fmt.Sprintf("%d acknowledged", s.acked())
		})
		q.kill()
		pending, acked := m.absorb(s.stop())
		t.Logf("host with the source down: %d writes acknowledged, failed: %v", acked, pending)
		if pending == nil || pending.err == nil {
			t.Fatalf("no host write failed with the source down")
		}
		old.restart()
		waitPathUp(t, d, remote)
		m.check("with tgt back", pending)
		// A sync of the source that lmtgt itself issued during the outage
		// (a copy checkpoint) failed: the next host SYNCHRONIZE CACHE
		// reports it once (writes acknowledged before may be gone from
		// the array), the one after succeeds.
		// (qemu skips a flush without a write before it: rewrite block 0
		// with what it holds.)
		same := fmt.Sprintf("write -P %d 0 %d", m.img[0], mBlock)
		if r := qemuIO(t, m.url, same, "flush"); r.Code != 0 || strings.Contains(r.Stdout+r.Stderr, "failed") {
			t.Logf("first host flush after the outage: %s", strings.TrimSpace(r.Stdout+r.Stderr))
		}
		qemuIOOK(t, m.url, same, "flush")
	} else {
		// The remote is the target: host writes go on.
		s.waitAcked(t, 20, "with the target down")
		if err := s.firstErr(); err != nil {
			t.Fatal(err)
		}
		old.restart()
	}
	t.Logf("tgt restarted")
	waitFor(t, 2*stateTimeout, "the pair resuming by itself with tgt back", func() (bool, string) {
		st := d.mig(src)
		if st.State == "faulty" || st.State == "cancelled" {
			t.Fatalf("pair went %s: %s", st.State, migString(st))
		}
		return st.State == "copying" || st.State == "synced", migString(st)
	})
	waitPathUp(t, d, remote)
	if imp {
		q, s = startHost()
	}
	d.OK("migration", "set", src, "--speed", "highest", "--max-mbps", "0")
	d.waitMig(src, syncTimeout, "synced")
	s.waitAcked(t, 10, "in dual-write after the outage")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	q.close()
	m.absorb(ws)
	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", src)
	t.Logf("split: pause %.3f ms", sr.PauseMS)

	ls, ld := d.lun(src), d.lun(dst)
	if ls.Volume != volDst || ld.Volume != volSrc {
		t.Fatalf("after the split %s is on %s and %s on %s, want swapped (%s, %s)", src, ls.Volume, dst, ld.Volume, volDst, volSrc)
	}
	m.check("after the split", nil)
	compareRef(t, "the old array's LUN after the split", old.url(), m.img, size)
	if imp {
		compareRef(t, "the imported LUN's local file after the split", ls.VolumePath, m.img, size)
	} else {
		compareRef(t, "the local LUN's old file after the split", ld.VolumePath, m.img, size)
	}
}

// TestImportRemoteRestartWithinTimeout: tgt, the source of an import
// migration in dual-write, is killed (kill -9) and restarted within the
// replacement timeout (the default, 30 s). lmtgt's initiator logs in again
// and re-issues what was in flight: the host's writes through lmtgt only
// stall, none fails, the path is up again, and after the split the LUN,
// its local file and the old array hold every acknowledged write.
func TestImportRemoteRestartWithinTimeout(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "tgtd")
	const size = 16 << 20
	const nblocks = size / mBlock
	old := startOldArray(t, size, "", "")
	m := &lunModel{t: t, img: make(image, nblocks), next: 10}
	q0 := startQIO(t, "prefill", old.url())
	prefill(t, q0, m.img, 0, nblocks/2, 0x31)
	q0.close()
	d := StartDaemon(t, "")
	iqn := old.importForMigration(d, "16MiB")
	m.url = d.URL(iqn, 0)
	d.OK("migration", "create", "--source", "imp", "--target", "loc", "--speed", "highest")
	d.waitMig("imp", syncTimeout, "synced")

	var blocks [][2]int
	for b := range nblocks {
		blocks = append(blocks, [2]int{0, b})
	}
	q := startQIO(t, "host", m.url)
	s := runStream("host", time.Now().UnixNano(), []*qio{q}, blocks, m.next)
	defer s.stop()
	s.waitAcked(t, 10, "before tgt is killed")
	old.kill()
	waitFor(t, 20*time.Second, "lun show: the remote path no longer up", func() (bool, string) {
		l, _ := remoteOf(t, d, "imp")
		return l.Remote.Session != "up", l.Remote.Session
	})
	old.restart()
	waitPathUp(t, d, "imp")
	s.waitAcked(t, 20, "after tgt came back")
	if err := s.firstErr(); err != nil {
		t.Fatalf("a host write failed although tgt was back within the replacement timeout: %v", err)
	}
	ws := s.stop()
	q.close()
	m.absorb(ws)
	d.waitMig("imp", syncTimeout, "synced")
	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", "imp")
	li := d.lun("imp")
	m.check("after the split", nil)
	compareRef(t, "the imported LUN's local file after the split", li.VolumePath, m.img, size)
	compareRef(t, "the old array after the split", old.url(), m.img, size)
}
