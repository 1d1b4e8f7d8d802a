package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMetaFilesystemFull: the data dir's meta volume on a 160 MiB tmpfs,
// the data volumes elsewhere, a pair in dual-write, the tmpfs filled with a
// file (finding 3: the meta store used to die of SIGBUS in its mmapped log, taking
// the daemon and every session with it). A host write that needs a new DCL
// mark fails, `lun create` is refused with the reason, reads work and the
// daemon stays up; once the file is deleted the pair resumes by itself
// (interrupted, re-copy, synced) and the split hands over every
// acknowledged write.
func TestMetaFilesystemFull(t *testing.T) {
	needTools(t, "qemu-io", "mount", "umount")
	data, err := os.MkdirTemp("", "lmtgt-it-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	meta := filepath.Join(data, "meta")
	if err := os.Mkdir(meta, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160M", "lmtgt-test", meta).CombinedOutput(); err != nil {
		t.Skipf("mount -t tmpfs is not permitted here (%v: %s); this test needs root with CAP_SYS_ADMIN", err, strings.TrimSpace(string(out)))
	}
	// Registered before the daemon: cleanups run last-in first-out, so the
	// daemon is gone when the tmpfs is unmounted.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", meta).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", meta, err, out)
			exec.Command("umount", "-l", meta).Run()
		}
	})

	d := StartDaemon(t, data)
	iqn := d.Export("ma", "16MiB", 512)
	d.OK("lun", "create", "mb", "--size", "16MiB")
	url := d.URL(iqn, 0)
	qemuIOOK(t, url, "write -P 0x11 0 16M")
	d.OK("migration", "create", "--source", "ma", "--target", "mb", "--speed", "highest")
	d.waitMig("ma", stateTimeout, "synced")
	qemuIOOK(t, url, "write -P 0x22 1M 64k") // dual-write: region 1 marked

	filler := filepath.Join(meta, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for _, n := range []int{1 << 20, 4096} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	f.Close()

	// Region 9 was not written since the copy: the write needs a new mark.
	r := qemuIO(t, url, "write -P 0x33 9M 64k")
	if r.Code == 0 && !strings.Contains(r.Stdout+r.Stderr, "failed") {
		t.Fatalf("a host write needing a DCL mark succeeded on a full meta filesystem: %s", r)
	}
	t.Logf("host write on a full meta filesystem: %s", strings.TrimSpace(r.Stdout+r.Stderr))
	d.Fail(1, []string{"lun mc", "meta volume " + meta + ": filesystem full (", "bytes free", "needed)"},
		"lun", "create", "mc", "--size", "1MiB")
	waitFor(t, stateTimeout, "the pair to report the full meta filesystem", func() (bool, string) {
		s := d.mig("ma")
		return strings.Contains(s.Reason, "filesystem full"), migString(s)
	})
	qemuIOOK(t, url, "read -P 0x22 1M 64k", "read -P 0x11 0 1M")
	d.OK("lun", "list")

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stateTimeout, "the pair to resume by itself", func() (bool, string) {
		s := d.mig("ma")
		return s.State == "synced" && !strings.Contains(s.Reason, "filesystem full"), migString(s)
	})
	if len(d.logHas(`"to":"interrupted"`)) == 0 {
		t.Errorf("the pair never went interrupted")
	}
	qemuIOOK(t, url, "write -P 0x44 9M 64k")
	d.OK("lun", "create", "mc", "--size", "1MiB")
	d.OK("migration", "split", "ma")
	qemuIOOK(t, url, "read -P 0x11 0 1M", "read -P 0x22 1M 64k", "read -P 0x11 1088k 7104k",
		"read -P 0x44 9M 64k", "read -P 0x11 9280k 7104k")
}
