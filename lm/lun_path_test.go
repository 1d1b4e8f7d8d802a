package lm

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

	"github.com/lmtgt/lmtgt/metavol"
	"golang.org/x/sys/unix"
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

// Finding 2 of issue 7: a LUN on a file of the meta volume let host
// writes destroy every record. No path inside the data dir (but the
// volumes lmtgt creates there itself), no file the meta volume or the
// admin socket uses, through any link, is ever accepted, not even with
// Force; each refusal names the path and the condition.
func TestCreateLUNRefusesLmtgtFiles(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	e := newEnv(t, Options{AdminSocket: sock}, false)
	e.lun("own", 1<<20) // a volume in DATA/volumes and meta records
	meta := e.m.db.Dir()
	es, err := os.ReadDir(meta)
	if err != nil || len(es) == 0 {
		t.Fatalf("meta dir %s: %v %v", meta, es, err)
	}
	var metaFiles []string
	for _, x := range es {
		metaFiles = append(metaFiles, filepath.Join(meta, x.Name()))
	}
	if err := os.WriteFile(sock, nil, 0o600); err != nil { // stands for the socket
		t.Fatal(err)
	}
	out := t.TempDir()
	hard := filepath.Join(out, "hard-vlog")
	sym := filepath.Join(out, "sym-meta")
	symdir := filepath.Join(out, "symdir")
	var vlog string
	for _, f := range metaFiles {
		if filepath.Ext(f) == ".vlog" {
			vlog = f
		}
	}
	if vlog == "" {
		t.Fatalf("no .vlog file in %v", metaFiles)
	}
	if err := os.Link(vlog, hard); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(metaFiles[0], sym); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.dir, symdir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "stray.img"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path, want string
		err        error
	}{
		{vlog, "is inside the meta volume directory " + meta, ErrInvalid},
		{filepath.Join(meta, "DISCARD"), "is inside the meta volume directory", ErrInvalid},
		{filepath.Join(meta, "new.img"), "is inside the meta volume directory", ErrInvalid}, // to be created
		{hard, "is the same file or device as the meta volume's file " + vlog, ErrExists},
		{sym, "is the same file or device as the meta volume's file " + metaFiles[0], ErrExists},
		{filepath.Join(symdir, "meta", filepath.Base(vlog)), "is the same file or device as the meta volume's file " + vlog, ErrExists},
		{filepath.Join(symdir, "meta", "new.img"), "is inside the meta volume directory", ErrInvalid},
		{sock, "is the admin API socket", ErrInvalid},
		{filepath.Join(e.dir, "stray.img"), "is inside the data directory " + e.dir, ErrInvalid},
		{filepath.Join(e.dir, "volumes", "x.img"), "is inside the data directory", ErrInvalid},
		{filepath.Join(symdir, "new.img"), "is inside the data directory", ErrInvalid},
	}
	countLUNs := func() int {
		var n int
		e.m.db.View(func(tx *metavol.Tx) error {
			ls, err := tx.LUNs()
			n = len(ls)
			return err
		})
		return n
	}
	before := countLUNs()
	for _, c := range cases {
		for _, force := range []bool{false, true} {
			_, err := e.m.CreateLUN(CreateLUNRequest{Name: "x", Path: c.path, Size: 1 << 20, Force: force})
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), "lun x: --path "+c.path+" "+c.want) {
				t.Errorf("CreateLUN(%s, force %v) = %v, want %v and %q", c.path, force, err, c.err, c.want)
			}
		}
	}
	if got := countLUNs(); got != before {
		t.Fatalf("refusals changed the LUNs: %d → %d", before, got)
	}
	if _, err := os.Stat(filepath.Join(meta, "new.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused path was created: %v", err)
	}
	// The meta volume still works and keeps its records.
	e.reopen()
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "fine", Path: filepath.Join(out, "fine.img"), Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
}

// System locations are refused unless Force; the list is Options.SystemDirs
// (so that this test can use --force on a harmless directory).
func TestCreateLUNSystemLocations(t *testing.T) {
	sys := t.TempDir()
	e := newEnv(t, Options{SystemDirs: []string{sys}}, false)
	file := filepath.Join(sys, "disk.img")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link.img") // a way in from elsewhere
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, link, filepath.Join(sys, "sub", "new.img")} {
		_, err := e.m.CreateLUN(CreateLUNRequest{Name: "s", Path: p, Size: 1 << 20})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "lun s: --path "+p+" is in the system location "+sys+" (give --force to use it anyway)") {
			t.Fatalf("CreateLUN(%s) = %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(sys, "sub")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused path's directory was created: %v", err)
	}
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "s", Path: link, Force: true}); err != nil {
		t.Fatalf("with Force: %v", err)
	}
	// A link to a LUN's file stays refused with Force.
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "s2", Path: file, Force: true}); !errors.Is(err, ErrExists) {
		t.Fatalf("second LUN on the same file with Force: %v", err)
	}

	// The default list (never written: only refusals are checked).
	d := newEnv(t, Options{}, false)
	for _, p := range []string{"/etc/passwd", "/etc/lmtgt-test-new.img", "/usr/bin/env", "/boot/x.img", "/proc/self/mem", "/sys/kernel/x", "/run/x.img", "/dev/null"} {
		_, err := d.m.CreateLUN(CreateLUNRequest{Name: "s", Path: p, Size: 1 << 20})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--path "+p+" is in ") {
			t.Fatalf("CreateLUN(%s) = %v", p, err)
		}
	}
	// /dev/shm holds ordinary files on tmpfs: allowed.
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		p := filepath.Join("/dev/shm", "lmtgt-test-"+filepath.Base(t.TempDir())+".img")
		t.Cleanup(func() { os.Remove(p) })
		if _, err := d.m.CreateLUN(CreateLUNRequest{Name: "shm", Path: p, Size: 1 << 20}); err != nil {
			t.Fatalf("a file in /dev/shm: %v", err)
		}
	}
}

