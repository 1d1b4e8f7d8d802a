package volume

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// fdPath is what /proc/self/fd/fd names ("" when it is not open).
func fdPath(fd int) string {
	s, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return ""
	}
	return s
}

// TestReadRefOutlivesClose: a reference keeps the descriptor open across
// Close (which returns at once), reads through it give the volume's
// bytes, and the last Release closes it; Close with no reference out
// closes at once.
func TestReadRefOutlivesClose(t *testing.T) {
	f := create(t, 1<<20, Options{})
	data := pattern(7, 1<<20)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	r1, err := f.ReadRef(4096, 65536)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.ReadRef(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Fd != int(f.Fd()) || r1.Off != 4096 || r1.Len != 65536 || f.Refs() != 2 {
		t.Fatalf("ref %+v, refs %d", r1, f.Refs())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadRef(0, 4096); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadRef after Close: %v, want ErrClosed", err)
	}
	if fdPath(r1.Fd) != f.Path() {
		t.Fatalf("fd %d closed with 2 references out", r1.Fd)
	}
	// A file opened now cannot take the number: reads through the
	// reference still give the volume's bytes.
	other, err := os.Create(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if int(other.Fd()) == r1.Fd {
		t.Fatal("a new file took a referenced descriptor's number")
	}
	got := make([]byte, r1.Len)
	if _, err := unix.Pread(r1.Fd, got, r1.Off); err != nil || !bytes.Equal(got, data[4096:4096+65536]) {
		t.Fatalf("read through the reference after Close: %v", err)
	}
	r1.Release()
	if fdPath(r2.Fd) != f.Path() {
		t.Fatal("fd closed with 1 reference out")
	}
	r2.Release()
	if p := fdPath(r2.Fd); p == f.Path() {
		t.Fatal("fd still open after the last Release")
	}
	if f.Refs() != 0 {
		t.Fatalf("refs %d", f.Refs())
	}

	g := create(t, 1<<20, Options{})
	fd := int(g.Fd())
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if p := fdPath(fd); p == g.Path() {
		t.Fatal("Close with no reference out left the descriptor open")
	}
}

// TestReadRefRefused: out of range, and O_DIRECT volumes (ErrNoRef).
func TestReadRefRefused(t *testing.T) {
	f := create(t, 1<<20, Options{})
	if _, err := f.ReadRef(1<<20-4096, 8192); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("past the end: %v", err)
	}
	if f.Refs() != 0 {
		t.Fatalf("refused ReadRef left %d references", f.Refs())
	}
	path := filepath.Join(t.TempDir(), "direct")
	d, err := Create(path, 1<<20, Options{Direct: true})
	if err != nil {
		t.Skipf("no O_DIRECT here: %v", err)
	}
	defer d.Close()
	if _, err := d.ReadRef(0, 4096); !errors.Is(err, ErrNoRef) {
		t.Fatalf("O_DIRECT: %v, want ErrNoRef", err)
	}
}
