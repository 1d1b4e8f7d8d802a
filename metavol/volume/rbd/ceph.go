//go:build rbd

package rbd

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	cephrbd "github.com/ceph/go-ceph/rbd"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// Built reports whether this binary has RBD support.
const Built = true

// Features of the images Create makes: exclusive-lock for ownership,
// object-map and fast-diff so NextData (rbd diff) reads the object map
// instead of probing every object, layering and deep-flatten as rbd
// create's defaults.
const createFeatures = cephrbd.FeatureLayering | cephrbd.FeatureExclusiveLock |
	cephrbd.FeatureObjectMap | cephrbd.FeatureFastDiff | cephrbd.FeatureDeepFlatten

// maxOp is the largest single librbd call (its C API takes an int-sized
// length for some calls).
const maxOp = 1 << 30

// Cluster is the librados connection for admin calls (Create, Remove,
// State). Each Volume has a connection of its own (see Open). Close it
// after every volume it opened.
type Cluster struct {
	cfg  Config
	conn *rados.Conn
	fsid string

	// state caches State's answer for stateTTL, so that listing many
	// LUNs asks the monitors once; probing lets one caller ask while the
	// others take the cached answer. mu is never held while asking.
	probing atomic.Bool
	mu      sync.Mutex
	state   string
	stateAt time.Time
}

// stateTTL is how long State's answer is reused.
const stateTTL = 2 * time.Second

// errno returns the errno of a go-ceph error, or 0.
func errno(err error) int {
	var e syscall.Errno
	if errors.As(err, &e) {
		return int(e)
	}
	var c interface{ ErrorCode() int }
	if errors.As(err, &c) {
		n := c.ErrorCode()
		if n < 0 {
			n = -n
		}
		return n
	}
	return 0
}

// mapErr adds our sentinels to librados/librbd errors.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cephrbd.ErrNotFound), errno(err) == int(syscall.ENOENT):
		return fmt.Errorf("%w: %w", err, ErrNotFound)
	case errno(err) == int(syscall.EEXIST):
		return fmt.Errorf("%w: %w", err, ErrExists)
	}
	return err
}

// Connect connects to the cluster cfg names. Monitor and OSD operations
// time out after cfg.OpTimeout.
func Connect(cfg Config) (*Cluster, error) {
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	conn, err := connect(cfg)
	if err != nil {
		return nil, err
	}
	fsid, err := conn.GetFSID()
	if err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("ceph cluster %s: fsid: %w", cfg, err)
	}
	return &Cluster{cfg: cfg, conn: conn, fsid: fsid}, nil
}

// connect makes one librados client of the cluster.
func connect(cfg Config) (*rados.Conn, error) {
	var conn *rados.Conn
	var err error
	if cfg.ID != "" {
		conn, err = rados.NewConnWithUser(cfg.ID)
	} else {
		conn, err = rados.NewConn()
	}
	if err != nil {
		return nil, fmt.Errorf("ceph cluster %s: %w", cfg, err)
	}
	if cfg.Conf != "" {
		err = conn.ReadConfigFile(cfg.Conf)
	} else {
		err = conn.ReadDefaultConfigFile() // CEPH_CONF, then /etc/ceph/ceph.conf
	}
	if err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("ceph cluster %s: read configuration: %w", cfg, err)
	}
	secs := strconv.Itoa(max(1, int(cfg.OpTimeout.Seconds())))
	opts := [][2]string{
		{"rados_mon_op_timeout", secs},
		{"rados_osd_op_timeout", secs},
		{"client_mount_timeout", secs},
		// No librbd writeback cache: it lives in lmtgt's memory, so a
		// kill -9 would lose writes already acknowledged to hosts (seen
		// in TestRBDMigrationCrashLoop). Without it a write completes
		// when the OSDs have it, as a write to a file is in the kernel's
		// page cache.
		{"rbd_cache", "false"},
		// rbd_aio_* runs librbd's submission in the calling thread
		// instead of handing it to librbd's dispatch thread: one thread
		// wake-up less per I/O (BenchmarkRBDVolume, 4 KiB QD1 CPU per
		// op: read 116 -> 75 us, write 141 -> 114 us). The call may then
		// wait briefly (the image's locks, the objecter's in-flight
		// limits); it is a cgo call, so it holds an OS thread, never
		// the Go scheduler.
		{"rbd_non_blocking_aio", "false"},
		// rbd_disable_zero_copy_writes keeps its default (true): with
		// zero-copy writes the write of a client fenced by a takeover
		// never completes (TestRBDClientOptions).
	}
	if cfg.Keyring != "" {
		opts = append(opts, [2]string{"keyring", cfg.Keyring})
	}
	for _, o := range opts {
		if err := conn.SetConfigOption(o[0], o[1]); err != nil {
			conn.Shutdown()
			return nil, fmt.Errorf("ceph cluster %s: option %s: %w", cfg, o[0], err)
		}
	}
	if err := conn.Connect(); err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("ceph cluster %s: connect: %w", cfg, err)
	}
	return conn, nil
}

