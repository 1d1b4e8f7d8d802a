package lm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Two LUNs on one file would each write the other's data: a --path that
// reaches an existing volume through a symbolic or hard link is refused
// like the same path is.
func TestCreateLUNRefusesLinkToVolume(t *testing.T) {
	e := newEnv(t, Options{}, false)
	dir := t.TempDir()
	p := filepath.Join(dir, "a.img")
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "a", Path: p, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(dir, "sym.img")
	if err := os.Symlink(p, sym); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.img")
	if err := os.Link(p, hard); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{sym, hard} {
		if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "b", Path: q}); !errors.Is(err, ErrExists) {
			t.Fatalf("CreateLUN(%s) = %v, want ErrExists", q, err)
		}
	}
	// An owned volume in the data dir, reached through a link, too.
	own := e.lun("own", 1<<20)
	sym2 := filepath.Join(dir, "own.img")
	if err := os.Symlink(e.m.volumePath(own.VolumeID), sym2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "c", Path: sym2}); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateLUN(link to owned volume) = %v, want ErrExists", err)
	}
	// Another file is fine.
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "d", Path: filepath.Join(dir, "d.img"), Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
}
