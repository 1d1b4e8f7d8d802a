// Package tgtd runs a Linux tgt daemon (tgtd, Debian package tgt) for
// lmtgt's tests: the initiator's tests (metavol/volume/iscsi) and the
// end-to-end tests where tgt plays the old array (integration). It is the
// one launcher of both: a loopback portal, a private control port, stop
// the way ../shared/TOOLS.md says (offline, delete, then kill -9). It is
// test support only; no lmtgt program imports it.
package tgtd

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Daemon is one running tgtd.
type Daemon struct {
	t      testing.TB
	Ctl    string // control port (tgtadm -C)
	Portal string // loopback iSCSI portal, host:port
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts tgtd on a free loopback portal and skips t when tgtd or
// tgtadm is not installed. tgtd refuses large control ports, so the
// control port is derived from the free TCP port (1000..9999); another
// tgtd (of a parallel test) may hold it, so Start tries five. The daemon
// is stopped when t ends.
func Start(t testing.TB) *Daemon {
	t.Helper()
	for _, n := range []string{"tgtd", "tgtadm"} {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s (Debian package tgt) is not installed: skipping the Linux tgt tests (scripts/install-test-deps.sh)", n)
		}
	}
	d := &Daemon{t: t}
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		d.Portal = l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(d.Portal)
		var pn int
		fmt.Sscan(port, &pn)
		d.Ctl = fmt.Sprint(1000 + pn%9000)
		if d.tryStart() {
			break
		}
		if attempt == 4 {
			t.Fatalf("tgtd did not start on 5 control/portal ports (last %s, %s)", d.Ctl, d.Portal)
		}
	}
	t.Cleanup(d.Stop)
	return d
}

// Restart starts a stopped tgtd again on the same ports. tgtd keeps its
// configuration in memory only: the caller configures it again.
func (d *Daemon) Restart() {
	d.t.Helper()
	if !d.tryStart() {
		d.t.Fatalf("tgtd exited at start (control port %s, portal %s)", d.Ctl, d.Portal)
	}
}

// tryStart starts tgtd and waits until it answers on both ports; false
// if it exited (a port was taken).
func (d *Daemon) tryStart() bool {
	d.cmd = exec.Command("tgtd", "-f", "-C", d.Ctl, "--iscsi", "portal="+d.Portal)
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start tgtd: %v", err)
	}
	exited := make(chan struct{})
	d.exited = exited
	cmd := d.cmd
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if exec.Command("tgtadm", "-C", d.Ctl, "--op", "show", "--mode", "sys").Run() == nil {
			if c, err := net.Dial("tcp", d.Portal); err == nil {
				c.Close()
				return true
			}
		}
		select {
		case <-exited:
			return false
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("tgtd not ready within 10s on %s", d.Portal)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of the readiness check
	}
}

// Adm runs tgtadm on this daemon's control port (--lld iscsi) and fails
// the test when it fails.
func (d *Daemon) Adm(args ...string) {
	d.t.Helper()
	full := append([]string{"-C", d.Ctl, "--lld", "iscsi"}, args...)
	if out, err := exec.Command("tgtadm", full...).CombinedOutput(); err != nil {
		d.t.Fatalf("tgtadm %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Target creates target tid 1 named iqn with LUN 1 on backing, open to
// every initiator.
func (d *Daemon) Target(iqn, backing string) {
	d.t.Helper()
	d.Adm("--op", "new", "--mode", "target", "--tid", "1", "-T", iqn)
	d.Adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", backing)
	d.Adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
}

// Account adds a CHAP account to target 1: the credentials it requires
// from initiators, or with outgoing its own (mutual CHAP).
func (d *Daemon) Account(user, secret string, outgoing bool) {
	d.t.Helper()
	d.Adm("--op", "new", "--mode", "account", "--user", user, "--password", secret)
	bind := []string{"--op", "bind", "--mode", "account", "--tid", "1", "--user", user}
	if outgoing {
		bind = append(bind, "--outgoing")
	}
	d.Adm(bind...)
}

// Exited is closed when the tgtd process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Kill kills tgtd with kill -9 (a crash: connections reset, nothing
// logged out) and waits until it is gone, at most timeout.
func (d *Daemon) Kill(timeout time.Duration) {
	d.t.Helper()
	select {
	case <-d.exited:
		d.t.Fatal("tgtd is not running")
	default:
	}
	d.cmd.Process.Kill()
	select {
	case <-d.exited:
	case <-time.After(timeout):
		d.t.Fatalf("tgtd still running %v after kill -9", timeout)
	}
}

// Stop shuts tgtd down: offline, delete the target and the system, then
// kill -9 after 5 s.
func (d *Daemon) Stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	exec.Command("tgtadm", "-C", d.Ctl, "--op", "update", "--mode", "sys", "--name", "State", "-v", "offline").Run()
	exec.Command("tgtadm", "-C", d.Ctl, "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", "1", "--force").Run()
	exec.Command("tgtadm", "-C", d.Ctl, "--op", "delete", "--mode", "system").Run()
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// Initiators lists the initiator names with a session on target 1.
func (d *Daemon) Initiators() string {
	d.t.Helper()
	out, err := exec.Command("tgtadm", "-C", d.Ctl, "--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", "1").CombinedOutput()
	if err != nil {
		d.t.Fatalf("tgtadm show conn: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(l), "Initiator: "); ok {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}
