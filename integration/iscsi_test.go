package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// designatorBytes returns the raw bytes iscsi-inq printed for every NAA
// designator of VPD page 0x83 ("Designator Type:(3) NAA" then
// "Designator:[...]"). iscsi-inq prints binary designators with %s, so the
// bytes stop at the first NUL.
func naaDesignators(out string) [][]byte {
	var res [][]byte
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "Designator Type:(3) NAA") {
			continue
		}
		// The designator follows on the next line; binary data may itself
		// contain a newline, so join up to the closing "]" at a line end.
		rest := strings.Join(lines[i+1:], "\n")
		if !strings.HasPrefix(rest, "Designator:[") {
			continue
		}
		rest = strings.TrimPrefix(rest, "Designator:[")
		end := strings.Index(rest, "]\n")
		if end < 0 {
			end = strings.LastIndex(rest, "]")
		}
		if end >= 0 {
			res = append(res, []byte(rest[:end]))
		}
	}
	return res
}

// checkIdentity checks VPD 0x83 and 0x80 of url against the LUN record.
func checkIdentity(t *testing.T, url string, l wire.LUN) {
	t.Helper()
	naa, err := hex.DecodeString(l.NAA)
	if err != nil || len(naa) != 16 {
		t.Fatalf("lun %s: naa %q is not 32 hex digits", l.Name, l.NAA)
	}
	if naa[0]>>4 != 6 {
		t.Errorf("lun %s: naa %s is not NAA type 6", l.Name, l.NAA)
	}
	out := tool(t, "iscsi-inq", "-e", "1", "-c", "131", url)
	found := false
	for _, d := range naaDesignators(out) {
		// At least the NAA nibble and the OUI (no NUL in them) must be
		// there, and what was printed must be a prefix of the identifier.
		if len(d) >= 3 && bytes.HasPrefix(naa, d) {
			found = true
		}
	}
	if !found {
		t.Errorf("VPD 0x83 of %s has no NAA designator matching %s:\n%s", url, l.NAA, out)
	}
	out = tool(t, "iscsi-inq", "-e", "1", "-c", "128", url)
	m := regexp.MustCompile(`Unit Serial Number:\[\s*([^\]]*)\]`).FindStringSubmatch(out)
	if m == nil || m[1] != l.Serial {
		t.Errorf("VPD 0x80 of %s: want serial %q, got:\n%s", url, l.Serial, out)
	}
}

// readCapacity returns the block count and block size iscsi-readcapacity16 reports.
func readCapacity(t *testing.T, url string) (blocks, blockSize int64) {
	t.Helper()
	out := tool(t, "iscsi-readcapacity16", url)
	var lba int64
	ml := regexp.MustCompile(`RETURNED LOGICAL BLOCK ADDRESS:(\d+)`).FindStringSubmatch(out)
	mb := regexp.MustCompile(`LOGICAL BLOCK LENGTH IN BYTES:(\d+)`).FindStringSubmatch(out)
	if ml == nil || mb == nil {
		t.Fatalf("iscsi-readcapacity16 %s: unexpected output:\n%s", url, out)
	}
	fmt.Sscan(ml[1], &lba)
	fmt.Sscan(mb[1], &blockSize)
	return lba + 1, blockSize
}

func TestDiscoveryIdentityCapacity(t *testing.T) {
	needTools(t, "iscsi-ls", "iscsi-inq", "iscsi-readcapacity16")
	d := StartDaemon(t, "")
	iqn512 := d.Export("cap512", "64MiB", 512)
	iqn4k := d.Export("cap4k", "32MiB", 4096)

	out := tool(t, "iscsi-ls", "-s", "iscsi://"+d.Portal)
	for _, iqn := range []string{iqn512, iqn4k} {
		if !strings.Contains(out, "Target:"+iqn+" ") {
			t.Errorf("iscsi-ls -s does not list %s:\n%s", iqn, out)
		}
	}
	if !regexp.MustCompile(`Lun:0\s+Type:DIRECT_ACCESS \(Size:`).MatchString(out) {
		t.Errorf("iscsi-ls -s shows no DIRECT_ACCESS LUN 0:\n%s", out)
	}

	for _, c := range []struct {
		name, iqn string
		size, bsz int64
	}{{"cap512", iqn512, 64 << 20, 512}, {"cap4k", iqn4k, 32 << 20, 4096}} {
		var l wire.LUN
		d.JSON(&l, "lun", "show", c.name)
		if l.Name != c.name || l.ID == "" || l.Size != c.size || int64(l.BlockSize) != c.bsz || l.Volume == "" || l.NAA == "" || l.Serial == "" {
			t.Errorf("lun show %s -o json: %+v", c.name, l)
		}
		url := d.URL(c.iqn, 0)
		checkIdentity(t, url, l)
		blocks, bs := readCapacity(t, url)
		if bs != c.bsz || blocks*bs != c.size {
			t.Errorf("%s: READ CAPACITY(16) says %d blocks of %d, want %d bytes in blocks of %d", c.name, blocks, bs, c.size, c.bsz)
		}
	}
	// Two LUNs never share an identity.
	var a, b wire.LUN
	d.JSON(&a, "lun", "show", "cap512")
	d.JSON(&b, "lun", "show", "cap4k")
	if a.NAA == b.NAA || a.Serial == b.Serial || a.ID == b.ID {
		t.Errorf("two LUNs share an identity: %+v %+v", a, b)
	}
}

