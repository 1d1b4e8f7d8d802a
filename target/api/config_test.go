package api

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestConfigAPI: secrets only on request, target's ALUA rules checked
// before lm, unknown fields refused, a dry run changes nothing and writes
// no backup, and only the newest BackupsKept backups are kept (each the
// configuration before its apply, secrets included, mode 0600).
func TestConfigAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.cl
	if _, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: "a", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateTarget(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SetCHAP(ctx, tgt, wire.SetCHAP{User: "u", Secret: "a-secret-of-12"}); err != nil {
		t.Fatal(err)
	}
	hidden, err := cl.ExportConfig(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if c := hidden.Targets[0].CHAP; c == nil || c.Secret != wire.SecretPlaceholder || hidden.Version != wire.ConfigVersion {
		t.Fatalf("export without secrets: %+v", hidden)
	}
	full, err := cl.ExportConfig(ctx, true)
	if err != nil || full.Targets[0].CHAP.Secret != "a-secret-of-12" {
		t.Fatalf("export with secrets: %+v %v", full, err)
	}
	if wire.SecretPlaceholder != lm.SecretPlaceholder || wire.ConfigVersion != lm.ConfigVersion {
		t.Fatal("wire and lm disagree on the secret placeholder or the config version")
	}
	// The placeholder keeps the secret: applying the hidden export changes nothing.
	res, err := cl.ApplyConfig(ctx, wire.ApplyConfig{Config: hidden})
	if err != nil || len(res.Changes) != 0 || res.Backup != "" {
		t.Fatalf("apply of the unchanged export: %+v %v", res, err)
	}

	bad := full
	bad.LUNs = []wire.ConfigLUN{{Name: "a", Size: 1 << 20, ALUA: []wire.ConfigALUA{{Group: 2, State: "asleep"}}}}
	_, err = cl.ApplyConfig(ctx, wire.ApplyConfig{Config: bad})
	wantStatus(t, err, 400, "lun a: alua group 2:")
	bad.LUNs[0].ALUA = []wire.ConfigALUA{{Group: 0, State: "standby"}}
	_, err = cl.ApplyConfig(ctx, wire.ApplyConfig{Config: bad})
	wantStatus(t, err, 400, "lun a: alua:")
	// Every refusal of the file is said, each with its object: the
	// conversion's (two on lun n, one on lun a) and lm's plan's (lun a
	// shrinks); nothing changes.
	bad.LUNs = []wire.ConfigLUN{
		{Name: "a", Size: 512, ALUA: []wire.ConfigALUA{{Group: 2, State: "asleep"}}},
		{Name: "n", Size: 1 << 20, Volume: wire.ConfigVolume{Kind: "tape"}, Identity: "borrowed"},
	}
	_, err = cl.ApplyConfig(ctx, wire.ApplyConfig{Config: bad})
	wantStatus(t, err, 400, "4 changes refused: (1) lun a: alua group 2: ")
	for _, want := range []string{`(2) lun n: volume kind "tape"`, `(3) lun n: identity "borrowed"`, "(4) lun a: size 512 B is smaller than the current 1 MiB"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("apply with four refusals: %v, want %q in it", err, want)
		}
	}
	if now, err := cl.ExportConfig(ctx, true); err != nil || !reflect.DeepEqual(now, full) {
		t.Fatalf("a refused apply changed the configuration: %+v %v", now, err)
	}
	var out any
	err = cl.DoRaw(ctx, "POST", wire.Version+"/config/apply", strings.NewReader(`{"config":{"version":1,"lunz":[]}}`), &out)
	wantStatus(t, err, 400, "unknown field")

	grow := func(size int64, dry bool) wire.ApplyResult {
		t.Helper()
		c := full
		c.LUNs = append([]wire.ConfigLUN(nil), full.LUNs...)
		c.LUNs[0].Size = size
		r, err := cl.ApplyConfig(ctx, wire.ApplyConfig{Config: c, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := grow(2<<20, true); !r.DryRun || len(r.Changes) != 1 || r.Backup != "" {
		t.Fatalf("dry run: %+v", r)
	}
	if bs, err := cl.ConfigBackups(ctx); err != nil || len(bs) != 0 {
		t.Fatalf("backups after a dry run: %+v %v", bs, err)
	}
	var first wire.ApplyResult
	for i := 1; i <= BackupsKept+2; i++ {
		r := grow(int64(1+i)<<20, false)
		if len(r.Changes) != 1 || r.Backup == "" {
			t.Fatalf("apply %d: %+v", i, r)
		}
		if i == 1 {
			first = r
		}
		// The backup is the configuration before this apply.
		b, err := os.ReadFile(r.Backup)
		if err != nil {
			t.Fatal(err)
		}
		var bc wire.Config
		if err := json.Unmarshal(b, &bc); err != nil {
			t.Fatal(err)
		}
		if bc.LUNs[0].Size != int64(i)<<20 || bc.Targets[0].CHAP.Secret != "a-secret-of-12" {
			t.Fatalf("backup %d: lun size %d, chap %+v; want the size before (%d) and the secret", i, bc.LUNs[0].Size, bc.Targets[0].CHAP, int64(i)<<20)
		}
		if fi, err := os.Stat(r.Backup); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup mode: %v %v", fi.Mode(), err)
		}
	}
	bs, err := cl.ConfigBackups(ctx)
	if err != nil || len(bs) != BackupsKept {
		t.Fatalf("backups: %d (%v), want the newest %d", len(bs), err, BackupsKept)
	}
	for i := 1; i < len(bs); i++ {
		if bs[i-1].Name <= bs[i].Name {
			t.Fatalf("backups not newest first: %s before %s", bs[i-1].Name, bs[i].Name)
		}
	}
	if _, err := os.Stat(first.Backup); !os.IsNotExist(err) {
		t.Fatalf("the oldest backup %s was kept (%v)", first.Backup, err)
	}
}

// TestConfigPairOptionsWire: a pair's options go to the file and back
// unchanged; a clock-only start time, a bad window and a bad max elapsed
// are refused with the object before lm sees them.
func TestConfigPairOptionsWire(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	o := lm.PairOptions{Speed: lm.SpeedLow, MaxMBps: 3, Priority: 8, StartAt: start,
		Windows:    []lm.Window{{Start: 22 * time.Hour, End: 6 * time.Hour, Speed: lm.SpeedHighest}, {Start: time.Hour, End: 2*time.Hour + time.Second, Speed: lm.SpeedLow, MaxMBps: 4}},
		MaxElapsed: 90 * time.Minute, AutoSplit: true, Verify: true}
	w := pairOptionsToWire(o)
	want := wire.ConfigPairOptions{Speed: "low", MaxMBps: 3, AutoSplit: true, Verify: true, Priority: 8, StartAt: "2030-01-02T03:04:05Z",
		Windows: []string{"22:00-06:00=highest", "01:00-02:00:01=low,max-mbps=4"}, MaxElapsed: "1h30m0s"}
	if !reflect.DeepEqual(w, want) {
		t.Fatalf("to wire: %+v, want %+v", w, want)
	}
	var rs refusals
	back := pairOptionsFromWire("migration a", w, &rs)
	if len(rs) > 0 || !reflect.DeepEqual(back, o) {
		t.Fatalf("from wire: %+v, %v; want %+v", back, rs, o)
	}
	if z := pairOptionsToWire(lm.PairOptions{}); !reflect.DeepEqual(z, wire.ConfigPairOptions{}) {
		t.Fatalf("defaults to wire: %+v, want nothing written", z)
	}
	// A session's pair may have options of its own, but not auto_split.
	c := wire.Config{Version: 1, Sessions: []wire.ConfigSession{{Name: "w", Pairs: []wire.ConfigSessionPair{
		{Source: "a", Target: "b", Options: &wire.ConfigPairOptions{Priority: 7}}}}}}
	lc, rs := configFromWire(c)
	if len(rs) > 0 || lc.Sessions[0].Pairs[0].Options == nil || lc.Sessions[0].Pairs[0].Options.Priority != 7 {
		t.Fatalf("session pair options from wire: %+v, %v", lc.Sessions, rs)
	}
	c.Sessions[0].Pairs[0].Options.AutoSplit = true
	if _, rs := configFromWire(c); len(rs) != 1 || rs[0].Error() != "session w: pair a: auto_split is the session's: set it on the session" {
		t.Fatalf("auto_split on a session's pair: %v", rs)
	}
	for _, tc := range []struct {
		w      wire.ConfigPairOptions
		reason string
	}{
		{wire.ConfigPairOptions{StartAt: "22:00"}, `migration a: start_at "22:00": want an RFC 3339 time`},
		{wire.ConfigPairOptions{Windows: []string{"22:00-06:00"}}, `window "22:00-06:00": no =SPEED`},
		{wire.ConfigPairOptions{MaxElapsed: "6 hours"}, `max elapsed "6 hours"`},
	} {
		var rs refusals
		pairOptionsFromWire("migration a", tc.w, &rs)
		we := toWire(lm.JoinRefusals(configObject, rs), configObject)
		if len(rs) != 1 || we.Status != 400 || !strings.Contains(we.Error(), tc.reason) {
			t.Errorf("%+v: %v, want one 400 containing %q", tc.w, rs, tc.reason)
		}
	}
}
