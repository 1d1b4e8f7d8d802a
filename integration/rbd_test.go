//go:build rbd

package integration

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume/rbd/miniceph"
)

// startCeph starts a mini cluster (scripts/mini-ceph.sh) with a memstore
// OSD for one test and stops it at the end. It skips the test when Ceph
// is not installed.
func startCeph(t *testing.T) *miniceph.Cluster {
	t.Helper()
	return startCephStore(t, "memstore")
}

// startCephStore is startCeph with the OSD's object store: "bluestore"
// keeps the data across an OSD restart.
func startCephStore(t *testing.T, store string) *miniceph.Cluster {
	t.Helper()
	if err := miniceph.Installed(); err != nil {
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "ceph-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := miniceph.Start(dir, store)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
		os.RemoveAll(dir)
	})
	return c
}

// rbdLUNView is the rbd part of `lun show -o json`.
type rbdLUNView struct {
	VolumePath string `json:"volume_path"`
	VolumeKind string `json:"volume_kind"`
	Owned      bool   `json:"volume_owned"`
	State      string `json:"state"`
	Offline    string `json:"offline"`
	RBD        *struct {
		Image   string `json:"image"`
		Lock    string `json:"lock"`
		Cluster string `json:"cluster"`
		Ceph    string `json:"ceph"`
	} `json:"rbd"`
}

func (d *Daemon) rbdLUN(name string) rbdLUNView {
	d.t.Helper()
	var v rbdLUNView
	d.JSON(&v, "lun", "show", name)
	return v
}

