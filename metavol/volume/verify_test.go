package volume

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerifyWhole(t *testing.T) {
	for _, direct := range []bool{false, true} {
		f := create(t, 4<<20, Options{Direct: direct})
		if err := f.Verify(); err != nil {
			t.Fatalf("direct=%v: a fresh volume: %v", direct, err)
		}
		// Growing the file behind our back is not a loss.
		if err := os.Truncate(f.Path(), 8<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Verify(); err != nil {
			t.Fatalf("direct=%v: a grown file: %v", direct, err)
		}
	}
}

// A truncated file is reported shrunk by Verify, and a read of the range
// it lost fails instead of returning zeros (with and without O_DIRECT).
func TestVerifyTruncatedAndShortRead(t *testing.T) {
	for _, direct := range []bool{false, true} {
		const size = 4 << 20
		f := create(t, size, Options{Direct: direct})
		data := pattern(1, size)
		if _, err := f.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.Path(), 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Verify(); !errors.Is(err, ErrShrunk) {
			t.Fatalf("direct=%v: Verify after truncation: %v, want ErrShrunk", direct, err)
		}
		if !Lost(f.Verify()) {
			t.Fatalf("direct=%v: Lost(Verify) is false", direct)
		}
		// Below the new end the data is still there.
		if got := readBack(t, f, 0, 4096); !bytes.Equal(got, data[:4096]) {
			t.Fatalf("direct=%v: data below the new end changed", direct)
		}
		// Nothing may say "no data here" about the lost range either.
		if _, _, err := f.NextData(2 << 20); !errors.Is(err, ErrShrunk) {
			t.Fatalf("direct=%v: NextData past the new end: %v, want ErrShrunk", direct, err)
		}
		for _, c := range []struct{ off, n int64 }{
			{2 << 20, 4096},      // wholly past the new end
			{1<<20 - 4096, 8192}, // straddles it
			{2<<20 + 100, 1000},  // unaligned (bounce path with O_DIRECT)
			{size - 4096, 4096},  // the last block
		} {
			b := make([]byte, c.n)
			n, err := f.ReadAt(b, c.off)
			if !errors.Is(err, ErrShrunk) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("direct=%v: read [%d,+%d) of a truncated file: n=%d err=%v, want ErrShrunk", direct, c.off, c.n, n, err)
			}
		}
	}
}

// Unlinking the path, or replacing the file at the path (unlink and
// recreate, or rename another file over it), is detected.
func TestVerifyVanishedAndReplaced(t *testing.T) {
	f := create(t, 1<<20, Options{})
	if err := os.Remove(f.Path()); err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(); !errors.Is(err, ErrVanished) {
		t.Fatalf("after unlink: %v, want ErrVanished", err)
	}

	g := create(t, 1<<20, Options{})
	if err := os.Remove(g.Path()); err != nil {
		t.Fatal(err)
	}
	// A new file of the same size at the same path (the old one is
	// still open, so its inode cannot be reused).
	if err := os.WriteFile(g.Path(), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Verify(); !errors.Is(err, ErrVanished) {
		// The open file has no link left: that is what is reported first.
		t.Fatalf("after unlink and recreate: %v, want ErrVanished", err)
	}

	h := create(t, 1<<20, Options{})
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	// Keep a second link to the open file so it is not unlinked: the path
	// alone now names another file.
	keep := h.Path() + ".keep"
	if err := os.Link(h.Path(), keep); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, h.Path()); err != nil {
		t.Fatal(err)
	}
	if err := h.Verify(); !errors.Is(err, ErrReplaced) {
		t.Fatalf("after a rename over the path: %v, want ErrReplaced", err)
	}
	if !Lost(h.Verify()) {
		t.Fatal("Lost(ErrReplaced) is false")
	}
}

func TestVerifyClosed(t *testing.T) {
	f := create(t, 1<<20, Options{})
	f.Close()
	if err := f.Verify(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Verify after Close: %v, want ErrClosed", err)
	}
}

// Open with MinSize refuses a file smaller than its recorded size (a
// volume truncated while lmtgt was stopped).
func TestOpenMinSize(t *testing.T) {
	f := create(t, 2<<20, Options{})
	path := f.Path()
	f.Close()
	g, err := Open(path, Options{MinSize: 2 << 20})
	if err != nil {
		t.Fatalf("open at its size: %v", err)
	}
	g.Close()
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{MinSize: 2 << 20}); !errors.Is(err, ErrShrunk) {
		t.Fatalf("open of a truncated file: %v, want ErrShrunk", err)
	}
	g, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("open without MinSize: %v", err)
	}
	g.Close()
}

