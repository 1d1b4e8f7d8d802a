package integration

import (
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// TestFenceSession: a migration session fences its imported sources as
// migration create does (lm.CreateSession, fencePlans). A reservation
// another initiator holds on the old array refuses the session, naming
// the holder, and nothing is created (no session, no pair, the holder's
// reservation unchanged); once it is released, session create takes the
// fence (lun show says held, a stray write straight to tgt fails); session
// cancel releases it and the old path is open again.
func TestFenceSession(t *testing.T) {
	needTools(t, "qemu-io")
	old := startOldArray(t, 16<<20, "", "")
	d := StartDaemon(t, "")
	d.OK("lun", "import", "imp", "--from", old.url())
	d.OK("lun", "create", "loc", "--size", "16MiB")

	const hostKey = 0xc0ffee
	host := reservingHost(t, old.url(), hostKey)
	d.Fail(1, []string{"session s1", "0xc0ffee"}, "session", "create", "s1", "--pair", "imp:loc", "--speed", "low")
	if r := d.Run("session", "show", "s1"); r.Code == 0 {
		t.Fatalf("a session refused by the fence exists: %s", r)
	}
	if _, _, ok := d.migTry("imp"); ok {
		t.Fatal("a session refused by the fence left a pair")
	}
	if st, err := host.Client().ReadPRStatus(); err != nil || st.HolderKey != hostKey || st.Type != iscsivol.PRWriteExclusive {
		t.Fatalf("after a refused session create the old array's reservation changed: %+v %v", st, err)
	}
	if err := host.Client().PRRelease(hostKey, iscsivol.PRWriteExclusive); err != nil {
		t.Fatal(err)
	}

	d.OK("session", "create", "s1", "--pair", "imp:loc", "--speed", "low")
	var l wire.LUN
	d.JSON(&l, "lun", "show", "imp")
	if l.Remote == nil || !strings.HasPrefix(l.Remote.Fence, "held") {
		t.Fatalf("lun show imp in a session: remote %+v, want the fence held", l.Remote)
	}
	var m wire.Migration
	d.JSON(&m, "migration", "show", "imp")
	if !strings.HasPrefix(m.Fence, "held") {
		t.Fatalf("migration show imp in a session: fence %q, want held", m.Fence)
	}
	if failed, out := strayWrite(t, old.url(), 5, 0x55); !failed {
		t.Fatalf("a write straight to tgt went through the fence of a session's pair: %s", out)
	}

	d.OK("session", "cancel", "s1")
	l = wire.LUN{}
	d.JSON(&l, "lun", "show", "imp")
	if l.Remote == nil || l.Remote.Fence != "" {
		t.Fatalf("lun show imp after session cancel: remote %+v, want no fence", l.Remote)
	}
	if failed, out := strayWrite(t, old.url(), 6, 0x66); failed {
		t.Fatalf("write straight to tgt after session cancel released the fence: %s", out)
	}
}
