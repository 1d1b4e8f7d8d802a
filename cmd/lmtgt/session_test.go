package main

import (
	"bytes"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSessionUsage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"session", "create"}, 2, "session create: missing NAME"},
		{[]string{"session", "create", "w"}, 2, "at least one --pair"},
		{[]string{"session", "create", "w", "--pair", "a"}, 2, `--pair "a": want SRC:DST`},
		{[]string{"session", "create", "w", "--pair", "a:"}, 2, "want SRC:DST"},
		{[]string{"session", "create", "w", "--pair", "a:b", "--max-active", "-1"}, 2, "--max-active -1"},
		{[]string{"session", "set", "w"}, 2, "--speed and/or --max-mbps"},
		{[]string{"--admin", sock, "session", "split", "w", "--max-pause", "0"}, 2, "--max-pause 0s"},
		{[]string{"session", "show"}, 2, "missing NAME"},
		{[]string{"session", "pause", "a", "b"}, 2, "too many arguments"},
		{[]string{"--admin", sock, "session", "list"}, 1, "cannot reach lmtgt"},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"lmtgt"}, c.args...), &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("lmtgt %q: exit %d, stderr %q; want %d and %q", c.args, code, errb.String(), c.code, c.want)
		}
	}
	app := newApp(io.Discard, io.Discard)
	in := []string{"lmtgt", "session", "create", "w", "--pair", "a:b", "--auto-split", "--pair", "c:d"}
	want := []string{"lmtgt", "session", "create", "--pair", "a:b", "--auto-split", "--pair", "c:d", "--", "w"}
	if got := reorderArgs(app, in); !reflect.DeepEqual(got, want) {
		t.Errorf("reorderArgs(%q) = %q, want %q", in, got, want)
	}
	pairs, err := parsePairs([]string{"a:b", "c:d"})
	if err != nil || len(pairs) != 2 || pairs[1].Source != "c" || pairs[1].Target != "d" {
		t.Errorf("parsePairs: %+v %v", pairs, err)
	}
}
