package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	viscsi "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// The targetcli-parity features (issue 12): per-initiator LUN masking,
// write-protected mappings, `target logout`, /dev/shm volumes and
// EXTENDED COPY between LUNs of one target.

// lunsSeen returns the LUN numbers `iscsi-ls -s` shows initiator.
func lunsSeen(t *testing.T, portal, initiator string) []string {
	t.Helper()
	out := tool(t, "iscsi-ls", "-i", initiator, "-s", "iscsi://"+portal)
	return regexp.MustCompile(`Lun:(\d+)`).FindAllString(out, -1)
}

// TestMappingMaskPerInitiator: a LUN mapped with --initiator A is seen by
// A only (REPORT LUNS through iscsi-ls, I/O through iscsi-readcapacity16);
// `target mapping` changes the mask live.
func TestMappingMaskPerInitiator(t *testing.T) {
	needTools(t, "iscsi-ls", "iscsi-readcapacity16")
	d := StartDaemon(t, "")
	iqn := d.Export("mka", "8MiB", 512)
	d.OK("lun", "create", "mkb", "--size", "8MiB")
	hostA, hostB := testIQN("mask-host-a"), testIQN("mask-host-b")
	d.OK("target", "map", iqn, "mkb", "--lun", "1", "--initiator", hostA)

	if got := lunsSeen(t, d.Portal, hostA); strings.Join(got, " ") != "Lun:0 Lun:1" {
		t.Fatalf("initiator A (mapped for LUN 1) sees %v, want Lun:0 Lun:1", got)
	}
	if got := lunsSeen(t, d.Portal, hostB); strings.Join(got, " ") != "Lun:0" {
		t.Fatalf("initiator B (masked from LUN 1) sees %v, want Lun:0 only", got)
	}
	tool(t, "iscsi-readcapacity16", "-i", hostA, d.URL(iqn, 1))
	r := runCmd(t, "", nil, "iscsi-readcapacity16", "-i", hostB, d.URL(iqn, 1))
	if r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "LOGICAL_UNIT_NOT_SUPPORTED") {
		t.Fatalf("READ CAPACITY of the masked LUN 1 as initiator B: want LOGICAL UNIT NOT SUPPORTED\n%s", r)
	}

	var v wire.Target
	d.JSON(&v, "target", "show", iqn)
	if len(v.LUNs) != 2 || strings.Join(v.LUNs[1].Initiators, ",") != hostA {
		t.Fatalf("target show: LUN 1 mask %+v, want [%s]", v.LUNs, hostA)
	}

	// Live: the mask moves to B, then goes away.
	d.OK("target", "mapping", iqn, "mkb", "--initiator", hostB)
	if got := lunsSeen(t, d.Portal, hostA); strings.Join(got, " ") != "Lun:0" {
		t.Fatalf("after masking LUN 1 to B, initiator A sees %v, want Lun:0 only", got)
	}
	tool(t, "iscsi-readcapacity16", "-i", hostB, d.URL(iqn, 1))
	d.OK("target", "mapping", iqn, "mkb", "--all-initiators")
	if got := lunsSeen(t, d.Portal, hostA); strings.Join(got, " ") != "Lun:0 Lun:1" {
		t.Fatalf("after --all-initiators, initiator A sees %v, want Lun:0 Lun:1", got)
	}
	d.Fail(1, []string{"bad initiator name"}, "target", "mapping", iqn, "mkb", "--initiator", "not an iqn")
	d.Fail(2, []string{"nothing to change"}, "target", "mapping", iqn, "mkb")
}

