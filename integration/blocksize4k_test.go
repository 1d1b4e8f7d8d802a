package integration

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Test4KBlockQemu: a LUN with 4096-byte logical blocks, as QEMU's libiscsi
// driver sees it: READ CAPACITY(16) says 4096, writes smaller than a block
// or across a block boundary (QEMU reads, modifies and writes whole
// blocks) land exactly, a large never-written range reads back as zeros
// (QEMU 7.2 aborted on this while the target claimed LBPRZ on 4K LUNs),
// and qemu-img compare agrees with a reference file byte for byte.
func Test4KBlockQemu(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "iscsi-readcapacity16")
	const size = 32 << 20
	d := StartDaemon(t, "")
	iqn := d.Export("blk4k", "32MiB", 4096)
	url := d.URL(iqn, 0)

	blocks, bs := readCapacity(t, url)
	if bs != 4096 || blocks*bs != size {
		t.Fatalf("READ CAPACITY(16): %d blocks of %d bytes, want %d bytes in 4096-byte blocks", blocks, bs, size)
	}
	rc16 := tool(t, "iscsi-readcapacity16", url)
	if m := regexp.MustCompile(`LBPME:(\d) LBPRZ:(\d)`).FindStringSubmatch(rc16); m != nil {
		t.Logf("4K LUN: LBPME %s LBPRZ %s", m[1], m[2])
	}

	// The reference image: what the LUN must hold after the writes.
	ref := make([]byte, size)
	type wr struct {
		off, n int
		pat    byte
	}
	writes := []wr{
		{0, 4096, 0x11},                    // one whole block
		{1 << 20, 64 << 10, 0x22},          // 16 blocks
		{8<<20 + 512, 1024, 0x33},          // inside one block
		{12<<20 + 3584, 1024, 0x44},        // across a block boundary
		{20 << 20, 1 << 20, 0x55},          // 1 MiB
		{size - 4096, 4096, 0x66},          // the last block
		{5<<20 + 4096 - 512, 8192, 0x77},   // unaligned at both ends, 3 blocks
		{1<<20 + 32<<10, 4096 + 512, 0x88}, // overwrites part of 0x22
	}
	var cmds []string
	for _, w := range writes {
		cmds = append(cmds, fmt.Sprintf("write -P %d %d %d", w.pat, w.off, w.n))
		for i := w.off; i < w.off+w.n; i++ {
			ref[i] = w.pat
		}
	}
	qemuIOOK(t, url, cmds...)

	// Read back: every run of equal bytes of the reference in the written
	// neighbourhoods, so a write that spilled over its range or a
	// read-modify-write that lost its neighbours' bytes shows.
	var reads []string
	for _, w := range writes {
		lo := max(0, (w.off-8192)&^4095)
		hi := min(size, (w.off+w.n+8192+4095)&^4095)
		for i := lo; i < hi; {
			j := i
			for j < hi && ref[j] == ref[i] {
				j++
			}
			reads = append(reads, fmt.Sprintf("read -P %d %d %d", ref[i], i, j-i))
			i = j
		}
	}
	// Never-written ranges, 1 MiB and more: 2 MiB..5 MiB and 24..32 MiB
	// minus the last block.
	reads = append(reads, fmt.Sprintf("read -P 0 %d %d", 2<<20, 3<<20), fmt.Sprintf("read -P 0 %d %d", 24<<20, 8<<20-4096))
	r := qemuIO(t, url, reads...)
	if r.Code != 0 || rcIsError(r.Stdout+r.Stderr) || strings.Count(r.Stdout, "read ") != len(reads) {
		t.Fatalf("qemu-io read-back on the 4K LUN (%d reads): %s", len(reads), r)
	}
	// A wrong pattern is noticed.
	if r := qemuIO(t, url, fmt.Sprintf("read -P 0 %d 4096", 8<<20)); !strings.Contains(r.Stdout+r.Stderr, "Pattern verification failed") {
		t.Fatalf("reading block 8 MiB (partly 0x33) with pattern 0 passed: %s", r)
	}

	// The whole LUN against the reference, holes included.
	dir := t.TempDir()
	refPath := filepath.Join(dir, "ref.img")
	if err := os.WriteFile(refPath, ref, 0o600); err != nil {
		t.Fatal(err)
	}
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", refPath, url)

	// A whole image written by qemu-img convert: random data with zero
	// ranges where the LUN held data before (QEMU writes those zeros as
	// it sees fit: WRITE SAME, UNMAP or plain zeros), then compared.
	img := make([]byte, size)
	rand.Read(img[:1<<20])
	rand.Read(img[6<<20 : 9<<20])
	rand.Read(img[14<<20 : 20<<20])
	rand.Read(img[size-(1<<20)+512:]) // a range that starts mid-block
	if err := os.WriteFile(refPath, img, 0o600); err != nil {
		t.Fatal(err)
	}
	tool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-t", "none", refPath, url)
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", refPath, url)
	// The data written before in now-zero ranges is gone (1 MiB+, 12 MiB, 20 MiB).
	qemuIOOK(t, url, fmt.Sprintf("read -P 0 %d %d", 1<<20, 5<<20), fmt.Sprintf("read -P 0 %d %d", 12<<20, 1<<20), fmt.Sprintf("read -P 0 %d %d", 20<<20, 4<<20))
	// One flipped byte makes the comparison fail: the check checks.
	img[size-100] ^= 0xff
	if err := os.WriteFile(refPath, img, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, "", nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", refPath, url); r.Code != 1 {
		t.Fatalf("qemu-img compare of a changed file: want exit 1 (different)\n%s", r)
	}
	if hits := d.logHas("panic", "fatal error:"); len(hits) > 0 {
		t.Errorf("the daemon log shows a panic:\n%s", hits[0])
	}
	d.Stop()
}
