package api

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

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
