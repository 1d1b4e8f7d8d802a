//go:build rbd

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// A LUN moves from an image of Ceph cluster A (the server's default,
// serve --ceph-conf) to an image of cluster B (lun create --ceph-conf):
// two mini clusters on their own ports and directories. Both images are
// called rbd/vm, which is no conflict on two clusters. lun show names each
// LUN's cluster (ceph.conf and fsid). The copy runs under host writes
// (qemu-io); lmtgt is killed with kill -9 once in the copy, comes back
// with both images' locks held on their own clusters, and the pair
// resumes, syncs under writes and splits: the LUN (now on cluster B)
// equals what the host wrote, and so does an `rbd export` of B's image.
// Deleting the last LUN on cluster A closes the server's connection to A.
func TestRBDCrossCluster(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	cephA, cephB := startCeph(t), startCeph(t)
	fsidA, fsidB := cephFSID(t, cephA.Tool), cephFSID(t, cephB.Tool)
	if fsidA == fsidB {
		t.Fatalf("the two mini clusters have one fsid %s", fsidA)
	}
	_, rng := crashSchedule(t, "rbd cross-cluster", "LMTGT_RBD_KILLS", 1)
	const size = 32 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "", "--ceph-conf", cephA.Conf)
	d.OK("lun", "create", "xa", "--rbd", "rbd/vm", "--size", "32MiB")
	d.OK("lun", "create", "xb", "--rbd", "rbd/vm", "--size", "32MiB", "--ceph-conf", cephB.Conf)
	d.Fail(2, []string{"--ceph-conf is for --rbd"}, "lun", "create", "xc", "--size", "1MiB", "--ceph-conf", cephB.Conf)
	d.Fail(1, []string{"rbd/vm", "already data volume"}, "lun", "create", "xd", "--rbd", "rbd/vm", "--ceph-conf", cephB.Conf)
	onCluster := func(when, lun, conf, fsid string) {
		t.Helper()
		v := d.rbdLUN(lun)
		if v.State != "online" || v.RBD == nil || v.RBD.Lock != "held" || !strings.Contains(v.RBD.Ceph, conf) || !strings.Contains(v.RBD.Cluster, fsid) {
			t.Fatalf("%s: LUN %s is %s (%s), rbd %+v; want its lock held on the cluster of %s (fsid %s)", when, lun, v.State, v.Offline, v.RBD, conf, fsid)
		}
	}
	onCluster("created", "xa", cephA.Conf, fsidA)
	onCluster("created", "xb", cephB.Conf, fsidB)
	// The configuration file names the LUN's own cluster (and only its).
	var cfg wire.Config
	d.JSON(&cfg, "config", "export") // -o json
	for _, l := range cfg.LUNs {
		if want := map[string]string{"xa": "", "xb": cephB.Conf}[l.Name]; l.Volume.CephConf != want {
			t.Fatalf("config export: LUN %s ceph_conf %q, want %q", l.Name, l.Volume.CephConf, want)
		}
	}

	url := d.URL(d.exportLUN("xa"), 0)
	m := prefilledModel(t, url, nblocks)
	c := newCrashLoop(t, d, m, rng, 1, "xa", "xb")
	c.afterRestart = func(int) {
		onCluster("after the restart", "xa", cephA.Conf, fsidA)
		onCluster("after the restart", "xb", cephB.Conf, fsidB)
	}
	newPair := func(args ...string) {
		t.Helper()
		d.OK(append([]string{"migration", "create", "--source", "xa", "--target", "xb"}, args...)...)
	}
	newPair("--max-mbps", "8")
	// The vehicle is chosen when the copy starts, not at create: wait
	// for it (empty before the run goroutine's first job).
	waitFor(t, 60*time.Second, "pair xa's vehicle is chosen", func() (bool, string) {
		v := d.mig("xa").Vehicle
		return v != "", fmt.Sprintf("vehicle %q", v)
	})
	if st := d.mig("xa"); st.Vehicle != "generic" {
		t.Errorf("vehicle %q, want generic", st.Vehicle)
	}
	c.kill(0, "copy", nil)
	c.syncUnderWrites(func() { newPair("--speed", "highest") })
	d.OK("migration", "split", "xa")
	onCluster("after the split", "xa", cephB.Conf, fsidB)
	onCluster("after the split", "xb", cephA.Conf, fsidA)
	compareRef(t, "LUN xa after the split to cluster B", url, m.img, size)

	// B's image itself, read by Ceph's own tool, is what the host wrote.
	exp := t.TempDir() + "/vm.raw"
	if _, err := cephB.Tool("rbd", "export", "rbd/vm", exp); err != nil {
		t.Fatal(err)
	}
	compareRef(t, "rbd export of cluster B's rbd/vm", exp, m.img, size)

	// The last LUN on cluster A goes (its image with it): the server
	// closes its connection to A.
	d.OK("lun", "delete", "xb")
	if imgs := rbdImages(t, cephA, "rbd"); len(imgs) != 0 {
		t.Fatalf("cluster A still has images after its last LUN went: %v", imgs)
	}
	if got := d.logHas("ceph connections closed"); len(got) == 0 {
		t.Fatalf("no log of the connection to cluster A being closed after its last LUN went")
	}
	onCluster("after cluster A's LUN went", "xa", cephB.Conf, fsidB)
}

// cephFSID asks a cluster for its fsid.
func cephFSID(t *testing.T, tool func(string, ...string) (string, error)) string {
	t.Helper()
	out, err := tool("ceph", "fsid")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
