package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// openedDirect reports whether the running daemon holds path open with
// O_DIRECT, from /proc/PID/fd and /proc/PID/fdinfo.
func (d *Daemon) openedDirect(path string) bool {
	d.t.Helper()
	d.mu.Lock()
	pid := d.cmd.Process.Pid
	d.mu.Unlock()
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		d.t.Fatal(err)
	}
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err != nil || target != path {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "fdinfo", e.Name()))
		if err != nil {
			d.t.Fatal(err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if err != nil {
					d.t.Fatalf("fdinfo flags %q: %v", v, err)
				}
				return flags&unix.O_DIRECT != 0
			}
		}
	}
	d.t.Fatalf("daemon (pid %d) does not hold %s open", pid, path)
	return false
}

// TestDirectLUN: a LUN created with --direct is served from an O_DIRECT
// data volume (the daemon's descriptor says so), host I/O through iSCSI
// works, including ranges not aligned to 4096, `lun show` reports it, and
// a restart (clean and kill -9) keeps it.
func TestDirectLUN(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := testIQN("direct")
	out := d.OK("lun", "create", "direct", "--size", "16MiB", "--direct")
	if !strings.Contains(out, "O_DIRECT") {
		t.Errorf("lun create --direct output does not say O_DIRECT: %q", out)
	}
	d.OK("lun", "create", "plain", "--size", "4MiB")
	d.OK("target", "create", iqn)
	d.OK("target", "map", iqn, "direct")
	d.OK("target", "map", iqn, "plain", "--lun", "1")
	d.OK("target", "allow", iqn, "ALL")

	check := func(when string) wire.LUN {
		t.Helper()
		var l, p wire.LUN
		d.JSON(&l, "lun", "show", "direct")
		d.JSON(&p, "lun", "show", "plain")
		if !l.DirectIO || p.DirectIO {
			t.Fatalf("%s: direct_io of direct=%v plain=%v", when, l.DirectIO, p.DirectIO)
		}
		if !d.openedDirect(l.VolumePath) || d.openedDirect(p.VolumePath) {
			t.Fatalf("%s: daemon descriptors: direct LUN O_DIRECT=%v, plain LUN O_DIRECT=%v", when,
				d.openedDirect(l.VolumePath), d.openedDirect(p.VolumePath))
		}
		if txt := d.OK("lun", "show", "direct"); !strings.Contains(txt, "direct io:") || !strings.Contains(txt, "yes") {
			t.Fatalf("%s: lun show does not say direct io: yes:\n%s", when, txt)
		}
		if txt := d.OK("lun", "show", "plain"); !strings.Contains(txt, "direct io:  no") {
			t.Fatalf("%s: lun show of the plain LUN does not say direct io: no:\n%s", when, txt)
		}
		return l
	}
	check("after create")

	url := d.URL(iqn, 0)
	qemuIOOK(t, url,
		"write -P 0xd1 0 1M",
		"write -P 0xd2 1536 2560", // 512-aligned, not 4096-aligned
		"write -P 0xd3 15M 1M",
		"read -P 0xd1 0 1536",
		"read -P 0xd2 1536 2560",
		"read -P 0xd1 4096 1044480",
		"read -P 0 1M 1M",
		"read -P 0xd3 15M 1M")
	qemuIOOK(t, d.URL(iqn, 1), "write -P 0xe1 0 64k", "read -P 0xe1 0 64k")

	verify := func(when string) {
		t.Helper()
		check(when)
		qemuIOOK(t, url,
			"read -P 0xd1 0 1536",
			"read -P 0xd2 1536 2560",
			"read -P 0xd1 4096 1044480",
			"read -P 0xd3 15M 1M")
		qemuIOOK(t, d.URL(iqn, 1), "read -P 0xe1 0 64k")
	}
	d.Restart(false)
	verify("after a clean restart")
	qemuIOOK(t, url, "write -P 0xd4 8M 4k")
	d.Restart(true)
	verify("after kill -9")
	qemuIOOK(t, url, "read -P 0xd4 8M 4k")
	d.Stop()
}