// State says whether the monitors answer now ("up, fsid F, N% used") or
// why not. It waits at most the operation timeout.
// An answer younger than stateTTL is reused; while one caller asks, the
// others get the last answer.
func (c *Cluster) State() string {
	c.mu.Lock()
	cached, at := c.state, c.stateAt
	c.mu.Unlock()
	if cached != "" && time.Since(at) < stateTTL {
		return cached
	}
	if !c.probing.CompareAndSwap(false, true) {
		if cached == "" {
			return "asking the monitors"
		}
		return cached
	}
	defer c.probing.Store(false)
	var s string
	st, err := c.conn.GetClusterStats()
	if err != nil {
		s = fmt.Sprintf("unreachable (fsid %s): %v", c.fsid, err)
	} else {
		used := 0.0
		if st.Kb > 0 {
			used = 100 * float64(st.Kb_used) / float64(st.Kb)
		}
		s = fmt.Sprintf("up, fsid %s, %.1f%% used", c.fsid, used)
	}
	c.mu.Lock()
	c.state, c.stateAt = s, time.Now()
	c.mu.Unlock()
	return s
}

// Close ends the connection. Every volume opened through it must be
// closed first.
func (c *Cluster) Close() error {
	c.conn.Shutdown()
	return nil
}

func (c *Cluster) ioctx(ref Ref) (*rados.IOContext, error) {
	return ioctx(c.conn, ref)
}

func ioctx(conn *rados.Conn, ref Ref) (*rados.IOContext, error) {
	io, err := conn.OpenIOContext(ref.Pool)
	if err != nil {
		return nil, fmt.Errorf("rbd %s: pool %s: %w", ref, ref.Pool, mapErr(err))
	}
	return io, nil
}

// Create makes a new image of size bytes with exclusive-lock, object-map
// and fast-diff. An existing image is refused (ErrExists).
func (c *Cluster) Create(ref Ref, size int64) error {
	if size <= 0 {
		return fmt.Errorf("rbd %s: size %d must be positive: %w", ref, size, ErrInvalid)
	}
	io, err := c.ioctx(ref)
	if err != nil {
		return err
	}
	defer io.Destroy()
	opts := cephrbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(cephrbd.ImageOptionFeatures, createFeatures); err != nil {
		return fmt.Errorf("rbd %s: %w", ref, err)
	}
	if err := cephrbd.CreateImage(io, ref.Image, uint64(size), opts); err != nil {
		return fmt.Errorf("rbd %s: create: %w", ref, mapErr(err))
	}
	return nil
}

// Remove deletes an image. It fails while a client has it open.
func (c *Cluster) Remove(ref Ref) error {
	io, err := c.ioctx(ref)
	if err != nil {
		return err
	}
	defer io.Destroy()
	if err := cephrbd.RemoveImage(io, ref.Image); err != nil {
		return fmt.Errorf("rbd %s: remove: %w", ref, mapErr(err))
	}
	return nil
}

// Open opens an image on a librados client of its own and takes its
// exclusive lock (rbd_lock_acquire in exclusive mode: librbd does not
// hand it to another client that asks). Its own client, because Ceph
// fences a client whose lock is broken by blocklisting its address: a
// takeover of one image must not cut this server off its other images.
// An image whose lock another client holds is refused with a *LockedError
// naming the holder, unless opts.Takeover, or the lock is our own from
// before a crash (its OwnerKey is opts.Owner); then the holder's lock is
// broken (Ceph blocklists it) and taken.
func (c *Cluster) Open(ref Ref, opts OpenOptions) (*Volume, error) {
	conn, err := connect(c.cfg)
	if err != nil {
		return nil, fmt.Errorf("rbd %s: %w", ref, err)
	}
	io, err := ioctx(conn, ref)
	if err != nil {
		conn.Shutdown()
		return nil, err
	}
	img, err := openImage(io, ref.Image)
	if err != nil {
		io.Destroy()
		conn.Shutdown()
		return nil, fmt.Errorf("rbd %s: open: %w", ref, mapErr(err))
	}
	fail := func(err error) (*Volume, error) {
		img.close()
		io.Destroy()
		conn.Shutdown()
		return nil, err
	}
	feat, err := img.features()
	if err != nil {
		return fail(fmt.Errorf("rbd %s: features: %w", ref, err))
	}
	if feat&cephrbd.FeatureExclusiveLock == 0 {
		return fail(fmt.Errorf("rbd %s: lmtgt needs it to hold the image exclusively (rbd feature enable %s exclusive-lock): %w", ref, ref, ErrNoLockFeature))
	}
	if err := takeLock(img, ref, opts); err != nil {
		return fail(err)
	}
	if opts.Owner != "" {
		if err := img.metadataSet(OwnerKey, opts.Owner); err != nil {
			img.lockRelease()
			return fail(fmt.Errorf("rbd %s: set %s: %w", ref, OwnerKey, err))
		}
	}
	size, err := img.size()
	if err != nil {
		img.lockRelease()
		return fail(fmt.Errorf("rbd %s: size: %w", ref, err))
	}
	v := &Volume{ref: ref, conn: conn, io: io, img: img, zero: make([]byte, 512)}
	v.size.Store(int64(size))
	return v, nil
}

