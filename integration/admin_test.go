package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// snapshot is the whole configuration as the CLI shows it.
type snapshot struct {
	LUNs    []wire.LUN
	Targets []wire.Target
}

func (d *Daemon) snapshot() snapshot {
	d.t.Helper()
	var s snapshot
	d.JSON(&s.LUNs, "lun", "list")
	d.JSON(&s.Targets, "target", "list")
	return s
}

// TestBadInputChangesNothing: every bad request is refused with a clear
// one-line message naming the object and the reason, exit code 1 (2 for
// usage errors), and the configuration is unchanged.
func TestBadInputChangesNothing(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("good", "8MiB", 512)
	d.OK("lun", "create", "spare", "--size", "4MiB")
	before := d.snapshot()

	cases := []struct {
		code int
		want []string
		args []string
	}{
		{1, []string{"lun nosuch", "not found"}, []string{"target", "map", iqn, "nosuch"}},
		{1, []string{"lun nosuch", "not found"}, []string{"lun", "show", "nosuch"}},
		{1, []string{"lun nosuch", "not found"}, []string{"lun", "delete", "nosuch"}},
		{1, []string{"lun nosuch", "not found"}, []string{"lun", "resize", "nosuch", "--size", "1GiB"}},
		{1, []string{"good", "exists"}, []string{"lun", "create", "good", "--size", "4MiB"}},
		{1, []string{"lun tiny", "size 100 B is too small"}, []string{"lun", "create", "tiny", "--size", "100"}},
		// Sizes in refusals are human sizes, with the bytes when the unit
		// would round.
		{1, []string{"lun spare", "size 2 MiB is smaller than the current 4 MiB"}, []string{"lun", "resize", "spare", "--size", "2MiB"}},
		{1, []string{"target LUN spare (4 MiB) is smaller than the source (8 MiB)"}, []string{"migration", "create", "--source", "good", "--target", "spare"}},
		{1, []string{"lun odd", "size 976.56 KiB (1000000 bytes) is not a multiple"}, []string{"lun", "create", "odd", "--size", "1000000"}},
		{1, []string{"lun odd", "not a multiple of the block size 512"}, []string{"lun", "create", "odd", "--size", "1000000"}},
		{1, []string{"lun odd4k", "not a multiple of the block size 4096"}, []string{"lun", "create", "odd4k", "--size", "1049088", "--block-size", "4096"}},
		{1, []string{"lun dev", "/dev/lmtgt-no-such-device", "no such device"}, []string{"lun", "create", "dev", "--path", "/dev/lmtgt-no-such-device"}},
		{1, []string{"lun dev", "/dev/lmtgt-no-such-device", "no such device"}, []string{"lun", "create", "dev", "--path", "/dev/lmtgt-no-such-device", "--size", "1MiB"}},
		{1, []string{"lun dev", "does not exist"}, []string{"lun", "create", "dev", "--path", "/tmp/lmtgt-no-such-dir/x.img"}},
		{1, []string{"lun good", "mapped", iqn}, []string{"lun", "delete", "good"}},
		{1, []string{"target Iqn.bad", "bad IQN"}, []string{"target", "create", "Iqn.bad"}},
		{1, []string{"target iqn.2026-13.org.x:y", "month"}, []string{"target", "create", "iqn.2026-13.org.x:y"}},
		{1, []string{"target " + iqn, "exists"}, []string{"target", "create", iqn}},
		{1, []string{"target iqn.2026-11.org.x:none", "not found"}, []string{"target", "show", "iqn.2026-11.org.x:none"}},
		{1, []string{"target iqn.2026-11.org.x:none", "not found"}, []string{"target", "map", "iqn.2026-11.org.x:none", "spare"}},
		{1, []string{"lun good", "already mapped"}, []string{"target", "map", iqn, "good"}},
		{1, []string{"initiator host_1", "bad initiator name"}, []string{"target", "allow", iqn, "host_1"}},
		{1, []string{"target " + iqn, "LUN(s) mapped", "--force"}, []string{"target", "delete", iqn}},
		{1, []string{"lun spare", "not mapped"}, []string{"target", "unmap", iqn, "spare"}},
		{1, []string{"nosuch", "not found"}, []string{"migration", "show", "nosuch"}},
		// Usage errors: exit code 2.
		{2, []string{"missing NAME"}, []string{"lun", "create"}},
		{2, []string{"--size is required"}, []string{"lun", "create", "x"}},
		{2, []string{"--size", "not a size"}, []string{"lun", "create", "x", "--size", "lots"}},
		{2, []string{"--block-size 1024"}, []string{"lun", "create", "x", "--size", "1MiB", "--block-size", "1024"}},
		{2, []string{"unknown command \"frobnicate\""}, []string{"lun", "frobnicate"}},
		{2, []string{"unknown command \"bogus\""}, []string{"bogus"}},
		{2, []string{"unknown flag --nope"}, []string{"lun", "list", "--nope"}},
		{2, []string{"missing LUN-NAME"}, []string{"target", "map", iqn}},
		{2, []string{"-o \"yaml\""}, []string{"lun", "list", "-o", "yaml"}},
		// An enumerated value is checked by the CLI: a usage error, with the values.
		{2, []string{"--speed \"warp\"", "want low, medium, high or highest"}, []string{"migration", "create", "--source", "good", "--target", "spare", "--speed", "warp"}},
		{2, []string{"--lun \"x\""}, []string{"target", "map", iqn, "spare", "--lun", "x"}},
	}
	for _, c := range cases {
		d.Fail(c.code, c.want, c.args...)
	}
	if after := d.snapshot(); !reflect.DeepEqual(before, after) {
		t.Errorf("refused commands changed the configuration:\nbefore %+v\nafter  %+v", before, after)
	}
	// Nothing was created on disk for the refused LUNs either.
	for _, n := range []string{"tiny", "odd", "odd4k", "dev", "x"} {
		if r := d.Run("lun", "show", n); r.Code == 0 {
			t.Errorf("refused LUN %s exists", n)
		}
	}

	// The admin API itself: malformed JSON, unknown fields, wrong method,
	// unknown path, all as JSON errors with the right status.
	cl := d.Client()
	ctx := context.Background()
	for _, c := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/v1/luns", `{"name": "x", "size": `, 400, "malformed JSON"},
		{"POST", "/v1/luns", `{"name": "x", "size": 1048576, "colour": "red"}`, 400, "unknown field"},
		{"POST", "/v1/luns", `{"name": "x", "size": 1048576} {"again": 1}`, 400, "trailing data"},
		{"POST", "/v1/luns", ``, 400, "empty body"},
		{"POST", "/v1/luns", `["x"]`, 400, "malformed JSON"},
		{"POST", "/v1/targets", `{"iqn": 42}`, 400, "malformed JSON"},
		{"PUT", "/v1/luns", `{}`, 405, "not allowed"},
		{"GET", "/v1/nothing", ``, 404, "no such API path"},
		{"GET", "/v1/luns/nosuch", ``, 404, "not found"},
		{"DELETE", "/v1/luns/good", ``, 409, "mapped"},
		{"POST", "/v1/targets/" + iqn + "/luns", `{"lun": "good"}`, 409, "already mapped"},
	} {
		var body *strings.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		var err error
		if body != nil {
			err = cl.DoRaw(ctx, c.method, c.path, body, nil)
		} else {
			err = cl.DoRaw(ctx, c.method, c.path, nil, nil)
		}
		var we *wire.Error
		if !asWire(err, &we) || we.Status != c.status || !strings.Contains(we.Message, c.want) {
			t.Errorf("%s %s %q: want %d %q, got %v (%+v)", c.method, c.path, c.body, c.status, c.want, err, we)
		}
	}
	if after := d.snapshot(); !reflect.DeepEqual(before, after) {
		t.Errorf("refused API requests changed the configuration")
	}

	// The socket is private.
	fi, err := os.Stat(d.Admin)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode: %v %v, want 0600", fi.Mode(), err)
	}
}

