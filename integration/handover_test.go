package integration

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// prOf reads the persistent reservation state of a LUN through v.
func prOf(t testing.TB, v *iscsivol.Volume, what string) iscsivol.PRStatus {
	t.Helper()
	st, err := v.Client().ReadPRStatus()
	if err != nil {
		t.Fatalf("%s: read full status: %v", what, err)
	}
	return st
}

// hasReg reports whether st holds a registration of key by initiator
// name (any ISID, any target port).
func hasReg(st iscsivol.PRStatus, name string, key uint64) bool {
	for _, r := range st.Registrations {
		if r.Key == key && r.InitiatorName() == name {
			return true
		}
	}
	return false
}

// TestHandoverBetweenServers moves LUN X from lmtgt server A to lmtgt
// server B while a two-node cluster keeps its SCSI-3 reservation (the
// procedure of README "Moving a LUN between lmtgt servers"):
//
//  1. A serves X to the hosts on target hostA; node1 and node2 register
//     (keys K1, K2) and node1 reserves WRITE EXCLUSIVE - REGISTRANTS ONLY,
//     as fence_scsi does. node1 writes data.
//  2. B imports X from A through a separate peer target on A (in its own
//     target port group; adopt): identity and reservations are carried
//     over, and B registers on A (so its pass-through writes are allowed
//     under the registrants-only reservation).
//  3. The hosts log in to B's target hostB (group 2, relative port 10):
//     the same device (VPD 0x83), their registrations and node1's
//     reservation present on B, enforced (an unregistered initiator
//     cannot write), node1 writes through B. A's host-facing group goes
//     ALUA standby: a write there gets NOT READY, TARGET PORT IN STANDBY
//     STATE; B keeps working.
//  4. B: migration create --preempt: the re-sync carries the reservations
//     again (node2 re-registered on A meanwhile), B fences A's LUN
//     (preempting node1's key there): a write of a host through A's
//     active peer target now fails with RESERVATION CONFLICT.
//  5. node1 keeps writing through B; B synces and splits: X is local on
//     B; every acknowledged write is there; the reservations are still
//     on B and enforced, also after a restart of B.
//  6. A's copy is retired: B deletes the remote LUN (releasing the fence),
//     A unmaps and deletes X.
func TestHandoverBetweenServers(t *testing.T) {
	needTools(t, "qemu-img", "iscsi-inq")
	const (
		size  = 16 << 20
		node1 = "iqn.2026-11.org.example:node1"
		node2 = "iqn.2026-11.org.example:node2"
		k1    = 0x1111
		k2    = 0x2222
	)
	nblocks := size / mBlock
	want := make(image, nblocks)
	pattern := func(pat byte) []byte { return bytes.Repeat([]byte{pat}, mBlock) }
	writeVia := func(v *iscsivol.Volume, blk int, pat byte, via string) {
		t.Helper()
		if _, err := v.WriteAt(pattern(pat), int64(blk)*mBlock); err != nil {
			t.Fatalf("node1 write of block %d via %s: %v", blk, via, err)
		}
		want[blk] = int(pat)
	}

	// 1. A serves X.
	a := StartDaemon(t, "")
	a.OK("lun", "create", "x", "--size", "16MiB")
	hostA, peerA := testIQN("a-host"), testIQN("a-peer")
	for _, iqn := range []string{hostA, peerA} {
		a.OK("target", "create", iqn)
		a.OK("target", "map", iqn, "x")
		a.OK("target", "allow", iqn, "ALL")
	}
	// The peer target B imports through is in its own group: it stays
	// active when A's host-facing group goes standby.
	a.OK("alua", "group", peerA, "3")
	n1A := hostInitiator(t, a.URL(hostA, 0), node1)
	n2A := hostInitiator(t, a.URL(hostA, 0), node2)
	for _, s := range []struct {
		v   *iscsivol.Volume
		key uint64
	}{{n1A, k1}, {n2A, k2}} {
		if err := s.v.Client().PRRegister(s.key); err != nil {
			t.Fatal(err)
		}
	}
	if err := n1A.Client().PRReserve(k1, iscsivol.PRWriteExclusiveRegs); err != nil {
		t.Fatal(err)
	}
	writeVia(n1A, 0, 0x11, "A")
	writeVia(n1A, 1, 0x12, "A")

	// 2. B imports X from A's peer target (identity adopted, PRs carried).
	b := StartDaemon(t, "")
	b.OK("lun", "import", "x", "--from", a.URL(peerA, 0))
	b.OK("lun", "create", "x-local", "--size", "16MiB")
	hostB := testIQN("b-host")
	b.OK("target", "create", hostB)
	// Distinct target port group and relative port IDs on the two servers.
	b.OK("alua", "group", hostB, "2")
	b.OK("alua", "port", hostB, "10")
	b.OK("target", "map", hostB, "x")
	b.OK("target", "allow", hostB, "ALL")
	urlB := b.URL(hostB, 0)
	if va, vb := luDesignators(t, a.URL(hostA, 0)), luDesignators(t, urlB); va != vb {
		t.Fatalf("B does not present X's identity:\nA: %s\nB: %s", va, vb)
	}

	// 3. The hosts' second path: B. Reservations present and enforced.
	n1B := hostInitiator(t, urlB, node1)
	st := prOf(t, n1B, "B after import")
	if !hasReg(st, node1, k1) || !hasReg(st, node2, k2) || st.Type != iscsivol.PRWriteExclusiveRegs || st.HolderKey != k1 {
		t.Fatalf("B after import: %+v: want node1 (0x%x, holder, write-exclusive-registrants-only) and node2 (0x%x)", st, k1, k2)
	}
	stranger := hostInitiator(t, urlB, "iqn.2026-11.org.example:stranger")
	if _, err := stranger.WriteAt(pattern(0xee), 2*mBlock); !iscsivol.IsReservationConflict(err) {
		t.Fatalf("an unregistered initiator's write on B: %v, want RESERVATION CONFLICT", err)
	}
	writeVia(n1B, 2, 0x21, "B (remote leg)")

	// ALUA moves the hosts' I/O: A's host-facing group standby, B active.
	a.OK("alua", "state", "x", "1", "standby")
	var se *iscsivol.SCSIError
	if _, err := n1A.WriteAt(pattern(0xee), 3*mBlock); !errors.As(err, &se) || se.Key != 0x2 || se.ASC != 0x04 || se.ASCQ != 0x0b {
		t.Fatalf("node1's write through A's standby path: %v, want NOT READY, TARGET PORT IN STANDBY STATE", err)
	}
	writeVia(n1B, 3, 0x22, "B (A's host group standby)")

	// 4. Fence A's LUN; the re-sync carries what changed on A meanwhile:
	// node2 re-registered there with a new key.
	const k2b = 0x2b2b
	if err := n2A.Client().PRRegister(k2b); err != nil {
		t.Fatal(err)
	}
	b.OK("migration", "create", "--source", "x", "--target", "x-local", "--speed", "highest", "--preempt")
	var m wire.Migration
	b.JSON(&m, "migration", "show", "x")
	if !strings.HasPrefix(m.Fence, "held") {
		t.Fatalf("migration show on B: fence %q, want held", m.Fence)
	}
	// Behind the standby state, the fence: through A's (active) peer
	// target, a write from the hosts' initiators fails with RESERVATION
	// CONFLICT.
	n2Peer := hostInitiator(t, a.URL(peerA, 0), node2)
	if _, err := n2Peer.WriteAt(pattern(0xee), 3*mBlock); !iscsivol.IsReservationConflict(err) {
		t.Fatalf("node2's write through A's peer target after the fence: %v, want RESERVATION CONFLICT", err)
	}
	st = prOf(t, n1B, "B after the re-sync")
	if !hasReg(st, node1, k1) || !hasReg(st, node2, k2b) || hasReg(st, node2, k2) || st.HolderKey != k1 {
		t.Fatalf("B after the re-sync: %+v: want node1 0x%x holding, node2 with its new key 0x%x", st, k1, k2b)
	}
	for _, r := range st.Registrations {
		if strings.HasPrefix(r.InitiatorName(), "iqn.2026-11.org.lmtgt") {
			t.Fatalf("B carried its own fence registration over: %+v", st)
		}
	}

	// 5. Migrate under node1's writes through B, split.
	writeVia(n1B, 3, 0x31, "B (dual-write)")
	if _, err := n1A.WriteAt(pattern(0xee), 3*mBlock); err == nil {
		t.Fatal("node1's write through A's standby path succeeded")
	}
	b.waitMig("x", syncTimeout, "synced")
	writeVia(n1B, 4, 0x41, "B (synced)")
	b.OK("migration", "split", "x")
	writeVia(n1B, 5, 0x51, "B (after the split)")
	var lx wire.LUN
	b.JSON(&lx, "lun", "show", "x")
	if lx.Remote != nil || lx.VolumeKind != "file" {
		t.Fatalf("x on B after the split: remote %+v kind %q: want a local file", lx.Remote, lx.VolumeKind)
	}
	compareRef(t, "X on B after the split", urlB, want, size)

	checkPR := func(when string) {
		t.Helper()
		n1 := hostInitiator(t, urlB, node1)
		st := prOf(t, n1, when)
		if !hasReg(st, node1, k1) || !hasReg(st, node2, k2b) || st.Type != iscsivol.PRWriteExclusiveRegs || st.HolderKey != k1 {
			t.Fatalf("%s: %+v: want node1 0x%x holding write-exclusive-registrants-only and node2 0x%x", when, st, k1, k2b)
		}
		s := hostInitiator(t, urlB, "iqn.2026-11.org.example:stranger2")
		if _, err := s.WriteAt(pattern(0xee), 6*mBlock); !iscsivol.IsReservationConflict(err) {
			t.Fatalf("%s: an unregistered initiator's write on B: %v, want RESERVATION CONFLICT", when, err)
		}
		writeVia(n1, 6, 0x61, when)
	}
	checkPR("B after the split")
	b.Restart(false)
	checkPR("B after a restart")
	compareRef(t, "X on B after a restart", urlB, want, size)

	// 6. Retire A's copy: A's host group unavailable, B logs out
	// (releasing the fence), A deletes X.
	a.OK("alua", "state", "x", "1", "unavailable")
	b.OK("lun", "delete", "x-local")
	n1A.Close()
	n2A.Close()
	n2Peer.Close()
	for _, iqn := range []string{hostA, peerA} {
		a.OK("target", "unmap", iqn, "x")
	}
	a.OK("lun", "delete", "x")
}