// A volume record naming a file of the meta volume (written before the
// rule existed) is never opened: its LUN is unavailable and says why.
func TestOpenRefusesVolumeInMetaDir(t *testing.T) {
	e := newEnv(t, Options{}, false)
	l := e.lun("a", 1<<20)
	var vlog string
	es, _ := os.ReadDir(e.m.db.Dir())
	for _, x := range es {
		if filepath.Ext(x.Name()) == ".vlog" {
			vlog = filepath.Join(e.m.db.Dir(), x.Name())
		}
	}
	if err := e.m.db.Update(func(tx *metavol.Tx) error {
		v, err := tx.GetVolume(l.VolumeID)
		if err != nil {
			return err
		}
		v.Path, v.Owned = vlog, false
		return tx.PutVolume(v)
	}); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	before, err := os.ReadFile(vlog)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.m.LUN(l.ID)
	if err == nil {
		_, err = h.WriteAt(make([]byte, 512), 0)
	}
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "is inside the meta volume directory") {
		t.Fatalf("write to a LUN on the meta volume's file: %v", err)
	}
	after, _ := os.ReadFile(vlog)
	if len(after) < len(before) || !bytes.Equal(after[:512], before[:512]) {
		t.Fatal("the meta volume's file was written")
	}
}

// The block device holding the data dir is never a LUN (not even with
// Force: the meta volume lives on it); without Force a mounted block
// device is refused too.
func TestCreateLUNRefusesDataDirDevice(t *testing.T) {
	e := newEnv(t, Options{}, false)
	var st syscall.Stat_t
	if err := syscall.Stat(e.dir, &st); err != nil {
		t.Fatal(err)
	}
	dev := uint64(st.Dev)
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", unix.Major(dev), unix.Minor(dev)))
	name := ""
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "DEVNAME="); ok {
			name = "/dev/" + v
		}
	}
	if err != nil || name == "" {
		t.Skipf("the data dir's filesystem has no block device here (%v)", err)
	}
	if fi, err := os.Stat(name); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Skipf("%s: %v", name, err)
	}
	_, err = e.m.CreateLUN(CreateLUNRequest{Name: "disk", Path: name, Force: true})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "lun disk: --path "+name+" is the block device holding ") {
		t.Fatalf("CreateLUN(%s, force) = %v", name, err)
	}
}

// A block device holding a mounted filesystem is refused without Force
// (a loop device with ext4, mounted).
func TestCreateLUNRefusesMountedDevice(t *testing.T) {
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil || os.Truncate(img, 16<<20) != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	e := newEnv(t, Options{}, false)
	_, err = e.m.CreateLUN(CreateLUNRequest{Name: "m", Path: dev})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "lun m: --path "+dev+" holds the filesystem mounted at "+mnt) ||
		!strings.Contains(err.Error(), "--force") {
		t.Fatalf("CreateLUN(mounted %s) = %v", dev, err)
	}
	if err := exec.Command("umount", mnt).Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateLUN(CreateLUNRequest{Name: "m", Path: dev}); err != nil {
		t.Fatalf("CreateLUN(%s) once unmounted: %v", dev, err)
	}
}

// bindMount mounts dir again at a new directory (skips the test where
// mounts are not allowed) and unmounts it at the end.
func bindMount(t *testing.T, dir string) string {
	t.Helper()
	at := t.TempDir()
	if err := syscall.Mount(dir, at, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("bind mount %s: %v (needs root)", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(at, 0); err != nil {
			t.Errorf("unmount %s: %v", at, err)
		}
	})
	return at
}

// A bind mount of the data dir reaches the meta volume directory under a
// name no path comparison sees: `--path BIND/meta/00002.mem` created a
// file there that the meta store took for its next memtable, and a host write to
// that LUN kept the daemon from ever starting again (found by the attack
// pass on issue 7). Every new path inside the data dir or the meta volume
// directory by device and inode is refused, with or without Force.
func TestCreateLUNRefusesDataDirThroughBindMount(t *testing.T) {
	e := newEnv(t, Options{}, false)
	bind := bindMount(t, e.m.opts.DataDir)
	metaRel, err := filepath.Rel(e.m.opts.DataDir, e.m.db.Dir())
	if err != nil || strings.HasPrefix(metaRel, "..") {
		t.Skipf("meta dir %s not inside the data dir %s", e.m.db.Dir(), e.m.opts.DataDir)
	}
	cases := map[string]string{
		filepath.Join(bind, metaRel, "00002.mem"):   "is inside the meta volume directory",
		filepath.Join(bind, metaRel, "000002.vlog"): "is inside the meta volume directory",
		filepath.Join(bind, "new.img"):              "is inside the data directory",
		bind:                                        "is inside the data directory",
	}
	for p, want := range cases {
		for _, force := range []bool{false, true} {
			_, err := e.m.CreateLUN(CreateLUNRequest{Name: "evil", Path: p, Size: 1 << 20, Force: force})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
				t.Fatalf("CreateLUN(%s, force %v) = %v, want %q", p, force, err, want)
			}
		}
	}
	es, _ := os.ReadDir(e.m.db.Dir())
	for _, x := range es {
		if x.Name() == "00002.mem" || x.Name() == "000002.vlog" {
			t.Fatalf("a refused create left %s in the meta volume directory", x.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(e.m.opts.DataDir, "new.img")); err == nil {
		t.Fatal("a refused create left new.img in the data dir")
	}
}
