package metavol

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

const fullEnv = "METAVOL_FULL_CHILD_DIR"

// mountSmallTmpfs mounts a tmpfs of size bytes on a new directory and
// unmounts it at the end of the test; it skips the test when that is not
// possible (not root, no mount permission).
func mountSmallTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a full filesystem)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func statfsFree(dir string) uint64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		panic(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// fillTo writes the file p until the filesystem has at most leave bytes
// free (0: until ENOSPC).
func fillTo(p string, leave uint64) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1)
	}
	for _, n := range []int{1 << 20, 4096} {
		for {
			free := statfsFree(filepath.Dir(p))
			if free <= leave {
				return nil
			}
			m := n
			if leave > 0 && free-leave < uint64(m) {
				if n == 4096 {
					return nil
				}
				break
			}
			if _, err := f.Write(chunk[:m]); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				return err
			}
		}
	}
	return nil
}

// TestFullFilesystemChild is the child of TestFullFilesystem: everything
// that touches badger runs here, so a SIGBUS kills this process and the
// parent sees it. It does nothing in a normal test run.
func TestFullFilesystemChild(t *testing.T) {
	dir := os.Getenv(fullEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestFullFilesystem")
	}
	if err := fullScenario(dir); err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(3)
	}
	fmt.Println("scenario ok")
}

