package main

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// The service manager protocol of systemd's Type=notify (sd_notify(3)),
// written here rather than imported: one datagram of "KEY=VALUE" lines to
// the unix socket named by $NOTIFY_SOCKET. lmtgt sends
//
//	STATUS=...  while it starts (what it is opening) and once serving
//	READY=1     once every portal listens and the admin socket accepts
//	            (with STATUS=serving portal=... admin=...)
//	STOPPING=1  when a signal starts the shutdown
//
// so that `systemctl start lmtgt` returns only when hosts and the CLI can
// connect, and `systemctl status` says what the daemon is doing.

// notifier sends sd_notify messages; the zero notifier (no
// $NOTIFY_SOCKET: not started by systemd with Type=notify) sends nothing.
type notifier struct {
	addr string // $NOTIFY_SOCKET: a path, or "@name" (abstract namespace)
}

// newNotifier reads $NOTIFY_SOCKET. It refuses a value that is neither an
// absolute path nor an abstract socket name, so that a broken unit is
// reported at start and not as a start-up timeout.
func newNotifier(env string) (notifier, error) {
	switch {
	case env == "":
		return notifier{}, nil
	case strings.HasPrefix(env, "/") || strings.HasPrefix(env, "@"):
		return notifier{addr: env}, nil
	default:
		return notifier{}, fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or @name (only AF_UNIX is supported)", env)
	}
}

// enabled reports whether a service manager listens.
func (n notifier) enabled() bool { return n.addr != "" }

// notify sends one message (lines "KEY=VALUE"); a no-op without
// $NOTIFY_SOCKET.
func (n notifier) notify(lines ...string) error {
	if n.addr == "" {
		return nil
	}
	// Go maps a leading '@' to the abstract namespace (a NUL byte).
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd (NOTIFY_SOCKET %s): %w", n.addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("notify systemd (NOTIFY_SOCKET %s): %w", n.addr, err)
	}
	return nil
}

// status is a STATUS= line (one line: newlines would end it early).
func status(s string) string { return "STATUS=" + oneLine(s) }

// lookupGroup resolves --admin-group (a name or a numeric GID).
func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if gid, perr := strconv.Atoi(name); perr == nil && gid >= 0 {
			return gid, nil
		}
		return 0, usageErr("--admin-group %q: no such group", name)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, usageErr("--admin-group %q: group ID %q is not a number", name, g.Gid)
	}
	return gid, nil
}

// shareSocket gives the admin socket to group gid with mode 0660, so its
// members can run the CLI without root (--admin-group). The API creates
// the socket 0600 (owner only); it is widened only after the chgrp.
func shareSocket(path string, gid int) error {
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("admin socket %s: --admin-group: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("admin socket %s: --admin-group: %w", path, err)
	}
	return nil
}

// runtimeSocket is the admin socket's default under systemd: the first
// directory of $RUNTIME_DIRECTORY (the unit's RuntimeDirectory=lmtgt,
// /run/lmtgt), else "".
func runtimeSocket(runtimeDir string) string {
	dir, _, _ := strings.Cut(runtimeDir, ":")
	if dir == "" || !strings.HasPrefix(dir, "/") {
		return ""
	}
	return strings.TrimSuffix(dir, "/") + "/" + socketName
}
