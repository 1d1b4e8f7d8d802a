package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/client"
)

// lmtgtBin is the binary built by TestMain for `lmtgt serve` (with the
// race detector when the tests run with -race); cliBin is the same program
// built plainly for client commands, which start many times per test.
var lmtgtBin, cliBin string

// Deadlines. Generous: the machine is small and shared, and the daemon may
// run under the race detector.
const (
	startTimeout = 90 * time.Second
	stopTimeout  = 60 * time.Second
	cmdTimeout   = 2 * time.Minute
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lmtgt-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	lmtgtBin = filepath.Join(dir, "lmtgt")
	cliBin = lmtgtBin
	if raceBuild {
		cliBin = filepath.Join(dir, "lmtgt-cli")
		if err := goBuild(cliBin, false); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := goBuild(lmtgtBin, raceBuild); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func goBuild(out string, race bool) error {
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	tags, err := rbdBuildTags()
	if err != nil {
		return fmt.Errorf("integration: build tags: %w", err)
	}
	args = append(args, tags...)
	args = append(args, "github.com/lmtgt/lmtgt/cmd/lmtgt")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("integration: go build of cmd/lmtgt failed: %w", err)
	}
	return nil
}

// needTools skips the test when an external tool is missing.
func needTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s is not installed (run scripts/install-test-deps.sh: libiscsi-bin, qemu-utils, qemu-block-extra)", n)
		}
	}
}

// result is what a command did.
type result struct {
	Stdout, Stderr string
	Code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// runCmd runs a command with a deadline; env adds variables.
func runCmd(t testing.TB, stdin string, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	r := result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("%s %s: still running after %v\n%s", name, strings.Join(args, " "), cmdTimeout, r)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return r
}

// tool runs an external tool and fails the test unless it exits 0.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := runCmd(t, "", nil, name, args...)
	if r.Code != 0 {
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), r)
	}
	return r.Stdout
}

// Daemon is one `lmtgt serve` process.
type Daemon struct {
	t       testing.TB
	DataDir string
	Admin   string // unix socket
	Portal  string // bound host:port
	// AdminTCP is the bound TCP admin address when started with one.
	AdminTCP string
	Args     []string // extra serve flags

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logs   []string // daemon log files, one per start
	stdout *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartDaemon starts lmtgt serve on a fresh data dir (or dataDir when not
// empty) with a free portal port, and waits until it is ready.
func StartDaemon(t testing.TB, dataDir string, args ...string) *Daemon {
	t.Helper()
	if dataDir == "" {
		// A short path: the admin socket lives in it (107-byte limit).
		dir, err := os.MkdirTemp("", "lmtgt-it-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		dataDir = dir
	}
	d := &Daemon{t: t, DataDir: dataDir, Admin: filepath.Join(dataDir, "admin.sock"), Args: args}
	t.Cleanup(func() {
		d.mu.Lock()
		running := d.cmd != nil
		d.mu.Unlock()
		if running {
			d.Kill()
		}
		if t.Failed() {
			d.dumpLogs()
		}
	})
	d.Start("127.0.0.1:0")
	return d
}

// Start starts the daemon (again) on portal and waits for its ready line.
func (d *Daemon) Start(portal string) {
	t := d.t
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		t.Fatal("daemon already running")
	}
	logPath := filepath.Join(d.DataDir, fmt.Sprintf("daemon-%d.log", len(d.logs)+1))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	d.logs = append(d.logs, logPath)
	args := append([]string{"serve", "--data-dir", d.DataDir, "--portal", portal, "--admin", d.Admin,
		"--log-format", "json", "--log-level", "debug"}, d.Args...)
	cmd := exec.Command(lmtgtBin, args...)
	cmd.Env = append(os.Environ(), "GORACE=halt_on_error=0 exitcode=66")
	cmd.Stderr = logf
	pr, pw := io.Pipe()
	d.stdout = &lockedBuffer{}
	cmd.Stdout = io.MultiWriter(d.stdout, pw) // buffer first: the ready line may arrive with earlier lines
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", lmtgtBin, err)
	}
	d.cmd = cmd
	exited := make(chan struct{})
	d.exited = exited
	go func() {
		cmd.Wait()
		logf.Close()
		pw.Close()
		close(exited)
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "lmtgt serving ") {
				select {
				case ready <- line:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case line := <-ready:
		for _, f := range strings.Fields(line)[2:] {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "portal":
				d.Portal, _, _ = strings.Cut(v, ",")
			case "admin-tcp":
				d.AdminTCP = v
			}
		}
		if d.Portal == "" {
			t.Fatalf("ready line without a portal: %q", line)
		}
	case <-exited:
		t.Fatalf("lmtgt serve exited before it was ready (%v)\nstdout:\n%s\nlog:\n%s", cmd.ProcessState, d.stdout, tailFile(logPath, 60))
	case <-time.After(startTimeout):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("lmtgt serve not ready after %v\nstdout:\n%s\nlog:\n%s", startTimeout, d.stdout, tailFile(logPath, 60))
	}
}

// Stop sends SIGTERM and requires a clean exit (code 0) within the deadline.
func (d *Daemon) Stop() {
	t := d.t
	t.Helper()
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		t.Fatal("daemon not running")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("lmtgt serve did not stop within %v of SIGTERM", stopTimeout)
	}
	d.mu.Lock()
	d.cmd = nil
	d.mu.Unlock()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("lmtgt serve exited with code %d after SIGTERM\nlog:\n%s", code, tailFile(d.logs[len(d.logs)-1], 60))
	}
	d.checkRaces()
	if _, err := os.Stat(d.Admin); err == nil {
		t.Errorf("admin socket %s left behind after a clean stop", d.Admin)
	}
}

// Kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (d *Daemon) Kill() {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		d.t.Errorf("lmtgt serve still running %v after SIGKILL", stopTimeout)
	}
	d.checkRaces()
}

// Restart stops the daemon (cleanly, or with kill -9) and starts it again
// on the same portal port.
func (d *Daemon) Restart(kill bool) {
	d.t.Helper()
	portal := d.Portal
	if kill {
		d.Kill()
	} else {
		d.Stop()
	}
	d.Start(portal)
	if d.Portal != portal {
		d.t.Fatalf("restarted on %s, want %s", d.Portal, portal)
	}
}

func (d *Daemon) checkRaces() {
	for _, l := range d.logs {
		b, _ := os.ReadFile(l)
		if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			d.t.Errorf("the race detector reported a data race in lmtgt serve (%s)", l)
		}
		if bytes.Contains(b, []byte("panic:")) {
			d.t.Errorf("lmtgt serve panicked (%s)", l)
		}
	}
}

func (d *Daemon) dumpLogs() {
	for _, l := range d.logs {
		d.t.Logf("---- %s (tail) ----\n%s", l, tailFile(l, 40))
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Run runs `lmtgt ARGS` against this daemon's admin socket.
func (d *Daemon) Run(args ...string) result {
	d.t.Helper()
	return runCmd(d.t, "", []string{"LMTGT_ADMIN=" + d.Admin}, cliBin, args...)
}

// OK runs `lmtgt ARGS` and requires exit code 0.
func (d *Daemon) OK(args ...string) string {
	d.t.Helper()
	r := d.Run(args...)
	if r.Code != 0 {
		d.t.Fatalf("lmtgt %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout
}

// Fail runs `lmtgt ARGS`, requires exit code `code` and a one-line error
// on stderr containing every string in want.
func (d *Daemon) Fail(code int, want []string, args ...string) result {
	d.t.Helper()
	r := d.Run(args...)
	if r.Code != code {
		d.t.Fatalf("lmtgt %s: want exit code %d\n%s", strings.Join(args, " "), code, r)
	}
	msg := strings.TrimRight(r.Stderr, "\n")
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "lmtgt: ") {
		d.t.Errorf("lmtgt %s: want one line \"lmtgt: ...\" on stderr, got %q", strings.Join(args, " "), r.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			d.t.Errorf("lmtgt %s: error %q does not mention %q", strings.Join(args, " "), msg, w)
		}
	}
	return r
}

// JSON runs `lmtgt ARGS -o json` and decodes its output into v.
func (d *Daemon) JSON(v any, args ...string) {
	d.t.Helper()
	out := d.OK(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		d.t.Fatalf("lmtgt %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Client is an admin API client on the unix socket.
func (d *Daemon) Client() *client.Client {
	c := client.New(d.Admin, client.Options{Timeout: cmdTimeout})
	d.t.Cleanup(c.Close)
	return c
}

// URL is the libiscsi URL of a LUN.
func (d *Daemon) URL(iqn string, lun int) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", d.Portal, iqn, lun)
}

// testIQN is the IQN tests use for a target named after suffix.
func testIQN(suffix string) string { return "iqn.2026-11.org.lmtgt.test:" + suffix }

// Export creates a LUN and a target named after it, maps the LUN at 0 and
// allows every initiator. It returns the target IQN.
func (d *Daemon) Export(name, size string, blockSize int) string {
	d.t.Helper()
	d.OK("lun", "create", name, "--size", size, "--block-size", fmt.Sprint(blockSize))
	return d.exportLUN(name)
}

// exportLUN puts LUN name behind a target of its own (testIQN(name)) as LUN
// 0, open to every initiator, and returns the target's IQN.
func (d *Daemon) exportLUN(name string) string {
	d.t.Helper()
	iqn := testIQN(name)
	d.OK("target", "create", iqn)
	d.OK("target", "map", iqn, name)
	d.OK("target", "allow", iqn, "ALL")
	return iqn
}

// qemuIO runs qemu-io commands (one per line) on a LUN URL.
func qemuIO(t testing.TB, url string, cmds ...string) result {
	t.Helper()
	var args []string
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, "-f", "raw", "-t", "none", url)
	return runCmd(t, "", nil, "qemu-io", args...)
}

// qemuIOOK runs qemu-io and requires success without a pattern mismatch.
func qemuIOOK(t testing.TB, url string, cmds ...string) {
	t.Helper()
	r := qemuIO(t, url, cmds...)
	if r.Code != 0 || strings.Contains(r.Stdout+r.Stderr, "Pattern verification failed") || strings.Contains(r.Stdout+r.Stderr, "error") {
		t.Fatalf("qemu-io %v on %s: %s", cmds, url, r)
	}
}

// waitFor polls cond until it returns true or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v (last: %s)", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
