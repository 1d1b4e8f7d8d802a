//go:build rbd

package integration

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// A LUN's data moves file -> RBD, RBD -> RBD (another pool) and RBD ->
// file with the generic vehicle while a host writes through iSCSI
// (qemu-io): each leg syncs, splits, and the LUN then equals what the
// host wrote (qemu-img compare), with the same SCSI identity.
func TestRBDMigrationLegs(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "iscsi-inq")
	c := startCeph(t)
	if _, err := c.Tool("ceph", "osd", "pool", "create", "rbd2", "8"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tool("rbd", "pool", "init", "rbd2"); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, "", "--ceph-conf", c.Conf)
	const size = 32 << 20
	const nblocks = size / mBlock
	url := d.URL(d.Export("mv", "32MiB", 512), 0)
	id0, serial0 := vpd(t, url, 131), vpd(t, url, 128)

	model := make(image, nblocks)
	q := startQIO(t, "prefill", url)
	prefill(t, q, model, 0, nblocks/2, 3)
	q.close()
	var blocks [][2]int
	for b := range nblocks {
		blocks = append(blocks, [2]int{0, b})
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	pat := 10
	legs := []struct {
		name, path string
		create     []string
	}{
		{"file->rbd", "rbd:rbd/mv-a", []string{"mv-a", "--rbd", "rbd/mv-a", "--size", "32MiB"}},
		{"rbd->rbd", "rbd:rbd2/mv-b", []string{"mv-b", "--rbd", "rbd2/mv-b", "--size", "32MiB"}},
		{"rbd->file", "", []string{"mv-c", "--size", "32MiB"}},
	}
	for _, leg := range legs {
		tgt := leg.create[0]
		d.OK(append([]string{"lun", "create"}, leg.create...)...)
		tgtPath := d.rbdLUN(tgt).VolumePath
		d.OK("migration", "create", "--source", "mv", "--target", tgt, "--max-mbps", "8")
		q := startQIO(t, "host", url)
		s := runStream("host", rng.Int63(), []*qio{q}, blocks, pat)
		s.waitAcked(t, 5, leg.name+" during the copy")
		if st := d.mig("mv"); st.Vehicle != "generic" {
			t.Errorf("%s: vehicle %q, want generic", leg.name, st.Vehicle)
		}
		d.OK("migration", "set", "mv", "--speed", "highest", "--max-mbps", "0")
		d.waitMig("mv", syncTimeout, "synced")
		s.waitAcked(t, 5, leg.name+" in dual-write")
		ws := s.stop()
		if err := s.firstErr(); err != nil {
			t.Fatal(err)
		}
		q.close()
		apply([]image{model}, ws)
		pat += len(ws)
		d.OK("migration", "split", "mv")
		v := d.rbdLUN("mv")
		if v.VolumePath != tgtPath || (leg.path != "" && v.VolumePath != leg.path) {
			t.Fatalf("%s: after the split the LUN's volume is %q, want %q", leg.name, v.VolumePath, tgtPath)
		}
		if leg.path != "" && (v.RBD == nil || v.RBD.Lock != "held") {
			t.Fatalf("%s: after the split: rbd %+v, want the lock held", leg.name, v.RBD)
		}
		compareRef(t, fmt.Sprintf("LUN mv after the %s split", leg.name), url, model, size)
		if id, serial := vpd(t, url, 131), vpd(t, url, 128); id != id0 || serial != serial0 {
			t.Fatalf("%s: the LUN's identity changed in the split:\n%s%s\nwas\n%s%s", leg.name, id, serial, id0, serial0)
		}
		// The old data volume is now the target LUN's; drop it (an image
		// lmtgt created goes with it).
		d.OK("lun", "delete", tgt)
	}
	imgs := strings.Join(append(rbdImages(t, c, "rbd"), rbdImages(t, c, "rbd2")...), " ")
	if imgs != "" {
		t.Fatalf("images left after every leg's old volume was deleted: %s", imgs)
	}
}

// The OSD stops in the middle of a file -> RBD copy: the target's I/O
// times out (--ceph-op-timeout), the pair goes interrupted while the host
// keeps writing to the source; when the OSD is back the pair resumes by
// itself, syncs, and after the split the LUN equals what the host wrote.
func TestRBDMigrationOSDDown(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	c := startCephStore(t, "bluestore")
	d := StartDaemon(t, "", "--ceph-conf", c.Conf, "--ceph-op-timeout", "3s")
	const size = 32 << 20
	const nblocks = size / mBlock
	url := d.URL(d.Export("od", "32MiB", 512), 0)
	model := make(image, nblocks)
	q := startQIO(t, "prefill", url)
	prefill(t, q, model, 0, nblocks, 5)
	q.close()
	var blocks [][2]int
	for b := range nblocks {
		blocks = append(blocks, [2]int{0, b})
	}
	d.OK("lun", "create", "od-r", "--rbd", "rbd/od-r", "--size", "32MiB")
	d.OK("migration", "create", "--source", "od", "--target", "od-r", "--max-mbps", "2")
	waitFor(t, stateTimeout, "the copy under way", func() (bool, string) {
		st := d.mig("od")
		return st.CopiedBytes > 0, migString(st)
	})
	if err := c.StopOSD(); err != nil {
		t.Fatal(err)
	}
	q = startQIO(t, "host", url)
	s := runStream("host", time.Now().UnixNano(), []*qio{q}, blocks, 20)
	st := d.waitMig("od", stateTimeout, "interrupted")
	t.Logf("OSD down: %s", migString(st))
	s.waitAcked(t, 3, "while the OSD is down")
	if err := c.StartOSD(); err != nil {
		t.Fatal(err)
	}
	d.OK("migration", "set", "od", "--speed", "highest", "--max-mbps", "0")
	d.waitMig("od", 3*syncTimeout, "synced")
	s.waitAcked(t, 5, "after the OSD came back")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	q.close()
	apply([]image{model}, ws)
	d.OK("migration", "split", "od")
	if v := d.rbdLUN("od"); v.VolumePath != "rbd:rbd/od-r" || v.RBD == nil || v.RBD.Lock != "held" {
		t.Fatalf("after the split: %+v rbd %+v", v, v.RBD)
	}
	compareRef(t, "LUN od after the split", url, model, size)
}
