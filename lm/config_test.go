package lm

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

const (
	cfgIQN1 = "iqn.2026-12.org.lmtgt.test:cfg1"
	cfgIQN2 = "iqn.2026-12.org.lmtgt.test:cfg2"
	cfgInit = "iqn.2026-12.org.lmtgt.test:host1"
)

// buildConfigServer makes a server with every kind of object a config
// holds: LUNs, two targets (ALUA ports), mappings, ACL, CHAP, discovery
// CHAP, an ALUA state, a pair and a session.
func buildConfigServer(t *testing.T, e *env) {
	t.Helper()
	for _, n := range []string{"a", "b", "src", "dst", "s1", "d1", "spare"} {
		e.lun(n, 1<<20)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.m.CreateTarget(cfgIQN1))
	must(e.m.CreateTargetOn(cfgIQN2, []string{"127.0.0.1:3260", "[::1]:3260"}))
	g, p := uint16(7), uint16(42)
	_, err := e.m.SetTargetPort(cfgIQN2, &g, &p)
	must(err)
	n3 := uint64(3)
	_, err = e.m.MapLUNWith(cfgIQN1, "a", MapOptions{Number: &n3, ReadOnly: true, Initiators: []string{cfgInit}})
	must(err)
	_, err = e.m.MapLUN(cfgIQN1, "src", nil)
	must(err)
	_, err = e.m.MapLUN(cfgIQN2, "b", nil)
	must(err)
	must(e.m.AllowInitiator(cfgIQN1, cfgInit))
	must(e.m.AllowInitiator(cfgIQN2, ""))
	_, err = e.m.SetTargetCHAP(cfgIQN1, metavol.CHAP{User: "u1", Secret: "secret-one-123", MutualUser: "tgt", MutualSecret: "secret-two-456"})
	must(err)
	_, err = e.m.SetDiscoveryCHAP(metavol.CHAP{User: "disc", Secret: "discovery-secret"})
	must(err)
	must(e.m.SetLUNAccess("a", 7, "standby"))
	// Every pair option is set to a value that is not its default; the
	// start times keep both scheduled (an auto split would end them).
	_, err = e.m.CreatePair(PairRequest{Source: "src", Target: "dst", Speed: SpeedLow, MaxMBps: 3, Vehicle: VehicleGeneric,
		Priority: 8, StartAt: cfgStart(), Windows: []Window{{Start: 22 * time.Hour, End: 6 * time.Hour, Speed: SpeedHighest}},
		MaxElapsed: 6 * time.Hour, AutoSplit: true, Verify: true, MaxHostLatency: 3 * time.Millisecond})
	must(err)
	_, err = e.m.CreateSession(SessionRequest{Name: "wave1", Pairs: []PairRequest{{Source: "s1", Target: "d1", Vehicle: VehicleGeneric}},
		Speed: SpeedHigh, MaxMBps: 7, MaxActive: 1, Priority: 2, StartAt: cfgStart().Add(time.Hour),
		Windows: []Window{{Start: time.Hour, End: 2 * time.Hour, Speed: SpeedLow, MaxMBps: 4}}, MaxElapsed: 90 * time.Minute,
		AutoSplit: true, Verify: true, MaxHostLatency: -1})
	must(err)
	// A pair of the session with an option of its own.
	seven := 7
	_, err = e.m.Set("s1", SetRequest{Priority: &seven})
	must(err)
}

// cfgStart is a start time a day ahead (whole seconds, as a file has it).
func cfgStart() time.Time { return time.Now().Add(24 * time.Hour).Truncate(time.Second).UTC() }

