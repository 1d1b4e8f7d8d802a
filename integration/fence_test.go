package integration

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// hostInitiator logs in to url with lmtgt's own initiator under another
// initiator name: a host that uses persistent reservations.
func hostInitiator(t testing.TB, url, name string) *iscsivol.Volume {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := iscsivol.Open(ctx, url, iscsivol.Config{Initiator: name, ReplacementTimeout: 10 * time.Second}, nil)
	if err != nil {
		t.Fatalf("host %s: open %s: %v", name, url, err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// reservingHost opens url as a cluster host that registers key and holds
// a WRITE EXCLUSIVE reservation with it.
func reservingHost(t testing.TB, url string, key uint64) *iscsivol.Volume {
	t.Helper()
	host := hostInitiator(t, url, "iqn.2026-11.org.lmtgt.test:cluster-host")
	if err := host.Client().PRRegister(key); err != nil {
		t.Fatal(err)
	}
	if err := host.Client().PRReserve(key, iscsivol.PRWriteExclusive); err != nil {
		t.Fatal(err)
	}
	return host
}

// fencedPair is the setup of the fence tests that start fenced: a 16 MiB
// LUN of Linux tgt imported into a new daemon (importForMigration) and the
// pair imp -> loc at low speed, so lmtgt holds its fence on tgt's LUN. It
// returns the old array, the daemon and the URL hosts write imp through.
func fencedPair(t *testing.T) (*oldArray, *Daemon, string) {
	t.Helper()
	needTools(t, "qemu-io")
	old := startOldArray(t, 16<<20, "", "")
	d := StartDaemon(t, "")
	url := d.URL(old.importForMigration(d, "16MiB"), 0)
	d.OK("migration", "create", "--source", "imp", "--target", "loc", "--speed", "low")
	return old, d, url
}

// strayWrite writes pattern pat at block blk (64 KiB blocks) straight to
// the old array with qemu-io (libiscsi) and reports whether it failed.
func strayWrite(t testing.TB, url string, blk int64, pat byte) (failed bool, out string) {
	t.Helper()
	r := qemuIO(t, url, "write -P "+itoa(int(pat))+" "+itoa(int(blk*mBlock))+" "+itoa(mBlock))
	s := r.Stdout + r.Stderr
	return r.Code != 0 || strings.Contains(s, "failed") || strings.Contains(s, "error"), s
}

func itoa(n int) string { return strconv.Itoa(n) }

// backingBlock reads block blk of a tgt backing file.
func backingBlock(t testing.TB, path string, blk int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, mBlock)
	if _, err := f.ReadAt(b, blk*mBlock); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFenceTgt: Linux tgt plays the old array. While the imported LUN is
// the source of a pair, lmtgt holds WRITE EXCLUSIVE on tgt's LUN: a stray
// host write straight to tgt (qemu-io, libiscsi) fails with RESERVATION
// CONFLICT and changes nothing there, through a kill -9 and restart of
// lmtgt (tgt then sees a new I_T nexus and lmtgt re-takes its own
// reservation) and after the split; a reservation another initiator holds
// refuses migration create, naming it, until --preempt; every write
// acknowledged through lmtgt is on the local LUN after the split; lun
// delete releases the fence.
func TestFenceTgt(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	const size = 16 << 20
	old := startOldArray(t, size, "", "")
	d := StartDaemon(t, "")
	iqn := old.importForMigration(d, "16MiB")
	url := d.URL(iqn, 0)
	nblocks := size / mBlock
	want := make(image, nblocks)
	write := func(blk int, pat byte) {
		t.Helper()
		qemuIOOK(t, url, "write -P "+itoa(int(pat))+" "+itoa(blk*mBlock)+" "+itoa(mBlock))
		want[blk] = int(pat)
	}
	write(0, 0x11)

	// Before any pair the old path is open (nothing fenced yet).
	if failed, out := strayWrite(t, old.url(), 5, 0x55); failed {
		t.Fatalf("write straight to tgt before any pair: %s", out)
	}
	want[5] = 0x55

	// A host that holds a reservation on the old array refuses the fence.
	const hostKey = 0xc0ffee
	host := reservingHost(t, old.url(), hostKey)
	d.Fail(1, []string{"0xc0ffee", "--preempt"}, "migration", "create", "--source", "imp", "--target", "loc")
	if _, _, ok := d.migTry("imp"); ok {
		t.Fatal("a refused migration create left a pair")
	}
	// (lmtgt's own registration for access, made at import, stays.)
	if st, err := host.Client().ReadPRStatus(); err != nil || len(st.Registrations) != 2 || st.HolderKey != hostKey || st.Type != iscsivol.PRWriteExclusive {
		t.Fatalf("after a refused create the old array's reservation changed: %+v %v", st, err)
	}

	r := d.Run("migration", "create", "--source", "imp", "--target", "loc", "--speed", "low", "--preempt")
	if r.Code != 0 {
		t.Fatalf("migration create --preempt: %s", r)
	}
	if strings.Contains(r.Stderr, "WARNING") {
		t.Fatalf("a fenced migration gave the bypass warning: %s", r)
	}
	var m wire.Migration
	d.JSON(&m, "migration", "show", "imp")
	if !strings.HasPrefix(m.Fence, "held") || !strings.Contains(m.Fence, "preempted key 0xc0ffee") {
		t.Fatalf("migration show: fence %q, want held, preempting the host's key", m.Fence)
	}
	var l wire.LUN
	d.JSON(&l, "lun", "show", "imp")
	if l.Remote == nil || !strings.HasPrefix(l.Remote.Fence, "held") {
		t.Fatalf("lun show imp: remote %+v, want the fence held", l.Remote)
	}

	stray := func(when string, blk int64) {
		t.Helper()
		before := backingBlock(t, old.backing, blk)
		failed, out := strayWrite(t, old.url(), blk, 0xee)
		if !failed {
			t.Fatalf("%s: a write straight to tgt went through the fence: %s", when, out)
		}
		if !bytes.Equal(before, backingBlock(t, old.backing, blk)) {
			t.Fatalf("%s: the refused stray write changed tgt's LUN", when)
		}
		if _, err := host.WriteAt(make([]byte, 4096), blk*mBlock); !iscsivol.IsReservationConflict(err) {
			t.Fatalf("%s: the host's own initiator wrote through the fence: %v, want RESERVATION CONFLICT", when, err)
		}
		t.Logf("%s: stray write refused: %s", when, strings.TrimSpace(out))
	}
	stray("in dual-write", 6)
	write(1, 0x22)

	// kill -9 and restart lmtgt: the fence is taken again at open, and
	// lmtgt's own writes through its new session to tgt go through.
	d.Restart(true)
	if hits := d.logHas("fence held"); len(hits) == 0 {
		t.Fatal("no \"fence held\" line after the restart")
	}
	m = wire.Migration{}
	d.JSON(&m, "migration", "show", "imp")
	if !strings.HasPrefix(m.Fence, "held") {
		t.Fatalf("after a restart: fence %q, want held", m.Fence)
	}
	write(2, 0x33)
	stray("after a kill -9 and restart of lmtgt", 7)
	d.OK("migration", "set", "imp", "--speed", "highest")
	d.waitMig("imp", syncTimeout, "synced")
	write(3, 0x44)
	d.OK("migration", "split", "imp")

	// Every acknowledged write is on the LUN, now on a local file; the old
	// array's LUN (now loc's volume) stays fenced until loc is deleted.
	compareRef(t, "imported LUN after the split", url, want, size)
	var lloc wire.LUN
	d.JSON(&lloc, "lun", "show", "loc")
	if lloc.Remote == nil || !strings.HasPrefix(lloc.Remote.Fence, "held") {
		t.Fatalf("lun show loc after the split: remote %+v, want the fence held", lloc.Remote)
	}
	stray("after the split", 8)
	d.OK("lun", "delete", "loc")
	if failed, out := strayWrite(t, old.url(), 9, 0x99); failed {
		t.Fatalf("write straight to tgt after lun delete released the fence: %s", out)
	}
}

// TestFenceLost: another initiator preempts lmtgt's fence on tgt during
// the pair. Host writes through lmtgt then fail (never succeed on a
// source that is no longer fenced), `lun show` and `migration show` say
// the fence is lost; a cancel releases what is left, and the old path is
// open again.
func TestFenceLost(t *testing.T) {
	old, d, url := fencedPair(t)
	qemuIOOK(t, url, "write -P 17 0 65536")

	// Another initiator takes the reservation over.
	host := hostInitiator(t, old.url(), "iqn.2026-11.org.lmtgt.test:intruder")
	const hostKey = 0xbad
	if err := host.Client().PRRegister(hostKey); err != nil {
		t.Fatal(err)
	}
	st, err := host.Client().ReadPRStatus()
	if err != nil || st.Type != iscsivol.PRWriteExclusive || st.HolderKey == 0 {
		t.Fatalf("tgt during the pair: %+v %v: want lmtgt's write-exclusive reservation", st, err)
	}
	if err := host.Client().PRPreempt(hostKey, st.HolderKey, iscsivol.PRWriteExclusive); err != nil {
		t.Fatal(err)
	}

	// A write through lmtgt now fails: lmtgt cannot write its source.
	r := qemuIO(t, url, "write -P 34 65536 65536")
	if out := r.Stdout + r.Stderr; r.Code == 0 && !strings.Contains(out, "failed") && !strings.Contains(out, "error") {
		t.Fatalf("a write through lmtgt succeeded while another initiator holds the old LUN's reservation: %s", r)
	}
	var l wire.LUN
	d.JSON(&l, "lun", "show", "imp")
	if l.Remote == nil || !strings.HasPrefix(l.Remote.Fence, "lost") {
		t.Fatalf("lun show imp after the fence was taken: remote %+v, want the fence lost", l.Remote)
	}
	var m wire.Migration
	d.JSON(&m, "migration", "show", "imp")
	if !strings.HasPrefix(m.Fence, "lost") || !strings.Contains(m.Fence, "0xbad") {
		t.Fatalf("migration show: fence %q, want lost, naming key 0xbad", m.Fence)
	}

	// The intruder lets go; cancel releases lmtgt's side and the old path
	// is open again.
	if err := host.Client().ReleaseFence(hostKey, true); err != nil {
		t.Fatal(err)
	}
	d.OK("migration", "cancel", "imp")
	if failed, out := strayWrite(t, old.url(), 3, 0x33); failed {
		t.Fatalf("write straight to tgt after the cancel released the fence: %s", out)
	}
	var l2 wire.LUN // a fresh value: fence is omitted when empty
	d.JSON(&l2, "lun", "show", "imp")
	if l2.Remote == nil || l2.Remote.Fence != "" {
		t.Fatalf("lun show imp after the cancel: remote %+v, want no fence", l2.Remote)
	}
}

// TestFenceTgtRestart: Linux tgt keeps persistent reservations in memory
// only, so a restart of the old array drops lmtgt's fence. lmtgt's
// initiator takes it again with the first command of the new session:
// after the restart a stray write straight to tgt is refused again.
func TestFenceTgtRestart(t *testing.T) {
	old, d, url := fencedPair(t)
	if failed, out := strayWrite(t, old.url(), 4, 0x44); !failed {
		t.Fatalf("stray write before the restart went through the fence: %s", out)
	}

	old.stop()
	old.restart()
	// The old array forgot every reservation.
	probe := hostInitiator(t, old.url(), "iqn.2026-11.org.lmtgt.test:probe")
	if st, err := probe.Client().ReadPRStatus(); err != nil || st.Type != iscsivol.PRNone {
		t.Fatalf("tgt after a restart: %+v %v: want no reservation (tgt keeps none)", st, err)
	}
	probe.Close()
	// lmtgt logs in again; the first command of the new session (a host
	// write through lmtgt, or the copier's read) takes the fence again
	// before it is sent.
	qemuIOOK(t, url, "write -P 85 65536 65536")
	if failed, out := strayWrite(t, old.url(), 4, 0x44); !failed {
		t.Fatalf("stray write after tgt's restart went through: the fence was not taken again: %s", out)
	}
	var l wire.LUN
	d.JSON(&l, "lun", "show", "imp")
	if l.Remote == nil || !strings.HasPrefix(l.Remote.Fence, "held") {
		t.Fatalf("lun show imp after tgt's restart: remote %+v, want the fence held", l.Remote)
	}
	qemuIOOK(t, url, "read -P 85 65536 65536")
}
