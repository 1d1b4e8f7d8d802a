package integration

import (
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestMigrationAgainAfterSplit: a LUN migrated once (auto-split, verify)
// can be migrated again; while the old pair stays on record as split, show
// and cancel act on the new pair, and cancel says what it cancelled; show
// then says the last pair was cancelled.
func TestMigrationAgainAfterSplit(t *testing.T) {
	d := StartDaemon(t, "")
	for _, n := range []string{"ha", "hb", "hc"} {
		d.OK("lun", "create", n, "--size", "32MiB")
	}
	d.OK("migration", "create", "--source", "ha", "--target", "hb", "--speed", "highest", "--auto-split", "--verify")
	if st := d.waitMig("ha", stateTimeout, "split"); st.Target != "hb" || st.SplitPauseMS <= 0 {
		t.Fatalf("auto-split pair: %s target=%s, want target hb with a measured pause", migString(st), st.Target)
	}
	d.OK("migration", "create", "--source", "ha", "--target", "hc", "--speed", "highest")
	if st := d.waitMig("ha", stateTimeout, "synced"); st.Target != "hc" {
		t.Fatalf("migration show ha: target %s, want the active pair to hc (%s)", st.Target, migString(st))
	}
	var all []wire.Migration
	d.JSON(&all, "migration", "list")
	if len(all) != 2 {
		t.Fatalf("migration list: %d pairs %+v, want the split one and the active one", len(all), all)
	}
	var c wire.Migration
	d.JSON(&c, "migration", "cancel", "ha")
	if c.State != "cancelled" || c.Target != "hc" {
		t.Fatalf("migration cancel ha answered %s target=%s, want the cancelled pair to hc", migString(c), c.Target)
	}
	// Nothing active is left to cancel: refused, naming the LUN.
	d.Fail(1, []string{"ha"}, "migration", "cancel", "ha")
	// The last pair of ha was cancelled: show says so (issue 11), not
	// the earlier split pair.
	if st := d.mig("ha"); st.State != "cancelled" || st.Target != "hc" {
		t.Fatalf("after the cancel, show ha: %s target=%s, want the cancelled pair to hc", migString(st), st.Target)
	}
}