func export(t *testing.T, m *Manager) Config {
	t.Helper()
	c, err := m.ExportConfig()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConfigRoundTrip: export, apply on an empty server, export again:
// the same configuration, identities included; a second apply plans
// nothing.
func TestConfigRoundTrip(t *testing.T) {
	a := newEnv(t, Options{}, false)
	buildConfigServer(t, a)
	want := export(t, a.m)
	if len(want.LUNs) != 7 || len(want.Targets) != 2 || len(want.Migrations) != 1 || len(want.Sessions) != 1 || want.Discovery == nil {
		t.Fatalf("export misses objects: %+v", want)
	}
	if l := want.LUNs[0]; l.Name != "a" || l.Path != "" || l.ALUA[7] != "standby" || l.ID == "" || l.NAA == "" || l.Serial == "" {
		t.Fatalf("lun a exported as %+v", l)
	}
	// The settings added after the first format are exported too.
	if mp := want.Targets[0].LUNs[1]; mp.LUN != "a" || !mp.ReadOnly || !reflect.DeepEqual(mp.Initiators, []string{cfgInit}) {
		t.Fatalf("mapping of a exported as %+v", mp)
	}
	if ps := want.Targets[1].Portals; !reflect.DeepEqual(ps, []string{"127.0.0.1:3260", "[::1]:3260"}) {
		t.Fatalf("portals exported as %q", ps)
	}
	if o := want.Migrations[0].PairOptions; o.Priority != 8 || o.StartAt.IsZero() || len(o.Windows) != 1 || o.MaxElapsed != 6*time.Hour || !o.AutoSplit || !o.Verify ||
		o.MaxHostLatency != 3*time.Millisecond {
		t.Fatalf("pair options exported as %+v", o)
	}
	if s := want.Sessions[0]; s.MaxActive != 1 || s.Priority != 2 || s.StartAt.IsZero() || len(s.Windows) != 1 || s.MaxElapsed != 90*time.Minute ||
		!s.AutoSplit || !s.Verify || s.MaxMBps != 7 || s.Pairs[0].Vehicle != VehicleGeneric || s.MaxHostLatency != -1 {
		t.Fatalf("session exported as %+v", s)
	}
	if o := want.Sessions[0].Pairs[0].Options; o == nil || o.Priority != 7 || !o.AutoSplit || o.Speed != SpeedHigh {
		t.Fatalf("session pair s1's own options exported as %+v, want the session's with priority 7", o)
	}

	b := newEnv(t, Options{}, false)
	plan, err := b.m.ApplyConfig(want, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Kept) != 0 || len(plan.Changes) == 0 {
		t.Fatalf("plan on an empty server: %+v", plan)
	}
	got := export(t, b.m)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, want)
	}
	// CreateLUN keeps an identity only if it is free and well formed.
	_, err = b.m.CreateLUN(CreateLUNRequest{Name: "x", Size: 1 << 20, ID: want.LUNs[0].ID})
	wantRefusal(t, "taken ID", err, ErrExists, "lun x", "id "+want.LUNs[0].ID+" is already lun a's")
	_, err = b.m.CreateLUN(CreateLUNRequest{Name: "x", Size: 1 << 20, NAA: "7abc"})
	wantRefusal(t, "bad NAA", err, ErrInvalid, "lun x", "naa \"7abc\"")
	again, err := b.m.PlanConfig(want, ApplyOptions{})
	if err != nil || len(again.Changes) != 0 || len(again.Kept) != 0 {
		t.Fatalf("second plan: %+v, %v; want nothing to do", again, err)
	}
}

func planLines(p ConfigPlan) []string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, c.String())
	}
	return out
}

// TestConfigPlanChanges: a changed file gives exactly the changed lines,
// in order; apply makes the export match it.
func TestConfigPlanChanges(t *testing.T) {
	e := newEnv(t, Options{}, false)
	buildConfigServer(t, e)
	want := export(t, e.m)
	want.LUNs = append(want.LUNs, ConfigLUN{Name: "new", Size: 2 << 20, BlockSize: 512})
	sort.Slice(want.LUNs, func(i, j int) bool { return want.LUNs[i].Name < want.LUNs[j].Name })
	for i := range want.LUNs {
		if want.LUNs[i].Name == "b" {
			want.LUNs[i].Size = 4 << 20
		}
	}
	t1 := &want.Targets[0]
	t1.Initiators = []string{"iqn.2026-12.org.lmtgt.test:host2"}
	t1.CHAP = &metavol.CHAP{User: "u2", Secret: SecretPlaceholder, MutualUser: "tgt", MutualSecret: SecretPlaceholder}
	t1.LUNs = append(t1.LUNs, ConfigMapping{Number: 5, LUN: "new"})
	want.Migrations[0].Speed = SpeedHigh

	plan, err := e.m.PlanConfig(want, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantLines := []string{
		"~ lun b: grow from 1 MiB to 4 MiB",
		"+ lun new: 2 MiB, 512-byte blocks, volume (data dir)",
		"~ target " + cfgIQN1 + ": disallow initiator " + cfgInit,
		"~ target " + cfgIQN1 + ": allow initiator iqn.2026-12.org.lmtgt.test:host2",
		"~ target " + cfgIQN1 + ": chap user u2, mutual user tgt",
		"~ target " + cfgIQN1 + ": map lun new as LUN 5",
		"~ migration src: speed low→high",
	}
	if got := planLines(plan); !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
	}
	if _, err := e.m.ApplyConfig(want, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	got := export(t, e.m)
	if c := got.Targets[0].CHAP; c == nil || c.User != "u2" || c.Secret != "secret-one-123" || c.MutualSecret != "secret-two-456" {
		t.Fatalf("chap after apply: %+v (the placeholders keep the secrets)", c)
	}
	// The new LUN got a new identity; the rest is the file.
	for i := range got.LUNs {
		if got.LUNs[i].Name == "new" {
			if got.LUNs[i].ID == "" {
				t.Fatal("new LUN without an ID")
			}
			got.LUNs[i].ID, got.LUNs[i].NAA, got.LUNs[i].Serial, got.LUNs[i].Kind = "", "", "", ""
		}
	}
	got.Targets[0].CHAP = want.Targets[0].CHAP
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after apply:\n got %+v\nwant %+v", got, want)
	}
}

