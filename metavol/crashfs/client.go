package crashfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// callTimeout bounds one request to the server process; a crash or
// unmount waits up to serveWait there.
const callTimeout = 2 * time.Minute

// stopWait bounds each step of stopping a server at the end of a test.
const stopWait = 10 * time.Second

// Options of one mount.
type Options struct {
	// CrashAtOp > 0 cuts the power just before op number CrashAtOp (1 is
	// the first op that changes the file system): that op and every later
	// one never reach the durable image.
	CrashAtOp int64 `json:"crash_at_op,omitempty"`
	// PartialWriteback: at the cut, a random half (drawn from Seed) of the
	// unsynced pages inside each file's durable size is kept, as if the
	// kernel had written them back.
	PartialWriteback bool  `json:"partial_writeback,omitempty"`
	Seed             int64 `json:"seed,omitempty"`
	// OrderedMetadata models a file system with an ordered metadata
	// journal (ext4 data=ordered, xfs): any fsync or fdatasync, of a file
	// or a directory, commits the journal, so every create, mkdir, rename
	// and unlink done before it becomes durable (every directory's
	// entries), and every size change by truncate or fallocate (cut bytes
	// gone, added bytes zero). Data written with write(2) or through a
	// mapping, and the size it grows a file to, still need the file's own
	// fsync (delayed allocation).
	// Without it (the default) the model is strict POSIX: entries need an
	// fsync of their directory.
	OrderedMetadata bool `json:"ordered_metadata,omitempty"`
	// BackgroundCommits (with OrderedMetadata) also commits the journal
	// before a seeded random eighth of the ops, as the journal's commit
	// timer or another program's fsync would.
	BackgroundCommits bool `json:"background_commits,omitempty"`
	// FailAfterCut: after the cut every op fails with EIO. By default the
	// mount keeps working after the cut (so the program under test can be
	// closed cleanly) and nothing it does reaches the image.
	FailAfterCut bool `json:"fail_after_cut,omitempty"`
}

// Server is a crashfs server process serving any number of mounts, one
// after another or at once. It is stopped in t.Cleanup.
type Server struct {
	t     testing.TB
	calls chan call
	stop  chan struct{}
}

type call struct {
	req   request
	reply chan response
}

// Mount starts a server process and mounts backing through it (see
// Server.Mount). The test is skipped when FUSE is not usable here.
func Mount(t testing.TB, backing string, opts Options) (*FS, string) {
	t.Helper()
	fs := StartServer(t).Mount(t, backing, opts)
	return fs, fs.mnt
}

