package api

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// lastTarget is the target iqn of the last configuration applied live.
func (e *env) lastTarget(iqn string) target.Target {
	e.t.Helper()
	p := e.exp.last.Load()
	if p == nil {
		e.t.Fatal("nothing applied")
	}
	for _, t := range *p {
		if t.IQN == iqn {
			return t
		}
	}
	e.t.Fatalf("target %s not in the applied configuration", iqn)
	return target.Target{}
}

// TestALUAAPI: targets get distinct relative port IDs in group 1; group,
// port and per-LUN state changes are persisted, shown and applied live
// (the target server gets them); refused changes (taken port, bad IDs,
// unknown state, LUN or target, failed apply) change nothing.
func TestALUAAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.cl
	const t2 = tgt + "-2"
	if _, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: "d", Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, iqn := range []string{tgt, t2} {
		if _, err := cl.CreateTarget(ctx, iqn); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Map(ctx, iqn, "d", nil); err != nil {
			t.Fatal(err)
		}
	}
	a, err := cl.ALUA(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	wantTargets := []wire.ALUATarget{{IQN: tgt, Group: 1, Port: 1}, {IQN: t2, Group: 1, Port: 2}}
	if !reflect.DeepEqual(a.Targets, wantTargets) || len(a.Groups) != 1 || len(a.LUNs) != 1 {
		t.Fatalf("initial: %+v", a)
	}
	if g := a.LUNs[0].Groups; len(g) != 1 || g[0].State != "active-optimized" || g[0].Set || !reflect.DeepEqual(g[0].Ports, []uint16{1, 2}) {
		t.Fatalf("initial LUN states: %+v", g)
	}

	two, nine := 2, 9
	tp, err := cl.SetTargetALUA(ctx, t2, wire.SetALUATarget{Group: &two, Port: &nine})
	if err != nil || tp != (wire.ALUATarget{IQN: t2, Group: 2, Port: 9}) {
		t.Fatalf("set target: %+v %v", tp, err)
	}
	if lt := e.lastTarget(t2); lt.Group != 2 || lt.RelPort != 9 {
		t.Fatalf("applied %s: group %d port %d", t2, lt.Group, lt.RelPort)
	}
	one := 1
	_, err = cl.SetTargetALUA(ctx, t2, wire.SetALUATarget{Port: &one})
	wantStatus(t, err, http.StatusConflict, "used by target "+tgt)
	zero, big := 0, 65536
	_, err = cl.SetTargetALUA(ctx, t2, wire.SetALUATarget{Group: &zero})
	wantStatus(t, err, http.StatusBadRequest, "target port group 0")
	_, err = cl.SetTargetALUA(ctx, t2, wire.SetALUATarget{Port: &big})
	wantStatus(t, err, http.StatusBadRequest, "relative target port ID 65536")
	_, err = cl.SetTargetALUA(ctx, t2, wire.SetALUATarget{})
	wantStatus(t, err, http.StatusBadRequest, "give a target port group")
	_, err = cl.SetTargetALUA(ctx, "iqn.2026-11.org.lmtgt.test:none", wire.SetALUATarget{Group: &two})
	wantStatus(t, err, http.StatusNotFound, "not found")
	if lt := e.lastTarget(t2); lt.RelPort != 9 {
		t.Fatalf("refused change applied port %d", lt.RelPort)
	}

	l, err := cl.SetALUAState(ctx, "d", 2, "standby")
	if err != nil {
		t.Fatal(err)
	}
	wantGroups := []wire.ALUALUNGroup{
		{Group: 1, State: "active-optimized", Ports: []uint16{1}},
		{Group: 2, State: "standby", Ports: []uint16{9}, Set: true},
	}
	if !reflect.DeepEqual(l.Groups, wantGroups) {
		t.Fatalf("after standby: %+v", l.Groups)
	}
	if lt := e.lastTarget(t2); !reflect.DeepEqual(lt.LUNs[0].ALUA, target.GroupStates{2: target.Standby}) {
		t.Fatalf("applied LUN states %v", lt.LUNs[0].ALUA)
	}
	// A group without targets can be given a state ahead of time.
	if l, err = cl.SetALUAState(ctx, "d", 5, "unavailable"); err != nil || len(l.Groups) != 3 || l.Groups[2].Group != 5 || len(l.Groups[2].Ports) != 0 {
		t.Fatalf("state for group 5: %+v %v", l, err)
	}
	_, err = cl.SetALUAState(ctx, "d", 2, "offline")
	wantStatus(t, err, http.StatusBadRequest, `access state "offline"`)
	_, err = cl.SetALUAState(ctx, "d", 0, "standby")
	wantStatus(t, err, http.StatusBadRequest, "target port group 0")
	_, err = cl.SetALUAState(ctx, "nope", 2, "standby")
	wantStatus(t, err, http.StatusNotFound, "not found")
	_, err = cl.ALUA(ctx, "nope")
	wantStatus(t, err, http.StatusNotFound, "not found")

	// A failed apply is rolled back.
	e.exp.fail.Store(true)
	_, err = cl.SetALUAState(ctx, "d", 2, "transitioning")
	wantStatus(t, err, http.StatusInternalServerError, "rolled back")
	e.exp.fail.Store(false)
	a, err = cl.ALUA(ctx, "d")
	if err != nil || a.LUNs[0].Groups[1].State != "standby" {
		t.Fatalf("after the failed apply: %+v %v", a, err)
	}

	// Back to the default: the state is no longer stored.
	if _, err := cl.SetALUAState(ctx, "d", 5, "active-optimized"); err != nil {
		t.Fatal(err)
	}
	l, err = cl.SetALUAState(ctx, "d", 2, "active-optimized")
	if err != nil || len(l.Groups) != 2 || l.Groups[1].Set || l.Groups[1].State != "active-optimized" {
		t.Fatalf("back to default: %+v %v", l, err)
	}
	if lt := e.lastTarget(t2); len(lt.LUNs[0].ALUA) != 0 {
		t.Fatalf("applied LUN states %v, want none", lt.LUNs[0].ALUA)
	}
}