// TestConfigRefusals: what cannot be done live is refused with the object
// and the reason, and nothing at all changes (other changes in the same
// file included).
func TestConfigRefusals(t *testing.T) {
	e := newEnv(t, Options{}, false)
	buildConfigServer(t, e)
	before := export(t, e.m)
	lun := func(c *Config, name string) *ConfigLUN {
		for i := range c.LUNs {
			if c.LUNs[i].Name == name {
				return &c.LUNs[i]
			}
		}
		t.Fatalf("no lun %s", name)
		return nil
	}
	cases := []struct {
		name   string
		change func(c *Config)
		class  error
		object string
		reason string
	}{
		{"block size", func(c *Config) { lun(c, "a").BlockSize = 4096 }, ErrInvalid, "lun a", "block size 4096 is 512 here"},
		{"path", func(c *Config) { lun(c, "a").Path = "/tmp/elsewhere.img" }, ErrInvalid, "lun a", "volume path /tmp/elsewhere.img is (data dir) here"},
		{"identity", func(c *Config) { lun(c, "a").Serial = "OTHER" }, ErrInvalid, "lun a", "serial OTHER is"},
		{"shrink", func(c *Config) { lun(c, "b").Size = 512 }, ErrInvalid, "lun b", "LUNs only grow"},
		{"negative size", func(c *Config) { c.LUNs = append(c.LUNs, ConfigLUN{Name: "neg", Size: -5}) }, ErrInvalid, "lun neg", "size -5 B is negative"},
		{"grow a pair's LUN", func(c *Config) { lun(c, "src").Size = 2 << 20 }, ErrInPair, "config", "lun src: cannot grow to 2 MiB: in migration pair"},
		{"unknown LUN mapped", func(c *Config) {
			c.Targets[0].LUNs = append(c.Targets[0].LUNs, ConfigMapping{Number: 9, LUN: "ghost"})
		}, ErrNotFound, "target " + cfgIQN1, "which the file does not define"},
		{"map a pair target", func(c *Config) {
			c.Targets[1].LUNs = append(c.Targets[1].LUNs, ConfigMapping{Number: 9, LUN: "dst"})
		}, ErrInPair, "config", "lun dst: cannot be mapped on " + cfgIQN2 + ": it is the target of migration pair"},
		{"placeholder without a secret", func(c *Config) {
			c.Targets[1].CHAP = &metavol.CHAP{User: "x", Secret: SecretPlaceholder}
		}, ErrInvalid, "target " + cfgIQN2, "no current secret to keep"},
		{"pair target", func(c *Config) { c.Migrations[0].Target = "spare" }, ErrState, "migration src", "target spare is dst here"},
		{"session pairs", func(c *Config) { c.Sessions[0].Pairs[0].Vehicle = VehicleAuto }, ErrState, "session wave1", "its pairs differ"},
		{"pair vehicle", func(c *Config) { c.Migrations[0].Vehicle = VehicleAuto }, ErrState, "migration src", "vehicle auto is generic here"},
		{"pair start at", func(c *Config) { c.Migrations[0].StartAt = c.Migrations[0].StartAt.Add(time.Minute) }, ErrState, "migration src", "start at "},
		{"session priority", func(c *Config) { c.Sessions[0].Priority = 10 }, ErrInvalid, "session wave1", "priority 10"},
		{"mapping mask", func(c *Config) { c.Targets[0].LUNs[0].Initiators = []string{"not an iqn"} }, ErrInvalid, "target " + cfgIQN1, "mapping mask: bad initiator name"},
		{"version", func(c *Config) { c.Version = 2 }, ErrInvalid, "config", "version 2"},
		{"relative path", func(c *Config) {
			c.LUNs = append(c.LUNs, ConfigLUN{Name: "rel", Size: 1 << 20, Path: "rel.img"})
		}, ErrInvalid, "lun rel", "want an absolute path"},
		{"small pair target", func(c *Config) {
			c.LUNs = append(c.LUNs, ConfigLUN{Name: "big", Size: 2 << 20})
			c.Migrations = append(c.Migrations, ConfigPair{Source: "big", Target: "spare"})
		}, ErrInvalid, "migration big", "target lun spare (1 MiB) is smaller than the source (2 MiB)"},
		{"pair from a pair's target", func(c *Config) {
			c.Migrations = append(c.Migrations, ConfigPair{Source: "dst", Target: "spare"})
		}, ErrInPair, "migration dst", "lun dst is in two pairs of the file"},
		{"pair from a running pair's target", func(c *Config) {
			c.Migrations = []ConfigPair{{Source: "dst", Target: "spare"}}
		}, ErrInPair, "migration dst", "its source lun dst is the target of migration pair"},
		{"port held", func(c *Config) { c.Targets[0].Port = 42 }, ErrInvalid, "target " + cfgIQN2, "relative port ID 42 is also target " + cfgIQN1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := export(t, e.m)
			// A valid change in the same file must not be applied either.
			c.LUNs = append(c.LUNs, ConfigLUN{Name: "zz-valid", Size: 1 << 20})
			tc.change(&c)
			_, err := e.m.ApplyConfig(c, ApplyOptions{})
			wantRefusalIn(t, tc.name, err, tc.class, tc.object, tc.reason)
			if got := export(t, e.m); !reflect.DeepEqual(got, before) {
				t.Fatalf("refused apply changed the server:\n got %+v\nwant %+v", got, before)
			}
		})
	}
	// Several refusals are reported together.
	c := export(t, e.m)
	lun(&c, "a").BlockSize = 4096
	lun(&c, "b").Size = 512
	_, err := e.m.PlanConfig(c, ApplyOptions{})
	wantRefusal(t, "two refusals", err, ErrInvalid, "config", "2 changes refused: (1) lun a: ")
	if !strings.Contains(err.Error(), "lun b: size 512") {
		t.Fatalf("combined refusal misses lun b: %v", err)
	}
}

