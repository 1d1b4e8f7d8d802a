package crashfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/crashfs"
	"golang.org/x/sys/unix"
)

func fsyncPath(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", p, err)
	}
}

func writeFile(t *testing.T, p string, b []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantAbsent(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: want absent after the crash, stat says %v", p, err)
	}
}

// TestCrashDropsWhatWasNotSynced: a write without fsync is gone after the
// crash even though it was read back through the mount (from the page
// cache), a synced one is there, through a new mount and in the backing
// directory.
func TestCrashDropsWhatWasNotSynced(t *testing.T) {
	backing := t.TempDir()
	srv := crashfs.StartServer(t)
	fs := srv.Mount(t, backing, crashfs.Options{})
	mnt := fs.Mountpoint()

	writeFile(t, filepath.Join(mnt, "synced"), []byte("hello"), true)
	writeFile(t, filepath.Join(mnt, "unsynced-dir"), []byte("data synced, entry not"), true)
	fsyncPath(t, mnt) // both entries durable
	writeFile(t, filepath.Join(mnt, "new"), []byte("data synced, entry not"), true)
	f, err := os.OpenFile(filepath.Join(mnt, "synced"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(" world, never synced"), 5); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := readFile(t, filepath.Join(mnt, "synced")); string(got) != "hello world, never synced" {
		t.Fatalf("before the crash the mount shows %q", got)
	}
	st := fs.Crash()
	if st.State != crashfs.Down || st.Ops == 0 {
		t.Fatalf("after Crash: %+v", st)
	}
	if got := readFile(t, filepath.Join(backing, "synced")); string(got) != "hello" {
		t.Fatalf("backing after the crash: %q, want %q", got, "hello")
	}
	wantAbsent(t, filepath.Join(backing, "new"))

	// A new mount sees the image, not the old page cache.
	fs2 := srv.Mount(t, backing, crashfs.Options{})
	if got := readFile(t, filepath.Join(fs2.Mountpoint(), "synced")); string(got) != "hello" {
		t.Fatalf("remounted after the crash: %q, want %q", got, "hello")
	}
	wantAbsent(t, filepath.Join(fs2.Mountpoint(), "new"))
	fs2.Unmount()
	if got := readFile(t, filepath.Join(backing, "unsynced-dir")); string(got) != "data synced, entry not" {
		t.Fatalf("after a clean unmount: %q", got)
	}
}

// TestCrashUndoesMetadata: renames, unlinks, creates, mkdirs and truncates
// not followed by the fsync that makes them durable are undone.
func TestCrashUndoesMetadata(t *testing.T) {
	backing := t.TempDir()
	if err := os.WriteFile(filepath.Join(backing, "old"), []byte("durable at mount"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, mnt := crashfs.Mount(t, backing, crashfs.Options{})
	p := func(n string) string { return filepath.Join(mnt, n) }

	writeFile(t, p("a"), bytes.Repeat([]byte("a"), 10000), true)
	if err := os.Mkdir(p("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	fsyncPath(t, mnt)
	writeFile(t, p("d/in"), []byte("in d"), true)
	fsyncPath(t, p("d"))
	if err := os.Truncate(p("a"), 10); err != nil { // truncate not synced
		t.Fatal(err)
	}
	if err := os.Rename(p("a"), p("b")); err != nil { // rename not synced
		t.Fatal(err)
	}
	if err := os.Remove(p("old")); err != nil { // unlink not synced
		t.Fatal(err)
	}
	if err := os.Mkdir(p("e"), 0o755); err != nil { // mkdir not synced
		t.Fatal(err)
	}
	writeFile(t, p("d/in"), []byte("IN D"), false) // overwrite not synced
	// A rename made durable: the new name, with the file's synced data.
	writeFile(t, p("d/tmp"), []byte("renamed durably"), true)
	if err := os.Rename(p("d/tmp"), p("d/final")); err != nil {
		t.Fatal(err)
	}
	fsyncPath(t, p("d"))
	fs.Crash()

	b := func(n string) string { return filepath.Join(backing, n) }
	if got := readFile(t, b("a")); len(got) != 10000 {
		t.Fatalf("a: %d bytes, want the synced 10000 (truncate undone)", len(got))
	}
	wantAbsent(t, b("b"))
	wantAbsent(t, b("e"))
	wantAbsent(t, b("d/tmp"))
	if got := readFile(t, b("old")); string(got) != "durable at mount" {
		t.Fatalf("old: %q", got)
	}
	if got := readFile(t, b("d/in")); string(got) != "in d" {
		t.Fatalf("d/in: %q", got)
	}
	if got := readFile(t, b("d/final")); string(got) != "renamed durably" {
		t.Fatalf("d/final: %q", got)
	}
}

// TestMmapWrites: stores through a shared mapping reach the FS on msync
// and are durable after it; stores never synced are lost.
func TestMmapWrites(t *testing.T) {
	backing := t.TempDir()
	fs, mnt := crashfs.Mount(t, backing, crashfs.Options{})
	const size = 1 << 20
	mapFile := func(name string) (*os.File, []byte) {
		f, err := os.OpenFile(filepath.Join(mnt, name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap on crashfs: %v", err)
		}
		return f, m
	}
	f1, m1 := mapFile("synced")
	f2, m2 := mapFile("unsynced")
	fsyncPath(t, mnt)
	copy(m1[100000:], "stored through the mapping")
	copy(m2[100000:], "stored through the mapping")
	if err := unix.Msync(m1, unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
	// Read back through read(2): the same page cache.
	got := make([]byte, 26)
	if _, err := f2.ReadAt(got, 100000); err != nil || string(got) != "stored through the mapping" {
		t.Fatalf("read of the unsynced mapping: %q, %v", got, err)
	}
	ops := fs.Ops()
	fs.Cut()
	// The rest happens after the power went: it must not count.
	for _, m := range [][]byte{m1, m2} {
		if err := unix.Munmap(m); err != nil {
			t.Fatal(err)
		}
	}
	f1.Close()
	f2.Close()
	st := fs.Crash()
	if st.Ops != ops || st.CutAt != ops {
		t.Fatalf("ops %d before the cut, status after the crash %+v", ops, st)
	}
	for name, want := range map[string]string{"synced": "stored through the mapping", "unsynced": "\x00\x00\x00\x00"} {
		b := readFile(t, filepath.Join(backing, name))
		if len(b) != size || string(b[100000:100000+len(want)]) != want {
			t.Fatalf("%s after the crash: %d bytes, %q at 100000, want %q", name, len(b), b[100000:100026], want)
		}
	}
}

// TestCrashAtOp: the power goes just before op k; by default the mount
// keeps working afterwards and nothing reaches the image; with
// FailAfterCut every later op fails.
func TestCrashAtOp(t *testing.T) {
	srv := crashfs.StartServer(t)

	// Ops: create (1), write (2), fsync (3), fsyncdir (4), write (5), fsync (6).
	run := func(mnt string) error {
		f, err := os.OpenFile(filepath.Join(mnt, "f"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write([]byte("first")); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		d, err := os.Open(mnt)
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.Sync(); err != nil {
			return err
		}
		if _, err := f.Write([]byte("second")); err != nil {
			return err
		}
		return f.Sync()
	}
	want := map[int64]string{1: "", 2: "", 3: "", 4: "", 5: "first", 6: "first", 7: "firstsecond"}
	for k := int64(1); k <= 7; k++ {
		backing := t.TempDir()
		fs := srv.Mount(t, backing, crashfs.Options{CrashAtOp: k})
		if err := run(fs.Mountpoint()); err != nil {
			t.Fatalf("k=%d: ops must keep working after the cut: %v", k, err)
		}
		if cut := fs.IsCut(); cut != (k <= 6) {
			t.Fatalf("k=%d: IsCut %v", k, cut)
		}
		fs.Crash()
		b, err := os.ReadFile(filepath.Join(backing, "f"))
		if want[k] == "" {
			if !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("k=%d: f must be absent, got %q, %v", k, b, err)
			}
			continue
		}
		if err != nil || string(b) != want[k] {
			t.Fatalf("k=%d: f = %q, %v; want %q", k, b, err, want[k])
		}
	}

	fs := srv.Mount(t, t.TempDir(), crashfs.Options{CrashAtOp: 2, FailAfterCut: true})
	err := run(fs.Mountpoint())
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("FailAfterCut: the write after the cut returned %v, want EIO", err)
	}
	fs.Crash()
}

// TestPartialWriteback: with PartialWriteback a seeded part of the unsynced
// pages survives, the rest is lost.
func TestPartialWriteback(t *testing.T) {
	backing := t.TempDir()
	const pages = 64
	if err := os.WriteFile(filepath.Join(backing, "f"), make([]byte, pages*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, mnt := crashfs.Mount(t, backing, crashfs.Options{PartialWriteback: true, Seed: 7})
	writeFile(t, filepath.Join(mnt, "f"), bytes.Repeat([]byte{0xff}, pages*4096), false)
	fs.Crash()
	b := readFile(t, filepath.Join(backing, "f"))
	kept := 0
	for p := range pages {
		pg := b[p*4096 : (p+1)*4096]
		switch {
		case bytes.Equal(pg, bytes.Repeat([]byte{0xff}, 4096)):
			kept++
		case bytes.Equal(pg, make([]byte, 4096)):
		default:
			t.Fatalf("page %d torn inside", p)
		}
	}
	if kept == 0 || kept == pages {
		t.Fatalf("%d of %d unsynced pages kept, want some but not all", kept, pages)
	}
}

// TestOrderedMetadata: with OrderedMetadata any fsync commits every
// directory's entries and truncates, but not unsynced data.
func TestOrderedMetadata(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		backing := t.TempDir()
		fs, mnt := crashfs.Mount(t, backing, crashfs.Options{OrderedMetadata: ordered})
		if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(mnt, "d/sized"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(8192); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("unsynced"), 100); err != nil {
			t.Fatal(err)
		}
		f.Close()
		writeFile(t, filepath.Join(mnt, "other"), []byte("x"), true) // the fsync: a journal commit
		fs.Crash()
		b, err := os.ReadFile(filepath.Join(backing, "d/sized"))
		if !ordered {
			if !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("strict: d/sized must be gone, got %d bytes, %v", len(b), err)
			}
			continue
		}
		if err != nil || !bytes.Equal(b, make([]byte, 8192)) {
			t.Fatalf("ordered: d/sized must hold 8192 zeros (entry and size committed, data not): %d bytes, %v", len(b), err)
		}
		if _, err := os.Stat(filepath.Join(backing, "other")); err != nil {
			t.Fatalf("ordered: the fsynced file's own entry: %v", err)
		}
	}
}
