package iscsi

import (
	"strings"
	"testing"
)

// TestTgtPersistentReservations drives PERSISTENT RESERVE IN/OUT against
// Linux tgt: a WRITE EXCLUSIVE reservation refuses another initiator's
// write with RESERVATION CONFLICT, READ FULL STATUS (or READ KEYS and READ
// RESERVATION) names the holder, a fixed ISID keeps the holder's I_T nexus
// across a new session, preempt takes the reservation over, and release
// and unregister leave the LUN free.
func TestTgtPersistentReservations(t *testing.T) {
	g := startTgt(t, tgtOpts{})
	cfgA := fastCfg()
	cfgA.Initiator = "iqn.2026-11.org.lmtgt.test:fence"
	cfgA.ISID = [6]byte{0x80, 1, 2, 3, 4, 5}
	a := openT(t, g.url("", ""), cfgA)
	cfgH := fastCfg()
	cfgH.Initiator = "iqn.2026-11.org.lmtgt.test:host"
	h := openT(t, g.url("", ""), cfgH)

	st, err := a.Client().ReadPRStatus()
	if err != nil {
		t.Fatalf("read status of a fresh LUN: %v", err)
	}
	if st.Type != PRNone || len(st.Registrations) != 0 {
		t.Fatalf("fresh LUN: %+v, want no registration and no reservation", st)
	}
	t.Logf("tgt has READ FULL STATUS: %v", st.Full)

	const keyA, keyH = 0xa1, 0xb2
	if err := a.Client().PRRegister(keyA); err != nil {
		t.Fatal(err)
	}
	if err := a.Client().PRReserve(keyA, PRWriteExclusive); err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, 4096)
	if _, err := a.WriteAt(blk, 0); err != nil {
		t.Fatalf("holder's write: %v", err)
	}
	_, err = h.WriteAt(blk, 0)
	if !IsReservationConflict(err) {
		t.Fatalf("non-holder's write under WRITE EXCLUSIVE: %v, want RESERVATION CONFLICT", err)
	}
	if _, err := h.ReadAt(blk, 0); err != nil {
		t.Fatalf("non-holder's read under WRITE EXCLUSIVE: %v (reads stay allowed)", err)
	}
	st, err = h.Client().ReadPRStatus()
	if err != nil {
		t.Fatal(err)
	}
	if st.Type != PRWriteExclusive || st.HolderKey != keyA {
		t.Fatalf("status %+v: want write-exclusive held by key 0x%x", st, keyA)
	}
	if hold, ok := st.Holder(); !ok || hold.Key != keyA || (st.Full && hold.InitiatorName() != cfgA.Initiator) {
		t.Fatalf("holder %+v (%v): want key 0x%x of %s", hold, ok, keyA, cfgA.Initiator)
	}

	// A new session (same initiator name and ISID, as after a restart of
	// lmtgt): tgt sees a new I_T nexus, and the reservation of the old one
	// refuses our write. A client that keeps the fence re-takes it by
	// itself (preempting its own key) and the write goes through.
	a.Close()
	a2 := openT(t, g.url("", ""), cfgA)
	a2.Client().SetFenceKey(keyA)
	if _, err := a2.WriteAt(blk, 4096); err != nil {
		t.Fatalf("fence holder's write from a new session: %v", err)
	}
	if _, err := h.WriteAt(blk, 0); !IsReservationConflict(err) {
		t.Fatalf("non-holder's write after the fence was re-taken: %v, want RESERVATION CONFLICT", err)
	}
	// TakeFence without preempt refuses a reservation held by another
	// key, names it, and leaves the host unregistered.
	cfgO := fastCfg()
	cfgO.Initiator = "iqn.2026-11.org.lmtgt.test:other"
	o := openT(t, g.url("", ""), cfgO)
	if _, err := o.Client().TakeFence(0xc3, false); !errorsIs(err, ErrFenceHeld) || !strings.Contains(err.Error(), "0xa1") {
		t.Fatalf("take fence while another key holds it: %v, want ErrFenceHeld naming key 0xa1", err)
	}
	if st, err := o.Client().ReadPRStatus(); err != nil || len(st.Registrations) != 1 {
		t.Fatalf("after a refused take: %+v, %v: want only the holder registered", st, err)
	}

	// The host registers and preempts the holder: it takes the reservation.
	if err := h.Client().PRRegister(keyH); err != nil {
		t.Fatal(err)
	}
	if err := h.Client().PRPreempt(keyH, keyA, PRWriteExclusive); err != nil {
		t.Fatal(err)
	}
	if _, err := a2.WriteAt(blk, 0); !IsReservationConflict(err) {
		t.Fatalf("preempted initiator's write: %v, want RESERVATION CONFLICT", err)
	}
	if err := h.Client().ReleaseFence(keyH, true); err != nil {
		t.Fatal(err)
	}
	st, err = a2.Client().ReadPRStatus()
	if err != nil {
		t.Fatal(err)
	}
	if st.Type != PRNone || len(st.Registrations) != 0 {
		t.Fatalf("after release and unregister: %+v, want nothing", st)
	}
	if _, err := a2.WriteAt(blk, 0); err != nil {
		t.Fatalf("write after release: %v", err)
	}
}