// TestConfigEveryRefusal: a refused plan lists every refusal, each with
// its object and condition, not only the first of each object: lun a
// changes its block size and shrinks; a new LUN has no size and a bad
// NAA; a pair asks for a priority and a cap out of range; the session
// for a negative max active and a priority out of range; and a mapping
// names a LUN the file lacks (a check of the names, which used to stop
// the plan before the rest was checked). Nothing changes.
func TestConfigEveryRefusal(t *testing.T) {
	e := newEnv(t, Options{}, false)
	buildConfigServer(t, e)
	before := export(t, e.m)
	c := export(t, e.m)
	for i := range c.LUNs {
		if c.LUNs[i].Name == "a" {
			c.LUNs[i].BlockSize, c.LUNs[i].Size = 4096, 512
		}
	}
	c.LUNs = append(c.LUNs, ConfigLUN{Name: "new", NAA: "7abc"}, ConfigLUN{Name: "zz-valid", Size: 1 << 20})
	c.Migrations[0].Priority, c.Migrations[0].MaxMBps = 10, -1
	c.Sessions[0].MaxActive, c.Sessions[0].Priority = -1, 11
	c.Targets[0].LUNs = append(c.Targets[0].LUNs, ConfigMapping{Number: 9, LUN: "ghost"})
	_, err := e.m.ApplyConfig(c, ApplyOptions{})
	want := []struct {
		class          error
		object, reason string
	}{
		{ErrNotFound, "target " + cfgIQN1, "LUN 9 names lun ghost, which the file does not define"},
		{ErrInvalid, "lun a", "cannot be changed live: block size 4096 is 512 here"},
		{ErrInvalid, "lun a", "size 512 B is smaller than the current 1 MiB"},
		{ErrInvalid, "lun new", "a new LUN needs a size"},
		{ErrInvalid, "lun new", `naa "7abc"`},
		{ErrInvalid, "migration src", "max MB/s -1 is negative"},
		{ErrInvalid, "migration src", "priority 10"},
		{ErrInvalid, "session wave1", "priority 11"},
		{ErrInvalid, "session wave1", "max active -1 is negative"},
	}
	wantRefusal(t, "every refusal", err, ErrNotFound, "config", fmt.Sprintf("%d changes refused: (1) target %s: LUN 9 names lun ghost", len(want), cfgIQN1))
	var r *Refusal
	errors.As(err, &r)
	if len(r.Each) != len(want) {
		t.Errorf("%d refusals, want %d: %v", len(r.Each), len(want), err)
	}
	for _, w := range want {
		wantRefusalIn(t, "every refusal", err, w.class, w.object, w.reason)
	}
	if got := export(t, e.m); !reflect.DeepEqual(got, before) {
		t.Fatalf("refused apply changed the server:\n got %+v\nwant %+v", got, before)
	}
}