// A block device: whole and the same device verifies; a device that shrank
// (the loop device's backing file truncated, then the loop re-read with
// losetup --set-capacity) is reported shrunk.
func TestVerifyBlockDevice(t *testing.T) {
	dev := loopDevice(t, 8<<20)
	f, err := Open(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Verify(); err != nil {
		t.Fatalf("a whole device: %v", err)
	}
	back := loopBacking(t, dev)
	if err := os.Truncate(back, 4<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("losetup", "--set-capacity", dev).CombinedOutput(); err != nil {
		t.Skipf("losetup --set-capacity: %v: %s", err, out)
	}
	if err := f.Verify(); !errors.Is(err, ErrShrunk) {
		t.Fatalf("a device that shrank: %v, want ErrShrunk", err)
	}
}

// loopBacking is the backing file of a loop device.
func loopBacking(t *testing.T, dev string) string {
	t.Helper()
	b, err := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/backing_file")
	if err != nil {
		t.Skipf("backing file of %s: %v", dev, err)
	}
	return strings.TrimSpace(string(b))
}

// A write at the very end of a truncated file would give it back its full
// size (holes where the data was), after which nothing could tell: it is
// refused. So is growing it with Resize. Writes elsewhere may extend it,
// but never to its full size, so Verify still sees it shrunk.
func TestTailWriteOfTruncatedFile(t *testing.T) {
	for _, direct := range []bool{false, true} {
		const size = 4 << 20
		f := create(t, size, Options{Direct: direct})
		if _, err := f.WriteAt(pattern(2, size), 0); err != nil {
			t.Fatal(err)
		}
		// A tail write of a whole file works.
		if _, err := f.WriteAt(pattern(3, 4096), size-4096); err != nil {
			t.Fatalf("direct=%v: tail write: %v", direct, err)
		}
		if err := os.Truncate(f.Path(), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(pattern(4, 4096), 1<<20); err != nil {
			t.Fatalf("direct=%v: a write in the middle: %v", direct, err)
		}
		for _, c := range []struct{ off, n int64 }{{size - 4096, 4096}, {size - 100, 100}} {
			if _, err := f.WriteAt(make([]byte, c.n), c.off); !errors.Is(err, ErrShrunk) {
				t.Fatalf("direct=%v: tail write [%d,+%d) to a truncated file: %v, want ErrShrunk", direct, c.off, c.n, err)
			}
		}
		if fi, err := os.Stat(f.Path()); err != nil || fi.Size() >= size {
			t.Fatalf("direct=%v: the truncated file regained its size: %d %v", direct, fi.Size(), err)
		}
		if err := f.Verify(); !errors.Is(err, ErrShrunk) {
			t.Fatalf("direct=%v: Verify: %v, want ErrShrunk", direct, err)
		}
		if err := f.Resize(2 * size); !errors.Is(err, ErrShrunk) {
			t.Fatalf("direct=%v: Resize of a truncated file: %v, want ErrShrunk", direct, err)
		}
	}
}

// VerifyOpen sees a truncation and an unlink with one fstat; a grown file
// is whole; a closed volume fails.
func TestVerifyOpen(t *testing.T) {
	f := create(t, 4<<20, Options{})
	if err := f.VerifyOpen(); err != nil {
		t.Fatalf("a fresh volume: %v", err)
	}
	if err := os.Truncate(f.Path(), 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.VerifyOpen(); err != nil {
		t.Fatalf("a grown file: %v", err)
	}
	if err := os.Truncate(f.Path(), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.VerifyOpen(); !errors.Is(err, ErrShrunk) {
		t.Fatalf("after truncation: %v, want ErrShrunk", err)
	}
	g := create(t, 1<<20, Options{})
	if err := os.Remove(g.Path()); err != nil {
		t.Fatal(err)
	}
	if err := g.VerifyOpen(); !errors.Is(err, ErrVanished) {
		t.Fatalf("after unlink: %v, want ErrVanished", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.VerifyOpen(); err == nil {
		t.Fatal("VerifyOpen of a closed volume succeeded")
	}
}