func rbdImages(t *testing.T, c *miniceph.Cluster, pool string) []string {
	t.Helper()
	out, err := c.Tool("rbd", "ls", pool, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := json.Unmarshal([]byte(out), &names); err != nil {
		t.Fatalf("rbd ls: %v: %s", err, out)
	}
	return names
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The life of RBD LUNs with the real binary and a real cluster: create
// (the image is made, lock held, lun show names image and cluster), host
// I/O through iSCSI, resize, attach of an existing image, the refusal of
// a second server on an image the first holds (the holder named), the
// explicit takeover, and delete: a created image goes with its LUN, an
// attached one stays unless --delete-image.
func TestRBDLUNLifecycle(t *testing.T) {
	needTools(t, "qemu-io")
	c := startCeph(t)
	a := StartDaemon(t, "", "--ceph-conf", c.Conf)
	a.OK("lun", "create", "r1", "--rbd", "rbd/r1", "--size", "32MiB")
	v := a.rbdLUN("r1")
	if v.VolumeKind != "rbd" || v.VolumePath != "rbd:rbd/r1" || !v.Owned || v.RBD == nil ||
		v.RBD.Image != "rbd/r1" || v.RBD.Lock != "held" || !strings.HasPrefix(v.RBD.Cluster, "up, fsid ") {
		t.Fatalf("lun show r1: %+v (rbd %+v)", v, v.RBD)
	}
	if out := a.OK("lun", "show", "r1"); !strings.Contains(out, "rbd/r1, lock held, cluster up") {
		t.Fatalf("lun show r1 does not name the image, lock and cluster:\n%s", out)
	}
	if !contains(rbdImages(t, c, "rbd"), "r1") {
		t.Fatal("rbd ls does not list r1 after lun create --rbd --size")
	}
	url := a.URL(a.exportLUN("r1"), 0)
	if r := qemuIO(t, url, "write -P 0x5a 1M 3M", "flush", "read -P 0x5a 1M 3M", "read -P 0 0 1M"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("qemu-io on the RBD LUN: %s", r)
	}
	a.OK("lun", "resize", "r1", "--size", "48MiB")
	info, err := c.Tool("rbd", "info", "rbd/r1", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, `"size":50331648`) {
		t.Fatalf("rbd info after lun resize 48MiB: %s", info)
	}

	// An image made elsewhere is attached (its size), not created.
	if _, err := c.Tool("rbd", "create", "--size", "16M", "rbd/ext"); err != nil {
		t.Fatal(err)
	}
	a.OK("lun", "create", "ext", "--rbd", "rbd/ext")
	if l := a.lun("ext"); l.Size != 16<<20 {
		t.Fatalf("attached LUN size %d, want %d", l.Size, 16<<20)
	}
	a.Fail(1, []string{"rbd/nothere", "not found"}, "lun", "create", "x", "--rbd", "rbd/nothere")
	a.Fail(1, []string{"rbd/ext", "already"}, "lun", "create", "y", "--rbd", "rbd/ext")

	// A second server may not take an image the first holds; the refusal
	// names the holder and changes nothing.
	b := StartDaemon(t, "", "--ceph-conf", c.Conf)
	r := b.Fail(1, []string{"rbd/r1", "exclusive lock held by", a.DataDir, "--takeover"}, "lun", "create", "r1b", "--rbd", "rbd/r1")
	t.Logf("refusal: %s", strings.TrimSpace(r.Stderr))
	if r := b.Run("lun", "show", "r1b"); r.Code == 0 {
		t.Fatal("the refused LUN exists on the second server")
	}
	if v := a.rbdLUN("r1"); v.RBD.Lock != "held" {
		t.Fatalf("first server's lock after the refusal: %q", v.RBD.Lock)
	}
	// The explicit takeover: the second server holds the image, sees the
	// first one's data, and the first can no longer write.
	b.OK("lun", "create", "r1b", "--rbd", "rbd/r1", "--takeover")
	urlB := b.URL(b.exportLUN("r1b"), 0)
	if r := qemuIO(t, urlB, "read -P 0x5a 1M 3M", "write -P 0x6b 8M 1M"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("qemu-io on the taken-over LUN: %s", r)
	}
	if r := qemuIO(t, url, "write -P 0x7c 12M 64k", "flush"); r.Code == 0 && !strings.Contains(r.Stdout+r.Stderr, "error") && !strings.Contains(r.Stdout+r.Stderr, "failed") {
		t.Fatalf("the first server still wrote after the takeover: %s", r)
	}
	if v := a.rbdLUN("r1"); v.RBD.Lock == "held" {
		t.Fatalf("first server says it still holds the lock after the takeover: %+v", v.RBD)
	}

	// Taking it back is explicit too: lun takeover on the first server.
	a.OK("lun", "takeover", "r1")
	if v := a.rbdLUN("r1"); v.RBD.Lock != "held" || v.State != "online" {
		t.Fatalf("after lun takeover r1: %+v rbd %+v", v, v.RBD)
	}
	if v := b.rbdLUN("r1b"); v.RBD.Lock == "held" {
		t.Fatalf("second server still holds the lock after the first took it back: %+v", v.RBD)
	}
	if r := qemuIO(t, url, "read -P 0x6b 8M 1M", "write -P 0x7d 12M 64k", "read -P 0x7d 12M 64k"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("qemu-io after taking the image back: %s", r)
	}
	// A server that starts while another holds its image serves the LUN
	// offline, naming the holder, until the explicit takeover.
	b.OK("lun", "takeover", "r1b")
	a.Restart(true)
	if v := a.rbdLUN("r1"); v.State != "offline" || !strings.Contains(v.Offline, "exclusive lock held by") || !strings.Contains(v.Offline, b.DataDir) {
		t.Fatalf("after a restart while the other server holds the image: state %s (%s)", v.State, v.Offline)
	}
	a.OK("lun", "takeover", "r1")
	if v := a.rbdLUN("r1"); v.State != "online" || v.RBD.Lock != "held" {
		t.Fatalf("after lun takeover of the offline LUN: %s (%s) rbd %+v", v.State, v.Offline, v.RBD)
	}
	if r := qemuIO(t, url, "read -P 0x7d 12M 64k"); r.Code != 0 || strings.Contains(r.Stdout, "failed") {
		t.Fatalf("qemu-io after the takeover of the offline LUN: %s", r)
	}
	a.OK("lun", "create", "f0", "--size", "1MiB")
	a.Fail(1, []string{"lun f0", "not an RBD image"}, "lun", "takeover", "f0")

	// Delete: b attached r1 (it did not create it): the image stays.
	b.OK("target", "unmap", testIQN("r1b"), "r1b")
	b.OK("lun", "delete", "r1b")
	if !contains(rbdImages(t, c, "rbd"), "r1") {
		t.Fatal("lun delete of an attached image deleted the image")
	}
	a.OK("lun", "delete", "ext")
	if !contains(rbdImages(t, c, "rbd"), "ext") {
		t.Fatal("lun delete of an attached image deleted the image")
	}
	a.OK("lun", "create", "ext2", "--rbd", "rbd/ext")
	a.OK("lun", "delete", "ext2", "--delete-image")
	if contains(rbdImages(t, c, "rbd"), "ext") {
		t.Fatal("lun delete --delete-image left the image")
	}
	a.OK("lun", "create", "own", "--rbd", "rbd/own", "--size", "8MiB")
	a.OK("lun", "delete", "own")
	if contains(rbdImages(t, c, "rbd"), "own") {
		t.Fatal("lun delete of an image lmtgt created left it")
	}
	a.OK("lun", "create", "f", "--size", "1MiB")
	a.Fail(1, []string{"not an RBD image"}, "lun", "delete", "f", "--delete-image")
}
