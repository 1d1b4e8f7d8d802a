package integration

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// `lun import` with Linux tgt as the old array: the real lmtgt binary
// imports tgt's LUN through its own initiator and serves it.

// luDesignators is the text iscsi-inq prints for the VPD 0x83 designators
// whose association is the logical unit (the target port ones name the
// server, not the LUN, and differ on purpose).
func luDesignators(t testing.TB, url string) string {
	t.Helper()
	out := vpd(t, url, 0x83)
	var keep []string
	for _, block := range strings.Split(out, "DEVICE DESIGNATOR #")[1:] {
		if strings.Contains(block, "Association:(0) LOGICAL_UNIT") {
			_, body, _ := strings.Cut(block, "\n") // drop the designator number
			keep = append(keep, body)
		}
	}
	if len(keep) == 0 {
		t.Fatalf("iscsi-inq -c 131 %s: no logical-unit designator:\n%s", iscsivol.Redact(url), out)
	}
	return strings.Join(keep, "--\n")
}

// identityOf reads a LUN's identity with lmtgt's own initiator (bytes, not
// iscsi-inq's rendering).
func identityOf(t testing.TB, url string) iscsivol.Identity {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := iscsivol.Open(ctx, url, iscsivol.Config{}, nil)
	if err != nil {
		t.Fatalf("open %s: %v", iscsivol.Redact(url), err)
	}
	defer v.Close()
	id, err := v.Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestImportTgtAdopt: lun import from tgt with CHAP and --identity adopt
// (the default). A wrong secret is refused, naming the cause and never the
// secret; writes through lmtgt land on tgt's LUN; lmtgt presents tgt's
// serial, LU designators, vendor and product; lun show names the remote and
// its session state and never a secret; all of it survives a restart;
// delete logs out and leaves the data on tgt.
func TestImportTgtAdopt(t *testing.T) {
	needTools(t, "qemu-io", "iscsi-inq")
	const user, secret, wrong = "olduser", "old-secret-4711", "wrong-secret-0815"
	old := startOldArray(t, 64<<20, user, secret)
	oldURL := old.chapURL(user, secret)
	d := StartDaemon(t, "")

	// A wrong secret: refused, says why, changes nothing, no secret shown.
	r := d.Run("lun", "import", "imp", "--from", old.url(), "--chap-user", user, "--chap-secret-file", writeSecret(t, "wrong", wrong))
	if r.Code == 0 || !strings.Contains(r.Stderr, "login refused") || !strings.Contains(r.Stderr, "CHAP") {
		t.Fatalf("import with a wrong secret: want a refusal naming the login/CHAP: %s", r)
	}
	if strings.Contains(r.Stdout+r.Stderr, wrong) {
		t.Fatalf("the error shows the secret: %s", r)
	}
	if out := d.OK("lun", "list"); strings.Contains(out, "imp") {
		t.Fatalf("a refused import left a LUN:\n%s", out)
	}
	// A secret in the URL is refused (it would show in ps and history).
	d.Fail(1, []string{"--chap-user"}, "lun", "import", "imp", "--from", oldURL)

	d.OK("lun", "import", "imp", "--from", old.url(), "--chap-user", user, "--chap-secret-file", writeSecret(t, "secret", secret))
	iqn := d.exportLUN("imp")
	lmURL := d.URL(iqn, 0)

	check := func(when string) {
		t.Helper()
		var l wire.LUN
		d.JSON(&l, "lun", "show", "imp")
		if l.Remote == nil || l.Remote.URL != old.url() || l.Remote.Session != "up" || l.Remote.CHAPUser != user {
			t.Fatalf("%s: lun show remote = %+v, want %s, session up, user %s", when, l.Remote, old.url(), user)
		}
		if l.Identity != "adopted" || l.Vendor != "IET" || l.Size != 64<<20 || l.BlockSize != 512 {
			t.Fatalf("%s: lun show = identity %q vendor %q size %d block %d", when, l.Identity, l.Vendor, l.Size, l.BlockSize)
		}
		text := d.OK("lun", "show", "imp")
		if !strings.Contains(text, old.url()+", path up") {
			t.Fatalf("%s: lun show does not say where the data lives and that the path is up:\n%s", when, text)
		}
		raw, _ := json.Marshal(l)
		for _, out := range []string{text, string(raw), d.OK("lun", "list"), d.OK("lun", "list", "-o", "json")} {
			if strings.Contains(out, secret) {
				t.Fatalf("%s: output shows the CHAP secret:\n%s", when, out)
			}
		}
		// Identity: the same as tgt's, byte for byte and as iscsi-inq sees it.
		if a, b := vpd(t, lmURL, 0x80), vpd(t, oldURL, 0x80); a != b {
			t.Fatalf("%s: VPD 0x80 through lmtgt %q, from tgt %q", when, a, b)
		}
		if a, b := luDesignators(t, lmURL), luDesignators(t, oldURL); a != b {
			t.Fatalf("%s: VPD 0x83 LU designators through lmtgt:\n%s\nfrom tgt:\n%s", when, a, b)
		}
		got, want := identityOf(t, lmURL), identityOf(t, oldURL)
		if got.Vendor != want.Vendor || got.Product != want.Product || got.Revision != want.Revision ||
			got.Serial != want.Serial || string(got.Designators) != string(want.Designators) {
			t.Fatalf("%s: identity through lmtgt %+v, from tgt %+v", when, got, want)
		}
		if strings.Contains(string(got.Designators), "LMTGT") {
			t.Fatalf("%s: lmtgt's own T10 designator is still presented", when)
		}
	}
	check("after import")

	// Writes through lmtgt land on tgt's LUN.
	qemuIOOK(t, lmURL, "write -P 0xa5 0 1M", "write -P 0x5a 40M 64k", "write -P 0x33 1536 512")
	qemuIOOK(t, oldURL, "read -P 0xa5 0 1536", "read -P 0x33 1536 512", "read -P 0xa5 2048 1046528", "read -P 0x5a 40M 64k")
	// And tgt's data is read through lmtgt.
	qemuIOOK(t, oldURL, "write -P 0x77 60M 128k")
	qemuIOOK(t, lmURL, "read -P 0x77 60M 128k")

	d.Restart(false)
	check("after a restart")
	qemuIOOK(t, lmURL, "read -P 0xa5 0 1536", "read -P 0x5a 40M 64k", "write -P 0x44 8M 64k")
	qemuIOOK(t, oldURL, "read -P 0x44 8M 64k")

	if lines := d.logHas(secret, wrong); len(lines) > 0 {
		t.Fatalf("the daemon logged the CHAP secret:\n%s", strings.Join(lines, "\n"))
	}

	// Delete: logs out, leaves tgt's data alone.
	d.OK("target", "unmap", iqn, "imp")
	if s := old.initiators(); !strings.Contains(s, "lmtgt") {
		t.Fatalf("tgt shows no session of lmtgt's initiator before delete: %q", s)
	}
	d.OK("lun", "delete", "imp")
	waitFor(t, 30*time.Second, "lmtgt's session on tgt gone after lun delete", func() (bool, string) {
		s := old.initiators()
		return !strings.Contains(s, "lmtgt"), s
	})
	qemuIOOK(t, oldURL, "read -P 0xa5 0 1536", "read -P 0x44 8M 64k")
	if st, err := os.Stat(old.backing); err != nil || st.Size() != 64<<20 {
		t.Fatalf("tgt's backing file after lun delete: %v %v", st, err)
	}
}

// TestImportTgtOwn: --identity own keeps lmtgt's generated identity.
func TestImportTgtOwn(t *testing.T) {
	needTools(t, "qemu-io", "iscsi-inq")
	old := startOldArray(t, 16<<20, "", "")
	d := StartDaemon(t, "")
	d.OK("lun", "import", "own", "--from", old.url(), "--identity", "own")
	iqn := d.exportLUN("own")
	lmURL := d.URL(iqn, 0)
	var l wire.LUN
	d.JSON(&l, "lun", "show", "own")
	if l.Identity != "own" || l.Remote == nil || l.Remote.Session != "up" {
		t.Fatalf("lun show: identity %q remote %+v", l.Identity, l.Remote)
	}
	got, theirs := identityOf(t, lmURL), identityOf(t, old.url())
	if got.Serial != l.Serial || got.Serial == theirs.Serial || got.Vendor != "LMTGT" {
		t.Fatalf("identity through lmtgt %+v (lun serial %q), tgt's %+v: want lmtgt's own", got, l.Serial, theirs)
	}
	if a, b := luDesignators(t, lmURL), luDesignators(t, old.url()); a == b {
		t.Fatalf("own identity presents tgt's designators:\n%s", a)
	}
	qemuIOOK(t, lmURL, "write -P 0x61 1M 64k")
	qemuIOOK(t, old.url(), "read -P 0x61 1M 64k")
	// The same external LUN cannot be imported twice.
	d.Fail(1, []string{old.url(), "already"}, "lun", "import", "again", "--from", old.url())
}

// TestImportLiveMigration: the live import. tgt's LUN, holding data, is
// imported (adopt), a host writes through lmtgt while the LUN migrates
// onto a local file and splits: every acknowledged write is on the LUN,
// its identity (tgt's) never changed, the old array holds the LUN as it
// was at the split, and a restart keeps the adopted identity.
func TestImportLiveMigration(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "iscsi-inq")
	const size = 32 << 20
	const nblocks = size / mBlock
	old := startOldArray(t, size, "", "")

	// Data already on the old array.
	base := []image{make(image, nblocks)}
	q0 := startQIO(t, "prefill", old.url())
	prefill(t, q0, base[0], 0, nblocks*3/4, 0x11)
	q0.close()

	d := StartDaemon(t, "")
	iqn := old.importForMigration(d, "32MiB")
	url := d.URL(iqn, 0)
	vpd80, vpd83 := vpd(t, url, 128), vpd(t, url, 131)
	if a, b := luDesignators(t, url), luDesignators(t, old.url()); a != b {
		t.Fatalf("imported LUN does not present tgt's designators:\n%s\n%s", a, b)
	}
	imp0 := d.lun("imp")

	var all [][2]int
	for b := 0; b < nblocks; b++ {
		all = append(all, [2]int{0, b})
	}
	q1 := startQIO(t, "host", url)
	s1 := runStream("host", 7, []*qio{q1}, all, 0)
	defer s1.stop()
	s1.waitAcked(t, 20, "before the pair is created")

	r := d.Run("migration", "create", "--source", "imp", "--target", "loc", "--speed", "highest")
	if r.Code != 0 {
		t.Fatalf("migration create: %s", r)
	}
	// tgt has persistent reservations: the old path is fenced (fence_test.go), no warning.
	if strings.Contains(r.Stderr, "WARNING") {
		t.Fatalf("migration create with a fenced imported source gave a warning: %s", r)
	}
	if len(d.logHas("old path fenced")) == 0 {
		t.Fatal("no \"old path fenced\" line in the daemon log")
	}
	d.waitMig("imp", syncTimeout, "synced")
	s1.waitAcked(t, 40, "in dual-write")

	from := time.Now()
	sr, _ := splitAll(t, d, []string{"imp"}) // retried if deferred (scale_test.go)
	to := time.Now()
	t.Logf("split: pause %.3f ms", sr.PauseMS)
	s1.waitAcked(t, 20, "after the split")
	w := s1.stop()
	if err := s1.firstErr(); err != nil {
		t.Fatal(err)
	}
	q1.close()
	t.Logf("host writes: %d, all acknowledged", len(w))

	want := cloneImages(base)
	apply(want, w)
	compareRef(t, "imported LUN after the split", url, want[0], size)
	if v := vpd(t, url, 128); v != vpd80 {
		t.Errorf("VPD 0x80 changed by the split:\nbefore:\n%s\nafter:\n%s", vpd80, v)
	}
	if v := vpd(t, url, 131); v != vpd83 {
		t.Errorf("VPD 0x83 changed by the split:\nbefore:\n%s\nafter:\n%s", vpd83, v)
	}
	var imp, loc wire.LUN
	d.JSON(&imp, "lun", "show", "imp")
	d.JSON(&loc, "lun", "show", "loc")
	if imp.Identity != "adopted" || imp.Remote != nil || imp.VolumeKind != "file" || imp.Serial != imp0.Serial {
		t.Errorf("after the split imp = identity %q remote %+v kind %q serial %q: want adopted, on a local file", imp.Identity, imp.Remote, imp.VolumeKind, imp.Serial)
	}
	if loc.Remote == nil || loc.Remote.URL != old.url() || loc.Identity != "own" {
		t.Errorf("after the split loc = remote %+v identity %q: want the old array's LUN, own identity", loc.Remote, loc.Identity)
	}
	// The old array holds the LUN as it was at the split (a cut of the
	// host's writes).
	if _, err := cutOf(base, []image{readImage(t, old.url())}, all, w, from, to); err != nil {
		t.Fatalf("the old array is not the LUN at the split: %v", err)
	}

	d.Restart(false)
	compareRef(t, "imported LUN after a restart", url, want[0], size)
	if v := vpd(t, url, 131); v != vpd83 {
		t.Errorf("VPD 0x83 changed by the restart:\nbefore:\n%s\nafter:\n%s", vpd83, v)
	}
	// Retire the old array's LUN: delete logs out, deletes nothing there.
	d.OK("lun", "delete", "loc")
	if st, err := os.Stat(old.backing); err != nil || st.Size() != size {
		t.Fatalf("tgt's backing file after lun delete: %v %v", st, err)
	}
	d.noDrops(t)
}

