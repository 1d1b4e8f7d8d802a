package crashfs

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// serverEnv, set to "1", makes a process that links this package serve
// file systems on stdin/stdout instead of running its main (see init).
const serverEnv = "LMTGT_CRASHFS_SERVER"

// serveWait bounds how long the server waits for the kernel to close a
// lazily unmounted connection (files the client still holds keep it open;
// the image is written regardless, every op failing by then).
const serveWait = 5 * time.Second

// mountFailed starts the error of a refused mount (the client skips).
const mountFailed = "crashfs: mount(2) failed"

func init() {
	if os.Getenv(serverEnv) == "1" {
		os.Exit(serve(os.Stdin, os.Stdout))
	}
}

// request is one line from the client.
type request struct {
	Op      string  `json:"op"` // mount, status, cut, crash, unmount
	FS      int     `json:"fs,omitempty"`
	Backing string  `json:"backing,omitempty"`
	Mnt     string  `json:"mnt,omitempty"`
	Store   string  `json:"store,omitempty"`
	Opts    Options `json:"opts"`
}

// response is the server's answer to one request.
type response struct {
	Err    string `json:"err,omitempty"`
	FS     int    `json:"fs,omitempty"`
	Status Status `json:"status"`
}

// mounted is one file system served by this process.
type mounted struct {
	f       *fsys
	srv     *fuse.Server
	backing string
	mnt     string
	store   string
	served  chan struct{} // closed when Serve returns
	down    bool
}

// serve runs the server loop: one request at a time until in closes, then
// unmounts (lazily) whatever is still mounted. Returns the exit code.
func serve(in io.Reader, out io.Writer) int {
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	var mounts []*mounted
	defer func() {
		for _, m := range mounts {
			if !m.down {
				_ = unix.Unmount(m.mnt, unix.MNT_DETACH)
			}
		}
	}()
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if err == io.EOF {
				return 0
			}
			fmt.Fprintln(os.Stderr, "crashfs server: bad request:", err)
			return 2
		}
		var resp response
		var err error
		if req.Op == "mount" {
			var m *mounted
			m, err = mount(req)
			if err == nil {
				mounts = append(mounts, m)
				resp.FS = len(mounts)
			}
		} else if req.FS < 1 || req.FS > len(mounts) {
			err = fmt.Errorf("crashfs: no file system %d", req.FS)
		} else {
			err = handle(mounts[req.FS-1], req.Op)
			resp.Status = mounts[req.FS-1].f.status()
		}
		if err != nil {
			resp.Err = err.Error()
		}
		if err := enc.Encode(resp); err != nil {
			return 2
		}
	}
}

func mount(req request) (*mounted, error) {
	f := newFsys(req.Store, req.Opts)
	if err := f.importTree(req.Backing); err != nil {
		return nil, fmt.Errorf("crashfs: import %s: %w", req.Backing, err)
	}
	srv, err := fuse.NewServer(f, req.Mnt, &fuse.MountOptions{
		DirectMountStrict:  true, // root only; no fusermount here
		FsName:             "crashfs",
		Name:               "crashfs",
		DisableXAttrs:      true,
		DisableReadDirPlus: true,
		MaxWrite:           1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", mountFailed, req.Mnt, err)
	}
	m := &mounted{f: f, srv: srv, backing: req.Backing, mnt: req.Mnt, store: req.Store, served: make(chan struct{})}
	go func() {
		defer close(m.served)
		srv.Serve()
	}()
	if err := srv.WaitMount(); err != nil {
		_ = unix.Unmount(req.Mnt, unix.MNT_DETACH)
		return nil, fmt.Errorf("%s on %s: %w", mountFailed, req.Mnt, err)
	}
	return m, nil
}

func handle(m *mounted, op string) error {
	switch op {
	case "status":
		return nil
	case "cut":
		m.f.mu.Lock()
		defer m.f.mu.Unlock()
		return m.f.cutLocked()
	case "crash", "unmount":
		if m.down {
			return fmt.Errorf("crashfs %s: already down", m.mnt)
		}
		if err := m.f.down(op == "unmount"); err != nil {
			return fmt.Errorf("crashfs %s: %w", m.mnt, err)
		}
		m.down = true
		if err := unix.Unmount(m.mnt, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("crashfs %s: unmount: %w", m.mnt, err)
		}
		select {
		case <-m.served:
		case <-time.After(serveWait):
			fmt.Fprintf(os.Stderr, "crashfs %s: files still open after unmount; they fail every op\n", m.mnt)
		}
		if err := m.f.writeImage(m.backing); err != nil {
			return fmt.Errorf("crashfs %s: write image to %s: %w", m.mnt, m.backing, err)
		}
		// The live and durable copies are not needed any more.
		ents, err := os.ReadDir(m.store)
		if err != nil {
			return fmt.Errorf("crashfs %s: %w", m.mnt, err)
		}
		for _, e := range ents {
			if err := os.Remove(filepath.Join(m.store, e.Name())); err != nil {
				return fmt.Errorf("crashfs %s: %w", m.mnt, err)
			}
		}
		return nil
	}
	return fmt.Errorf("crashfs: unknown op %q", op)
}

// Status is a snapshot of a mounted FS.
type Status struct {
	State State `json:"state"`
	// Ops counts the ops that changed the file system (write, fsync,
	// create, mkdir, rename, unlink, rmdir, truncate, fallocate) while
	// Running.
	Ops int64 `json:"ops"`
	// CutAt is the number of the op the power was cut before (0: not cut,
	// or cut by Cut/Crash after op Ops).
	CutAt int64 `json:"cut_at"`
}

func (f *fsys) status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{State: f.mu.state, Ops: f.mu.ops, CutAt: f.mu.cutAt}
}
