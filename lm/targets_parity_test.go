package lm

import (
	"slices"
	"testing"
)

// portalExporter is a recordingExporter that lists the server's portals.
type portalExporter struct {
	recordingExporter
	portals []string
}

func (p *portalExporter) Portals() []string { return p.portals }

// TestMappingOptionsInLM: a mapping's write protection and initiator mask
// are stored and applied; a bad initiator name or an empty change is
// refused and changes nothing.
func TestMappingOptionsInLM(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("a", 1<<20)
	rec := &recordingExporter{}
	e.m.SetExporter(rec)
	if err := e.m.CreateTarget(testIQN); err != nil {
		t.Fatal(err)
	}
	host := "iqn.2026-11.org.lmtgt.test:host"
	if _, err := e.m.MapLUNWith(testIQN, "a", MapOptions{ReadOnly: true, Initiators: []string{host, host}}); err != nil {
		t.Fatal(err)
	}
	mp := rec.last.Load().Targets[0].Mappings[0]
	if !mp.ReadOnly || !slices.Equal(mp.Initiators, []string{host}) {
		t.Fatalf("applied mapping %+v, want read-only, masked to [%s]", mp, host)
	}
	obj := "target " + testIQN
	_, err := e.m.MapLUNWith(testIQN, "a", MapOptions{Initiators: []string{"Not An IQN"}})
	wantRefusal(t, "bad mask name", err, ErrInvalid, obj, "bad initiator name")
	wantRefusal(t, "empty change", e.m.SetMapping(testIQN, "a", MappingChange{}), ErrInvalid, obj, "nothing to change")
	bad := []string{"x"}
	wantRefusal(t, "bad mask change", e.m.SetMapping(testIQN, "a", MappingChange{Initiators: &bad}), ErrInvalid, obj, "bad initiator name")
	n := rec.applied.Load()
	rw, none := false, []string{}
	if err := e.m.SetMapping(testIQN, "a", MappingChange{ReadOnly: &rw, Initiators: &none}); err != nil {
		t.Fatal(err)
	}
	if rec.applied.Load() != n+1 {
		t.Fatalf("SetMapping applied %d times, want once", rec.applied.Load()-n)
	}
	if mp := rec.last.Load().Targets[0].Mappings[0]; mp.ReadOnly || len(mp.Initiators) != 0 {
		t.Fatalf("after SetMapping: %+v, want writable, unmasked", mp)
	}
	wantRefusal(t, "unmapped LUN", e.m.SetMapping(testIQN, "nosuch", MappingChange{ReadOnly: &rw}), ErrNotFound, "lun nosuch", "not found")
}

// TestPortalGroupsInLM: portals are checked against the server's
// (PortalLister), stored canonical, and the last one is not removed
// (only ALL empties the group).
func TestPortalGroupsInLM(t *testing.T) {
	e := newEnv(t, Options{}, false)
	exp := &portalExporter{portals: []string{"127.0.0.1:3260", "[::1]:3260"}}
	e.m.SetExporter(exp)
	obj := "target " + testIQN
	wantRefusal(t, "unknown portal", e.m.CreateTargetOn(testIQN, []string{"127.0.0.1:3261"}), ErrInvalid, obj, "does not listen")
	wantRefusal(t, "not ip:port", e.m.CreateTargetOn(testIQN, []string{"localhost:3260"}), ErrInvalid, obj, "want ip:port")
	if err := e.m.CreateTargetOn(testIQN, []string{"[::ffff:127.0.0.1]:3260"}); err != nil {
		t.Fatal(err)
	}
	if got := exp.last.Load().Targets[0].Portals; !slices.Equal(got, []string{"127.0.0.1:3260"}) {
		t.Fatalf("stored portals %v, want [127.0.0.1:3260]", got)
	}
	wantRefusal(t, "add twice", e.m.AddTargetPortal(testIQN, "127.0.0.1:3260"), ErrExists, obj, "already")
	wantRefusal(t, "remove last", e.m.RemoveTargetPortal(testIQN, "127.0.0.1:3260"), ErrState, obj, "last portal")
	if err := e.m.AddTargetPortal(testIQN, "[::1]:3260"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.RemoveTargetPortal(testIQN, "127.0.0.1:3260"); err != nil {
		t.Fatal(err)
	}
	if got := exp.last.Load().Targets[0].Portals; !slices.Equal(got, []string{"[::1]:3260"}) {
		t.Fatalf("portals after add/remove %v, want [[::1]:3260]", got)
	}
	if err := e.m.RemoveTargetPortal(testIQN, ""); err != nil {
		t.Fatal(err)
	}
	if got := exp.last.Load().Targets[0].Portals; len(got) != 0 {
		t.Fatalf("portals after remove ALL %v, want none (every portal)", got)
	}
	wantRefusal(t, "remove ALL again", e.m.RemoveTargetPortal(testIQN, ""), ErrNotFound, obj, "every portal")
}