func TestQemuPatternsAndCompare(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	d := StartDaemon(t, "")
	iqn := d.Export("qdata", "16MiB", 512)
	url := d.URL(iqn, 0)

	qemuIOOK(t, url, "write -P 0xa5 0 1M", "write -P 0x5a 4M 64k", "write -P 0x11 16773120 4096")
	qemuIOOK(t, url, "read -P 0xa5 0 1M", "read -P 0x5a 4M 64k", "read -P 0x11 16773120 4096", "read -P 0 8M 1M")
	// A wrong pattern must be noticed (proves the check checks).
	if r := qemuIO(t, url, "read -P 0xa6 0 4k"); !strings.Contains(r.Stdout+r.Stderr, "Pattern verification failed") {
		t.Fatalf("qemu-io read with a wrong pattern passed: %s", r)
	}

	// A whole image in, compared against the reference file.
	ref := filepath.Join(t.TempDir(), "ref.img")
	buf := make([]byte, 16<<20)
	rand.Read(buf[:6<<20])
	rand.Read(buf[10<<20:])
	if err := os.WriteFile(ref, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	tool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-t", "none", ref, url)
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, url)
	// And a different file must compare unequal.
	buf[12345] ^= 0xff
	if err := os.WriteFile(ref, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, "", nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, url); r.Code != 1 {
		t.Fatalf("qemu-img compare of a changed file: want exit 1 (different)\n%s", r)
	}
}

