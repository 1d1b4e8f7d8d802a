package target

import (
	"context"
	"fmt"
	osexec "os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// needTool skips the test when a client tool is not installed.
func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := osexec.LookPath(name); err != nil {
		t.Skipf("%s not installed (apt-get install libiscsi-bin qemu-utils qemu-block-extra)", name)
	}
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestEndToEndLibiscsi serves a LUN over real iSCSI on 127.0.0.1:0 and
// talks to it with libiscsi's tools and QEMU's iSCSI driver.
func TestEndToEndLibiscsi(t *testing.T) {
	needTool(t, "iscsi-ls")
	needTool(t, "iscsi-inq")
	needTool(t, "iscsi-readcapacity16")
	v := newTestVolume(t, "e2e", 64<<20)
	s, err := New(Options{Portals: []string{"127.0.0.1:0"}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	lun := testLUN("E2E", 0, v, 512)
	if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: []LUN{lun}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	addrs := s.Addrs()
	if len(addrs) != 1 {
		t.Fatalf("addrs %v", addrs)
	}
	portal := addrs[0].String()
	url := fmt.Sprintf("iscsi://%s/%s/0", portal, testIQN)

	out := run(t, "", "iscsi-ls", "-s", "iscsi://"+portal)
	if !strings.Contains(out, "Target:"+testIQN) || !strings.Contains(out, "Lun:0") || !strings.Contains(out, "DIRECT_ACCESS") {
		t.Fatalf("iscsi-ls:\n%s", out)
	}
	out = run(t, "", "iscsi-inq", "-e", "1", "-c", "128", url)
	if !strings.Contains(out, lun.Serial) {
		t.Fatalf("VPD 0x80 lacks serial %q:\n%s", lun.Serial, out)
	}
	out = run(t, "", "iscsi-inq", "-e", "1", "-c", "131", url)
	if !strings.Contains(out, "NAA") || !strings.Contains(out, "RELATIVE_TARGET_PORT") {
		t.Fatalf("VPD 0x83:\n%s", out)
	}
	out = run(t, "", "iscsi-readcapacity16", url)
	if !strings.Contains(out, "Total size:67108864") || !strings.Contains(out, "LBPME:1") {
		t.Fatalf("readcapacity16:\n%s", out)
	}

	if _, err := osexec.LookPath("qemu-io"); err != nil {
		t.Log("qemu-io not installed: skipping the data check")
		return
	}
	out = run(t, "write -P 0xa5 0 1M\nwrite -P 0x3c 3M 64k\nflush\nread -P 0xa5 0 1M\nread -P 0x3c 3M 64k\nread -P 0 1M 2M\n",
		"qemu-io", "-f", "raw", "-t", "none", url)
	if strings.Contains(out, "Pattern verification failed") || strings.Count(out, "read ") != 3 {
		t.Fatalf("qemu-io:\n%s", out)
	}
	// The bytes are in the file.
	b := make([]byte, 4096)
	if _, err := v.ReadAt(b, 3<<20); err != nil {
		t.Fatal(err)
	}
	for i, x := range b {
		if x != 0x3c {
			t.Fatalf("file byte %d at 3 MiB is %#x, want 0x3c", i, x)
		}
	}
}