// TestImportRemoteDownAtStart: lmtgt starts while the old array is down.
// The imported LUN is offline and lun show says the remote is not open;
// when the array comes back the LUN comes online by itself, with its data.
func TestImportRemoteDownAtStart(t *testing.T) {
	needTools(t, "qemu-io")
	old := startOldArray(t, 16<<20, "", "")
	d := StartDaemon(t, "")
	d.OK("lun", "import", "imp", "--from", old.url())
	d.Export("other", "1MiB", 512)
	d.OK("target", "map", testIQN("other"), "imp")
	url := d.URL(testIQN("other"), 1)
	qemuIOOK(t, url, "write -P 0x42 0 64k")

	d.Stop()
	old.stop()
	d.Start(d.Portal)
	var l wire.LUN
	d.JSON(&l, "lun", "show", "imp")
	if l.State != "offline" || l.Remote == nil || l.Remote.Session != "not open" {
		t.Fatalf("with the old array down: state %q remote %+v, want offline and not open", l.State, l.Remote)
	}
	old.restart()
	waitFor(t, 60*time.Second, "the imported LUN back online", func() (bool, string) {
		d.JSON(&l, "lun", "show", "imp")
		return l.State == "online" && l.Remote != nil && l.Remote.Session == "up", l.State + " " + l.Offline
	})
	qemuIOOK(t, url, "read -P 0x42 0 64k")
}

