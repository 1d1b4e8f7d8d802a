package integration

import (
	"encoding/json"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol"
)

// editPairState rewrites a pair record's state in the stopped daemon's
// meta volume (what a downgrade, or an upgrade with a new state, leaves).
func editPairState(t *testing.T, dataDir, pairID, state string) {
	t.Helper()
	db, err := metavol.Open(filepath.Join(dataDir, "meta"), metavol.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *metavol.Tx) error {
		p, err := tx.GetPair(pairID)
		if err != nil {
			return err
		}
		p.State = state
		return tx.PutPair(p)
	}); err != nil {
		t.Fatal(err)
	}
}

// qemuIOReadFailed reports whether a qemu-io read without a pattern
// failed with an error (rather than returning data, zeros included).
func qemuIOReadFailed(r result) bool {
	out := r.Stdout + r.Stderr
	return (r.Code != 0 || strings.Contains(out, "failed")) && !strings.Contains(out, "Pattern verification")
}

// qemuIOFailed reports whether qemu-io failed the commands (exit status,
// or an error line: qemu-io prints errors and may still exit 0).
func qemuIOFailed(r result) bool {
	out := r.Stdout + r.Stderr
	return r.Code != 0 || strings.Contains(out, "error") || strings.Contains(out, "failed") || strings.Contains(out, "Pattern verification")
}

// Finding 1 with the real daemon: a pair whose record cannot be loaded
// (its state edited offline to one this lmtgt does not know) used to be
// skipped while its source LUN was served plainly: a host write was
// acknowledged, not tracked, and lost at the split once the record loaded
// again. Now its LUNs are offline (the host write fails NOT READY), the
// status says why, and cancel is the way out.
func TestOfflineUnloadablePair(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("usrc", "8MiB", 512)
	d.OK("lun", "create", "udst", "--size", "8MiB")
	d.OK("lun", "create", "csrc", "--size", "8MiB")
	d.OK("lun", "create", "cdst", "--size", "8MiB")
	d.OK("target", "map", iqn, "csrc", "--lun", "1")
	url, curl := d.URL(iqn, 0), d.URL(iqn, 1)
	qemuIOOK(t, url, "write -P 0x11 0 8M")
	qemuIOOK(t, curl, "write -P 0x12 0 8M")
	d.OK("migration", "create", "--source", "usrc", "--target", "udst", "--speed", "highest")
	d.OK("migration", "create", "--source", "csrc", "--target", "cdst", "--speed", "highest")
	u := d.waitMig("usrc", syncTimeout, "synced")
	c := d.waitMig("csrc", syncTimeout, "synced")

	d.Stop()
	editPairState(t, d.DataDir, u.ID, "switched-by-lmtgt-9")
	editPairState(t, d.DataDir, c.ID, "switched-by-lmtgt-9")
	d.Start(d.Portal)

	// The host write: refused (NOT READY), or, if acknowledged, it must
	// survive the split below.
	w := qemuIO(t, url, "write -P 0x22 1M 64k")
	acked := !qemuIOFailed(w)
	if acked {
		t.Errorf("host write to the source of an unloadable pair was acknowledged: %s", w)
	} else {
		t.Logf("qemu-io write to the offline LUN failed, as it must: %s", w)
	}
	for _, n := range []string{"usrc", "udst"} {
		if l := d.lun(n); l.State != "offline" || !strings.Contains(l.Offline, "pair "+u.ID+" could not be loaded") {
			t.Errorf("lun %s: %+v, want offline naming pair %s", n, l, u.ID)
		}
	}
	if out := d.OK("lun", "show", "usrc"); !strings.Contains(out, "OFFLINE: pair "+u.ID+" could not be loaded: unknown state") {
		t.Errorf("lun show does not say OFFLINE loudly:\n%s", out)
	}
	if out := d.OK("migration", "list"); !strings.Contains(out, "offline") {
		t.Errorf("migration list does not show the unloaded pair offline:\n%s", out)
	}
	if m, r, ok := d.migTry("usrc"); !ok || m.State != "offline" || !strings.Contains(m.Reason, "could not be loaded") {
		t.Errorf("migration show: %s %s", migString(m), r)
	}
	if len(d.logHas("pair could not be loaded")) == 0 {
		t.Errorf("no error line about the unloadable pair in the log")
	}
	// Unsafe changes are refused, naming the condition.
	for _, args := range [][]string{
		{"lun", "resize", "usrc", "--size", "16MiB"},
		{"migration", "create", "--source", "usrc", "--target", "cdst"},
		{"lun", "delete", "udst"},
	} {
		if r := d.Run(args...); r.Code == 0 || !strings.Contains(r.Stderr, "could not be loaded") && !strings.Contains(r.Stderr, "migration pair") {
			t.Errorf("lmtgt %s on an offline LUN: %s", strings.Join(args, " "), r)
		}
	}

	// The way out for the second pair: cancel brings csrc back online.
	if r := d.Run("migration", "cancel", "csrc"); r.Code != 0 {
		t.Errorf("cancel of the unloaded pair: %s", r)
	} else {
		if l := d.lun("csrc"); l.State != "online" {
			t.Errorf("csrc after cancel: %+v", l)
		}
		qemuIOOK(t, curl, "write -P 0x13 0 64k", "read -P 0x13 0 64k", "read -P 0x12 64k 64k")
	}

	// The first record comes back as it was: the pair loads synced and
	// splits; the write above is on the source LUN if it was acknowledged.
	d.Stop()
	editPairState(t, d.DataDir, u.ID, "synced")
	d.Start(d.Portal)
	if l := d.lun("usrc"); l.State != "online" {
		t.Errorf("usrc with its pair loaded again: %+v", l)
	}
	d.waitMig("usrc", syncTimeout, "synced")
	d.OK("migration", "split", "usrc")
	if acked {
		if r := qemuIO(t, url, "read -P 0x22 1M 64k"); qemuIOFailed(r) {
			t.Errorf("an acknowledged host write is lost after the split: %s", r)
		}
	} else {
		qemuIOOK(t, url, "read -P 0x11 1M 64k")
	}
	qemuIOOK(t, url, "read -P 0x11 0 1M", "read -P 0x11 2M 6M")
	d.Stop()
}

