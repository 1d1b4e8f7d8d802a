package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestScheduleFlagUsageErrors: a malformed --start-at, --window,
// --max-elapsed, --priority or --max-host-latency of migration create,
// session create, migration set and session set is a usage error (exit 2)
// naming the flag, checked before anything is sent (the review of issue
// 11 found them refused by the daemon with exit 1, without the flag's
// name; a well-formed value still reaches the daemon, here absent: exit 1).
func TestScheduleFlagUsageErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	create := []string{"--admin", sock, "migration", "create", "--source", "a", "--target", "b"}
	screate := []string{"--admin", sock, "session", "create", "s", "--pair", "a:b"}
	mset := []string{"--admin", sock, "migration", "set", "a"}
	sset := []string{"--admin", sock, "session", "set", "s"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(create, "--start-at", "25:00"), `--start-at: start time "25:00"`},
		{append(create, "--start-at", "tomorrow"), `--start-at: start time "tomorrow"`},
		{append(create, "--window", "22:00-06:00"), `--window: window "22:00-06:00": no =SPEED`},
		{append(create, "--window", "22:00-26:00=low"), `--window: window "22:00-26:00=low"`},
		{append(create, "--window", "22:00-06:00=low,max-mbps=1.5"), `--window: window`},
		{append(create, "--max-elapsed", "5"), `--max-elapsed: max elapsed "5"`},
		{append(create, "--priority", "10"), `--priority: priority "10"`},
		{append(create, "--max-host-latency", "fast"), `--max-host-latency: max host latency "fast"`},
		{append(screate, "--start-at", "12:60"), `--start-at: start time "12:60"`},
		{append(screate, "--priority", "urgent"), `--priority: priority "urgent"`},
		{append(mset, "--window", "x"), `--window: window "x"`},
		{append(mset, "--max-elapsed", "-5m"), `--max-elapsed: max elapsed "-5m"`},
		{append(sset, "--priority", "0"), `--priority: priority "0"`},
		{append(sset, "--max-active", "-1"), `--max-active -1: want 0 (all pairs at once) or more`},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"lmtgt"}, c.args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), c.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("lmtgt %q: exit %d, stderr %q; want exit 2 and one line with %q", c.args, code, errb.String(), c.want)
		}
	}
	// Well-formed values pass the check and go to the daemon.
	for _, args := range [][]string{
		append(create, "--start-at", "22:00", "--window", "22:00-06:00=highest", "--window", "06:00-22:00=low,max-mbps=20",
			"--max-elapsed", "6h", "--priority", "high", "--max-host-latency", "off"),
		append(mset, "--window", "none", "--max-elapsed", "0", "--priority", "7"),
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"lmtgt"}, args...), &out, &errb); code != 1 || !strings.Contains(errb.String(), "cannot reach lmtgt") {
			t.Errorf("lmtgt %q: exit %d, stderr %q; want exit 1, the daemon cannot be reached", args, code, errb.String())
		}
	}
}