// TestExportOntoRemote: the live export. A local LUN with data migrates
// onto an imported LUN (--identity own) under host writes and splits: the
// LUN keeps its own identity, its data now lives on tgt's LUN, and every
// acknowledged write is there.
func TestExportOntoRemote(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "iscsi-inq")
	const size = 16 << 20
	const nblocks = size / mBlock
	old := startOldArray(t, size, "", "")
	d := StartDaemon(t, "")
	iqn := d.Export("src", "16MiB", 512)
	url := d.URL(iqn, 0)
	d.OK("lun", "import", "far", "--from", old.url(), "--identity", "own")
	vpd80, vpd83 := vpd(t, url, 128), vpd(t, url, 131)

	base := []image{make(image, nblocks)}
	q0 := startQIO(t, "prefill", url)
	prefill(t, q0, base[0], 0, nblocks/2, 0x21)
	q0.close()
	var all [][2]int
	for b := 0; b < nblocks; b++ {
		all = append(all, [2]int{0, b})
	}
	q1 := startQIO(t, "host", url)
	s1 := runStream("host", 11, []*qio{q1}, all, 0)
	defer s1.stop()
	s1.waitAcked(t, 10, "before the pair is created")
	d.OK("migration", "create", "--source", "src", "--target", "far", "--speed", "highest")
	d.waitMig("src", syncTimeout, "synced")
	s1.waitAcked(t, 30, "in dual-write")
	d.OK("migration", "split", "src")
	s1.waitAcked(t, 10, "after the split")
	w := s1.stop()
	if err := s1.firstErr(); err != nil {
		t.Fatal(err)
	}
	q1.close()

	want := cloneImages(base)
	apply(want, w)
	compareRef(t, "exported LUN through lmtgt", url, want[0], size)
	compareRef(t, "exported LUN read directly from tgt", old.url(), want[0], size)
	if v := vpd(t, url, 128); v != vpd80 {
		t.Errorf("VPD 0x80 changed by the export:\n%s\n%s", vpd80, v)
	}
	if v := vpd(t, url, 131); v != vpd83 {
		t.Errorf("VPD 0x83 changed by the export:\n%s\n%s", vpd83, v)
	}
	var l wire.LUN
	d.JSON(&l, "lun", "show", "src")
	if l.Remote == nil || l.Remote.URL != old.url() || l.Remote.Session != "up" || l.Identity != "own" {
		t.Fatalf("after the export src = remote %+v identity %q", l.Remote, l.Identity)
	}
	d.noDrops(t)
}