// Finding 6 with the real daemon: the target volume of a synced pair
// truncated underneath lmtgt used to let the split through (the host then
// read zeros); a truncated plain LUN kept serving. Now the split is
// refused naming the reason and the source keeps its data, and the plain
// LUN goes offline: reads fail, never zeros.
func TestOfflineTruncatedVolumes(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("tsrc", "8MiB", 512)
	d.OK("lun", "create", "tdst", "--size", "8MiB")
	d.OK("lun", "create", "tplain", "--size", "8MiB")
	d.OK("target", "map", iqn, "tplain", "--lun", "1")
	url, purl := d.URL(iqn, 0), d.URL(iqn, 1)
	qemuIOOK(t, url, "write -P 0x44 0 8M")
	qemuIOOK(t, purl, "write -P 0x33 0 8M")
	d.OK("migration", "create", "--source", "tsrc", "--target", "tdst", "--speed", "highest")
	d.waitMig("tsrc", syncTimeout, "synced")

	if err := os.Truncate(d.lun("tdst").VolumePath, 0); err != nil {
		t.Fatal(err)
	}
	r := d.Run("migration", "split", "tsrc")
	if r.Code == 0 {
		t.Errorf("split over a truncated target succeeded: %s", r)
	} else if !strings.Contains(r.Stderr, "shrank") {
		t.Errorf("split refusal does not say the target shrank: %s", r)
	}
	if r.Code != 0 {
		m := d.waitMig("tsrc", stateTimeout, "interrupted")
		if !strings.Contains(m.Reason, "shrank") {
			t.Errorf("interrupted without the reason: %s", migString(m))
		}
		if l := d.lun("tdst"); l.State != "offline" || !strings.Contains(l.Offline, "shrank") {
			t.Errorf("tdst: %+v, want offline (shrank)", l)
		}
	}
	// The host's data is safe on the source LUN, which stays online.
	qemuIOOK(t, url, "read -P 0x44 0 8M")

	// A plain LUN truncated underneath: never zeros.
	if err := os.Truncate(d.lun("tplain").VolumePath, 4<<20); err != nil {
		t.Fatal(err)
	}
	// Without a pattern: zeros would count as success. (qemu asks GET LBA
	// STATUS first; "deallocated" would make it return zeros unread.)
	if r := qemuIO(t, purl, "read 6M 64k"); !qemuIOReadFailed(r) {
		t.Errorf("read of a truncated plain LUN past its new end did not fail: %s", r)
	}
	var l wire.LUN
	waitFor(t, stateTimeout, "tplain offline", func() (bool, string) {
		l = d.lun("tplain")
		b, _ := json.Marshal(l)
		return l.State == "offline", string(b)
	})
	if !strings.Contains(l.Offline, "shrank") {
		t.Errorf("tplain offline without the reason: %+v", l)
	}
	if r := qemuIO(t, purl, "read 0 64k"); !qemuIOReadFailed(r) {
		t.Errorf("read of an offline LUN did not fail: %s", r)
	}
	if r := qemuIO(t, purl, "write -P 0x55 7M 64k"); !qemuIOFailed(r) {
		t.Errorf("write to an offline LUN succeeded: %s", r)
	}
	d.Stop()
}