// takeLock takes the exclusive lock of img (see Open).
func takeLock(img *image, ref Ref, opts OpenOptions) error {
	owners, err := img.lockOwners()
	if err != nil {
		return fmt.Errorf("rbd %s: lock owners: %w", ref, err)
	}
	if len(owners) > 0 {
		recorded, _ := img.metadataGet(OwnerKey)
		ours := opts.Owner != "" && recorded == opts.Owner
		if !opts.Takeover && !ours {
			return &LockedError{Ref: ref, Holder: owners[0], Owner: recorded}
		}
		for _, o := range owners {
			if err := img.lockBreak(o); err != nil && errno(err) != int(syscall.ENOENT) {
				return fmt.Errorf("rbd %s: break the lock of %s: %w", ref, o, err)
			}
		}
	}
	if err := img.lockAcquire(); err != nil {
		if n := errno(err); n == int(syscall.EROFS) || n == int(syscall.EBUSY) {
			holder := "another client"
			if owners, oerr := img.lockOwners(); oerr == nil && len(owners) > 0 {
				holder = owners[0]
			}
			recorded, _ := img.metadataGet(OwnerKey)
			return &LockedError{Ref: ref, Holder: holder, Owner: recorded}
		}
		return fmt.Errorf("rbd %s: acquire the exclusive lock: %w", ref, err)
	}
	return nil
}

// Volume is an open RBD image holding its exclusive lock. Its methods are
// safe for concurrent use: I/O is asynchronous librbd (image.go), so as
// many commands are in flight as callers, none holding an OS thread.
type Volume struct {
	ref  Ref
	conn *rados.Conn // this volume's own client
	io   *rados.IOContext
	img  *image
	size atomic.Int64
	zero []byte // one zero block for write-same

	// mu guards closed; calls in flight are counted in calls, which Close
	// waits for before it closes the image. mu is never held across a
	// librbd call.
	mu     sync.Mutex
	closed bool
	calls  sync.WaitGroup
}

var _ volume.Volume = (*Volume)(nil)

// Ref is the image's POOL/IMAGE.
func (v *Volume) Ref() Ref { return v.ref }

func (v *Volume) enter() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return fmt.Errorf("rbd %s: %w", v.ref, volume.ErrClosed)
	}
	v.calls.Add(1)
	return nil
}

// ioErr wraps a librbd error of op. A client that Ceph blocklisted (its
// lock was broken by a takeover: EBLOCKLISTED, which is ESHUTDOWN) can
// never write the image again: that error wraps volume.ErrOffline, so
// hosts get NOT READY rather than a medium error and the LUN says why.
func (v *Volume) ioErr(op string, err error) error {
	if errno(err) == int(syscall.ESHUTDOWN) {
		return fmt.Errorf("rbd %s: %s: %w: this server's client was blocklisted: another client took the image over (lun takeover takes it back): %w", v.ref, op, err, volume.ErrOffline)
	}
	return fmt.Errorf("rbd %s: %s: %w", v.ref, op, err)
}

func (v *Volume) check(op string, off, n int64) error {
	if off < 0 || n < 0 || off+n > v.size.Load() {
		return fmt.Errorf("rbd %s: %s [%d,+%d) past size %d: %w", v.ref, op, off, n, v.size.Load(), volume.ErrOutOfRange)
	}
	return nil
}

// ReadAt reads len(p) bytes at off (rbd_aio_read).
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	return v.inPieces("read", p, off, v.img.read)
}

// WriteAt writes len(p) bytes at off (rbd_aio_write).
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	return v.inPieces("write", p, off, v.img.write)
}

