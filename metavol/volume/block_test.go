package volume

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopDevice attaches a loop device to a new sparse file of size bytes and
// detaches it at cleanup; it skips the test when losetup is unavailable.
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	back := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(back, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(back, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", back).CombinedOutput()
	if err != nil {
		t.Skipf("losetup does not work here: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func TestBlockDevice(t *testing.T) {
	const size = 8 << 20
	dev := loopDevice(t, size)
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			v, err := Open(dev, Options{Direct: direct})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if v.Kind() != KindBlock || v.Size() != size {
				t.Fatalf("kind %s size %d", v.Kind(), v.Size())
			}
			data := pattern(11, size)
			if _, err := v.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			// Unaligned unmap: sector-aligned middle by BLKZEROOUT, edges written.
			if err := v.Unmap(1000, 3<<20); err != nil {
				t.Fatal(err)
			}
			clear(data[1000 : 1000+3<<20])
			if err := v.Sync(); err != nil {
				t.Fatal(err)
			}
			if got := readBack(t, v, 0, size); !bytes.Equal(got, data) {
				t.Fatal("device content after unmap differs")
			}
			if s, e, err := v.NextData(4096); err != nil || s != 4096 || e != size {
				t.Fatalf("NextData on a device: [%d, %d) %v", s, e, err)
			}
			if err := v.Resize(2 * size); err == nil {
				t.Fatal("resized a block device")
			}
		})
	}
}
