package integration

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestZeroCopyReads: large READs of a file LUN through the real daemon
// and real clients (qemu-io pattern reads of every size around the 1 MiB
// zero-copy threshold and the 256 KiB segment / 1 MiB burst boundaries,
// then qemu-img compare of the whole LUN against the image written into
// it) give the LUN's bytes, and the daemon's metrics show no READ went
// with sendfile: zero-copy Data-In is off in the daemon (a page sent by
// reference can change after the send, and a split can hand its file to
// another LUN: TestZeroCopyReadAcrossSplit, docs/design.md "Zero-copy
// Data-In"); a LUN in a migration is read right too.
func TestZeroCopyReads(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	d := StartDaemon(t, "", "--metrics", "127.0.0.1:0")
	addr := metricsAddr(t, d)
	iqn := d.Export("zc", "16MiB", 512)
	url := d.URL(iqn, 0)
	zc := func() (reads, bytes float64) {
		s := scrape(t, addr)
		return s["lmtgt_iscsi_zero_copy_reads_total"], s["lmtgt_iscsi_zero_copy_bytes_total"]
	}

	var cmds []string
	var want float64
	off := 0
	zcReads := 0
	for k, n := range []int{64 << 10, 256<<10 - 512, 256 << 10, 256<<10 + 512,
		1<<20 - 512, 1 << 20, 1<<20 + 512, 2<<20 - 512, 2 << 20, 3<<20 + 4096} {
		pat := 0x11 + k
		cmds = append(cmds, fmt.Sprintf("write -P %#x %d %d", pat, off, n))
		cmds = append(cmds, fmt.Sprintf("read -P %#x %d %d", pat, off, n))
		if n >= 1<<20 { // target/iscsi zeroCopyMin
			want += float64(n)
			zcReads++
		}
		off += n + 512*k
	}
	r0, b0 := zc()
	qemuIOOK(t, url, cmds...)
	r1, b1 := zc()
	if r1 != r0 || b1 != b0 {
		t.Fatalf("zero-copy reads %v (%v bytes) of the %d READs (%v bytes) that could have been: zero-copy is off in the daemon", r1-r0, b1-b0, zcReads, want)
	}

	ref := filepath.Join(t.TempDir(), "ref.img")
	buf := make([]byte, 16<<20)
	rand.Read(buf[:5<<20])
	rand.Read(buf[9<<20:])
	if err := os.WriteFile(ref, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	tool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-t", "none", ref, url)
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, url)
	if r2, _ := zc(); r2 != r1 {
		t.Fatal("qemu-img compare read the LUN with zero-copy READs: zero-copy is off in the daemon")
	}

	// The same LUN as the source of a migration: copied reads, same bytes.
	d.OK("lun", "create", "zc-dst", "--size", "16MiB", "--block-size", "512")
	d.OK("migration", "create", "--source", "zc", "--target", "zc-dst", "--speed", "low", "--max-mbps", "1")
	r3, _ := zc()
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, url)
	if r4, _ := zc(); r4 != r3 {
		t.Fatalf("%v zero-copy reads of a LUN in a migration, want 0", r4-r3)
	}
}
