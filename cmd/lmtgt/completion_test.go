package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBashCompletion loads the generated script in a real bash and asks
// it what it completes: commands, flags before and after the command,
// and the values of enumerated flags.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"lmtgt", "completion", "bash"}, &out, &errb); code != 0 {
		t.Fatalf("lmtgt completion bash: exit %d: %s", code, errb.String())
	}
	script := filepath.Join(t.TempDir(), "lmtgt.bash")
	if err := os.WriteFile(script, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, b)
	}
	for _, c := range []struct {
		words string // the command line; the last word is being completed
		want  string
	}{
		{"lmtgt lun cr", "create"},
		{"lmtgt mig", "migration"},
		{"lmtgt --admin /tmp/x.sock mig", "migration"},
		{"lmtgt -o json lun l", "list"},
		{"lmtgt migration create --speed h", "high highest"},
		{"lmtgt migration create --source a --vehicle ", "auto generic copy_file_range"},
		{"lmtgt lun list -o ", "table json"},
		{"lmtgt lun create x --bl", "--block-size"},
		{"lmtgt serve --log-format ", "console json auto"},
		{"lmtgt completion ", ""},
	} {
		words := strings.Fields(c.words)
		if strings.HasSuffix(c.words, " ") {
			words = append(words, "")
		}
		var arr []string
		for _, w := range words {
			arr = append(arr, "'"+w+"'")
		}
		prog := ". " + script + "; COMP_WORDS=(" + strings.Join(arr, " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "; _lmtgt; echo \"${COMPREPLY[*]}\""
		b, err := exec.Command(bash, "-c", prog).CombinedOutput()
		if got := strings.TrimSpace(string(b)); err != nil || got != c.want {
			t.Errorf("complete %q: %q (%v), want %q", c.words, got, err, c.want)
		}
	}
	out.Reset()
	if code := run([]string{"lmtgt", "completion", "zsh"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "#compdef lmtgt\n") {
		t.Errorf("lmtgt completion zsh: exit %d, %q", code, out.String()[:min(out.Len(), 80)])
	}
	if code := run([]string{"lmtgt", "completion", "fish"}, io.Discard, &errb); code != 2 {
		t.Errorf("lmtgt completion fish: exit %d, want 2", code)
	}
}

// TestManPage: the generated page names every command and flag and
// renders without a groff warning.
func TestManPage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"lmtgt", "man"}, &out, &errb); code != 0 {
		t.Fatalf("lmtgt man: exit %d: %s", code, errb.String())
	}
	page := out.String()
	app := newApp(io.Discard, io.Discard)
	for _, n := range walkCommands(app) {
		if n.cmd == nil {
			continue
		}
		if !strings.Contains(page, ".SS "+roff("lmtgt "+n.path)) {
			t.Errorf("man page lacks command %q", n.path)
		}
		for _, f := range n.cmd.Flags {
			if !strings.Contains(page, `\fB`+roff(dashed(f.Names()[0]))+`\fR`) {
				t.Errorf("man page lacks flag --%s of %q", f.Names()[0], n.path)
			}
		}
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff is not installed: rendering not checked")
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	if b, err := cmd.CombinedOutput(); err != nil || len(b) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, b)
	}
}