// StartServer starts a server process (this test binary run again, see
// init), or skips the test when FUSE cannot be used: no /dev/fuse, or not
// root (the server mounts with mount(2), there is no fusermount here).
func StartServer(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("crashfs: FUSE not available (%v)", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("crashfs: needs root to mount FUSE (no fusermount)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("crashfs: %v", err)
	}
	cmd := exec.Command(exe)
	// A race-enabled server would sleep a second at exit (atexit_sleep_ms).
	cmd.Env = append(os.Environ(), serverEnv+"=1",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("crashfs: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("crashfs: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("crashfs: start server: %v", err)
	}
	s := &Server{t: t, calls: make(chan call), stop: make(chan struct{})}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		_ = cmd.Wait()
	}()
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		s.loop(stdin, stdout)
	}()
	t.Cleanup(func() {
		// The loop closes stdin when it ends: the server unmounts what is
		// left and exits. A server stuck in a request is killed.
		close(s.stop)
		select {
		case <-loopDone:
		case <-time.After(stopWait):
			_ = cmd.Process.Kill()
			<-loopDone
		}
		select {
		case <-exited:
		case <-time.After(stopWait):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return s
}

// loop owns the pipes: one request, one response, in order.
func (s *Server) loop(in io.WriteCloser, out io.Reader) {
	defer in.Close()
	enc := json.NewEncoder(in)
	dec := json.NewDecoder(out)
	for {
		select {
		case <-s.stop:
			return
		case c := <-s.calls:
			var r response
			if err := enc.Encode(c.req); err != nil {
				r.Err = fmt.Sprintf("crashfs: send to server: %v", err)
			} else if err := dec.Decode(&r); err != nil {
				r.Err = fmt.Sprintf("crashfs: server died: %v", err)
			}
			c.reply <- r
		}
	}
}

func (s *Server) do(req request) (response, error) {
	c := call{req: req, reply: make(chan response, 1)}
	timeout := time.After(callTimeout)
	select {
	case s.calls <- c:
	case <-s.stop:
		return response{}, errors.New("crashfs: server stopped")
	case <-timeout:
		return response{}, fmt.Errorf("crashfs: %s: server busy for %v", req.Op, callTimeout)
	}
	select {
	case r := <-c.reply:
		if r.Err != "" {
			return r, errors.New(r.Err)
		}
		return r, nil
	case <-timeout:
		return response{}, fmt.Errorf("crashfs: %s: no answer in %v", req.Op, callTimeout)
	}
}

// Mount mounts a crashable view of backing (an existing directory, all of
// whose contents count as durable) on a new directory and returns the FS.
// backing must not be touched while mounted: Crash and Unmount rewrite it.
// A mount still there at the end of the test is lazily unmounted. The test
// is skipped if the kernel refuses the mount.
func (s *Server) Mount(t testing.TB, backing string, opts Options) *FS {
	t.Helper()
	return s.MountAt(t, backing, t.TempDir(), opts)
}

// MountAt is Mount on a given empty directory: a program that records
// absolute paths finds its files again after a crash when each mount of
// the same backing directory uses the same mountpoint.
func (s *Server) MountAt(t testing.TB, backing, mnt string, opts Options) *FS {
	t.Helper()
	store := t.TempDir()
	r, err := s.do(request{Op: "mount", Backing: backing, Mnt: mnt, Store: store, Opts: opts})
	if err != nil {
		if strings.Contains(err.Error(), mountFailed) {
			t.Skipf("crashfs: cannot mount FUSE here: %v", err)
		}
		t.Fatalf("%v", err)
	}
	fs := &FS{s: s, t: t, id: r.FS, mnt: mnt, backing: backing}
	t.Cleanup(func() {
		// Lazy: never blocks on files still open, never hangs CI.
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	})
	return fs
}

// FS is one mounted crashable directory. Its methods that take no error
// result fail the test on a harness error: call them from the test's
// goroutine.
type FS struct {
	s       *Server
	t       testing.TB
	id      int
	mnt     string
	backing string
}

// Mountpoint is where the FS is mounted.
func (f *FS) Mountpoint() string { return f.mnt }

// Backing is the directory Crash and Unmount write the image to.
func (f *FS) Backing() string { return f.backing }

// Status asks the server for the FS's state and op count.
func (f *FS) Status() (Status, error) {
	r, err := f.s.do(request{Op: "status", FS: f.id})
	return r.Status, err
}

func (f *FS) mustDo(op string) Status {
	f.t.Helper()
	r, err := f.s.do(request{Op: op, FS: f.id})
	if err != nil {
		f.t.Fatalf("crashfs %s: %v", f.mnt, err)
	}
	return r.Status
}

// Ops is the number of ops that changed the file system so far (counted
// until the cut).
func (f *FS) Ops() int64 { f.t.Helper(); return f.mustDo("status").Ops }

// IsCut reports whether the power has been cut (by CrashAtOp or Cut). An
// operation of the program under test that returned before IsCut said
// false must be in the image.
func (f *FS) IsCut() bool { f.t.Helper(); return f.mustDo("status").State != Running }

// Cut cuts the power now: nothing done from now on reaches the image. The
// mount keeps serving (see Options.FailAfterCut).
func (f *FS) Cut() { f.t.Helper(); f.mustDo("cut") }

// Crash cuts the power (if not already cut), unmounts (lazily: files still
// open fail every op from now on), and rewrites the backing directory to
// the durable image: unsynced writes, creates, renames, unlinks and size
// changes are gone. The kernel's page cache of the mount goes with the
// mount; mount backing again to see the image through crashfs.
func (f *FS) Crash() Status { f.t.Helper(); return f.mustDo("crash") }

// Unmount is a clean shutdown: everything is made durable, then unmounted,
// and the backing directory holds the current state.
func (f *FS) Unmount() { f.t.Helper(); f.mustDo("unmount") }