// TestReadOnlyMapping: a write-protected mapping lets qemu-io read but
// not write; another (writable) mapping of the same LUN on a second
// target still writes; `target mapping --read-only=false` lifts it live.
func TestReadOnlyMapping(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	rw := d.Export("roa", "8MiB", 512)
	ro := testIQN("roa-ro")
	d.OK("target", "create", ro)
	d.OK("target", "map", ro, "roa", "--read-only")
	d.OK("target", "allow", ro, "ALL")

	qemuIOOK(t, d.URL(rw, 0), "write -P 0x5a 0 64k")
	// qemu opens a write-protected LUN read-only or not at all; either
	// way the write must fail.
	r := qemuIO(t, d.URL(ro, 0), "write -P 0x11 0 4k")
	if out := strings.ToLower(r.Stdout + r.Stderr); r.Code == 0 && !strings.Contains(out, "error") && !strings.Contains(out, "protect") && !strings.Contains(out, "read-only") {
		t.Fatalf("qemu-io write through the read-only mapping succeeded:\n%s", r)
	}
	r = runCmd(t, "", nil, "qemu-io", "-r", "-c", "read -P 0x5a 0 64k", "-f", "raw", "-t", "none", d.URL(ro, 0))
	if r.Code != 0 || strings.Contains(r.Stdout+r.Stderr, "Pattern verification failed") {
		t.Fatalf("qemu-io read through the read-only mapping:\n%s", r)
	}
	qemuIOOK(t, d.URL(rw, 0), "read -P 0x5a 0 64k") // the write above changed nothing

	var v wire.Target
	d.JSON(&v, "target", "show", ro)
	if len(v.LUNs) != 1 || !v.LUNs[0].ReadOnly {
		t.Fatalf("target show %s: %+v, want LUN 0 read-only", ro, v.LUNs)
	}
	var l wire.LUN
	d.JSON(&l, "lun", "show", "roa")
	if len(l.Mappings) != 2 || l.Mappings[0].ReadOnly == l.Mappings[1].ReadOnly {
		t.Fatalf("lun show roa: mappings %+v, want one read-only and one writable", l.Mappings)
	}
	if out := d.OK("lun", "show", "roa"); !strings.Contains(out, ro+"/0(ro)") {
		t.Fatalf("lun show roa does not mark the read-only mapping:\n%s", out)
	}
	d.OK("target", "mapping", ro, "roa", "--read-only=false")
	qemuIOOK(t, d.URL(ro, 0), "write -P 0x22 0 4k", "read -P 0x22 0 4k")
}

// TestTargetLogout: `target logout IQN --initiator A` ends A's session
// on that target and leaves B's; a second logout finds nothing to end.
func TestTargetLogout(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("lgo", "8MiB", 512)
	hostA, hostB := testIQN("logout-host-a"), testIQN("logout-host-b")
	login := func(host string, isid byte) io.ReadCloser {
		keys := []string{"InitiatorName=" + host, "TargetName=" + iqn, "SessionType=Normal", "AuthMethod=None"}
		r, c := rcLogin(t, d.Portal, [6]byte{0x80, 0, 0, 0, 0, isid}, 0, rcTransit|rcCSGSecurity|rcNSGFFP, keys...)
		t.Cleanup(func() { c.Close() })
		if r.opcode != rcOpLoginResp || r.class != 0 {
			t.Fatalf("login of %s: opcode %#x status %d/%#x", host, r.opcode, r.class, r.detail)
		}
		return c
	}
	ca := login(hostA, 1)
	cb := login(hostB, 2)
	type deadliner interface{ SetReadDeadline(time.Time) error }

	var lo wire.Logout
	d.JSON(&lo, "target", "logout", iqn, "--initiator", hostA)
	if lo.Sessions != 1 || lo.Initiator != hostA {
		t.Fatalf("target logout: %+v, want 1 session of %s", lo, hostA)
	}
	ca.(deadliner).SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [48]byte
	if _, err := io.ReadFull(ca, b[:]); err != io.EOF && err != io.ErrUnexpectedEOF && !isConnReset(err) {
		t.Fatalf("session of %s after logout: read gave %v, want the connection closed", hostA, err)
	}
	cb.(deadliner).SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := io.ReadFull(cb, b[:1]); !isTimeout(err) {
		t.Fatalf("session of %s after logging out %s: read gave %v, want it still open (timeout)", hostB, hostA, err)
	}
	var v wire.Target
	waitFor(t, 10*time.Second, "target show lists only B's session", func() (bool, string) {
		v.Sessions = nil
		d.JSON(&v, "target", "show", iqn)
		return len(v.Sessions) == 1 && v.Sessions[0].Initiator == hostB, fmt.Sprintf("%+v", v.Sessions)
	})
	d.Fail(1, []string{hostA, "no session"}, "target", "logout", iqn, "--initiator", hostA)
	d.Fail(2, []string{"--initiator"}, "target", "logout", iqn)
	d.Fail(1, []string{"not found"}, "target", "logout", testIQN("nosuch"), "--initiator", hostA)
}

