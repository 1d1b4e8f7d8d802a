package integration

import (
	"fmt"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"reflect"
	"strings"
	"testing"
)

// TestRestartKeepsEverything proves that LUNs, targets, mappings, ACLs,
// CHAP and data survive a clean restart (SIGTERM) and a kill -9.
func TestRestartKeepsEverything(t *testing.T) {
	needTools(t, "qemu-io", "iscsi-inq", "iscsi-ls")
	d := StartDaemon(t, "")
	iqn := d.Export("keep", "16MiB", 512)
	iqn4k := d.Export("keep4k", "8MiB", 4096)
	d.OK("lun", "create", "loose", "--size", "4MiB") // unmapped
	d.OK("lun", "create", "second", "--size", "4MiB")
	d.OK("target", "map", iqn, "second", "--lun", "3")
	host := "iqn.2026-11.org.lmtgt.test:host1"
	d.OK("target", "disallow", iqn4k, "ALL")
	d.OK("target", "allow", iqn4k, host)
	d.OK("target", "chap", iqn4k, "--user", "u1", "--secret", "restartsecret1")
	chapURL := fmt.Sprintf("iscsi://u1%%restartsecret1@%s/%s/0", d.Portal, iqn4k)
	url := d.URL(iqn, 0)

	qemuIOOK(t, url, "write -P 0x61 0 1M", "write -P 0x62 15M 1M")
	qemuIOOK(t, d.URL(iqn, 3), "write -P 0x63 0 64k")
	r := runCmd(t, "", nil, "qemu-io", "-c", "write -P 0x64 0 64k", "-t", "none", "--image-opts",
		fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,user=u1,password=restartsecret1,initiator-name=%s", d.Portal, iqn4k, host))
	if r.Code != 0 {
		t.Fatalf("qemu-io with CHAP and initiator name: %s", r)
	}
	before := d.snapshot()

	check := func(when string) {
		t.Helper()
		if after := d.snapshot(); !reflect.DeepEqual(before, after) {
			t.Fatalf("%s: configuration changed:\nbefore %+v\nafter  %+v", when, before, after)
		}
		qemuIOOK(t, url, "read -P 0x61 0 1M", "read -P 0x62 15M 1M", "read -P 0 1M 1M")
		qemuIOOK(t, d.URL(iqn, 3), "read -P 0x63 0 64k")
		// ACL and CHAP still enforced: only host1 with the secret.
		if r := runCmd(t, "", nil, "iscsi-inq", "-i", host, chapURL); r.Code != 0 {
			t.Errorf("%s: allowed initiator with CHAP refused: %s", when, r)
		}
		if r := runCmd(t, "", nil, "iscsi-inq", "-i", "iqn.2026-11.org.lmtgt.test:other", chapURL); r.Code == 0 {
			t.Errorf("%s: unlisted initiator got in", when)
		}
		if r := runCmd(t, "", nil, "iscsi-inq", "-i", host, d.URL(iqn4k, 0)); r.Code == 0 {
			t.Errorf("%s: login without CHAP got in", when)
		}
		ls := tool(t, "iscsi-ls", "-s", "iscsi://"+d.Portal)
		if !strings.Contains(ls, "Target:"+iqn) {
			t.Errorf("%s: iscsi-ls lost %s:\n%s", when, iqn, ls)
		}
	}

	d.Restart(false)
	check("after a clean restart")

	// Acknowledged writes survive kill -9, several times over.
	for i := range 3 {
		pat := 0x70 + i
		qemuIOOK(t, url, fmt.Sprintf("write -P %d 2M 1M", pat), fmt.Sprintf("write -P %d 8M 4k", pat))
		d.Restart(true)
		qemuIOOK(t, url, fmt.Sprintf("read -P %d 2M 1M", pat), fmt.Sprintf("read -P %d 8M 4k", pat))
		check(fmt.Sprintf("after kill -9 #%d", i+1))
	}

	// Configuration changes made just before a kill -9 are there too.
	d.OK("lun", "create", "late", "--size", "4MiB")
	d.OK("target", "map", iqn, "late")
	d.OK("lun", "resize", "loose", "--size", "12MiB")
	d.Restart(true)
	var l wire.LUN
	d.JSON(&l, "lun", "show", "late")
	if len(l.Mappings) != 1 {
		t.Errorf("mapping made before kill -9 lost: %+v", l)
	}
	d.JSON(&l, "lun", "show", "loose")
	if l.Size != 12<<20 {
		t.Errorf("resize made before kill -9 lost: size %d", l.Size)
	}
	qemuIOOK(t, d.URL(iqn, 1), "write -P 0x21 0 4k", "read -P 0x21 0 4k")
	d.Stop()
}
