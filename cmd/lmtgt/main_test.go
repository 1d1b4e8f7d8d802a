package main

import (
	"bytes"
	"encoding/json"
	"io"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func TestReorderArgs(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	cases := []struct{ in, want []string }{
		{[]string{"lmtgt", "lun", "show", "db1", "-o", "json"}, []string{"lmtgt", "lun", "show", "-o", "json", "--", "db1"}},
		{[]string{"lmtgt", "--admin", "/s", "lun", "show", "db1"}, []string{"lmtgt", "--admin", "/s", "lun", "show", "--", "db1"}},
		{[]string{"lmtgt", "target", "map", "iqn.x", "l", "--lun", "3"}, []string{"lmtgt", "target", "map", "--lun", "3", "--", "iqn.x", "l"}},
		{[]string{"lmtgt", "target", "delete", "iqn.x", "--force", "-o", "json"}, []string{"lmtgt", "target", "delete", "--force", "-o", "json", "--", "iqn.x"}},
		{[]string{"lmtgt", "migration", "split", "a", "b", "--max-pause=50ms"}, []string{"lmtgt", "migration", "split", "--max-pause=50ms", "--", "a", "b"}},
		{[]string{"lmtgt", "lun", "create", "d", "--direct", "--size", "1GiB"}, []string{"lmtgt", "lun", "create", "--direct", "--size", "1GiB", "--", "d"}},
		{[]string{"lmtgt", "lun", "show", "--", "-weird"}, []string{"lmtgt", "lun", "show", "--", "-weird"}},
		{[]string{"lmtgt", "lun", "list"}, []string{"lmtgt", "lun", "list"}},
		{[]string{"lmtgt", "bogus", "x"}, []string{"lmtgt", "bogus", "x"}},
		{[]string{"lmtgt", "lun", "creat", "x", "--size", "1M"}, []string{"lmtgt", "lun", "creat", "x", "--size", "1M"}},
		// Global flags after the command go back among the global flags.
		{[]string{"lmtgt", "lun", "list", "--admin", "/s", "-o", "json"}, []string{"lmtgt", "--admin", "/s", "lun", "list", "-o", "json"}},
		{[]string{"lmtgt", "lun", "show", "db1", "--admin=/s"}, []string{"lmtgt", "--admin=/s", "lun", "show", "--", "db1"}},
		// serve has its own --admin: it stays there.
		{[]string{"lmtgt", "serve", "--admin", "/s"}, []string{"lmtgt", "serve", "--admin", "/s"}},
	}
	for _, c := range cases {
		if got := reorderArgs(app, c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version"}, 0, ""},
		{[]string{"lun", "--help"}, 0, ""},
		{[]string{}, 2, "no command"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"lun", "create"}, 2, "lun create: missing NAME"},
		{[]string{"lun", "create", "x", "--size", "big"}, 2, "not a size"},
		{[]string{"lun", "create", "x", "--size", "0"}, 2, "--size 0: a LUN needs at least one block"},
		{[]string{"lun", "resize", "x", "--size", "0B"}, 2, "--size 0B: a LUN needs at least one block"},
		{[]string{"lun", "list", "-o", "xml"}, 2, `-o "xml"`},
		{[]string{"lun", "list", "--what"}, 2, "unknown flag --what (see lmtgt lun list --help)"},
		{[]string{"target", "chap", "iqn.x", "--user", "u"}, 2, "--secret"},
		{[]string{"target", "chap", "iqn.x", "--user", "u", "--secret", "s", "--secret-file", "/f"}, 2, "--secret and --secret-file: give one"},
		{[]string{"target", "chap", "iqn.x", "--user", "u", "--secret-file", "/nonexistent/f"}, 2, "--secret-file: open /nonexistent/f"},
		{[]string{"discovery", "chap", "--user", "u"}, 2, "discovery chap: --user and --secret"},
		{[]string{"discovery", "chap", "--disable", "--secret", "x"}, 2, "--disable takes no --secret"},
		{[]string{"--admin-token-file", "/nonexistent/t", "lun", "list"}, 2, "--admin-token-file: open /nonexistent/t"},
		{[]string{"serve", "--max-write-buffer", "1MiB"}, 2, "--max-write-buffer 1MiB: at least 16 MiB"},
		// A negative duration is refused (it was taken as "never"); the
		// bad --max-write-buffer stops a serve that would start anyway.
		{[]string{"serve", "--progress-interval", "-1s", "--max-write-buffer", "1MiB"}, 2, "--progress-interval -1s: want 0 (never) or a positive duration"},
		{[]string{"serve", "--ceph-op-timeout", "-5s", "--max-write-buffer", "1MiB"}, 2, "--ceph-op-timeout -5s: want a positive duration"},
		{[]string{"serve", "--idle-poll", "-1us", "--max-write-buffer", "1MiB"}, 2, "--idle-poll -1µs: want 0 (never) or a duration up to 1ms"},
		{[]string{"serve", "--idle-poll", "2ms", "--max-write-buffer", "1MiB"}, 2, "--idle-poll 2ms: want 0 (never) or a duration up to 1ms"},
		{[]string{"migration", "split"}, 2, "at least one source"},
		{[]string{"lun", "creat", "x", "--size", "1M"}, 2, `unknown command "creat" for lmtgt lun`},
		{[]string{"--admin", sock, "lun", "create", "h", "--size", "1M"}, 1, "cannot reach lmtgt"}, // a LUN named h, not the help
		{[]string{"--admin", sock, "lun", "show", "help"}, 1, "cannot reach lmtgt"},
		{[]string{"--admin", sock, "migration", "split", "a", "--max-pause", "0"}, 2, "--max-pause 0s: want a duration between 1ms and 1m"},
		{[]string{"--admin", sock, "migration", "split", "a", "--max-pause", "-1s"}, 2, "--max-pause -1s"},
		{[]string{"--admin", sock, "migration", "split", "a", "--max-pause", "2m"}, 2, "--max-pause 2m0s"},
		{[]string{"migration", "set", "a"}, 2, "--speed and/or --max-mbps"},
		{[]string{"--admin", sock, "lun", "list"}, 1, "cannot reach lmtgt"},
		{[]string{"serve", "--log-level", "chatty"}, 2, "--log-level"},
		{[]string{"serve", "--pprof"}, 2, "--pprof: needs --metrics"},
		// Issue 12 rough edges.
		{[]string{"lun", "create", "x", "--size", "+64M"}, 2, `--size: size "+64M": no sign allowed (write 64M)`},
		{[]string{"lun", "create", "x", "--size", "1e9"}, 2, `--size: size "1e9": not a size`},
		{[]string{"lun", "resize", "x", "--size", "+1G"}, 2, "no sign allowed"},
		{[]string{"serve", "--queue-depth", "-3", "--metrics", "nonsense"}, 2, "--queue-depth -3: want 1 to 4096"},
		{[]string{"serve", "--queue-depth", "0", "--metrics", "nonsense"}, 2, "--queue-depth 0: want 1 to 4096"},
		{[]string{"serve", "--queue-depth", "100000", "--metrics", "nonsense"}, 2, "--queue-depth 100000: want 1 to 4096"},
		{[]string{"serve", "--remote-replacement-timeout", "0s", "--metrics", "nonsense"}, 2, "--remote-replacement-timeout 0s: want 1s to 1h0m0s"},
		{[]string{"serve", "--remote-replacement-timeout", "500ms", "--metrics", "nonsense"}, 2, "--remote-replacement-timeout 500ms: want 1s to 1h0m0s"},
		{[]string{"serve", "--remote-replacement-timeout", "2h", "--metrics", "nonsense"}, 2, "--remote-replacement-timeout 2h0m0s: want 1s to 1h0m0s"},
		{[]string{"serve", "--remote-replacement-timeout", "30", "--metrics", "nonsense"}, 2, "remote-replacement-timeout"},
		{[]string{"serve", "--portal", "nonsense", "--metrics", "nonsense"}, 2, `--portal "nonsense": want host:port`},
		{[]string{"serve", "--portal", "127.0.0.1:99999", "--metrics", "nonsense"}, 2, `--portal "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{[]string{"migration", "split", "a", "--max-pause", "100"}, 2, "--max-pause 100: want a duration with a unit, like 100ms"},
		{[]string{"session", "split", "s", "--max-pause", "100"}, 2, "--max-pause 100: want a duration with a unit"},
		{[]string{"migration", "set", "a", "--max-mbps", "1.5"}, 2, "--max-mbps 1.5: want a whole number of MB/s"},
		{[]string{"migration", "create", "a", "b", "--max-mbps", "1.5"}, 2, "--max-mbps 1.5: want a whole number of MB/s"},
		{[]string{"migration", "show", "a", "--interval", "5"}, 2, "--interval 5: want a duration with a unit"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(append([]string{"lmtgt"}, c.args...), &out, &errb)
		if code != c.code {
			t.Errorf("lmtgt %q: exit %d, want %d (stderr %q)", c.args, code, c.code, errb.String())
		}
		msg := errb.String()
		if c.want != "" && !strings.Contains(msg, c.want) {
			t.Errorf("lmtgt %q: stderr %q does not mention %q", c.args, msg, c.want)
		}
		if c.code != 0 && (strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "lmtgt: ")) {
			t.Errorf("lmtgt %q: want one line \"lmtgt: ...\" on stderr, got %q", c.args, msg)
		}
	}
}

// TestGlobalFlagsAnywhere: `lmtgt lun list --admin S` uses S (issue 12:
// global flags after the command were refused).
func TestGlobalFlagsAnywhere(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "elsewhere.sock")
	var out, errb bytes.Buffer
	code := run([]string{"lmtgt", "lun", "list", "--admin", sock}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "elsewhere.sock") {
		t.Errorf("lun list --admin SOCK: exit %d, stderr %q; want exit 1 naming elsewhere.sock", code, errb.String())
	}
}

// TestJSONErrors: with -o json an error is one JSON object on stderr with
// the unchanged exit code (issue 12: errors were plain text).
func TestJSONErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--admin", sock, "lun", "show", "x", "-o", "json"}, 1, "none.sock"},
		{[]string{"lun", "create", "x", "--size", "+1M", "-o", "json"}, 2, "no sign allowed"},
		{[]string{"lun", "list", "--what", "--output=json"}, 2, "unknown flag --what"},
		// -o before the command (issue 12: "flags anywhere").
		{[]string{"-o", "json", "--admin", sock, "lun", "list"}, 1, "cannot reach lmtgt"},
		{[]string{"-o", "json", "lun", "creat", "x"}, 2, `unknown command "creat" for lmtgt lun (did you mean create?)`},
		{[]string{"-o", "json", "migration", "set", "a", "--speed", "hihg"}, 2, `--speed "hihg": want low, medium, high or highest (did you mean high?)`},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"lmtgt"}, c.args...), &out, &errb)
		var e struct {
			Error string `json:"error"`
			Code  int    `json:"code"`
		}
		if code != c.code || strings.Count(errb.String(), "\n") != 1 || json.Unmarshal(errb.Bytes(), &e) != nil ||
			e.Code != c.code || !strings.Contains(e.Error, c.want) {
			t.Errorf("lmtgt %q: exit %d, stderr %q; want exit %d and one JSON line {\"error\": ...%s..., \"code\": %d}",
				c.args, code, errb.String(), c.code, c.want, c.code)
		}
	}
}

// TestVersion: `lmtgt version` (and -o json, and --version) print the
// version, the VCS revision when the build has one, and the Go version.
func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"lmtgt", "version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "lmtgt ") ||
		!strings.Contains(out.String(), runtime.Version()) {
		t.Errorf("lmtgt version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	out.Reset()
	var v map[string]any
	if code := run([]string{"lmtgt", "version", "-o", "json"}, &out, &errb); code != 0 || json.Unmarshal(out.Bytes(), &v) != nil ||
		v["go_version"] != runtime.Version() || v["version"] == "" {
		t.Errorf("lmtgt version -o json: exit %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"lmtgt", "--version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), runtime.Version()) {
		t.Errorf("lmtgt --version: exit %d, stdout %q", code, out.String())
	}
	if got := buildVersion("v1.2.3").Version; got != "v1.2.3" {
		t.Errorf("buildVersion with -X main.version=v1.2.3: version %q", got)
	}
}

func TestProgress(t *testing.T) {
	if got := progressBar(50, 100, 10); got != "[#####.....]" {
		t.Errorf("progressBar = %q", got)
	}
	if got := progressBar(5, 0, 4); got != "[....]" {
		t.Errorf("progressBar with no total = %q", got)
	}
	if got := etaStr(3725); got != "1:02:05" {
		t.Errorf("etaStr = %q", got)
	}
	if got := etaStr(65); got != "1:05" {
		t.Errorf("etaStr = %q", got)
	}
}

func TestDefaultWriteBuffer(t *testing.T) {
	for _, c := range []struct{ mem, want int64 }{
		{0, 64 << 20},         // unknown
		{256 << 20, 64 << 20}, // small machine: the floor
		{8 << 30, 1 << 30},    // 1/8
		{64 << 30, 4 << 30},   // the ceiling
	} {
		if got := defaultWriteBuffer(c.mem); got != c.want {
			t.Errorf("defaultWriteBuffer(%d) = %d, want %d", c.mem, got, c.want)
		}
	}
	if n, err := maxWriteBuffer(""); err != nil || n < 64<<20 || n > 4<<30 {
		t.Errorf("default --max-write-buffer %d, %v", n, err)
	}
}

// TestRateUnits: rates print in MB/s (10^6 bytes/s), the unit of --speed
// and --max-mbps (issue 12: "low (10 MB/s)" showed as 9.5 MiB/s), and a
// cap above the speed level says it has no effect.
func TestRateUnits(t *testing.T) {
	for bps, want := range map[int64]string{10_000_000: "10 MB/s", 1_500_000: "1.5 MB/s", 200_000_000: "200 MB/s", 999: "999 B/s", 2_000_000_000: "2 GB/s", 0: "-"} {
		if got := rateStr(bps); got != want {
			t.Errorf("rateStr(%d) = %q, want %q", bps, got, want)
		}
	}
	if got := limitStr("low", 100, 10_000_000, "speed"); got != "low, max 100 MB/s: copies at up to 10 MB/s (the speed level limits; the cap has no effect)" {
		t.Errorf("limitStr(low, cap 100) = %q", got)
	}
	if got := limitStr("medium", 5, 5_000_000, "max_mbps"); got != "medium, max 5 MB/s: copies at up to 5 MB/s (the cap limits)" {
		t.Errorf("limitStr(medium, cap 5) = %q", got)
	}
}