// TestTargetLogoutQemuIO: a qemu-io host logged out by the administrator
// loses its session (libiscsi logs in again with a new TSIH); another
// initiator's qemu-io session keeps its TSIH and its I/O.
func TestTargetLogoutQemuIO(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("lgq", "8MiB", 512)
	hostA, hostB := testIQN("logout-qemu-a"), testIQN("logout-qemu-b")
	opts := func(host string) string {
		return fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,initiator-name=%s", d.Portal, iqn, host)
	}
	qa := startQIOOpts(t, "qemu-a", opts(hostA))
	qb := startQIOOpts(t, "qemu-b", opts(hostB))
	if err := qa.write(0, 4096, 0x31); err != nil {
		t.Fatal(err)
	}
	if err := qb.write(4096, 4096, 0x32); err != nil {
		t.Fatal(err)
	}
	tsih := func() map[string]uint16 {
		var v wire.Target
		d.JSON(&v, "target", "show", iqn)
		m := map[string]uint16{}
		for _, s := range v.Sessions {
			m[s.Initiator] = s.TSIH
		}
		return m
	}
	before := tsih()
	if before[hostA] == 0 || before[hostB] == 0 {
		t.Fatalf("sessions before logout: %v, want one of each host", before)
	}
	d.OK("target", "logout", iqn, "--initiator", hostA)
	waitFor(t, 20*time.Second, "host A's original session gone", func() (bool, string) {
		now := tsih()
		return now[hostA] != before[hostA], fmt.Sprintf("sessions %v (before %v)", now, before)
	})
	if now := tsih(); now[hostB] != before[hostB] {
		t.Fatalf("host B's session changed after logging out A: %v, before %v", now, before)
	}
	if err := qb.read(4096, 4096, 0x32); err != nil {
		t.Fatalf("host B after logging out A: %v", err)
	}
}

// startQIOOpts starts qemu-io on --image-opts (startQIO takes a URL).
func startQIOOpts(t *testing.T, name, opts string) *qio {
	t.Helper()
	return startQIOArgs(t, name, opts, "--image-opts", opts)
}

// TestDevShmPath: a file volume under /dev/shm (tmpfs) is a file, not a
// device: `lun create --path` accepts it and qemu-io reads back a write.
func TestDevShmPath(t *testing.T) {
	needTools(t, "qemu-io")
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm here")
	}
	dir, err := os.MkdirTemp("/dev/shm", "lmtgt-parity-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := StartDaemon(t, "")
	p := filepath.Join(dir, "shm.img")
	d.OK("lun", "create", "shm", "--path", p, "--size", "8MiB")
	iqn := d.exportLUN("shm")
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x6b 1M 64k", "read -P 0x6b 1M 64k")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 8<<20 || b[1<<20] != 0x6b {
		t.Fatalf("%s: %d bytes, byte at 1 MiB %#x; want 8 MiB with the pattern", p, len(b), b[1<<20])
	}
}

// ---- EXTENDED COPY through lmtgt's own initiator ----

