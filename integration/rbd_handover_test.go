//go:build rbd

package integration

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// TestRBDHandoverWithoutCopy moves RBD LUN X from lmtgt server A to lmtgt
// server B on one Ceph cluster without copying data (README "Running on
// Ceph", "Handover without copying"; docs/design.md "RBD handover"):
//
//  1. A serves X on image rbd/x; node1 and node2 register, node1 reserves
//     WRITE EXCLUSIVE - REGISTRANTS ONLY and writes data through A.
//  2. B: lun create x --rbd rbd/x --adopt-from A's LUN: X's identity and
//     reservations, the image left to A (B's LUN offline, the holder
//     named). B's group is standby; the hosts' second path is B.
//  3. node2 re-registers on A with a new key (a change after step 2). A
//     takeover from a URL of another LU is refused and changes nothing.
//  4. A's group transitioning; B: lun takeover x --adopt-from (re-reads
//     the reservations through that path, takes the lock); B's group
//     active, A's standby.
//  5. On B: A's data (qemu-io, libiscsi), the reservations (node2's new
//     key) present and enforced, node1 writes; no migration, no new image.
//     On A: I/O fails with NOT READY even with its group made active
//     again; never silently.
func TestRBDHandoverWithoutCopy(t *testing.T) {
	needTools(t, "qemu-io", "iscsi-inq")
	const (
		node1 = "iqn.2026-11.org.example:node1"
		node2 = "iqn.2026-11.org.example:node2"
		k1    = 0x1111
		k2    = 0x2222
		k2b   = 0x2b2b
	)
	pattern := func(pat byte) []byte { return bytes.Repeat([]byte{pat}, mBlock) }
	c := startCeph(t)

	// 1. A serves X; the cluster registers and reserves; node1 writes.
	a := StartDaemon(t, "", "--ceph-conf", c.Conf)
	a.OK("lun", "create", "x", "--rbd", "rbd/x", "--size", "16MiB")
	a.OK("lun", "create", "other", "--size", "16MiB")
	hostA := a.exportLUN("x")
	a.OK("target", "map", hostA, "other", "--lun", "1")
	urlA := a.URL(hostA, 0)
	daA := luDesignators(t, urlA)
	n1A := hostInitiator(t, urlA, node1)
	n2A := hostInitiator(t, urlA, node2)
	if err := n1A.Client().PRRegister(k1); err != nil {
		t.Fatal(err)
	}
	if err := n2A.Client().PRRegister(k2); err != nil {
		t.Fatal(err)
	}
	if err := n1A.Client().PRReserve(k1, iscsivol.PRWriteExclusiveRegs); err != nil {
		t.Fatal(err)
	}
	for blk, pat := range []byte{0x11, 0x12, 0x13} {
		if _, err := n1A.WriteAt(pattern(pat), int64(blk)*mBlock); err != nil {
			t.Fatalf("node1 write of block %d via A: %v", blk, err)
		}
	}

	// 2. B adopts X from A; the image stays A's.
	b := StartDaemon(t, "", "--ceph-conf", c.Conf)
	b.Fail(1, []string{"--adopt-from", "no --size"}, "lun", "create", "y", "--rbd", "rbd/y", "--size", "16MiB", "--adopt-from", urlA)
	b.Fail(2, []string{"--adopt-from is for --rbd"}, "lun", "create", "y", "--size", "16MiB", "--adopt-from", urlA)
	b.OK("lun", "create", "x", "--rbd", "rbd/x", "--adopt-from", urlA)
	if v := b.rbdLUN("x"); v.State != "offline" || !strings.Contains(v.Offline, "exclusive lock held by") ||
		!strings.Contains(v.Offline, a.DataDir) || !strings.Contains(v.Offline, "lun takeover x --adopt-from") {
		t.Fatalf("B's x before the takeover: state %s (%s): want offline, the holder A named and how to finish", v.State, v.Offline)
	}
	if v := a.rbdLUN("x"); v.RBD.Lock != "held" || v.State != "online" {
		t.Fatalf("A's x after B's create: %+v rbd %+v: A must still hold the image", v, v.RBD)
	}
	hostB := testIQN("b-host")
	b.OK("target", "create", hostB)
	b.OK("alua", "group", hostB, "2")
	b.OK("alua", "port", hostB, "10")
	b.OK("alua", "state", "x", "2", "standby")
	b.OK("target", "map", hostB, "x")
	b.OK("target", "allow", hostB, "ALL")
	urlB := b.URL(hostB, 0)
	// libiscsi's tools log in with TEST UNIT READY, which a standby path
	// fails: read the identity with lmtgt's initiator (INQUIRY only).
	n1B := standbyInitiator(t, urlB, node1)
	ida, err := n1A.Identity()
	if err != nil {
		t.Fatal(err)
	}
	idb, err := n1B.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ida.Designators, idb.Designators) || ida.Serial != idb.Serial || ida.Vendor != idb.Vendor || ida.Product != idb.Product {
		t.Fatalf("B does not present X's identity:\nA: %+v\nB: %+v", ida, idb)
	}
	if st := prOf(t, n1B, "B after create"); !hasReg(st, node1, k1) || !hasReg(st, node2, k2) || st.HolderKey != k1 || st.Type != iscsivol.PRWriteExclusiveRegs {
		t.Fatalf("B after create --adopt-from: %+v: want node1 0x%x holding write-exclusive-registrants-only, node2 0x%x", st, k1, k2)
	}
	var se *iscsivol.SCSIError
	if _, err := n1B.ReadAt(make([]byte, mBlock), 0); !errors.As(err, &se) || se.Key != 0x2 {
		t.Fatalf("a read through B's standby path before the takeover: %v, want NOT READY", err)
	}

	// 3. A change on A after the create; a takeover from another LU is
	// refused and leaves the lock with A.
	if err := n2A.Client().PRRegister(k2b); err != nil {
		t.Fatal(err)
	}
	b.Fail(1, []string{"lun x", "another logical unit"}, "lun", "takeover", "x", "--adopt-from", a.URL(hostA, 1))
	if v := a.rbdLUN("x"); v.RBD.Lock != "held" {
		t.Fatalf("A's lock after a refused takeover: %q", v.RBD.Lock)
	}
	if v := b.rbdLUN("x"); v.State != "offline" {
		t.Fatalf("B's x after a refused takeover: %s, want offline", v.State)
	}

	// 4. The handover: A transitioning (hosts retry), B re-reads the
	// reservations through that path and takes the lock, B active, A
	// standby.
	a.OK("alua", "state", "x", "1", "transitioning")
	b.OK("lun", "takeover", "x", "--adopt-from", urlA)
	b.OK("alua", "state", "x", "2", "active")
	a.OK("alua", "state", "x", "1", "standby")
	if _, err := n1A.WriteAt(pattern(0xee), 3*mBlock); !errors.As(err, &se) || se.Key != 0x2 || se.ASC != 0x04 || se.ASCQ != 0x0b {
		t.Fatalf("node1's write through A's standby path: %v, want NOT READY, TARGET PORT IN STANDBY STATE", err)
	}
	if v := b.rbdLUN("x"); v.State != "online" || v.RBD.Lock != "held" || v.VolumeKind != "rbd" || v.VolumePath != "rbd:rbd/x" {
		t.Fatalf("B's x after the takeover: %+v rbd %+v", v, v.RBD)
	}
	if db := luDesignators(t, urlB); daA != db {
		t.Fatalf("B does not present X's identity (VPD 0x83 through libiscsi):\nA: %s\nB: %s", daA, db)
	}

	// 5. B serves A's data with the cluster's reservations.
	if r := qemuIO(t, urlB, "read -P 0x11 0 64k", "read -P 0x12 64k 64k", "read -P 0x13 128k 64k"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("qemu-io on B: A's data: %s", r)
	}
	st := prOf(t, n1B, "B after the takeover")
	if !hasReg(st, node1, k1) || !hasReg(st, node2, k2b) || hasReg(st, node2, k2) || st.HolderKey != k1 || st.Type != iscsivol.PRWriteExclusiveRegs {
		t.Fatalf("B after the takeover: %+v: want node1 0x%x holding, node2 with its new key 0x%x", st, k1, k2b)
	}
	stranger := hostInitiator(t, urlB, "iqn.2026-11.org.example:stranger")
	if _, err := stranger.WriteAt(pattern(0xee), 4*mBlock); !iscsivol.IsReservationConflict(err) {
		t.Fatalf("an unregistered initiator's write on B: %v, want RESERVATION CONFLICT", err)
	}
	if _, err := n1B.WriteAt(pattern(0x41), 4*mBlock); err != nil {
		t.Fatalf("node1's write through B: %v", err)
	}
	if r := qemuIO(t, urlB, "read -P 0x41 256k 64k"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("qemu-io on B: node1's write: %s", r)
	}
	var migs []wire.Migration
	b.JSON(&migs, "migration", "list")
	if len(migs) != 0 {
		t.Fatalf("B has migrations after a handover without copy: %+v", migs)
	}
	if imgs := rbdImages(t, c, "rbd"); len(imgs) != 1 || imgs[0] != "x" {
		t.Fatalf("rbd ls after the handover: %v, want only x (nothing copied)", imgs)
	}

	// A refuses I/O, never silently: even with its group active again (an
	// administrator's mistake) its blocklisted client cannot touch the
	// image.
	a.OK("alua", "state", "x", "1", "active")
	if _, err := n1A.WriteAt(pattern(0xee), 5*mBlock); !errors.As(err, &se) || se.Key != 0x2 {
		t.Fatalf("node1's write through A after the handover: %v, want NOT READY", err)
	}
	if _, err := n1A.ReadAt(make([]byte, mBlock), 0); !errors.As(err, &se) || se.Key != 0x2 {
		t.Fatalf("node1's read through A after the handover: %v, want NOT READY", err)
	}
	if v := a.rbdLUN("x"); !strings.HasPrefix(v.RBD.Lock, "lost") {
		t.Fatalf("A's lock after the handover: %q, want lost", v.RBD.Lock)
	}
	if r := qemuIO(t, urlB, "read -P 0 320k 64k"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("A's refused write reached the image: %s", r)
	}

	// Retire A's LUN: its image stays (A did create it, but Ceph refuses
	// to remove an image B has open).
	a.OK("alua", "state", "x", "1", "unavailable")
	n1A.Close()
	n2A.Close()
	a.OK("target", "unmap", hostA, "x")
	a.OK("lun", "delete", "x")
	if !contains(rbdImages(t, c, "rbd"), "x") {
		t.Fatal("A's lun delete removed the image B serves")
	}
	if r := qemuIO(t, urlB, "read -P 0x11 0 64k", "read -P 0x41 256k 64k"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("qemu-io on B after A's delete: %s", r)
	}
}

// standbyInitiator is hostInitiator for a path that may be in ALUA
// standby (TEST UNIT READY fails there; INQUIRY and PR IN work).
func standbyInitiator(t testing.TB, url, name string) *iscsivol.Volume {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := iscsivol.Open(ctx, url, iscsivol.Config{Initiator: name, ReplacementTimeout: 10 * time.Second, AllowStandby: true}, nil)
	if err != nil {
		t.Fatalf("host %s: open %s: %v", name, url, err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}
