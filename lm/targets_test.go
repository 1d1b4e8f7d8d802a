package lm

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lmtgt/lmtgt/metavol"
)

const testIQN = "iqn.2026-11.org.lmtgt.test:lm"

// recordingExporter records what lm applies and fails when told to.
type recordingExporter struct {
	fail    atomic.Bool
	applied atomic.Int64
	last    atomic.Pointer[TargetConfig]
}

func (r *recordingExporter) ApplyTargets(cfg TargetConfig) error {
	if r.fail.Load() {
		return errors.New("injected apply failure")
	}
	r.applied.Add(1)
	r.last.Store(&cfg)
	return nil
}

// wantRefusal checks err is a Refusal of class class about object whose
// reason contains reason.
func wantRefusal(t *testing.T, what string, err error, class error, object, reason string) {
	t.Helper()
	var r *Refusal
	if !errors.As(err, &r) || !errors.Is(err, class) || r.Object != object || !strings.Contains(r.Reason, reason) {
		t.Fatalf("%s: got %v (%#v), want a refusal %v about %q containing %q", what, err, r, class, object, reason)
	}
}

// TestTargetRulesInLM: the rules that tie targets to LUNs and pairs are
// lm's, checked without the admin API: a pair's target LUN is never
// mapped (from both sides), a mapped LUN is not deleted, a target with
// LUNs is deleted only with force, LUN numbers are bounded.
func TestTargetRulesInLM(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("src", 1<<20)
	e.lun("dst", 1<<20)
	e.lun("other", 1<<20)
	if err := e.m.CreateTarget(testIQN); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, "second create", e.m.CreateTarget(testIQN), ErrExists, "target "+testIQN, "already exists")
	wantRefusal(t, "bad IQN", e.m.CreateTarget("IQN.x"), ErrInvalid, "target IQN.x", "bad IQN")

	// A mapped LUN is not made the target of a pair.
	if _, err := e.m.MapLUN(testIQN, "other", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "other"}); !errors.Is(err, ErrMapped) {
		t.Fatalf("pair onto a mapped target LUN: %v, want ErrMapped", err)
	}
	// The target LUN of a pair is not mapped.
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "dst", Speed: SpeedLow, MaxMBps: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.MapLUN(testIQN, "dst", nil)
	wantRefusal(t, "map a pair's target", err, ErrInPair, "lun dst", "it is the target of pair")
	if n, err := e.m.MapLUN(testIQN, "src", nil); err != nil || n != 1 {
		t.Fatalf("map the source of a pair: number %d, %v (want 1)", n, err)
	}
	big := uint64(MaxLUNNumber + 1)
	_, err = e.m.MapLUN(testIQN, "src", &big)
	wantRefusal(t, "LUN number too high", err, ErrInvalid, "target "+testIQN, "above the highest")

	wantRefusal(t, "delete a mapped LUN", e.m.DeleteLUN("other"), ErrMapped, "lun other", "unmap it first")
	wantRefusal(t, "delete a LUN in a pair", e.m.DeleteLUN("dst"), ErrInPair, "lun dst", "cancel or split it first")
	wantRefusal(t, "delete a target with LUNs", e.m.DeleteTarget(testIQN, false), ErrMapped, "target "+testIQN, "--force")

	ti, err := e.m.TargetInfo(testIQN)
	if err != nil || len(ti.LUNs) != 2 || ti.LUNs[0].Name != "other" || ti.LUNs[1].Name != "src" {
		t.Fatalf("target info: %+v %v", ti, err)
	}
	li, err := e.m.LUNInfo("dst")
	if err != nil || li.Pair == nil || li.Pair.Role != "target" || li.Pair.Peer != "src" || len(li.Mappings) != 0 {
		t.Fatalf("lun info of dst: %+v %v", li, err)
	}

	// Once the pair is cancelled its target LUN can be mapped.
	if err := e.m.Cancel("src"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.MapLUN(testIQN, "dst", nil); err != nil {
		t.Fatalf("map the target of a cancelled pair: %v", err)
	}
	if err := e.m.DeleteTarget(testIQN, true); err != nil {
		t.Fatalf("delete with force: %v", err)
	}
	if err := e.m.DeleteLUN("other"); err != nil {
		t.Fatalf("delete of a LUN no longer mapped: %v", err)
	}
}

// TestExporterRollback: every committed target change reaches the
// Exporter; when it fails, the change is undone in the meta volume and the
// old configuration applied again.
func TestExporterRollback(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("a", 1<<20)
	x := &recordingExporter{}
	e.m.SetExporter(x)
	if err := e.m.CreateTarget(testIQN); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.MapLUN(testIQN, "a", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SetDiscoveryCHAP(metavol.CHAP{User: "d", Secret: "discoverysecret"}); err != nil {
		t.Fatal(err)
	}
	cfg := x.last.Load()
	if x.applied.Load() != 3 || len(cfg.Targets) != 1 || len(cfg.Targets[0].Mappings) != 1 || cfg.DiscoveryCHAP == nil {
		t.Fatalf("applied %d times, last %+v", x.applied.Load(), cfg)
	}
	if l, ok := cfg.LUNs[cfg.Targets[0].Mappings[0].LUNID]; !ok || l.Name != "a" {
		t.Fatalf("applied LUN records: %+v", cfg.LUNs)
	}

	x.fail.Store(true)
	wantRefusal(t, "unmap with a failing exporter", e.m.UnmapLUN(testIQN, "a"), ErrApply, "target "+testIQN, "rolled back")
	wantRefusal(t, "discovery CHAP off with a failing exporter", e.m.ClearDiscoveryCHAP(), ErrApply, "discovery", "rolled back")
	x.fail.Store(false)
	ti, err := e.m.TargetInfo(testIQN)
	if err != nil || len(ti.LUNs) != 1 {
		t.Fatalf("after the refused unmap: %+v %v", ti, err)
	}
	if c, err := e.m.DiscoveryCHAP(); err != nil || c == nil || c.User != "d" {
		t.Fatalf("after the refused discovery change: %+v %v", c, err)
	}
}