// dialLUN logs in to iqn as initiator and addresses LUN lun.
func dialLUN(t *testing.T, portal, iqn string, lun uint64, initiator string) *viscsi.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := viscsi.Dial(ctx, viscsi.Config{Portal: portal, Target: iqn, LUN: lun, Initiator: initiator}, nil)
	if err != nil {
		t.Fatalf("login to %s LUN %d as %s: %v", iqn, lun, initiator, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// naaDesignator returns LUN c's NAA logical-unit designation descriptor
// from VPD 0x83, padded to the 20 bytes of a CSCD descriptor.
func naaDesignator(t *testing.T, c *viscsi.Client) []byte {
	t.Helper()
	buf := make([]byte, 255)
	r, err := c.Do(viscsi.Command{CDB: []byte{0x12, 0x01, 0x83, 0, 255, 0}, Data: buf, Read: true})
	if err != nil || r.Status != 0 {
		t.Fatalf("INQUIRY VPD 0x83: %v status %#x", err, r.Status)
	}
	n := int(binary.BigEndian.Uint16(buf[2:4]))
	for off := 4; off+4 <= 4+n; {
		l := int(buf[off+3])
		if buf[off+1]&0x30 == 0 && buf[off+1]&0x0f == 3 && l <= 16 {
			out := make([]byte, 20)
			copy(out, buf[off:off+4+l])
			return out
		}
		off += 4 + l
	}
	t.Fatalf("VPD 0x83 has no NAA logical-unit designator: %x", buf[:4+n])
	return nil
}

// xcopyParams builds an EXTENDED COPY (LID1) parameter list: one CSCD
// descriptor per designator, one block -> block segment from descriptor
// src to descriptor dst.
func xcopyParams(listID byte, desigs [][]byte, src, dst uint16, blocks uint16, srcLBA, dstLBA uint64) []byte {
	p := make([]byte, 16+32*len(desigs)+28)
	p[0] = listID // LIST ID USAGE 00b: keep the result
	binary.BigEndian.PutUint16(p[2:], uint16(32*len(desigs)))
	binary.BigEndian.PutUint32(p[8:], 28)
	for i, d := range desigs {
		td := p[16+32*i:]
		td[0] = 0xe4
		copy(td[4:24], d)
		td[30] = 512 >> 8 // disk block length 512
	}
	s := p[16+32*len(desigs):]
	s[0] = 0x02
	binary.BigEndian.PutUint16(s[2:], 24)
	binary.BigEndian.PutUint16(s[4:], src)
	binary.BigEndian.PutUint16(s[6:], dst)
	binary.BigEndian.PutUint16(s[10:], blocks)
	binary.BigEndian.PutUint64(s[12:], srcLBA)
	binary.BigEndian.PutUint64(s[20:], dstLBA)
	return p
}

// xcopy sends EXTENDED COPY (LID1) with params on c; it returns the
// status and the sense key and ASC/ASCQ (fixed format).
func xcopy(t *testing.T, c *viscsi.Client, params []byte) (status, key byte, ascq uint16) {
	t.Helper()
	cdb := make([]byte, 16)
	cdb[0] = 0x83
	binary.BigEndian.PutUint32(cdb[10:], uint32(len(params)))
	r, err := c.Do(viscsi.Command{CDB: cdb, Data: params, Write: true})
	if err != nil {
		t.Fatalf("EXTENDED COPY: %v", err)
	}
	if r.Status == 0x02 && len(r.Sense) >= 14 {
		return r.Status, r.Sense[2] & 0x0f, uint16(r.Sense[12])<<8 | uint16(r.Sense[13])
	}
	return r.Status, 0, 0
}

// TestXcopyBetweenLUNs: EXTENDED COPY from LUN 0 to LUN 1 of one target
// copies the blocks (read back with qemu-io); RECEIVE COPY RESULTS
// reports it; a write-protected destination mapping is refused with
// DATA PROTECT; a LUN of another target, or one masked from the
// initiator, cannot be named (COPY ABORTED, COPY TARGET DEVICE NOT
// REACHABLE: the CVE-2020-28374 check) and is left unchanged.
func TestXcopyBetweenLUNs(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("xa", "8MiB", 512)
	d.OK("lun", "create", "xb", "--size", "8MiB")
	d.OK("target", "map", iqn, "xb", "--lun", "1")
	other := d.Export("xo", "8MiB", 512) // another target's LUN
	d.OK("lun", "create", "xm", "--size", "8MiB")
	d.OK("target", "map", iqn, "xm", "--lun", "2", "--initiator", testIQN("xcopy-someone-else"))
	ini := testIQN("xcopy-host")

	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x7e 1M 1M")
	qemuIOOK(t, d.URL(other, 0), "write -P 0x41 0 1M")
	c0 := dialLUN(t, d.Portal, iqn, 0, ini)
	c1 := dialLUN(t, d.Portal, iqn, 1, ini)
	a, b := naaDesignator(t, c0), naaDesignator(t, c1)

	if st, k, q := xcopy(t, c0, xcopyParams(7, [][]byte{a, b}, 0, 1, 2048, 2048, 4096)); st != 0 {
		t.Fatalf("EXTENDED COPY LUN 0 -> LUN 1: status %#x sense %x/%04x", st, k, q)
	}
	qemuIOOK(t, d.URL(iqn, 1), "read -P 0x7e 2M 1M", "read -P 0 0 2M")

	rcr := make([]byte, 64)
	r, err := c0.Do(viscsi.Command{CDB: []byte{0x84, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, Data: rcr, Read: true})
	if err != nil || r.Status != 0 || rcr[4] != 0x01 || binary.BigEndian.Uint16(rcr[5:7]) != 1 || binary.BigEndian.Uint32(rcr[8:12]) != 1024 {
		t.Fatalf("RECEIVE COPY RESULTS list 7: %v status %#x data %x, want completed, 1 segment, 1024 KiB", err, r.Status, rcr[:12])
	}

	// Into a write-protected mapping.
	d.OK("target", "mapping", iqn, "xb", "--read-only")
	if st, k, q := xcopy(t, c0, xcopyParams(8, [][]byte{a, b}, 0, 1, 8, 0, 0)); st != 0x02 || k != 0x07 || q != 0x2700 {
		t.Fatalf("EXTENDED COPY into a read-only mapping: status %#x sense %x/%04x, want DATA PROTECT 27/00", st, k, q)
	}
	d.OK("target", "mapping", iqn, "xb", "--read-only=false")

	// Naming a LUN this nexus cannot reach, as source or destination.
	co := dialLUN(t, d.Portal, other, 0, ini)
	o := naaDesignator(t, co)
	cm := dialLUN(t, d.Portal, iqn, 2, testIQN("xcopy-someone-else"))
	m := naaDesignator(t, cm)
	for _, tc := range []struct {
		what   string
		params []byte
	}{
		{"from another target's LUN", xcopyParams(9, [][]byte{o, a}, 0, 1, 2048, 0, 0)},
		{"into another target's LUN", xcopyParams(10, [][]byte{a, o}, 0, 1, 2048, 2048, 0)},
		{"into a LUN masked from the initiator", xcopyParams(11, [][]byte{a, m}, 0, 1, 2048, 2048, 0)},
	} {
		if st, k, q := xcopy(t, c0, tc.params); st != 0x02 || k != 0x0a || q != 0x0d02 {
			t.Errorf("EXTENDED COPY %s: status %#x sense %x/%04x, want COPY ABORTED 0D/02", tc.what, st, k, q)
		}
	}
	qemuIOOK(t, d.URL(other, 0), "read -P 0x41 0 1M")
	qemuIOOK(t, d.URL(iqn, 0), "read -P 0 0 1M")
	res := runCmd(t, "", nil, "qemu-io", "-r", "-c", "read -P 0 0 1M",
		"--image-opts", fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=2,initiator-name=%s", d.Portal, iqn, testIQN("xcopy-someone-else")))
	if res.Code != 0 || strings.Contains(res.Stdout+res.Stderr, "Pattern verification failed") {
		t.Fatalf("masked LUN changed by a refused EXTENDED COPY:\n%s", res)
	}
}

// TestXcopyIntoMigratingSource: EXTENDED COPY into a LUN that is the
// source of a migration pair goes through lm's dual-write: after the
// split, the LUN (now on the new volume) and the old volume (now behind
// the pair's target LUN) both hold the copied blocks.
func TestXcopyIntoMigratingSource(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("xs", "16MiB", 512)
	d.OK("lun", "create", "xsrc2", "--size", "16MiB")
	d.OK("target", "map", iqn, "xsrc2", "--lun", "1")
	d.OK("lun", "create", "xnew", "--size", "16MiB")
	qemuIOOK(t, d.URL(iqn, 1), "write -P 0x5c 0 2M")

	d.OK("migration", "create", "--source", "xs", "--target", "xnew", "--speed", "highest")
	d.waitMig("xs", syncTimeout, "synced")
	ini := testIQN("xcopy-mig-host")
	c0 := dialLUN(t, d.Portal, iqn, 0, ini)
	c1 := dialLUN(t, d.Portal, iqn, 1, ini)
	src, dst := naaDesignator(t, c1), naaDesignator(t, c0)
	if st, k, q := xcopy(t, c0, xcopyParams(1, [][]byte{src, dst}, 0, 1, 4096, 0, 8192)); st != 0 {
		t.Fatalf("EXTENDED COPY into the pair source: status %#x sense %x/%04x", st, k, q)
	}
	d.waitMig("xs", syncTimeout, "synced")
	var sr any
	d.JSON(&sr, "migration", "split", "xs")
	// xs now reads the new volume; the old one is behind xnew.
	qemuIOOK(t, d.URL(iqn, 0), "read -P 0x5c 4M 2M", "read -P 0 0 4M")
	d.OK("target", "map", iqn, "xnew", "--lun", "2")
	qemuIOOK(t, d.URL(iqn, 2), "read -P 0x5c 4M 2M", "read -P 0 0 4M")
}

// daemonPortals returns every portal of the daemon's ready line.
func daemonPortals(t *testing.T, d *Daemon) []string {
	t.Helper()
	for _, line := range strings.Split(d.stdout.String(), "\n") {
		if !strings.HasPrefix(line, "lmtgt serving ") {
			continue
		}
		for _, f := range strings.Fields(line)[2:] {
			if v, ok := strings.CutPrefix(f, "portal="); ok {
				return strings.Split(v, ",")
			}
		}
	}
	t.Fatalf("no ready line with portals in %q", d.stdout.String())
	return nil
}

// discovered returns the target names `iscsi-ls` (SendTargets) finds on
// portal, each with the portals it was advertised on.
func discovered(t *testing.T, portal string) map[string]string {
	t.Helper()
	out := tool(t, "iscsi-ls", "iscsi://"+portal)
	m := map[string]string{}
	for _, f := range regexp.MustCompile(`Target:(\S+) Portal:(\S+)`).FindAllStringSubmatch(out, -1) {
		if m[f[1]] != "" {
			m[f[1]] += " "
		}
		m[f[1]] += f[2]
	}
	return m
}

// TestPortalGroups: a target created with --portal is listed by
// discovery only on its portals and refuses logins elsewhere (as not
// found); a target without a portal group is served everywhere; portals
// are added and removed live (the sessions on a removed portal end); a
// portal the server does not listen on, and removing the last portal,
// are refused.
func TestPortalGroups(t *testing.T) {
	needTools(t, "iscsi-ls", "iscsi-inq", "qemu-io")
	d := StartDaemon(t, "", "--portal", "127.0.0.1:0")
	ps := daemonPortals(t, d)
	if len(ps) != 2 {
		t.Fatalf("daemon portals %v, want two", ps)
	}
	pA, pB := ps[0], ps[1]
	all := d.Export("pgall", "8MiB", 512)
	ta, tb := testIQN("pg-a"), testIQN("pg-b")
	for _, x := range []struct{ iqn, lun, portal string }{{ta, "pga", pA}, {tb, "pgb", pB}} {
		d.OK("lun", "create", x.lun, "--size", "8MiB")
		d.OK("target", "create", x.iqn, "--portal", x.portal)
		d.OK("target", "map", x.iqn, x.lun)
		d.OK("target", "allow", x.iqn, "ALL")
	}

	onA, onB := discovered(t, pA), discovered(t, pB)
	if onA[ta] != pA+",1" || onA[tb] != "" || onA[all] == "" {
		t.Fatalf("discovery on %s: %v; want %s (at %s) and %s, not %s", pA, onA, ta, pA, all, tb)
	}
	if onB[tb] != pB+",1" || onB[ta] != "" || onB[all] == "" {
		t.Fatalf("discovery on %s: %v; want %s (at %s) and %s, not %s", pB, onB, tb, pB, all, ta)
	}
	qemuIOOK(t, fmt.Sprintf("iscsi://%s/%s/0", pA, ta), "write -P 0x3a 0 4k", "read -P 0x3a 0 4k")
	qemuIOOK(t, fmt.Sprintf("iscsi://%s/%s/0", pB, all), "read -P 0 0 4k")
	r := runCmd(t, "", nil, "iscsi-inq", fmt.Sprintf("iscsi://%s/%s/0", pB, ta))
	if r.Code == 0 {
		t.Fatalf("login to %s on %s (not its portal) succeeded:\n%s", ta, pB, r)
	}
	if !d.logContains("target " + ta + " is not served on portal") {
		t.Errorf("the refused login of %s on %s is not in the log with its reason", ta, pB)
	}

	var v wire.Target
	d.JSON(&v, "target", "show", ta)
	if strings.Join(v.Portals, ",") != pA {
		t.Fatalf("target show %s: portals %v, want [%s]", ta, v.Portals, pA)
	}
	d.Fail(1, []string{"does not listen"}, "target", "portal", "add", ta, "127.0.0.1:1")
	d.Fail(1, []string{"want ip:port"}, "target", "portal", "add", ta, "nonsense")
	d.Fail(1, []string{"last portal"}, "target", "portal", "remove", ta, pA)

	// Live: ta moves from A to B; its session on A ends.
	keys := []string{"InitiatorName=" + testIQN("pg-host"), "TargetName=" + ta, "SessionType=Normal", "AuthMethod=None"}
	lr, c := rcLogin(t, pA, [6]byte{0x80, 0, 0, 0, 0, 3}, 0, rcTransit|rcCSGSecurity|rcNSGFFP, keys...)
	t.Cleanup(func() { c.Close() })
	if lr.class != 0 {
		t.Fatalf("login to %s on %s: status %d/%#x", ta, pA, lr.class, lr.detail)
	}
	d.OK("target", "portal", "add", ta, pB)
	if got := discovered(t, pB)[ta]; got != pA+",1 "+pB+",1" && got != pB+",1 "+pA+",1" {
		t.Fatalf("discovery on %s after adding it to %s: %s advertised at %q, want both portals", pB, ta, ta, got)
	}
	d.OK("target", "portal", "remove", ta, pA)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [48]byte
	if _, err := io.ReadFull(c, b[:]); err != io.EOF && err != io.ErrUnexpectedEOF && !isConnReset(err) {
		t.Fatalf("session of %s on the removed portal %s: read gave %v, want the connection closed", ta, pA, err)
	}
	if got := discovered(t, pA)[ta]; got != "" {
		t.Fatalf("discovery on %s after removing it from %s still lists it at %q", pA, ta, got)
	}
	qemuIOOK(t, fmt.Sprintf("iscsi://%s/%s/0", pB, ta), "read -P 0x3a 0 4k")
	d.OK("target", "portal", "remove", ta, "ALL")
	if got := discovered(t, pA)[ta]; got == "" {
		t.Fatalf("discovery on %s after `portal remove ALL` does not list %s", pA, ta)
	}
}

// logContains reports whether any daemon log holds s.
func (d *Daemon) logContains(s string) bool { return len(d.logHas(s)) > 0 }
