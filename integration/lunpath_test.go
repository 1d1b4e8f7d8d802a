package integration

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestLUNPathRefusesLmtgtFiles (issue 7, finding 2): `lun create --path`
// on a file of the meta volume (its .vlog, .mem, DISCARD), on the admin
// socket or on a system file used to be accepted; a host write to such a
// LUN and a kill -9 destroyed every LUN and target record. Each is now
// refused (the meta volume's files and the socket even with --force),
// nothing changes, and the records and data survive a kill -9.
func TestLUNPathRefusesLmtgtFiles(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("keep", "8MiB", 512)
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x5a 0 1M")
	before := d.snapshot()

	meta := filepath.Join(d.DataDir, "meta")
	var files []string
	for _, pat := range []string{"*.vlog", "*.mem", "DISCARD"} {
		m, _ := filepath.Glob(filepath.Join(meta, pat))
		if len(m) == 0 {
			t.Fatalf("no %s in %s", pat, meta)
		}
		files = append(files, m[0])
	}
	for _, f := range files {
		for _, force := range []bool{false, true} {
			args := []string{"lun", "create", "evil", "--path", f}
			if force {
				args = append(args, "--force")
			}
			d.Fail(1, []string{"lun evil: --path " + f + " is inside the meta volume directory " + meta}, args...)
		}
	}
	// A hard link to the value log from outside, the admin socket and a
	// hard link to it.
	out := t.TempDir()
	link := filepath.Join(out, "vlog-link")
	if err := os.Link(files[0], link); err != nil {
		t.Fatal(err)
	}
	d.Fail(1, []string{"lun evil: --path " + link + " is the same file or device as the meta volume's file " + files[0]},
		"lun", "create", "evil", "--path", link, "--force")
	d.Fail(1, []string{"lun evil: --path " + d.Admin + " is the admin API socket"},
		"lun", "create", "evil", "--path", d.Admin, "--size", "1MiB", "--force")
	sockLink := filepath.Join(out, "sock-link")
	if err := os.Link(d.Admin, sockLink); err != nil {
		t.Fatal(err)
	}
	d.Fail(1, []string{"lun evil: --path " + sockLink + " is the same file or device as the admin API socket " + d.Admin},
		"lun", "create", "evil", "--path", sockLink, "--force")
	// A system file: refused without --force (never tried with it: that
	// would open /etc/passwd; lm's unit tests cover --force).
	d.Fail(1, []string{"lun evil: --path /etc/passwd is in the system location /etc", "--force"},
		"lun", "create", "evil", "--path", "/etc/passwd")

	if after := d.snapshot(); !reflect.DeepEqual(before, after) {
		t.Fatalf("refusals changed the configuration:\nbefore %+v\nafter  %+v", before, after)
	}
	// The reproduction's last steps: a host write, kill -9, restart.
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0xa5 1M 1M")
	d.Restart(true)
	if after := d.snapshot(); !reflect.DeepEqual(before, after) {
		t.Fatalf("after kill -9:\nbefore %+v\nafter  %+v", before, after)
	}
	qemuIOOK(t, d.URL(iqn, 0), "read -P 0x5a 0 1M", "read -P 0xa5 1M 1M")
}

// TestLUNFileTooLarge (issue 7, finding 7): a size the data dir's
// filesystem cannot hold (EFBIG) was an internal error (HTTP 500); it is
// now refused naming the LUN and the condition, and nothing changes.
func TestLUNFileTooLarge(t *testing.T) {
	d := StartDaemon(t, "")
	// Only filesystems with a size limit below 100 PiB (ext4: 16 TiB)
	// give EFBIG; xfs, btrfs and tmpfs take any size.
	probe := filepath.Join(d.DataDir, "efbig-probe")
	f, err := os.Create(probe)
	if err != nil {
		t.Fatal(err)
	}
	terr := f.Truncate(100 << 50)
	f.Close()
	os.Remove(probe)
	if !errors.Is(terr, syscall.EFBIG) {
		t.Skipf("the data dir's filesystem takes a 100 PiB file (%v): no EFBIG to test", terr)
	}
	d.OK("lun", "create", "small", "--size", "1MiB")
	before := d.snapshot()
	d.Fail(1, []string{"lun big", "file too large for the filesystem"}, "lun", "create", "big", "--size", "100PiB")
	d.Fail(1, []string{"lun small", "file too large for the filesystem"}, "lun", "resize", "small", "--size", "100PiB")
	_, err = d.Client().CreateLUN(t.Context(), wire.CreateLUN{Name: "big", Size: 100 << 50})
	var we *wire.Error
	if !asWire(err, &we) || we.Status != 400 || we.Object != "lun big" || we.Reason != "file too large for the filesystem" {
		t.Fatalf("API: %v (%+v), want 400 about lun big", err, we)
	}
	if after := d.snapshot(); !reflect.DeepEqual(before, after) {
		t.Fatalf("refusals changed the configuration:\nbefore %+v\nafter  %+v", before, after)
	}
	if m, _ := filepath.Glob(filepath.Join(d.DataDir, "volumes", "*")); len(m) != 1 {
		t.Fatalf("volumes left: %v", m)
	}
}