// wantRefusalIn is wantRefusal for a plan that may be refused for more
// than one reason: err, or one of the refusals it combines, is the one.
func wantRefusalIn(t *testing.T, what string, err error, class error, object, reason string) {
	t.Helper()
	var r *Refusal
	if errors.As(err, &r) {
		for _, x := range append([]*Refusal{r}, r.Each...) {
			if errors.Is(x, class) && x.Object == object && strings.Contains(x.Reason, reason) {
				return
			}
		}
	}
	t.Fatalf("%s: got %v, want a refusal %v about %q containing %q (alone or among others)", what, err, class, object, reason)
}

// TestConfigPrune: objects the file does not name are kept and listed
// without --prune, deleted with it; a migration is never cancelled and a
// LUN in a pair is not pruned.
func TestConfigPrune(t *testing.T) {
	e := newEnv(t, Options{}, false)
	buildConfigServer(t, e)
	full := export(t, e.m)
	c := full
	c.Targets = c.Targets[:1]        // drop cfgIQN2 (maps b)
	c.LUNs = withoutLUN(c.LUNs, "b") // b only on cfgIQN2
	plan, err := e.m.PlanConfig(c, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, k := range plan.Kept {
		kept = append(kept, k.String())
	}
	wantKept := []string{"= target " + cfgIQN2 + ": not in the file (--prune deletes it)", "= lun b: not in the file (--prune deletes it)"}
	if len(plan.Changes) != 0 || !reflect.DeepEqual(kept, wantKept) {
		t.Fatalf("plan without prune: changes %v, kept %q; want none and %q", planLines(plan), kept, wantKept)
	}
	// Never prune what a logged-in host uses.
	_, err = e.m.PlanConfig(c, ApplyOptions{Prune: true, LoggedIn: map[string]int{cfgIQN2: 1}})
	wantRefusal(t, "prune with sessions", err, ErrState, "config", "target "+cfgIQN2+": cannot be pruned: 1 iSCSI session(s) logged in")
	if !strings.Contains(err.Error(), "lun b: cannot be pruned: mapped on "+cfgIQN2) {
		t.Fatalf("prune with sessions: %v, want lun b refused too", err)
	}
	plan, err = e.m.ApplyConfig(c, ApplyOptions{Prune: true, LoggedIn: map[string]int{cfgIQN1: 2}})
	if err != nil {
		t.Fatal(err)
	}
	wantLines := []string{"- target " + cfgIQN2 + ": delete (1 LUN(s) mapped)", "- lun b: delete (and its data file in the data dir)"}
	if got := planLines(plan); !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("prune plan %q, want %q", got, wantLines)
	}
	if got := export(t, e.m); !reflect.DeepEqual(got, c) {
		t.Fatalf("after prune:\n got %+v\nwant %+v", got, c)
	}
	// Pairs are kept even with prune; their LUNs cannot be pruned.
	c2 := c
	c2.Migrations = nil
	c2.LUNs = withoutLUN(c2.LUNs, "dst")
	_, err = e.m.PlanConfig(c2, ApplyOptions{Prune: true})
	wantRefusal(t, "prune a pair's LUN", err, ErrInPair, "lun dst", "cannot be deleted: in migration pair")
	c2.LUNs = c.LUNs
	plan, err = e.m.PlanConfig(c2, ApplyOptions{Prune: true})
	if err != nil || len(plan.Changes) != 0 || len(plan.Kept) != 1 || !strings.Contains(plan.Kept[0].String(), "apply never cancels a migration") {
		t.Fatalf("plan without the pair: %+v, %v", plan, err)
	}
}

