package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sdListener is a fake systemd: a unixgram socket that collects the
// sd_notify datagrams lmtgt sends to $NOTIFY_SOCKET.
type sdListener struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *sdListener {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd-") // short: a unix socket path has 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l := &sdListener{path: filepath.Join(dir, "notify"), msgs: make(chan string, 64)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: l.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() { // owned by the test: ends when the cleanup closes conn
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			l.msgs <- string(buf[:n])
		}
	}()
	return l
}

// mark sends a datagram of the test's own to the socket.
func (l *sdListener) mark(t *testing.T, line string) {
	t.Helper()
	c, err := net.Dial("unixgram", l.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
}

// next waits for the next datagram.
func (l *sdListener) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case m := <-l.msgs:
		return m
	case <-time.After(startTimeout):
		t.Fatalf("no sd_notify message (waiting for %s) within %v", what, startTimeout)
		return ""
	}
}

// until reads datagrams until one has line; it returns that one and the
// ones before it.
func (l *sdListener) until(t *testing.T, line string) (string, []string) {
	t.Helper()
	var before []string
	for {
		m := l.next(t, line)
		for _, x := range strings.Split(m, "\n") {
			if x == line {
				return m, before
			}
		}
		before = append(before, m)
	}
}

// TestSystemdNotify: under Type=notify, lmtgt sends STATUS lines while it
// starts, READY=1 only once the portal accepts iSCSI connections and the
// admin socket accepts requests, STOPPING=1 on SIGTERM; --admin-group
// hands the admin socket to a group with mode 0660. A daemon whose portal
// cannot open never sends READY=1.
func TestSystemdNotify(t *testing.T) {
	sd := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", sd.path)
	d := StartDaemon(t, "", "--admin-group", "daemon")

	ready, before := sd.until(t, "READY=1")
	for _, m := range before {
		if !strings.HasPrefix(m, "STATUS=") {
			t.Errorf("before READY=1: message %q, want only STATUS= lines", m)
		}
	}
	if len(before) < 2 {
		t.Errorf("before READY=1: %d STATUS messages (%q), want the start-up steps", len(before), before)
	}
	// The READY message names the portal it opened: it accepts.
	var portal string
	for _, f := range strings.Fields(ready) {
		if v, ok := strings.CutPrefix(f, "portal="); ok {
			portal = v
		}
	}
	if portal != d.Portal {
		t.Fatalf("READY message %q: portal %q, the daemon says %q", ready, portal, d.Portal)
	}
	c, err := net.DialTimeout("tcp", portal, 10*time.Second)
	if err != nil {
		t.Fatalf("after READY=1 the portal %s does not accept: %v", portal, err)
	}
	c.Close()
	d.OK("lun", "list")

	fi, err := os.Stat(d.Admin)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || st.Gid != 1 {
		t.Errorf("admin socket with --admin-group daemon: mode %v gid %d, want 0660 and gid 1", fi.Mode().Perm(), st.Gid)
	}

	d.Stop()
	stop, _ := sd.until(t, "STOPPING=1")
	if !strings.Contains(stop, "STATUS=") {
		t.Errorf("STOPPING message %q without a STATUS line", stop)
	}

	// A portal that cannot open: the daemon exits 1 and never says READY.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	sd.mark(t, "TEST=BEFORE")
	sd.until(t, "TEST=BEFORE")
	dir := t.TempDir()
	cmd := exec.Command(lmtgtBin, "serve", "--data-dir", dir, "--portal", busy.Addr().String(),
		"--admin", filepath.Join(dir, "a.sock"), "--log-format", "json")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("serve on a busy portal: %v, want exit 1\n%s", err, out)
	}
	// Every datagram the daemon sent is queued before this one.
	sd.mark(t, "TEST=AFTER")
	_, sent := sd.until(t, "TEST=AFTER")
	if len(sent) == 0 {
		t.Errorf("serve on a busy portal sent no STATUS message")
	}
	for _, m := range sent {
		if strings.Contains(m, "READY=1") {
			t.Errorf("serve on a busy portal sent %q", m)
		}
	}

	// An unknown --admin-group is a usage error before anything opens.
	r := runCmd(t, "", nil, cliBin, "serve", "--data-dir", t.TempDir(), "--admin-group", "no-such-group-lmtgt")
	if r.Code != 2 || !strings.Contains(r.Stderr, `--admin-group "no-such-group-lmtgt": no such group`) {
		t.Errorf("serve --admin-group no-such-group: %s", r)
	}
}
