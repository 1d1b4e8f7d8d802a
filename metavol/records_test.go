package metavol

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestRemoteRecords: a remote volume record and an adopted identity
// survive the meta volume (secrets included: they are needed at every
// start), Remote.URL never carries a secret, and records written before
// the fields existed still read as a local file with lmtgt's identity.
func TestRemoteRecords(t *testing.T) {
	db, _ := openTestDB(t)
	r := &Remote{Portal: "127.0.0.1:3260", Target: "iqn.2001-04.com.example:old", LUN: 3,
		CHAPUser: "u", CHAPSecret: "s3cret-s3cret", MutualUser: "m", MutualSecret: "mutual-s3cret"}
	vol := Volume{ID: "v1", Kind: VolumeKindISCSI, Remote: r, Size: 1 << 20}
	lun := LUN{ID: "l1", Name: "imp", Size: 1 << 20, BlockSize: 512, NAA: NewNAA(), Serial: "   beaf11", VolumeID: "v1",
		Adopted: &Identity{Vendor: "IET", Product: "VIRTUAL-DISK", Revision: "0001", Designators: []byte{1, 3, 0, 2, 0x50, 1}}}
	if err := db.Update(func(tx *Tx) error {
		if err := tx.PutVolume(vol); err != nil {
			return err
		}
		return tx.PutLUN(lun)
	}); err != nil {
		t.Fatal(err)
	}
	var gv Volume
	var gl LUN
	if err := db.View(func(tx *Tx) error {
		var err error
		if gv, err = tx.GetVolume("v1"); err != nil {
			return err
		}
		gl, err = tx.GetLUN("l1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gv.Remote, r) || gv.Kind != VolumeKindISCSI {
		t.Fatalf("volume read back %+v", gv)
	}
	if !reflect.DeepEqual(gl.Adopted, lun.Adopted) || gl.Serial != lun.Serial {
		t.Fatalf("lun read back %+v", gl)
	}
	if u := r.URL(); u != "iscsi://127.0.0.1:3260/iqn.2001-04.com.example:old/3" || strings.Contains(u, "s3cret") {
		t.Fatalf("URL %q", u)
	}

	// A record from before: no kind, remote or adopted identity.
	var old Volume
	if err := json.Unmarshal([]byte(`{"id":"v0","path":"/data/v0","size":4096,"owned":true}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.Kind == VolumeKindISCSI || old.Remote != nil {
		t.Fatalf("old volume record reads as %+v", old)
	}
	var oldLUN LUN
	if err := json.Unmarshal([]byte(`{"id":"l0","name":"a","naa":"600","serial":"x","volume":"v0"}`), &oldLUN); err != nil {
		t.Fatal(err)
	}
	if oldLUN.Adopted != nil {
		t.Fatalf("old LUN record reads as adopted: %+v", oldLUN)
	}
}