func withoutLUN(ls []ConfigLUN, name string) []ConfigLUN {
	var out []ConfigLUN
	for _, l := range ls {
		if l.Name != name {
			out = append(out, l)
		}
	}
	return out
}

// failingExporter fails the apply number failAt (1-based) once.
type failingExporter struct {
	n, failAt atomic.Int64
}

func (f *failingExporter) ApplyTargets(TargetConfig) error {
	if f.n.Add(1) == f.failAt.Load() {
		return errors.New("injected apply failure")
	}
	return nil
}

// TestConfigApplyUndo: a step that fails after others were applied undoes
// them in reverse order, and the error names the failed step and what was
// applied and undone.
func TestConfigApplyUndo(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("a", 1<<20)
	fx := &failingExporter{}
	e.m.SetExporter(fx)
	before := export(t, e.m)
	c := before
	c.Discovery = &metavol.CHAP{User: "disc", Secret: "discovery-secret"}
	c.LUNs = append(c.LUNs, ConfigLUN{Name: "b", Size: 1 << 20})
	c.Targets = []ConfigTarget{{IQN: cfgIQN1, LUNs: []ConfigMapping{{Number: 0, LUN: "a"}, {Number: 1, LUN: "b"}}}}
	// Steps: discovery (apply 1), lun b, target create (apply 2), map a
	// (apply 3), map b (apply 4: fails).
	fx.failAt.Store(4)
	_, err := e.m.ApplyConfig(c, ApplyOptions{})
	var ae *ApplyError
	if !errors.As(err, &ae) || !errors.Is(err, ErrApply) {
		t.Fatalf("apply: %v, want an ApplyError wrapping ErrApply", err)
	}
	if len(ae.Applied) != 4 || len(ae.Undone) != 4 || len(ae.NotUndone) != 0 || !strings.Contains(ae.Failed.String(), "map lun b as LUN 1") {
		t.Fatalf("apply error: %v (applied %d, undone %d, not undone %v)", err, len(ae.Applied), len(ae.Undone), ae.NotUndone)
	}
	if !strings.Contains(err.Error(), "step 5 (~ target "+cfgIQN1+": map lun b as LUN 1) failed") {
		t.Fatalf("error text: %v", err)
	}
	if got := export(t, e.m); !reflect.DeepEqual(got, before) {
		t.Fatalf("after the undo:\n got %+v\nwant %+v", got, before)
	}

	// A step that cannot be undone (a LUN's growth) is reported as still
	// applied; a step refused by a rule of the machine (a path in a system
	// directory) undoes the others.
	c = before
	c.LUNs = []ConfigLUN{before.LUNs[0], {Name: "b", Size: 1 << 20}, {Name: "c", Size: 1 << 20, Path: "/etc/lmtgt-config-test.img"}}
	c.LUNs[0].Size = 2 << 20
	_, err = e.m.ApplyConfig(c, ApplyOptions{})
	if !errors.As(err, &ae) || !strings.Contains(ae.Failed.String(), "+ lun c:") || len(ae.Applied) != 2 || len(ae.Undone) != 1 ||
		len(ae.NotUndone) != 1 || !strings.Contains(ae.NotUndone[0], "~ lun a: grow from 1 MiB to 2 MiB (cannot be undone)") {
		t.Fatalf("apply with a refused path: %v", err)
	}
	if !strings.Contains(err.Error(), "2 step(s) had been applied, 1 undone; still applied: ~ lun a: grow") {
		t.Fatalf("error text: %v", err)
	}
	if _, statErr := os.Stat("/etc/lmtgt-config-test.img"); !os.IsNotExist(statErr) {
		t.Fatalf("the refused path exists: %v", statErr)
	}
	want := before
	want.LUNs = []ConfigLUN{before.LUNs[0]}
	want.LUNs[0].Size = 2 << 20
	if got := export(t, e.m); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the undo:\n got %+v\nwant %+v", got, want)
	}
}

// TestChangeOpString: every operation has its name.
func TestChangeOpString(t *testing.T) {
	for op, want := range map[ChangeOp]string{OpCreate: "create", OpChange: "change", OpDelete: "delete", OpKeep: "keep", ChangeOp(9): "ChangeOp(9)"} {
		if got := op.String(); got != want {
			t.Errorf("%d: %q, want %q", int(op), got, want)
		}
	}
}

