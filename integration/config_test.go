package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Configuration as a file, with the real daemon and real clients.

// noErr fails the test on an API call's error (its value is not needed).
func noErr(t *testing.T) func(_ any, err error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// exportFile runs `lmtgt config export` into a file and returns its bytes.
func (d *Daemon) exportFile(path string, args ...string) []byte {
	d.t.Helper()
	d.OK(append(append([]string{"config", "export"}, args...), path)...)
	b, err := os.ReadFile(path)
	if err != nil {
		d.t.Fatal(err)
	}
	return b
}

// TestConfigRoundTrip: export (yaml and json) → apply on a fresh data dir
// (a new daemon) → export gives byte-identical files; identities (VPD 0x80
// serial) survive the restore.
func TestConfigRoundTrip(t *testing.T) {
	needTools(t, "iscsi-inq")
	ctx := context.Background()
	d1 := StartDaemon(t, "")
	cl := d1.Client()
	ok := noErr(t)
	work := t.TempDir()
	ownPath := filepath.Join(work, "own.img")
	if err := os.WriteFile(ownPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ownPath, 3<<20); err != nil {
		t.Fatal(err)
	}
	d1.OK("lun", "create", "a", "--size", "1M")
	d1.OK("lun", "create", "b", "--size", "2M", "--block-size", "4096")
	d1.OK("lun", "create", "onfile", "--path", ownPath)
	for _, n := range []string{"src", "dst", "s1", "d1"} {
		d1.OK("lun", "create", n, "--size", "1M")
	}
	t1, t2 := testIQN("cfg-t1"), testIQN("cfg-t2")
	d1.OK("target", "create", t1)
	d1.OK("target", "create", t2)
	d1.OK("target", "map", t1, "a", "--lun", "3")
	d1.OK("target", "map", t1, "onfile")
	d1.OK("target", "map", t2, "b")
	d1.OK("target", "allow", t1, testIQN("host1"))
	d1.OK("target", "allow", t2, "ALL")
	ok(cl.SetCHAP(ctx, t1, wire.SetCHAP{User: "u1", Secret: "secret-one-123", MutualUser: "tgt", MutualSecret: "secret-two-456"}))
	ok(cl.SetDiscoveryCHAP(ctx, wire.SetCHAP{User: "disc", Secret: "discovery-secret"}))
	g, p := 5, 9
	ok(cl.SetTargetALUA(ctx, t2, wire.SetALUATarget{Group: &g, Port: &p}))
	ok(cl.SetALUAState(ctx, "a", 1, "standby"))
	ok(cl.CreateMigration(ctx, wire.CreateMigration{Source: "src", Target: "dst", Speed: "low", MaxMBps: 2, Vehicle: "generic"}))
	ok(cl.CreateSession(ctx, wire.CreateSession{Name: "wave1", Pairs: []wire.SessionPair{{Source: "s1", Target: "d1"}}, Speed: "high", MaxActive: 1}))
	serial := vpd(t, d1.URL(t2, 0), 128)

	y1 := d1.exportFile(filepath.Join(work, "one.yaml"), "--with-secrets")
	j1 := d1.exportFile(filepath.Join(work, "one.json"), "-o", "json", "--with-secrets")
	for _, want := range []string{"version: 1\n", "name: onfile", "path: " + ownPath, "secret: secret-one-123", "state: standby", "port: 9", "speed: low", "name: wave1"} {
		if !bytes.Contains(y1, []byte(want)) {
			t.Fatalf("yaml export lacks %q:\n%s", want, y1)
		}
	}
	hidden := d1.OK("config", "export")
	if strings.Contains(hidden, "secret-one-123") || !strings.Contains(hidden, "secret: "+wire.SecretPlaceholder) {
		t.Fatalf("export without --with-secrets shows a secret or no placeholder:\n%s", hidden)
	}
	// Same content in both formats.
	var fromJSON wire.Config
	if err := json.Unmarshal(j1, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if len(fromJSON.LUNs) != 7 || len(fromJSON.Targets) != 2 || len(fromJSON.Migrations) != 1 || len(fromJSON.Sessions) != 1 {
		t.Fatalf("json export: %+v", fromJSON)
	}
	d1.Stop() // the file-backed LUN is used by one server at a time

	for _, tc := range []struct {
		format string
		first  []byte
	}{{"yaml", y1}, {"json", j1}} {
		t.Run(tc.format, func(t *testing.T) {
			d := StartDaemon(t, "")
			in := filepath.Join(work, "in."+tc.format)
			if err := os.WriteFile(in, tc.first, 0o600); err != nil {
				t.Fatal(err)
			}
			out := d.OK("config", "apply", in)
			if !strings.Contains(out, "+ lun a: ") || !strings.Contains(out, "+ session wave1: ") {
				t.Fatalf("apply output:\n%s", out)
			}
			second := d.exportFile(filepath.Join(work, "two."+tc.format), "-o", tc.format, "--with-secrets")
			if !bytes.Equal(tc.first, second) {
				t.Fatalf("export after apply on a fresh server differs:\n--- first\n%s\n--- second\n%s", tc.first, second)
			}
			if got := vpd(t, d.URL(t2, 0), 128); got != serial {
				t.Fatalf("VPD 0x80 of lun b after the restore: %q, want %q", got, serial)
			}
			if out := d.OK("config", "apply", in); !strings.Contains(out, "nothing to change") {
				t.Fatalf("second apply: %s", out)
			}
			d.Stop()
		})
	}
}

// TestConfigApplyLive: apply of a changed file (a new LUN mapped, an ACL
// and CHAP changed) changes only what changed, live, while a logged-in
// qemu-io session keeps working on the same iSCSI session; --dry-run and
// a refused file change nothing; the automatic backup restores the
// configuration before.
func TestConfigApplyLive(t *testing.T) {
	needTools(t, "qemu-io", "iscsi-inq")
	ctx := context.Background()
	d := StartDaemon(t, "")
	cl := d.Client()
	work := t.TempDir()
	iqn := d.Export("vol", "8M", 512)
	other := d.Export("other", "1M", 512)

	q := startQIO(t, "host", d.URL(iqn, 0))
	if err := q.write(0, 64<<10, 0x11); err != nil {
		t.Fatal(err)
	}
	tsihs := func() []uint16 {
		var out []uint16
		tg, err := cl.Target(ctx, iqn)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range tg.Sessions {
			out = append(out, s.TSIH)
		}
		return out
	}
	before := tsihs()
	if len(before) != 1 {
		t.Fatalf("sessions on %s: %v, want qemu-io's one", iqn, before)
	}

	orig := d.exportFile(filepath.Join(work, "orig.json"), "-o", "json", "--with-secrets")
	var cfg wire.Config
	if err := json.Unmarshal(orig, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.LUNs = append(cfg.LUNs, wire.ConfigLUN{Name: "zextra", Size: 1 << 20})
	for i := range cfg.Targets {
		tg := &cfg.Targets[i]
		if tg.IQN != iqn {
			continue
		}
		tg.LUNs = append(tg.LUNs, wire.ConfigMapping{LUN: 1, Name: "zextra"})
		tg.Initiators = []string{testIQN("host9")}
		tg.CHAP = &wire.ConfigCHAP{User: "admin", Secret: "a-long-secret-1"}
	}
	changed := filepath.Join(work, "changed.json")
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(changed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	wantPlan := []string{
		"+ lun zextra: 1 MiB, 512-byte blocks, volume (data dir)",
		"~ target " + iqn + ": allow initiator " + testIQN("host9"),
		"~ target " + iqn + ": chap user admin",
		"~ target " + iqn + ": map lun zextra as LUN 1",
	}

	// --dry-run: the plan, and nothing changes.
	var dry wire.ApplyResult
	d.JSON(&dry, "config", "apply", "--dry-run", changed)
	if !dry.DryRun || !reflect.DeepEqual(dry.Changes, wantPlan) || len(dry.Kept) != 0 || dry.Backup != "" {
		t.Fatalf("dry run: %+v\nwant changes %q", dry, wantPlan)
	}
	if now := d.exportFile(filepath.Join(work, "after-dry.json"), "-o", "json", "--with-secrets"); !bytes.Equal(now, orig) {
		t.Fatalf("--dry-run changed the configuration:\n%s", now)
	}

	// Refused changes in the same file (two on lun vol: its block size
	// and a shrink; one on lun other: a volume kind lmtgt does not know):
	// nothing changes, and the error lists every refusal, each with the
	// object and the condition.
	bad := cfg
	bad.LUNs = append([]wire.ConfigLUN(nil), cfg.LUNs...)
	for i := range bad.LUNs {
		switch bad.LUNs[i].Name {
		case "vol":
			bad.LUNs[i].BlockSize, bad.LUNs[i].Size = 4096, 1<<20
		case "other":
			bad.LUNs[i].Volume.Kind = "tape"
		}
	}
	badFile := filepath.Join(work, "bad.json")
	b, _ = json.Marshal(bad)
	if err := os.WriteFile(badFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Fail(1, []string{"3 changes refused", `lun other: volume kind "tape"`, "lun vol: cannot be changed live: block size 4096 is 512 here",
		"lun vol: size 1 MiB is smaller than the current 8 MiB"}, "config", "apply", badFile)
	if now := d.exportFile(filepath.Join(work, "after-bad.json"), "-o", "json", "--with-secrets"); !bytes.Equal(now, orig) {
		t.Fatalf("a refused apply changed the configuration:\n%s", now)
	}

	// --prune never deletes what a logged-in host uses; without it the
	// objects the file forgot are kept and listed.
	var orphan wire.Config
	if err := json.Unmarshal(orig, &orphan); err != nil {
		t.Fatal(err)
	}
	orphan.LUNs = slices.DeleteFunc(orphan.LUNs, func(l wire.ConfigLUN) bool { return l.Name == "vol" })
	orphan.Targets = slices.DeleteFunc(orphan.Targets, func(tg wire.ConfigTarget) bool { return tg.IQN == iqn })
	orphanFile := filepath.Join(work, "orphan.json")
	b, _ = json.Marshal(orphan)
	if err := os.WriteFile(orphanFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Fail(1, []string{"target " + iqn + ": cannot be pruned: 1 iSCSI session(s) logged in", "lun vol: cannot be pruned: mapped on " + iqn},
		"config", "apply", "--prune", orphanFile)
	var kept wire.ApplyResult
	d.JSON(&kept, "config", "apply", orphanFile)
	wantKept := []string{"= target " + iqn + ": not in the file (--prune deletes it)", "= lun vol: not in the file (--prune deletes it)"}
	if len(kept.Changes) != 0 || !reflect.DeepEqual(kept.Kept, wantKept) || kept.Backup != "" {
		t.Fatalf("apply without --prune of a file without %s: %+v, want kept %q", iqn, kept, wantKept)
	}

	// The apply itself, with the host session open and writing.
	var res wire.ApplyResult
	d.JSON(&res, "config", "apply", changed)
	if res.DryRun || !reflect.DeepEqual(res.Changes, wantPlan) || res.Backup == "" {
		t.Fatalf("apply: %+v\nwant changes %q", res, wantPlan)
	}
	if err := q.read(0, 64<<10, 0x11); err != nil {
		t.Fatalf("host session after the apply: %v", err)
	}
	if err := q.write(1<<20, 64<<10, 0x22); err != nil {
		t.Fatalf("host session after the apply: %v", err)
	}
	if after := tsihs(); !reflect.DeepEqual(after, before) {
		t.Fatalf("iSCSI sessions on %s: %v before the apply, %v after: the host session was dropped", iqn, before, after)
	}
	// The new LUN is served, behind the new CHAP.
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", testIQN("host9"), "iscsi://admin%a-long-secret-1@"+d.Portal+"/"+iqn+"/1"); r.Code != 0 {
		t.Fatalf("iscsi-inq of the new LUN with the new CHAP: %s", r)
	}
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", testIQN("host9"), d.URL(iqn, 1)); r.Code == 0 {
		t.Fatalf("login without CHAP after CHAP was applied succeeded:\n%s", r)
	}
	// Only what changed: the other target and LUN are as they were, and
	// the export is the file (the new LUN got its identity).
	var now wire.Config
	d.JSON(&now, "config", "export", "--with-secrets")
	for _, tg := range now.Targets {
		if tg.IQN == other && (len(tg.LUNs) != 1 || tg.LUNs[0].Name != "other" || !tg.AllowAll) {
			t.Fatalf("target %s changed: %+v", other, tg)
		}
	}
	for i := range now.LUNs {
		if l := &now.LUNs[i]; l.Name == "zextra" {
			if l.ID == "" || l.NAA == "" || l.Serial == "" || l.BlockSize != 512 || l.Volume.Kind != "file" {
				t.Fatalf("new LUN exported as %+v", *l)
			}
			l.ID, l.NAA, l.Serial, l.BlockSize, l.Volume.Kind = "", "", "", 0, ""
		}
	}
	if !reflect.DeepEqual(now, cfg) {
		t.Fatalf("export after the apply is not the file:\n got %+v\nwant %+v", now, cfg)
	}
	// Applying the same file again changes nothing.
	if out := d.OK("config", "apply", changed); !strings.Contains(out, "nothing to change") {
		t.Fatalf("second apply: %s", out)
	}

	// The automatic backup is the configuration before the apply and
	// restores it (--prune deletes the new LUN).
	var backups []wire.ConfigBackup
	d.JSON(&backups, "config", "backups")
	if len(backups) != 1 || backups[0].Path != res.Backup {
		t.Fatalf("backups: %+v, want the one of the apply (%s)", backups, res.Backup)
	}
	bk, err := os.ReadFile(res.Backup)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bk, orig) {
		t.Fatalf("backup differs from the export before the apply:\n%s\n---\n%s", bk, orig)
	}
	out := d.OK("config", "apply", "--prune", res.Backup)
	if !strings.Contains(out, "- lun zextra: delete") {
		t.Fatalf("restore output:\n%s", out)
	}
	if restored := d.exportFile(filepath.Join(work, "restored.json"), "-o", "json", "--with-secrets"); !bytes.Equal(restored, orig) {
		t.Fatalf("restore from the backup:\n%s\nwant\n%s", restored, orig)
	}
	if err := q.read(1<<20, 64<<10, 0x22); err != nil {
		t.Fatalf("host session after the restore: %v", err)
	}
	if after := tsihs(); !reflect.DeepEqual(after, before) {
		t.Fatalf("iSCSI sessions after the restore: %v, want %v", after, before)
	}
	q.close()
}

// TestConfigImportedLUN: an imported LUN (data volume on Linux tgt, with
// CHAP) is in the export with its URL and CHAP user, its secret only with
// --with-secrets; a file with the placeholder cannot import it (nothing
// changes); the export with secrets, applied on a fresh data dir, imports
// it again with the same adopted identity and gives the same file.
func TestConfigImportedLUN(t *testing.T) {
	needTools(t, "iscsi-inq", "tgtd", "tgtadm")
	const user, secret = "olduser", "old-secret-4711"
	old := startOldArray(t, 16<<20, user, secret)
	work := t.TempDir()
	d1 := StartDaemon(t, "")
	d1.OK("lun", "import", "imp", "--from", old.url(), "--chap-user", user, "--chap-secret-file", writeSecret(t, "s", secret))
	iqn := d1.exportLUN("imp")
	serial := vpd(t, d1.URL(iqn, 0), 128)

	hidden := d1.exportFile(filepath.Join(work, "hidden.yaml"))
	for _, want := range []string{"kind: iscsi", "url: " + old.url(), "chap_user: " + user, "chap_secret: " + wire.SecretPlaceholder, "identity: adopted"} {
		if !bytes.Contains(hidden, []byte(want)) {
			t.Fatalf("export lacks %q:\n%s", want, hidden)
		}
	}
	if bytes.Contains(hidden, []byte(secret)) {
		t.Fatalf("export without --with-secrets shows the remote's secret:\n%s", hidden)
	}
	full := d1.exportFile(filepath.Join(work, "full.yaml"), "--with-secrets")
	if !bytes.Contains(full, []byte("chap_secret: "+secret)) {
		t.Fatalf("export --with-secrets lacks the remote's secret:\n%s", full)
	}
	d1.Stop() // one importer at a time

	d2 := StartDaemon(t, "")
	empty := d2.exportFile(filepath.Join(work, "empty.yaml"))
	d2.Fail(1, []string{"lun imp", "remote: the CHAP secret is " + wire.SecretPlaceholder}, "config", "apply", filepath.Join(work, "hidden.yaml"))
	if now := d2.exportFile(filepath.Join(work, "after-refusal.yaml")); !bytes.Equal(now, empty) {
		t.Fatalf("a refused apply changed the server:\n%s", now)
	}
	out := d2.OK("config", "apply", filepath.Join(work, "full.yaml"))
	if !strings.Contains(out, "+ lun imp: import "+old.url()+" (identity adopt)") {
		t.Fatalf("apply output:\n%s", out)
	}
	if again := d2.exportFile(filepath.Join(work, "again.yaml"), "--with-secrets"); !bytes.Equal(again, full) {
		t.Fatalf("export after the restore differs:\n--- before\n%s\n--- after\n%s", full, again)
	}
	if got := vpd(t, d2.URL(iqn, 0), 128); got != serial {
		t.Fatalf("VPD 0x80 after the restore: %q, want %q", got, serial)
	}
	d2.Stop()
}

// TestConfigNewSettings: the settings added after the first file format
// (a mapping's write protection and initiator mask, a target's portal
// group, every option of `migration create` and `session create`) are set
// with the CLI, exported, applied on a fresh server that listens on the
// same portals (the export is byte-identical), and then changed by one
// apply, live: real clients see the new mapping and portal group, and
// migration/session show the new options, the rest unchanged.
func TestConfigNewSettings(t *testing.T) {
	needTools(t, "iscsi-ls", "iscsi-readcapacity16", "qemu-io")
	work := t.TempDir()
	d1 := StartDaemon(t, "", "--portal", "127.0.0.1:0")
	ps := daemonPortals(t, d1)
	if len(ps) != 2 {
		t.Fatalf("daemon portals %v, want two", ps)
	}
	pA, pB := ps[0], ps[1]
	t1, hostA, hostB := testIQN("cfgn-t1"), testIQN("cfgn-a"), testIQN("cfgn-b")
	for _, n := range []string{"a", "src", "dst", "s1", "d1"} {
		d1.OK("lun", "create", n, "--size", "1M")
	}
	d1.OK("target", "create", t1, "--portal", pA)
	d1.OK("target", "map", t1, "a", "--read-only", "--initiator", hostA)
	d1.OK("target", "allow", t1, "ALL")
	// The start times keep the pairs scheduled (auto-split would end them).
	start := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	d1.OK("migration", "create", "--source", "src", "--target", "dst", "--speed", "low", "--max-mbps", "3", "--vehicle", "generic",
		"--priority", "high", "--start-at", start, "--window", "22:00-06:00=highest", "--max-elapsed", "6h", "--auto-split", "--verify",
		"--max-host-latency", "3ms")
	d1.OK("session", "create", "wave", "--pair", "s1:d1:generic", "--speed", "high", "--max-mbps", "7", "--max-active", "1",
		"--priority", "2", "--start-at", start, "--window", "01:00-02:00=low,max-mbps=4", "--max-elapsed", "90m", "--auto-split", "--verify",
		"--max-host-latency", "off")
	d1.OK("migration", "set", "s1", "--priority", "7") // a session's pair with an option of its own

	y1 := d1.exportFile(filepath.Join(work, "one.yaml"))
	var c1 wire.Config
	d1.JSON(&c1, "config", "export")
	wantT := wire.ConfigTarget{IQN: t1, Group: 1, Port: 1, AllowAll: true, Initiators: []string{}, Portals: []string{pA},
		LUNs: []wire.ConfigMapping{{LUN: 0, Name: "a", ReadOnly: true, Initiators: []string{hostA}}}}
	wantM := wire.ConfigMigration{Source: "src", Target: "dst", Vehicle: "generic", ConfigPairOptions: wire.ConfigPairOptions{Speed: "low", MaxMBps: 3,
		AutoSplit: true, Verify: true, Priority: 9, StartAt: start, Windows: []string{"22:00-06:00=highest"}, MaxElapsed: "6h0m0s",
		MaxHostLatency: "3ms"}}
	wantS := wire.ConfigSession{Name: "wave", MaxActive: 1, ConfigPairOptions: wire.ConfigPairOptions{Speed: "high", MaxMBps: 7,
		AutoSplit: true, Verify: true, Priority: 2, StartAt: start, Windows: []string{"01:00-02:00=low,max-mbps=4"}, MaxElapsed: "1h30m0s",
		MaxHostLatency: "off"},
		Pairs: []wire.ConfigSessionPair{{Source: "s1", Target: "d1", Vehicle: "generic"}}}
	own := wantS.ConfigPairOptions
	own.Priority, own.AutoSplit = 7, false // auto_split is the session's
	wantS.Pairs[0].Options = &own
	if len(c1.Targets) != 1 || !reflect.DeepEqual(c1.Targets[0], wantT) || len(c1.Migrations) != 1 || !reflect.DeepEqual(c1.Migrations[0], wantM) ||
		len(c1.Sessions) != 1 || !reflect.DeepEqual(c1.Sessions[0], wantS) {
		t.Fatalf("export:\n got %+v\n     %+v\n     %+v\nwant %+v\n     %+v\n     %+v", c1.Targets, c1.Migrations, c1.Sessions, wantT, wantM, wantS)
	}
	d1.Stop()

	// A fresh server on the same portals (and one more) takes the file;
	// its export is the same bytes.
	d := StartDaemon(t, "", "--portal", pA, "--portal", pB)
	in := filepath.Join(work, "in.yaml")
	if err := os.WriteFile(in, y1, 0o600); err != nil {
		t.Fatal(err)
	}
	d.OK("config", "apply", in)
	if y2 := d.exportFile(filepath.Join(work, "two.yaml")); !bytes.Equal(y1, y2) {
		t.Fatalf("export after apply on a fresh server differs:\n--- first\n%s\n--- second\n%s", y1, y2)
	}
	var ms wire.Migration
	d.JSON(&ms, "migration", "show", "src")
	if ms.State != "scheduled" || ms.Priority != 9 || !ms.Verify || !ms.AutoSplit || len(ms.Windows) != 1 {
		t.Fatalf("restored pair: %+v", ms)
	}

	// Before the live change: B does not see LUN 0, pB does not list t1.
	if r := runCmd(t, "", nil, "iscsi-readcapacity16", "-i", hostB, "iscsi://"+pA+"/"+t1+"/0"); r.Code == 0 {
		t.Fatalf("host B sees the LUN masked to host A:\n%s", r)
	}
	if on := discovered(t, pB); on[t1] != "" {
		t.Fatalf("discovery on %s lists %s before its portal is added: %v", pB, t1, on)
	}
	c2 := c1
	c2.Targets = []wire.ConfigTarget{wantT}
	c2.Targets[0].Portals = []string{pA, pB}
	c2.Targets[0].LUNs = []wire.ConfigMapping{{LUN: 0, Name: "a", Initiators: []string{hostB}}}
	c2.Migrations = []wire.ConfigMigration{wantM}
	c2.Migrations[0].Priority, c2.Migrations[0].Windows, c2.Migrations[0].Verify = 1, nil, false
	c2.Migrations[0].MaxHostLatency = "5ms"
	c2.Sessions = []wire.ConfigSession{wantS}
	c2.Sessions[0].MaxActive, c2.Sessions[0].AutoSplit, c2.Sessions[0].MaxElapsed, c2.Sessions[0].MaxHostLatency = 2, false, "", ""
	c2.Sessions[0].Pairs = []wire.ConfigSessionPair{{Source: "s1", Target: "d1", Vehicle: "generic"}} // the session's options again
	changed := filepath.Join(work, "changed.json")
	b, _ := json.Marshal(c2)
	if err := os.WriteFile(changed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var res wire.ApplyResult
	d.JSON(&res, "config", "apply", changed)
	wantPlan := []string{
		"~ target " + t1 + ": portals " + pA + "→" + strings.Join(slices.Sorted(slices.Values([]string{pA, pB})), ","),
		"~ target " + t1 + ": mapping of lun a (LUN 0): read-only false, only " + hostB,
		"~ migration src: priority high→low, windows 22:00-06:00=highest→none, verify true→false, max host latency 3ms→5ms",
		"~ session wave: max elapsed 1h30m0s→none, auto split true→false, max host latency off→server's, max active 1→2",
		"~ session wave: pair s1: priority 7→2",
	}
	if !reflect.DeepEqual(res.Changes, wantPlan) {
		t.Fatalf("apply plan:\n%s\nwant:\n%s", strings.Join(res.Changes, "\n"), strings.Join(wantPlan, "\n"))
	}
	// Seen by real clients: B sees and writes LUN 0 on pB, A no longer sees it.
	tool(t, "iscsi-readcapacity16", "-i", hostB, "iscsi://"+pB+"/"+t1+"/0")
	if r := runCmd(t, "", nil, "iscsi-readcapacity16", "-i", hostA, "iscsi://"+pA+"/"+t1+"/0"); r.Code == 0 {
		t.Fatalf("host A still sees the LUN now masked to host B:\n%s", r)
	}
	opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,initiator-name=%s", pB, t1, hostB)
	if r := runCmd(t, "", nil, "qemu-io", "-c", "write -P 0x3c 0 4k", "-c", "read -P 0x3c 0 4k", "--image-opts", opts); r.Code != 0 ||
		strings.Contains(r.Stdout+r.Stderr, "failed") {
		t.Fatalf("write through the mapping made writable:\n%s", r)
	}
	if on := discovered(t, pB); on[t1] == "" {
		t.Fatalf("discovery on %s does not list %s after its portal was added: %v", pB, t1, on)
	}
	var ms2 wire.Migration // a fresh value: absent JSON fields must read as empty
	d.JSON(&ms2, "migration", "show", "src")
	if ms := ms2; ms.Priority != 1 || ms.Verify || len(ms.Windows) != 0 || !ms.AutoSplit || ms.Speed != "low" || ms.State != "scheduled" ||
		ms.MaxHostLatency != "5ms" {
		t.Fatalf("pair after the apply: %+v", ms)
	}
	var ss wire.MigrationSession
	d.JSON(&ss, "session", "show", "wave")
	if ss.MaxActive != 2 || ss.AutoSplit || len(ss.Pairs) != 1 || ss.Pairs[0].Priority != 2 || ss.MaxHostLatency != "" ||
		ss.Pairs[0].MaxHostLatency != "" {
		t.Fatalf("session after the apply: %+v", ss)
	}
	var now wire.Config
	d.JSON(&now, "config", "export")
	var want wire.Config
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	want.Targets[0].Portals = slices.Sorted(slices.Values(want.Targets[0].Portals))
	if !reflect.DeepEqual(now, want) {
		t.Fatalf("export after the apply is not the file:\n got %+v\nwant %+v", now, want)
	}
}