func TestResizeAndLiveMap(t *testing.T) {
	needTools(t, "iscsi-ls", "iscsi-readcapacity16", "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("grow", "8MiB", 512)
	url := d.URL(iqn, 0)
	qemuIOOK(t, url, "write -P 0x42 0 64k")

	out := d.OK("lun", "resize", "grow", "--size", "24MiB")
	if !strings.Contains(out, "24 MiB") {
		t.Errorf("lun resize output: %q", out)
	}
	if blocks, bs := readCapacity(t, url); blocks*bs != 24<<20 {
		t.Errorf("after resize READ CAPACITY(16) says %d bytes, want %d", blocks*bs, 24<<20)
	}
	// The new space is usable and the old data is still there.
	qemuIOOK(t, url, "write -P 0x43 20M 64k", "read -P 0x43 20M 64k", "read -P 0x42 0 64k")
	d.Fail(1, []string{"lun grow", "smaller"}, "lun", "resize", "grow", "--size", "8MiB")
	d.Fail(1, []string{"lun grow", "multiple of the block size"}, "lun", "resize", "grow", "--size", "25000000")

	// Map a second LUN on the same target while it is live.
	d.OK("lun", "create", "second", "--size", "4MiB")
	out = d.OK("target", "map", iqn, "second")
	if !strings.Contains(out, "at LUN 1") {
		t.Errorf("map without --lun should pick LUN 1: %q", out)
	}
	ls := tool(t, "iscsi-ls", "-s", "iscsi://"+d.Portal)
	if !regexp.MustCompile(`Lun:1\s+Type:DIRECT_ACCESS`).MatchString(ls) {
		t.Errorf("iscsi-ls -s does not show the live-mapped LUN 1:\n%s", ls)
	}
	qemuIOOK(t, d.URL(iqn, 1), "write -P 0x99 0 4k", "read -P 0x99 0 4k")
	// An explicit LUN number, and a number already in use.
	d.OK("lun", "create", "third", "--size", "4MiB")
	d.Fail(1, []string{"LUN number 1", "in use"}, "target", "map", iqn, "third", "--lun", "1")
	d.OK("target", "map", iqn, "third", "--lun", "7")
	qemuIOOK(t, d.URL(iqn, 7), "write -P 0x77 0 4k", "read -P 0x77 0 4k")
	// Unmap: the LUN disappears for hosts.
	d.OK("target", "unmap", iqn, "second")
	ls = tool(t, "iscsi-ls", "-s", "iscsi://"+d.Portal)
	if regexp.MustCompile(`Lun:1\s`).MatchString(ls) || !regexp.MustCompile(`Lun:7\s`).MatchString(ls) {
		t.Errorf("after unmap iscsi-ls -s should show LUN 0 and 7 only:\n%s", ls)
	}
}

func TestACL(t *testing.T) {
	needTools(t, "iscsi-ls", "iscsi-inq")
	d := StartDaemon(t, "")
	iqn := testIQN("acl")
	host1 := "iqn.2026-11.org.lmtgt.test:host1"
	other := "iqn.2026-11.org.lmtgt.test:intruder"
	d.OK("lun", "create", "acl", "--size", "4MiB")
	d.OK("target", "create", iqn)
	d.OK("target", "map", iqn, "acl")
	url := d.URL(iqn, 0)

	// No initiator allowed yet: nobody gets in.
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", host1, url); r.Code == 0 {
		t.Fatalf("login to a target with an empty ACL succeeded:\n%s", r)
	}
	d.OK("target", "allow", iqn, host1)
	tool(t, "iscsi-inq", "-i", host1, url)
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", other, url); r.Code == 0 {
		t.Fatalf("an initiator not in the ACL logged in:\n%s", r)
	}
	// Discovery hides the target from an initiator that may not log in.
	ls := runCmd(t, "", nil, "iscsi-ls", "-i", other, "-s", "iscsi://"+d.Portal)
	if ls.Code == 0 && strings.Contains(ls.Stdout, "Lun:0") {
		t.Errorf("iscsi-ls -i %s lists the LUNs of a target it may not use:\n%s", other, ls)
	}
	ls = runCmd(t, "", nil, "iscsi-ls", "-i", host1, "-s", "iscsi://"+d.Portal)
	if ls.Code != 0 || !strings.Contains(ls.Stdout, "Target:"+iqn) || !strings.Contains(ls.Stdout, "Lun:0") {
		t.Errorf("iscsi-ls -i %s should see the target and its LUN:\n%s", host1, ls)
	}
	var tg wire.Target
	d.JSON(&tg, "target", "show", iqn)
	if tg.AllowAll || len(tg.Initiators) != 1 || tg.Initiators[0] != host1 {
		t.Errorf("target show: %+v", tg)
	}
	// ALL, then removing it again.
	d.OK("target", "allow", iqn, "ALL")
	tool(t, "iscsi-inq", "-i", other, url)
	d.OK("target", "disallow", iqn, "ALL")
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", other, url); r.Code == 0 {
		t.Fatalf("after disallow ALL an unlisted initiator still logs in:\n%s", r)
	}
	tool(t, "iscsi-inq", "-i", host1, url)
}