// TestConfigLiveOptions: a change of each setting that can change live
// (mapping write protection and mask, a target's portals, every live pair
// option of a pair and of a session, a session's max active) is applied
// through its own operation as exactly one plan line, and the export is
// then the file: that setting changed and nothing else. The cases run in
// order on one server, each from the export the one before left.
func TestConfigLiveOptions(t *testing.T) {
	e := newEnv(t, Options{}, false)
	buildConfigServer(t, e)
	e.m.SetExporter(&portalExporter{portals: []string{"127.0.0.1:3260", "[::1]:3260", "127.0.0.2:3260"}})
	const host2 = "iqn.2026-12.org.lmtgt.test:host2"
	cases := []struct {
		name   string
		change func(c *Config)
		line   string
	}{
		{"session pair back to the session's options", func(c *Config) { c.Sessions[0].Pairs[0].Options = nil },
			"~ session wave1: pair s1: priority 7→2"},
		{"mapping read-only", func(c *Config) { c.Targets[0].LUNs[1].ReadOnly = false },
			"~ target " + cfgIQN1 + ": mapping of lun a (LUN 3): read-only false, only " + cfgInit},
		{"mapping mask", func(c *Config) { c.Targets[0].LUNs[1].Initiators = []string{host2, cfgInit} },
			"~ target " + cfgIQN1 + ": mapping of lun a (LUN 3): read-only false, only " + cfgInit + "," + host2},
		{"mapping unmasked", func(c *Config) { c.Targets[0].LUNs[0].Initiators = nil; c.Targets[0].LUNs[1].Initiators = nil },
			"~ target " + cfgIQN1 + ": mapping of lun a (LUN 3): read-only false, every initiator"},
		{"new mapping with options", func(c *Config) {
			c.Targets[1].LUNs = append(c.Targets[1].LUNs, ConfigMapping{Number: 1, LUN: "spare", ReadOnly: true, Initiators: []string{host2}})
		}, "~ target " + cfgIQN2 + ": map lun spare as LUN 1, read-only, only " + host2},
		{"portal added", func(c *Config) { c.Targets[1].Portals = []string{"127.0.0.1:3260", "127.0.0.2:3260", "[::1]:3260"} },
			"~ target " + cfgIQN2 + ": portals 127.0.0.1:3260,[::1]:3260→127.0.0.1:3260,127.0.0.2:3260,[::1]:3260"},
		{"portals to every portal", func(c *Config) { c.Targets[1].Portals = nil },
			"~ target " + cfgIQN2 + ": portals 127.0.0.1:3260,127.0.0.2:3260,[::1]:3260→(every portal)"},
		{"portal group set", func(c *Config) { c.Targets[0].Portals = []string{"127.0.0.2:3260"} },
			"~ target " + cfgIQN1 + ": portals (every portal)→127.0.0.2:3260"},
		{"pair speed", func(c *Config) { c.Migrations[0].Speed = SpeedHighest }, "~ migration src: speed low→highest"},
		{"pair max", func(c *Config) { c.Migrations[0].MaxMBps = 0 }, "~ migration src: max 3 MB/s→no cap"},
		{"pair priority", func(c *Config) { c.Migrations[0].Priority = PriorityLow }, "~ migration src: priority 8→low"},
		{"pair windows", func(c *Config) { c.Migrations[0].Windows = nil }, "~ migration src: windows 22:00-06:00=highest→none"},
		{"pair max elapsed", func(c *Config) { c.Migrations[0].MaxElapsed = 90 * time.Minute }, "~ migration src: max elapsed 6h0m0s→1h30m0s"},
		{"pair auto split", func(c *Config) { c.Migrations[0].AutoSplit = false }, "~ migration src: auto split true→false"},
		{"pair verify", func(c *Config) { c.Migrations[0].Verify = false }, "~ migration src: verify true→false"},
		{"pair max host latency", func(c *Config) { c.Migrations[0].MaxHostLatency = 5 * time.Millisecond },
			"~ migration src: max host latency 3ms→5ms"},
		{"pair max host latency to the server's", func(c *Config) { c.Migrations[0].MaxHostLatency = 0 },
			"~ migration src: max host latency 5ms→server's"},
		{"session speed", func(c *Config) { c.Sessions[0].Speed = SpeedLow }, "~ session wave1: speed high→low"},
		{"session max", func(c *Config) { c.Sessions[0].MaxMBps = 9 }, "~ session wave1: max 7 MB/s→9 MB/s"},
		{"session priority", func(c *Config) { c.Sessions[0].Priority = PriorityHigh }, "~ session wave1: priority 2→high"},
		{"session windows", func(c *Config) {
			c.Sessions[0].Windows = []Window{{Start: 20 * time.Hour, End: 23*time.Hour + 30*time.Minute + 15*time.Second, Speed: SpeedHigh}}
		}, "~ session wave1: windows 01:00-02:00=low,max-mbps=4→20:00-23:30:15=high"},
		{"session max elapsed", func(c *Config) { c.Sessions[0].MaxElapsed = 0 }, "~ session wave1: max elapsed 1h30m0s→none"},
		{"session auto split", func(c *Config) { c.Sessions[0].AutoSplit = false }, "~ session wave1: auto split true→false"},
		{"session verify", func(c *Config) { c.Sessions[0].Verify = false }, "~ session wave1: verify true→false"},
		{"session max active", func(c *Config) { c.Sessions[0].MaxActive = 3 }, "~ session wave1: max active 1→3"},
		{"session max host latency", func(c *Config) { c.Sessions[0].MaxHostLatency = 2 * time.Millisecond },
			"~ session wave1: max host latency off→2ms"},
		{"session pair's own options", func(c *Config) {
			o := c.Sessions[0].PairOptions
			o.Priority, o.Verify = 3, true
			c.Sessions[0].Pairs[0].Options = &o
		}, "~ session wave1: pair s1: priority high→3, verify false→true"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := export(t, e.m)
			tc.change(&want)
			plan, err := e.m.ApplyConfig(want, ApplyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := planLines(plan); len(got) != 1 || got[0] != tc.line {
				t.Fatalf("plan %q, want exactly %q", got, tc.line)
			}
			got := export(t, e.m)
			// The file may list a mask unsorted; the export sorts it.
			for i := range want.Targets {
				for j := range want.Targets[i].LUNs {
					want.Targets[i].LUNs[j].Initiators = canonicalMask(want.Targets[i].LUNs[j].Initiators)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after apply:\n got %+v\nwant %+v", got, want)
			}
		})
	}
	// A session change keeps a pair's own options where the file says so:
	// session set, then migration set on the pair.
	c := export(t, e.m)
	c.Sessions[0].Speed, c.Sessions[0].Pairs[0].Options.Speed = SpeedMedium, SpeedMedium
	c.Sessions[0].Verify = true
	plan, err := e.m.ApplyConfig(c, ApplyOptions{})
	wantLines := []string{"~ session wave1: speed low→medium, verify false→true"}
	if got := planLines(plan); err != nil || !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("plan %q, %v; want %q", got, err, wantLines)
	}
	c = export(t, e.m)
	c.Sessions[0].Priority = PriorityLow
	plan, err = e.m.ApplyConfig(c, ApplyOptions{})
	wantLines = []string{"~ session wave1: priority high→low", "~ session wave1: pair s1: priority low→3"}
	if got := planLines(plan); err != nil || !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("plan %q, %v; want %q", got, err, wantLines)
	}
	if got := export(t, e.m); !reflect.DeepEqual(got, c) {
		t.Fatalf("after apply:\n got %+v\nwant %+v", got, c)
	}
	c.Sessions[0].Priority = PriorityHigh
	if _, err := e.m.ApplyConfig(c, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// The running objects took the changes (not only their records).
	s, err := e.m.Session("wave1")
	if err != nil || s.MaxActive != 3 || s.Speed != SpeedMedium || s.AutoSplit || s.Priority != PriorityHigh || len(s.Pairs) != 1 || s.Pairs[0].Priority != 3 {
		t.Fatalf("session after the applies: %+v, %v", s, err)
	}
	ps, err := e.m.Pair("src")
	if err != nil || ps.Priority != PriorityLow || ps.Speed != SpeedHighest || ps.MaxMBps != 0 || ps.AutoSplit || ps.Verify || len(ps.Windows) != 0 {
		t.Fatalf("pair after the applies: %+v, %v", ps, err)
	}
	// A portal the server does not listen on is refused, and nothing changes.
	before := export(t, e.m)
	c = export(t, e.m)
	c.Targets[0].Portals = []string{"127.0.0.9:3260"}
	c.Migrations[0].Speed = SpeedLow
	_, err = e.m.ApplyConfig(c, ApplyOptions{})
	wantRefusal(t, "portal not listened on", err, ErrInvalid, "target "+cfgIQN1, "does not listen")
	if got := export(t, e.m); !reflect.DeepEqual(got, before) {
		t.Fatalf("refused apply changed the server:\n got %+v\nwant %+v", got, before)
	}
}
