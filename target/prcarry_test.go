package target

import (
	"testing"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// TestMergeCarried: registrations carried from the old array cover every
// I_T nexus of their initiator name here, the holder keeps its
// reservation, lmtgt's own fence key is left out, a registration made here
// wins, and a re-sync replaces what was carried before.
func TestMergeCarried(t *testing.T) {
	const (
		h1   = "iqn.2026-11.org.example:host1"
		h2   = "iqn.2026-11.org.example:host2"
		here = "iqn.2026-11.org.lmtgt:b"
	)
	st := iscsivol.PRStatus{Full: true, Generation: 7, Type: iscsivol.PRWriteExclusiveRegs, HolderKey: 0x11,
		Registrations: []iscsivol.PRRegistration{
			{Key: 0x11, InitiatorPort: h1 + ",i,0x00023d000001", Holder: true},
			{Key: 0x22, InitiatorPort: h2 + ",i,0x00023d000001"},
			{Key: 0xfe, InitiatorPort: "iqn.2026-11.org.lmtgt:initiator,i,0x80aabbccdd01"},
		}}
	p := mergeCarried(prState{Generation: 3}, st, 0xfe)
	if len(p.Registrants) != 2 || p.Generation != 8 || p.Type != prWriteExclusiveRegs {
		t.Fatalf("merged %+v: want 2 registrants (fence key left out), generation 8, write-exclusive-registrants-only", p)
	}
	n1 := h1 + ",i,0x00023d000002|" + here // another ISID, another target
	if i := p.find(n1); i < 0 || p.Registrants[i].Key != 0x11 || !p.isHolder(n1) {
		t.Fatalf("host1 through lmtgt: find %d, holder %v: want its carried key 0x11 and the reservation", i, p.isHolder(n1))
	}
	other := "iqn.2026-11.org.example:host3,i,0x00023d000001|" + here
	if p.find(other) >= 0 || p.isHolder(other) {
		t.Fatal("an initiator that never registered matches a carried registration")
	}
	// host2 registers here directly with a new key; a re-sync keeps it
	// and drops carried entries that the old array no longer has.
	n2 := h2 + ",i,0x00023d000009|" + here
	p.Registrants = append(p.Registrants, registrant{Nexus: n2, Key: 0x33})
	st2 := st
	st2.Registrations = st.Registrations[1:] // host1 unregistered on the old array
	st2.Type, st2.HolderKey = iscsivol.PRNone, 0
	p = mergeCarried(p, st2, 0xfe)
	if p.Type != prNone || p.find(n1) >= 0 {
		t.Fatalf("after re-sync %+v: host1's carried registration and reservation should be gone", p)
	}
	if i := p.find(n2); i < 0 || p.Registrants[i].Key != 0x33 || len(p.Registrants) != 1 {
		t.Fatalf("after re-sync %+v: host2's own registration (0x33) should be the only one", p)
	}
	// Unregistering through a nexus covered by a carried registration
	// removes it and the reservation it held.
	p = mergeCarried(prState{}, st, 0xfe)
	if !p.remove(n1) || p.find(n1) >= 0 {
		t.Fatalf("remove through a covered nexus: %+v", p)
	}
}
