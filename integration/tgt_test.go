package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/tgtd"
)

// oldArray is a Linux tgt daemon (tgtd) playing "the old array": one
// target with LUN 1 on a sparse file, on a loopback portal and a private
// control port (the launcher is metavol/volume/iscsi/tgtd, shared with the
// initiator's tests).
type oldArray struct {
	*tgtd.Daemon
	t       testing.TB
	iqn     string
	backing string
	user    string
	secret  string
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
	dir := t.TempDir()
	g := &oldArray{t: t, iqn: "iqn.2026-11.org.lmtgt.test:old-array", backing: filepath.Join(dir, "old.img"), user: user, secret: secret}
	f, err := os.Create(g.backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g.Daemon = tgtd.Start(t)
	g.configure()
	return g
}

// restart starts a stopped tgtd again on the same ports, with the same
// target, LUN and account (tgtd keeps its configuration in memory only).
func (g *oldArray) restart() {
	g.t.Helper()
	g.Restart()
	g.configure()
}

func (g *oldArray) configure() {
	g.t.Helper()
	g.Target(g.iqn, g.backing)
	if g.user != "" {
		g.Account(g.user, g.secret, false)
	}
}

// stop shuts tgtd down.
func (g *oldArray) stop() { g.Stop() }

// url is the LUN's iscsi:// URL (no credentials).
func (g *oldArray) url() string { return fmt.Sprintf("iscsi://%s/%s/1", g.Portal, g.iqn) }

// chapURL is the URL with libiscsi credentials, for qemu-io and iscsi-inq.
func (g *oldArray) chapURL(user, secret string) string {
	return fmt.Sprintf("iscsi://%s%%%s@%s/%s/1", user, secret, g.Portal, g.iqn)
}

// initiators lists the initiator names with a session on the target.
func (g *oldArray) initiators() string { return g.Initiators() }