// page is a DCL-like page: 4 KiB of bytes that do not compress.
func page(seed, n int) []byte {
	b := make([]byte, 4096)
	x := uint32(seed*2654435761 + n)
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func fullScenario(dir string) error {
	meta := filepath.Join(dir, "meta")
	filler := filepath.Join(dir, "filler")
	db, err := Open(meta, Options{Log: zerolog.Nop()})
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutMeta("before", []byte("x")) }); err != nil {
		return fmt.Errorf("commit before filling: %w", err)
	}

	// 1. A full filesystem: every kind of commit fails with ErrFull and
	// the reason; reads work.
	if err := fillTo(filler, 0); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	fmt.Println("filled: free", statfsFree(dir))
	// A DCL page commit is the first host write that needs a mark: without
	// the guard, badger's store into its mmapped log faults (SIGBUS).
	err = db.UpdateDCL(func(tx *Tx) error {
		for p := range 4 {
			if err := tx.PutDCLPage("p1", p, page(1, p)); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, ErrFull) {
		return fmt.Errorf("DCL commit on a full filesystem: got %v, want ErrFull", err)
	}
	err = db.Update(func(tx *Tx) error { return tx.PutMeta("full", []byte("x")) })
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "meta volume "+meta+": filesystem full (") {
		return fmt.Errorf("admin commit on a full filesystem: got %v, want ErrFull with the reason", err)
	}
	fmt.Println("refused:", err)
	if err := db.View(func(tx *Tx) error {
		b, err := tx.GetMeta("before")
		if err == nil && string(b) != "x" {
			err = fmt.Errorf("read %q", b)
		}
		return err
	}); err != nil {
		return fmt.Errorf("read on a full filesystem: %w", err)
	}

	// 2. Just above the margin: commit pages until the guard refuses. The
	// memtable fills, is flushed and compacted on the way; none of it may
	// fault.
	if err := os.Remove(filler); err != nil {
		return err
	}
	// Room for the reserve (made again by the first commit) and 40 MiB of
	// pages: more than two memtables, so badger flushes and compacts.
	if err := fillTo(filler, db.margin()+reserveSize+40<<20); err != nil {
		return fmt.Errorf("fill to the margin: %w", err)
	}
	commits := 0
	for ; commits < 20000; commits++ {
		err = db.UpdateDCL(func(tx *Tx) error {
			for p := range 16 {
				if err := tx.PutDCLPage(fmt.Sprintf("p%d", commits%3), p, page(commits, p)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrFull) {
		return fmt.Errorf("commits near the margin: after %d commits got %v, want ErrFull", commits, err)
	}
	fmt.Printf("near the margin: %d commits of 64 KiB, then %v\n", commits, err)

	// 3. Space freed: commits succeed again, without reopening.
	if err := os.Remove(filler); err != nil {
		return err
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutMeta("after", []byte("y")) }); err != nil {
		return fmt.Errorf("admin commit after freeing space: %w", err)
	}
	if err := db.UpdateDCL(func(tx *Tx) error { return tx.PutDCLPage("p1", 0, page(2, 0)) }); err != nil {
		return fmt.Errorf("DCL commit after freeing space: %w", err)
	}

	// 4. Full again, then Close: badger flushes its memtable on close,
	// into the released reserve.
	if err := fillTo(filler, 0); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	if err := db.Update(func(tx *Tx) error { return nil }); !errors.Is(err, ErrFull) {
		return fmt.Errorf("commit on a full filesystem: got %v, want ErrFull", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close on a full filesystem: %w", err)
	}
	if err := os.Remove(filler); err != nil {
		return err
	}
	db, err = Open(meta, Options{Log: zerolog.Nop()})
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *Tx) error {
		for name, want := range map[string]string{"before": "x", "after": "y"} {
			b, err := tx.GetMeta(name)
			if err != nil {
				return err
			}
			if string(b) != want {
				return fmt.Errorf("after reopen: meta %s = %q, want %q", name, b, want)
			}
		}
		if _, err := tx.GetMeta("full"); err != nil {
			return err
		}
		pages, err := tx.DCLPages("p1")
		if err != nil {
			return err
		}
		if !bytes.Equal(pages[0], page(2, 0)) {
			return fmt.Errorf("after reopen: DCL page p1/0 is not the last committed")
		}
		return nil
	})
}

// TestFullFilesystem fills the filesystem of a meta volume (a small tmpfs):
// commits must fail with ErrFull and the reason instead of badger dying of
// SIGBUS in its mmapped files, reads must work, and commits must succeed
// again once space is freed. The badger part runs in a child process: a
// crash there is a failure here.
func TestFullFilesystem(t *testing.T) {
	dir := mountSmallTmpfs(t, "160m")
	cmd := exec.Command(os.Args[0], "-test.run=^TestFullFilesystemChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), fullEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	// The Go runtime turns a fault into "fatal error" and exit status 2.
	if bytes.Contains(out, []byte("signal SIGBUS")) || bytes.Contains(out, []byte("fatal error")) {
		t.Fatalf("the meta volume crashed on a full filesystem (%v)", err)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("the meta volume crashed on a full filesystem: child killed by %v", ws.Signal())
			}
		}
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "scenario ok") {
		t.Fatal("child did not finish the scenario")
	}
}

// TestFullRefusesWithReason: the free-space check without root (the
// FreeSpace seam): below the margin every commit fails with ErrFull and
// the numbers, reads work, and commits work again when space is back.
func TestFullRefusesWithReason(t *testing.T) {
	var free uint64 = 1 << 40
	dir := t.TempDir()
	db, err := Open(dir, Options{Log: zerolog.Nop(), FreeSpace: func() (uint64, error) { return free, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	free = 1 << 20
	err = db.Update(func(tx *Tx) error { return tx.PutMeta("x", []byte("1")) })
	want := fmt.Sprintf("meta volume %s: filesystem full (%d bytes free, %d needed)", dir, free, db.margin())
	if !errors.Is(err, ErrFull) || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if err := db.UpdateDCL(func(tx *Tx) error { return tx.PutDCLPage("p", 0, []byte{1}) }); !errors.Is(err, ErrFull) {
		t.Fatalf("DCL commit: got %v, want ErrFull", err)
	}
	if err := db.View(func(tx *Tx) error { _, err := tx.LUNs(); return err }); err != nil {
		t.Fatalf("read while full: %v", err)
	}
	free = 1 << 40
	if err := db.Update(func(tx *Tx) error { return tx.PutMeta("x", []byte("1")) }); err != nil {
		t.Fatalf("commit after space is back: %v", err)
	}
}