// inPieces runs do (op, "read" or "write") over p at off in pieces of at
// most maxOp bytes, after checking the range and while counted in calls.
func (v *Volume) inPieces(op string, p []byte, off int64, do func([]byte, int64) (int, error)) (int, error) {
	if err := v.check(op, off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := v.enter(); err != nil {
		return 0, err
	}
	defer v.calls.Done()
	done := 0
	for done < len(p) {
		n := min(len(p)-done, maxOp)
		got, err := do(p[done:done+n], off+int64(done))
		done += got
		if err != nil {
			return done, v.ioErr(fmt.Sprintf("%s [%d,+%d)", op, off, len(p)), err)
		}
	}
	return done, nil
}

// Unmap deallocates [off, off+length) so that it reads as zeros. It is a
// write-same of a zero block, which librbd turns into a discard without a
// granularity (rbd_discard_on_zeroed_write_same): whole objects are
// removed, partial ranges are zeroed. A plain rbd_discard would skip the
// parts smaller than rbd_discard_granularity_bytes and leave old data
// there, against the Volume contract. Ranges not in whole 512-byte blocks
// are written with zeros.
func (v *Volume) Unmap(off, length int64) error {
	if err := v.check("unmap", off, length); err != nil {
		return err
	}
	if err := v.enter(); err != nil {
		return err
	}
	defer v.calls.Done()
	bs := int64(len(v.zero))
	for length > 0 {
		n := min(length, maxOp)
		var err error
		if off%bs == 0 && n%bs == 0 {
			err = v.img.writeSame(off, n, v.zero)
		} else {
			z := make([]byte, min(n, 1<<20))
			n = int64(len(z))
			_, err = v.img.write(z, off)
		}
		if err != nil {
			return v.ioErr(fmt.Sprintf("unmap [%d,+%d)", off, n), err)
		}
		off, length = off+n, length-n
	}
	return nil
}

// Sync flushes librbd's cache (rbd_aio_flush): every completed write is then
// on the OSDs.
func (v *Volume) Sync() error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.calls.Done()
	if err := v.img.flush(); err != nil {
		return v.ioErr("flush", err)
	}
	return nil
}

// Size is the image size in bytes.
func (v *Volume) Size() int64 { return v.size.Load() }

// Resize grows (or shrinks) the image.
func (v *Volume) Resize(size int64) error {
	if size <= 0 {
		return fmt.Errorf("rbd %s: resize to %d: %w", v.ref, size, ErrInvalid)
	}
	if err := v.enter(); err != nil {
		return err
	}
	defer v.calls.Done()
	if err := v.img.resize(size); err != nil {
		return v.ioErr(fmt.Sprintf("resize to %d", size), err)
	}
	v.size.Store(size)
	return nil
}

// NextData returns [start, end), the first extent at or after off that
// may hold data, from rbd_diff_iterate2 over the whole image (no
// snapshot, whole objects: the object map when fast-diff is on). Objects
// that do not exist are holes. It returns io.EOF when no data follows.
func (v *Volume) NextData(off int64) (start, end int64, err error) {
	size := v.size.Load()
	if off < 0 {
		return 0, 0, fmt.Errorf("rbd %s: next data at %d: %w", v.ref, off, volume.ErrOutOfRange)
	}
	if off >= size {
		return 0, 0, io.EOF
	}
	if err := v.enter(); err != nil {
		return 0, 0, err
	}
	defer v.calls.Done()
	start, end, err = v.img.nextData(off, size-off)
	if err != nil {
		return 0, 0, v.ioErr(fmt.Sprintf("diff from %d", off), err)
	}
	if start < 0 {
		return 0, 0, io.EOF
	}
	return max(start, off), min(end, size), nil
}

// LockState is "held" while this client owns the exclusive lock, "lost"
// when it does not (another client broke it; "lost: ..." when Ceph has
// blocklisted this client for it), or the error asking.
func (v *Volume) LockState() string {
	if err := v.enter(); err != nil {
		return "closed"
	}
	defer v.calls.Done()
	ok, err := v.img.isLockOwner()
	switch {
	case errno(err) == 108: // ESHUTDOWN: our client is blocklisted
		return "lost: this client is blocklisted (another client took the image over)"
	case err != nil:
		return "unknown: " + err.Error()
	case ok:
		return "held"
	}
	return "lost"
}

// Close waits for the calls in flight, releases the exclusive lock and
// closes the image. It deletes nothing.
func (v *Volume) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.mu.Unlock()
	v.calls.Wait()
	var first error
	if err := v.img.flush(); err != nil {
		first = fmt.Errorf("rbd %s: flush: %w", v.ref, err)
	}
	if err := v.img.lockRelease(); err != nil && first == nil && errno(err) != int(syscall.EINVAL) {
		first = fmt.Errorf("rbd %s: release the lock: %w", v.ref, err)
	}
	if err := v.img.close(); err != nil && first == nil {
		first = fmt.Errorf("rbd %s: close: %w", v.ref, err)
	}
	v.io.Destroy()
	v.conn.Shutdown()
	return first
}
