package lm

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// fillFS writes the file p until its filesystem has no space left.
func fillFS(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i + 1)
	}
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
}

// TestFullMetaFilesystem: the meta volume on a small tmpfs (the data
// volumes elsewhere), a pair in dual-write, the tmpfs filled (finding 3).
// A host write that needs a DCL mark fails with the reason instead of the
// process dying of SIGBUS, the pair stops writing its target, an admin
// command is refused with "filesystem full", reads work; once space is
// freed the pair resumes by itself, and the split hands over every
// acknowledged write.
func TestFullMetaFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a full filesystem)")
	}
	mdir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", mdir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v: %s", mdir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mdir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mdir, err, out)
		}
	})
	meta := filepath.Join(mdir, "meta")
	e := newEnvMeta(t, Options{ClearInterval: 20 * time.Millisecond}, false, meta, metavol.Options{})

	const size = 16 * mib
	src := e.lun("src", size)
	e.lun("tgt", size)
	hs := e.handle(src)
	model := fill(t, hs, size, 3, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedHighest}); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, time.Minute)

	// Dual-write: region 2 gets a mark (durable) and the write.
	b := make([]byte, blk)
	write := func(bl int64, seq uint64) error {
		pattern(b, bl, seq)
		_, err := hs.WriteAt(b, bl*blk)
		if err == nil {
			model[bl] = seq
		}
		return err
	}
	regionBlocks := int64(1<<20) / blk
	if err := write(2*regionBlocks, 2); err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(mdir, "filler")
	fillFS(t, filler)

	// Region 9 was never written since the copy: the write needs a new
	// durable mark, which the full filesystem cannot take.
	err := write(9*regionBlocks+1, 3)
	if err == nil || !strings.Contains(err.Error(), "filesystem full") {
		t.Fatalf("host write needing a DCL mark on a full meta filesystem: got %v, want a filesystem full error", err)
	}
	t.Logf("host write refused: %v", err)
	_, err = e.m.CreateLUN(CreateLUNRequest{Name: "more", Size: mib})
	if !errors.Is(err, metavol.ErrFull) || !strings.Contains(err.Error(), "meta volume "+meta+": filesystem full (") {
		t.Fatalf("lun create on a full meta filesystem: got %v, want ErrFull with the reason", err)
	}
	t.Logf("lun create refused: %v", err)
	waitFor(t, 30*time.Second, "the pair to report the DCL failure", func() bool {
		st, err := e.m.Pair("src")
		return err == nil && strings.Contains(st.Reason, "filesystem full") && st.State != StateFaulty.String()
	})
	// Reads work.
	checkModel(t, "source while full", hs, size, model)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The pair resumes by itself: interrupted (once that can be written),
	// re-copy, in sync again.
	waitFor(t, time.Minute, "the pair to resume after space was freed", func() bool {
		st, err := e.m.Pair("src")
		return err == nil && st.State == StateSynced.String() && !strings.Contains(st.Reason, "DCL mark")
	})
	if err := write(9*regionBlocks+1, 5); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "more", Size: mib}); err != nil {
		t.Fatalf("lun create after space was freed: %v", err)
	}
	if _, err := e.m.Split([]string{"src"}, 0); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "source LUN after the split", e.handle(src), size, model)
}
