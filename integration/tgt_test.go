package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// oldArray is a Linux tgt daemon (tgtd) playing "the old array": one
// target with LUN 1 on a sparse file, on a loopback portal and a private
// control port. It is a minimal copy of the tgt helper of
// metavol/volume/iscsi/tgt_test.go (a _test.go file of another package,
// which this package cannot import); keep the two in step.
type oldArray struct {
	t       testing.TB
	ctl     string
	portal  string
	iqn     string
	backing string
	user    string
	secret  string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// importForMigration is the setup of the import migrations: d imports
// the old array's LUN as "imp", serves it (d.exportLUN) and creates the local
// LUN "loc" of locSize to migrate it onto. It returns imp's target IQN.
func (g *oldArray) importForMigration(d *Daemon, locSize string) string {
	g.t.Helper()
	d.OK("lun", "import", "imp", "--from", g.url())
	d.OK("lun", "create", "loc", "--size", locSize)
	return d.exportLUN("imp")
}

// startOldArray starts tgtd with a LUN of size bytes; with user set, the
// target requires one-way CHAP with user/secret.
func startOldArray(t testing.TB, size int64, user, secret string) *oldArray {
	t.Helper()
	needTools(t, "tgtd", "tgtadm")
	dir := t.TempDir()
	g := &oldArray{t: t, iqn: "iqn.2026-11.org.lmtgt.test:old-array", backing: filepath.Join(dir, "old.img")}
	f, err := os.Create(g.backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// tgtd refuses large control ports: derive one from a free TCP port,
	// retrying when another tgtd holds it.
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g.portal = l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(g.portal)
		var pn int
		fmt.Sscan(port, &pn)
		g.ctl = fmt.Sprint(1000 + pn%9000)
		if g.tryStart() {
			break
		}
		if attempt == 4 {
			t.Fatalf("tgtd did not start on 5 control/portal ports (last %s, %s)", g.ctl, g.portal)
		}
	}
	t.Cleanup(g.stop)
	g.user, g.secret = user, secret
	g.configure()
	return g
}

// restart starts a stopped tgtd again on the same ports, with the same
// target, LUN and account (tgtd keeps its configuration in memory only).
func (g *oldArray) restart() {
	g.t.Helper()
	if !g.tryStart() {
		g.t.Fatalf("tgtd exited at restart (control port %s, portal %s)", g.ctl, g.portal)
	}
	g.configure()
}

func (g *oldArray) configure() {
	g.t.Helper()
	user, secret := g.user, g.secret
	g.adm("--op", "new", "--mode", "target", "--tid", "1", "-T", g.iqn)
	g.adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", g.backing)
	g.adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
	if user != "" {
		g.adm("--op", "new", "--mode", "account", "--user", user, "--password", secret)
		g.adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", user)
	}
}

func (g *oldArray) tryStart() bool {
	g.cmd = exec.Command("tgtd", "-f", "-C", g.ctl, "--iscsi", "portal="+g.portal)
	if err := g.cmd.Start(); err != nil {
		g.t.Fatalf("start tgtd: %v", err)
	}
	exited := make(chan struct{})
	g.exited = exited
	cmd := g.cmd
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if exec.Command("tgtadm", "-C", g.ctl, "--op", "show", "--mode", "sys").Run() == nil {
			if c, err := net.Dial("tcp", g.portal); err == nil {
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
			g.t.Fatalf("tgtd not ready within 10s on %s", g.portal)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of the readiness check
	}
}

func (g *oldArray) adm(args ...string) {
	g.t.Helper()
	full := append([]string{"-C", g.ctl, "--lld", "iscsi"}, args...)
	if out, err := exec.Command("tgtadm", full...).CombinedOutput(); err != nil {
		g.t.Fatalf("tgtadm %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// stop shuts tgtd down (offline, delete, then kill -9; TOOLS.md).
func (g *oldArray) stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	exec.Command("tgtadm", "-C", g.ctl, "--op", "update", "--mode", "sys", "--name", "State", "-v", "offline").Run()
	exec.Command("tgtadm", "-C", g.ctl, "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", "1", "--force").Run()
	exec.Command("tgtadm", "-C", g.ctl, "--op", "delete", "--mode", "system").Run()
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		g.cmd.Process.Kill()
		<-g.exited
	}
}

// url is the LUN's iscsi:// URL (no credentials).
func (g *oldArray) url() string { return fmt.Sprintf("iscsi://%s/%s/1", g.portal, g.iqn) }

// chapURL is the URL with libiscsi credentials, for qemu-io and iscsi-inq.
func (g *oldArray) chapURL(user, secret string) string {
	return fmt.Sprintf("iscsi://%s%%%s@%s/%s/1", user, secret, g.portal, g.iqn)
}

// initiators lists the initiator names with a session on the target
// (tgtadm --op show --mode conn).
func (g *oldArray) initiators() string {
	g.t.Helper()
	out, err := exec.Command("tgtadm", "-C", g.ctl, "--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", "1").CombinedOutput()
	if err != nil {
		g.t.Fatalf("tgtadm show conn: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(l), "Initiator: "); ok {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}
