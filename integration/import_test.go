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
	iqn := testIQN("imp")
	d.OK("target", "create", iqn)
	d.OK("target", "map", iqn, "imp")
	d.OK("target", "allow", iqn, "ALL")
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

	if lines := d.logHas(secret); len(lines) > 0 {
		t.Fatalf("the daemon logged the CHAP secret:\n%s", strings.Join(lines, "\n"))
	}

	// Delete: logs out, leaves tgt's data alone.
	d.OK("target", "unmap", iqn, "imp")
	d.OK("lun", "delete", "imp")
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
	iqn := testIQN("own")
	d.OK("target", "create", iqn)
	d.OK("target", "map", iqn, "own")
	d.OK("target", "allow", iqn, "ALL")
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
