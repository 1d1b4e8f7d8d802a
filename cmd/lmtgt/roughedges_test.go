package main

import (
	"bytes"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestFlagsBeforeCommand: a command's flags may come before the command
// (`lmtgt -o json lun list`), as docs/cli.md says ("flags anywhere");
// issue 12: they were refused as "flag provided but not defined: -o".
func TestFlagsBeforeCommand(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	for _, c := range []struct{ in, want []string }{
		{[]string{"lmtgt", "-o", "json", "lun", "list"}, []string{"lmtgt", "lun", "list", "-o", "json"}},
		{[]string{"lmtgt", "--admin", "/s", "-o", "json", "lun", "show", "db1"}, []string{"lmtgt", "--admin", "/s", "lun", "show", "-o", "json", "--", "db1"}},
		{[]string{"lmtgt", "-o=json", "migration", "split", "a", "b"}, []string{"lmtgt", "migration", "split", "-o=json", "--", "a", "b"}},
		{[]string{"lmtgt", "--force", "target", "delete", "iqn.x"}, []string{"lmtgt", "target", "delete", "--force", "--", "iqn.x"}},
		// An unknown command: the flags go after it; no command: as given.
		{[]string{"lmtgt", "-o", "json", "lun", "lst"}, []string{"lmtgt", "lun", "lst", "-o", "json"}},
		{[]string{"lmtgt", "--admin", "/s", "-o", "json", "bogus"}, []string{"lmtgt", "--admin", "/s", "bogus", "-o", "json"}},
		{[]string{"lmtgt", "-o", "json"}, []string{"lmtgt", "-o", "json"}},
		// The framework's own flags stay global.
		{[]string{"lmtgt", "-v", "lun", "list"}, []string{"lmtgt", "-v", "lun", "list"}},
		{[]string{"lmtgt", "--help", "lun"}, []string{"lmtgt", "--help", "lun"}},
	} {
		if got := reorderArgs(app, c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	sock := filepath.Join(t.TempDir(), "none.sock")
	var out, errb bytes.Buffer
	if code := run([]string{"lmtgt", "-o", "json", "version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "{") {
		t.Errorf("lmtgt -o json version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"lmtgt", "-o", "json", "--admin", sock, "lun", "list"}, &out, &errb); code != 1 || !strings.HasPrefix(errb.String(), `{"error":`) {
		t.Errorf("lmtgt -o json --admin SOCK lun list: exit %d, stderr %q; want exit 1 and a JSON error", code, errb.String())
	}
}

// TestDidYouMean: an unknown command, an unknown flag and a wrong value
// of an enumerated flag or argument are usage errors (exit 2) that list
// what is allowed and suggest the closest one (issue 12: `--speed hihg`
// was refused by the daemon with exit 1; flag errors were the flag
// package's "flag provided but not defined: -blocksize").
func TestDidYouMean(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "list"}, `unknown command "migrate" (did you mean migration?)`},
		{[]string{"lun", "lst"}, `unknown command "lst" for lmtgt lun (did you mean list?)`},
		{[]string{"help", "lnu"}, `lmtgt: help: unknown command "lnu" (did you mean lun?) (see lmtgt --help)`},
		{[]string{"lun", "create", "x", "--size", "1M", "--blocksize", "512"}, "unknown flag --blocksize (did you mean --block-size?) (see lmtgt lun create --help)"},
		{[]string{"--admn", sock, "lun", "list"}, "unknown flag --admn (did you mean --admin?)"},
		{[]string{"--admin", sock, "migration", "create", "--source", "a", "--target", "b", "--speed", "hihg"}, `--speed "hihg": want low, medium, high or highest (did you mean high?)`},
		{[]string{"--admin", sock, "migration", "create", "--source", "a", "--target", "b", "--speed", "fast"}, `--speed "fast": want low, medium, high or highest`},
		{[]string{"--admin", sock, "migration", "create", "--source", "a", "--target", "b", "--vehicle", "copyfilerange"}, `--vehicle "copyfilerange": want auto, generic or copy_file_range (did you mean copy_file_range?)`},
		{[]string{"--admin", sock, "session", "set", "s", "--speed", "Low"}, `(did you mean low?)`},
		{[]string{"--admin", sock, "lun", "list", "-o", "jsn"}, `-o "jsn": want table or json (did you mean json?)`},
		{[]string{"--admin", sock, "lun", "import", "x", "--from", "iscsi://h/iqn.x/0", "--identity", "adpt"}, `--identity "adpt": want adopt or own (did you mean adopt?)`},
		{[]string{"--admin", sock, "alua", "state", "lun1", "1", "standy"}, `STATE "standy": want active-optimized, active-nonoptimized, standby, unavailable or transitioning (did you mean standby?)`},
		{[]string{"serve", "--log-format", "jsn"}, `--log-format "jsn": want console, json or auto (did you mean json?)`},
		{[]string{"--admin", sock, "events", "--type", "login,admn"}, `--type "admn": want one of admin, login, login-refused, pair, split, volume, offline, events-dropped (did you mean admin?)`},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"lmtgt"}, c.args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), c.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("lmtgt %q: exit %d, stderr %q; want exit 2 and one line with %q", c.args, code, errb.String(), c.want)
		}
	}
	if got := didYouMean("x", []string{"list", "show"}, "%s"); got != "" {
		t.Errorf("didYouMean(x) = %q, want none", got)
	}
	// Three edits away is not close: `-o yaml` suggested "table".
	for _, c := range []struct {
		s    string
		cand []string
	}{{"yaml", []string{"table", "json"}}, {"fast", []string{"low", "medium", "high", "highest"}}} {
		if got := didYouMean(c.s, c.cand, "%s"); got != "" {
			t.Errorf("didYouMean(%q, %q) = %q, want none", c.s, c.cand, got)
		}
	}
}

// TestConnErrorStyle: a daemon that cannot be reached is one line
// `lmtgt: admin S: cannot reach lmtgt: REASON (...)`, without Go's
// internals (issue 12: `Get "http://lmtgt/v1/luns": dial unix S: connect:`).
func TestConnErrorStyle(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	var out, errb bytes.Buffer
	code := run([]string{"lmtgt", "--admin", sock, "lun", "list"}, &out, &errb)
	msg := errb.String()
	want := "lmtgt: admin " + sock + ": cannot reach lmtgt: no such file or directory (is `lmtgt serve` running? use --admin or LMTGT_ADMIN)\n"
	if code != 1 || msg != want {
		t.Errorf("lun list with no daemon: exit %d, stderr %q, want %q", code, msg, want)
	}
	for _, internal := range []string{"http://", "dial unix", "connect:", "Get "} {
		if strings.Contains(msg, internal) {
			t.Errorf("error %q shows Go internals (%q)", msg, internal)
		}
	}
}

// TestOwnOutputFlag: a command with its own -o (other formats than table
// and json) is not refused by the shared -o check.
func TestOwnOutputFlag(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	got := ""
	app.Commands = append(app.Commands, &cli.Command{
		Name:  "export",
		Flags: []cli.Flag{&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "yaml"}},
		Action: func(c *cli.Context) error {
			got = c.String("output")
			return nil
		},
	})
	setUsageErrors(app.Commands)
	if err := app.Run([]string{"lmtgt", "export", "-o", "yaml"}); err != nil || got != "yaml" {
		t.Errorf("export -o yaml: %v, got %q", err, got)
	}
}
