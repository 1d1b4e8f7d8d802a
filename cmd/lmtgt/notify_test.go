package main

import (
	"net"
	"path/filepath"
	"testing"
)

// TestFindAdmin: the CLI's admin socket order (docs/cli.md): --admin or
// LMTGT_ADMIN, $LMTGT_DATA_DIR/admin.sock, /run/lmtgt/admin.sock when the
// socket exists, ./lmtgt-data/admin.sock.
func TestFindAdmin(t *testing.T) {
	dir := t.TempDir()
	sdSock := filepath.Join(dir, "admin.sock")
	missing := filepath.Join(dir, "missing.sock")
	if got := findAdmin("", "", missing); got != "lmtgt-data/admin.sock" {
		t.Errorf("no flag, no env, no systemd socket: %q", got)
	}
	l, err := net.Listen("unix", sdSock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, c := range []struct{ flag, env, want string }{
		{"", "", sdSock},
		{"", "/srv/d", "/srv/d/admin.sock"},
		{"/x.sock", "/srv/d", "/x.sock"},
		{"host:7000", "", "host:7000"},
	} {
		if got := findAdmin(c.flag, c.env, sdSock); got != c.want {
			t.Errorf("findAdmin(%q, %q, systemd socket there) = %q, want %q", c.flag, c.env, got, c.want)
		}
	}
	// A plain file at the systemd path is not a socket.
	if got := findAdmin("", "", filepath.Join(dir)); got != "lmtgt-data/admin.sock" {
		t.Errorf("systemd path is a directory: %q", got)
	}
}

func TestRuntimeSocket(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"/run/lmtgt":         "/run/lmtgt/admin.sock",
		"/run/lmtgt/":        "/run/lmtgt/admin.sock",
		"/run/lmtgt:/run/x":  "/run/lmtgt/admin.sock",
		"relative/directory": "",
	} {
		if got := runtimeSocket(in); got != want {
			t.Errorf("runtimeSocket(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewNotifier(t *testing.T) {
	if n, err := newNotifier(""); err != nil || n.enabled() || n.notify("READY=1") != nil {
		t.Errorf("no NOTIFY_SOCKET: %v %v", n, err)
	}
	if _, err := newNotifier("127.0.0.1:9"); err == nil {
		t.Error("NOTIFY_SOCKET 127.0.0.1:9 accepted")
	}
	if n, err := newNotifier("@lmtgt-test"); err != nil || !n.enabled() {
		t.Errorf("abstract NOTIFY_SOCKET: %v", err)
	}
	// A real datagram socket receives the message.
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n, _ := newNotifier(path)
	if err := n.notify("READY=1", status("serving\nportal=x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	k, err := conn.Read(buf)
	if err != nil || string(buf[:k]) != "READY=1\nSTATUS=serving portal=x\n" {
		t.Errorf("datagram %q, %v", buf[:k], err)
	}
}