func asWire(err error, we **wire.Error) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*wire.Error)
	if ok {
		*we = e
	}
	return ok
}

func TestAdminTCPToken(t *testing.T) {
	d := StartDaemon(t, "", "--admin-tcp", "127.0.0.1:0", "--admin-token", "tok-123-secret")
	if d.AdminTCP == "" {
		t.Fatal("ready line has no admin-tcp address")
	}
	ctx := context.Background()
	// No token, a wrong token: 401, and nothing created.
	for _, tok := range []string{"", "wrong"} {
		cl := client.New(d.AdminTCP, client.Options{Token: tok})
		_, err := cl.CreateLUN(ctx, wire.CreateLUN{Name: "viatcp", Size: 1 << 20})
		if client.StatusOf(err) != http.StatusUnauthorized {
			t.Errorf("TCP admin with token %q: want 401, got %v", tok, err)
		}
		cl.Close()
	}
	r := runCmd(t, "", nil, cliBin, "--admin", d.AdminTCP, "lun", "list")
	if r.Code != 1 || !strings.Contains(r.Stderr, "missing bearer token") {
		t.Errorf("CLI over TCP without a token: %s", r)
	}
	if _, err := d.Client().LUN(ctx, "viatcp"); client.StatusOf(err) != http.StatusNotFound {
		t.Errorf("an unauthorized request created a LUN: %v", err)
	}
	// With the token it works, from the CLI too.
	r = runCmd(t, "", []string{"LMTGT_ADMIN_TOKEN=tok-123-secret"}, cliBin, "--admin", d.AdminTCP, "lun", "create", "viatcp", "--size", "1MiB")
	if r.Code != 0 {
		t.Fatalf("CLI over TCP with the token: %s", r)
	}
	d.OK("lun", "show", "viatcp")
}

func TestServeRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--data-dir", dir, "--log-level", "loud"}, "--log-level"},
		{[]string{"serve", "--data-dir", dir, "--log-format", "xml"}, "--log-format"},
		{[]string{"serve", "--data-dir", dir, "--admin-tcp", "127.0.0.1:0"}, "--admin-token"},
		{[]string{"serve", "--data-dir", dir, "extra"}, "unexpected arguments"},
	} {
		r := runCmd(t, "", nil, lmtgtBin, c.args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("lmtgt %v: want exit 2 mentioning %q: %s", c.args, c.want, r)
		}
	}
	// A second daemon on the same data dir is refused, the first keeps going.
	d := StartDaemon(t, "")
	r := runCmd(t, "", nil, lmtgtBin, "serve", "--data-dir", d.DataDir, "--portal", "127.0.0.1:0", "--admin", filepath.Join(t.TempDir(), "a.sock"))
	if r.Code != 1 {
		t.Errorf("second lmtgt serve on the same data dir: want exit 1: %s", r)
	}
	d.OK("lun", "list")
	// No daemon: the client says where it looked.
	r = runCmd(t, "", nil, cliBin, "--admin", filepath.Join(dir, "none.sock"), "lun", "list")
	if r.Code != 1 || !strings.Contains(r.Stderr, "none.sock") || !strings.Contains(r.Stderr, "lmtgt serve") {
		t.Errorf("lun list without a daemon: %s", r)
	}
}

func TestDemo(t *testing.T) {
	needTools(t, "iscsi-ls", "qemu-io")
	d := StartDaemon(t, "", "--demo")
	if !strings.Contains(d.stdout.String(), "iscsi-ls -s iscsi://"+d.Portal) {
		t.Errorf("--demo does not print how to connect:\n%s", d.stdout)
	}
	var l wire.LUN
	d.JSON(&l, "lun", "show", "demo")
	if l.Size != 1<<30 || l.BlockSize != 512 || len(l.Mappings) != 1 || l.Mappings[0].Target != "iqn.2026-11.org.lmtgt:demo" || l.Mappings[0].LUN != 0 {
		t.Errorf("demo LUN: %+v", l)
	}
	ls := tool(t, "iscsi-ls", "-s", "iscsi://"+d.Portal)
	if !strings.Contains(ls, "Target:iqn.2026-11.org.lmtgt:demo") || !strings.Contains(ls, "Lun:0") {
		t.Errorf("iscsi-ls does not see the demo:\n%s", ls)
	}
	qemuIOOK(t, d.URL("iqn.2026-11.org.lmtgt:demo", 0), "write -P 0xab 0 1M", "read -P 0xab 0 1M")
	// A restart with --demo creates nothing new.
	before := d.snapshot()
	d.Restart(false)
	if after := d.snapshot(); !reflect.DeepEqual(before, after) {
		t.Errorf("restart with --demo changed the configuration")
	}
	var raw []json.RawMessage
	d.JSON(&raw, "lun", "list")
	if len(raw) != 1 {
		t.Errorf("want 1 LUN after a restart with --demo, got %d", len(raw))
	}
}
