package lm

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// TestReadRef: a LUN handle hands out references into its data volume's
// file with ReadAt's checks; the descriptor outlives the LUN's deletion
// until the reference is released; a LUN in a migration, or whose volume
// is wrapped, answers ErrNoRef (the caller reads with ReadAt).
func TestReadRef(t *testing.T) {
	e := newEnv(t, Options{}, false)
	l := e.lun("a", 1<<20)
	h := e.handle(l)
	data := make([]byte, 1<<20)
	pattern(data, 4096, 9)
	if _, err := h.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	rr := h.(volume.RefReader)
	if _, err := rr.ReadRef(1<<20-4096, 8192); !errors.Is(err, volume.ErrOutOfRange) {
		t.Fatalf("past the end: %v", err)
	}
	ref, err := rr.ReadRef(65536, 131072)
	if err != nil {
		t.Fatal(err)
	}
	path := volumePath(t, e.db, "a")
	if err := e.m.DeleteLUN("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := rr.ReadRef(0, 4096); !errors.Is(err, volume.ErrClosed) {
		t.Fatalf("ReadRef of a deleted LUN: %v, want ErrClosed", err)
	}
	link, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(ref.Fd))
	if link == "" || !bytes.HasPrefix([]byte(link), []byte(path)) {
		t.Fatalf("fd %d names %q after the LUN was deleted with a reference out, want %s", ref.Fd, link, path)
	}
	got := make([]byte, ref.Len)
	if _, err := unix.Pread(ref.Fd, got, ref.Off); err != nil || !bytes.Equal(got, data[65536:65536+131072]) {
		t.Fatalf("read through the reference after delete: %v", err)
	}
	ref.Release()
	if link, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(ref.Fd)); bytes.HasPrefix([]byte(link), []byte(path)) {
		t.Fatalf("fd %d still open on %s after the last release", ref.Fd, path)
	}

	// In a migration, source and target: no reference.
	src := e.lun("src", 1<<20)
	e.lun("tgt", 1<<20)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedLow}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"src", "tgt"} {
		lu, _, err := e.m.entryByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lu.ReadRef(0, 65536); !errors.Is(err, volume.ErrNoRef) {
			t.Fatalf("LUN %s in a pair: %v, want ErrNoRef", name, err)
		}
	}
	if _, err := e.handle(src).ReadAt(make([]byte, 65536), 0); err != nil {
		t.Fatalf("ReadAt of the source: %v", err)
	}
}

// TestReadRefWrapped: a wrapped data volume (WrapVolume) hands out no
// reference: the bytes must go through the wrapper.
func TestReadRefWrapped(t *testing.T) {
	e := newEnv(t, Options{}, true)
	h := e.handle(e.lun("w", 1<<20))
	if _, err := h.(volume.RefReader).ReadRef(0, 65536); !errors.Is(err, volume.ErrNoRef) {
		t.Fatalf("wrapped volume: %v, want ErrNoRef", err)
	}
}