func TestCHAP(t *testing.T) {
	needTools(t, "iscsi-inq")
	d := StartDaemon(t, "")
	iqn := d.Export("chap", "4MiB", 512)
	hostPort := d.Portal
	chapURL := func(user, secret string) string {
		return fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", user, secret, hostPort, iqn)
	}
	r := d.Run("target", "chap", iqn, "--user", "alice", "--secret", "s3cretpassw0rd")
	if r.Code != 0 || strings.Contains(r.Stderr, "warning") {
		t.Fatalf("target chap: %s", r)
	}
	tool(t, "iscsi-inq", chapURL("alice", "s3cretpassw0rd"))
	for _, bad := range []string{chapURL("alice", "wrongpassword1"), chapURL("bob", "s3cretpassw0rd"), d.URL(iqn, 0)} {
		if r := runCmd(t, "", nil, "iscsi-inq", bad); r.Code == 0 {
			t.Errorf("login with %s succeeded, want refused:\n%s", bad, r)
		}
	}
	var tg wire.Target
	d.JSON(&tg, "target", "show", iqn)
	if tg.CHAP == nil || tg.CHAP.User != "alice" {
		t.Errorf("target show: chap %+v", tg.CHAP)
	}
	if raw := d.OK("target", "show", iqn, "-o", "json"); strings.Contains(raw, "s3cretpassw0rd") {
		t.Errorf("target show leaks the CHAP secret:\n%s", raw)
	}

	// Mutual CHAP: the initiator checks the target too.
	d.OK("target", "chap", iqn, "--user", "alice", "--secret", "s3cretpassw0rd", "--mutual-user", "tgt", "--mutual-secret", "t4rgetsecret99")
	env := []string{"LIBISCSI_CHAP_TARGET_USERNAME=tgt", "LIBISCSI_CHAP_TARGET_PASSWORD=t4rgetsecret99"}
	if r := runCmd(t, "", env, "iscsi-inq", chapURL("alice", "s3cretpassw0rd")); r.Code != 0 {
		t.Errorf("mutual CHAP login failed:\n%s", r)
	}
	envBad := []string{"LIBISCSI_CHAP_TARGET_USERNAME=tgt", "LIBISCSI_CHAP_TARGET_PASSWORD=notthetargets1"}
	if r := runCmd(t, "", envBad, "iscsi-inq", chapURL("alice", "s3cretpassw0rd")); r.Code == 0 {
		t.Errorf("mutual CHAP with the wrong target secret succeeded:\n%s", r)
	}

	// A short secret is accepted with a warning; equal secrets are refused.
	r = d.Run("target", "chap", iqn, "--user", "alice", "--secret", "short")
	if r.Code != 0 || !strings.Contains(r.Stderr, "warning") {
		t.Errorf("short secret: want success with a warning: %s", r)
	}
	d.Fail(1, []string{"mutual secret must differ"}, "target", "chap", iqn, "--user", "a", "--secret", "samesecret123", "--mutual-user", "b", "--mutual-secret", "samesecret123")
	d.Fail(2, []string{"--mutual-secret"}, "target", "chap", iqn, "--user", "a", "--secret", "x", "--mutual-user", "b")
	// Off again: plain login works.
	d.OK("target", "chap", iqn, "--off")
	tool(t, "iscsi-inq", d.URL(iqn, 0))
}

// TestLiveChangesKeepSessions: while a host session does I/O on a LUN,
// configuration changes around it (a LUN mapped and unmapped next to it,
// other targets created, ACL and CHAP changes elsewhere, its own LUN grown)
// are applied live without dropping or disturbing the session.
func TestLiveChangesKeepSessions(t *testing.T) {
	needTools(t, "qemu-io", "iscsi-ls", "iscsi-readcapacity16")
	d := StartDaemon(t, "")
	iqn := d.Export("live", "8MiB", 512)
	url := d.URL(iqn, 0)
	q := startQIO(t, "host", url)
	step := 0
	io := func(what string) {
		t.Helper()
		step++
		off := int64(step%16) * (256 << 10)
		pat := byte(0x30 + step)
		if err := q.write(off, 256<<10, pat); err != nil {
			t.Fatalf("after %s: write: %v", what, err)
		}
		if err := q.read(off, 256<<10, pat); err != nil {
			t.Fatalf("after %s: read: %v", what, err)
		}
	}
	io("start")
	d.OK("lun", "create", "next", "--size", "4MiB")
	d.OK("target", "map", iqn, "next")
	io("map of a second LUN")
	other := d.Export("other", "4MiB", 4096)
	io("a new target")
	d.OK("target", "chap", other, "--user", "u", "--secret", "othersecret12")
	d.OK("target", "allow", iqn, "iqn.2026-11.org.lmtgt.test:someone")
	io("CHAP and ACL changes")
	d.OK("lun", "resize", "live", "--size", "16MiB")
	io("a resize of the LUN in use")
	if blocks, bs := readCapacity(t, url); blocks*bs != 16<<20 {
		t.Errorf("after resize READ CAPACITY(16) says %d bytes", blocks*bs)
	}
	d.OK("target", "unmap", iqn, "next")
	io("unmap of the second LUN")
	d.OK("target", "delete", other, "--force")
	io("delete of another target")
	q.close()
	d.noDrops(t)
	qemuIOOK(t, url, fmt.Sprintf("read -P %d %d 256k", 0x30+step, int64(step%16)*(256<<10)))
}
