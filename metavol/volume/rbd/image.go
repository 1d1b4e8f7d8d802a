//go:build rbd

package rbd

/*
#cgo LDFLAGS: -lrbd -lrados
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

enum { LM_READ, LM_WRITE, LM_WRITESAME, LM_FLUSH };

// lm_aio starts one asynchronous operation whose completion carries id
// (rbd_aio_get_arg) and is reported on the image's eventfd. It returns 0
// or a negative errno (then nothing was started).
static int lm_aio(rbd_image_t img, int op, uint64_t id, uint64_t off, size_t len,
                  char *buf, size_t buflen) {
	rbd_completion_t c;
	int r = rbd_aio_create_completion((void *)(uintptr_t)id, NULL, &c);
	if (r < 0)
		return r;
	switch (op) {
	case LM_READ: r = rbd_aio_read(img, off, len, buf, c); break;
	case LM_WRITE: r = rbd_aio_write(img, off, len, buf, c); break;
	case LM_WRITESAME: r = rbd_aio_writesame(img, off, len, buf, buflen, c, 0); break;
	case LM_FLUSH: r = rbd_aio_flush(img, c); break;
	default: r = -EINVAL;
	}
	if (r < 0)
		rbd_aio_release(c);
	return r;
}

// lm_sync runs one read or write synchronously (rbd_read, rbd_write) in
// the calling thread: librbd completes it on its io_context thread by
// waking this one directly, with no eventfd (a synchronous call is no
// native aio, so it is never queued to the image's event notification).
// It returns bytes or a negative errno.
static int64_t lm_sync(rbd_image_t img, int op, uint64_t off, size_t len, char *buf) {
	switch (op) {
	case LM_READ: return rbd_read(img, off, len, buf);
	case LM_WRITE: return rbd_write(img, off, len, buf);
	}
	return -EINVAL;
}

// lm_poll takes up to n completed operations off the image's queue,
// stores their ids and return values, and releases them. It returns how
// many it took, or a negative errno.
static int lm_poll(rbd_image_t img, uint64_t *ids, int64_t *rets, int n) {
	rbd_completion_t comps[64];
	if (n > 64)
		n = 64;
	int got = rbd_poll_io_events(img, comps, n);
	for (int i = 0; i < got; i++) {
		ids[i] = (uint64_t)(uintptr_t)rbd_aio_get_arg(comps[i]);
		rets[i] = rbd_aio_get_return_value(comps[i]);
		rbd_aio_release(comps[i]);
	}
	return got;
}

// lm_owners writes the exclusive lock owners, one per line, into out.
static int lm_owners(rbd_image_t img, char *out, size_t outlen, int *count) {
	rbd_lock_mode_t mode;
	size_t max = 16;
	char *owners[16];
	int r = rbd_lock_get_owners(img, &mode, owners, &max);
	if (r == -ENOENT) {
		*count = 0;
		return 0;
	}
	if (r < 0)
		return r;
	*count = (int)max;
	size_t used = 0;
	out[0] = 0;
	for (size_t i = 0; i < max; i++) {
		size_t l = strlen(owners[i]);
		if (used + l + 2 > outlen)
			break;
		memcpy(out + used, owners[i], l);
		used += l;
		out[used++] = '\n';
		out[used] = 0;
	}
	rbd_lock_get_owners_cleanup(owners, max);
	return 0;
}

// lm_diff is the state of one lm_next_data walk.
struct lm_diff { int64_t start, end; int stopped; };

static int lm_diff_cb(uint64_t off, size_t len, int exists, void *arg) {
	struct lm_diff *d = arg;
	int64_t s = (int64_t)off, e = (int64_t)(off + len);
	if (!exists) {
		if (d->start >= 0) {
			d->stopped = 1;
			return -ECANCELED;
		}
		return 0;
	}
	if (d->start < 0) {
		d->start = s;
		d->end = e;
		return 0;
	}
	if (s <= d->end) {
		if (e > d->end)
			d->end = e;
		return 0;
	}
	d->stopped = 1;
	return -ECANCELED;
}

// lm_next_data finds the first run of existing objects in [off, off+len)
// (rbd_diff_iterate2 over whole objects, no snapshot, with the parent):
// *start = -1 when there is none.
static int lm_next_data(rbd_image_t img, uint64_t off, uint64_t len, int64_t *start, int64_t *end) {
	struct lm_diff d = {-1, -1, 0};
	int r = rbd_diff_iterate2(img, NULL, off, len, 1, 1, lm_diff_cb, &d);
	if (r < 0 && !d.stopped)
		return r;
	*start = d.start;
	*end = d.end;
	return 0;
}
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
	"golang.org/x/sys/unix"
)

// image is an open librbd image handle of our own cgo layer: go-ceph
// v0.41 has no asynchronous I/O and does not export its rbd_image_t, so
// the image is opened here with rbd_open on go-ceph's IOContext (its
// Pointer is the rados_ioctx_t) and every call on it goes through the
// functions below.
//
// I/O is asynchronous: aio starts an operation (rbd_aio_*, one cgo call)
// and parks the calling goroutine on a channel; no OS thread waits in C.
// librbd signals completions on an eventfd (rbd_set_image_notification);
// one poller goroutine per image, owned by the image, wakes on it through
// Go's netpoller, takes the completions off librbd's queue in batches
// (rbd_poll_io_events: one cgo call for up to 64) and hands each return
// value to its waiter. No C-to-Go callback is made per I/O. A read or
// write that starts while no other is in flight runs direct instead (rw:
// rbd_read/rbd_write in the caller's cgo call, woken by librbd's
// completing thread; a synchronous call is never queued to the eventfd),
// so queue depth 1 pays one wake-up where the asynchronous path pays the
// eventfd, the poller and the hand-over to its waiter.
//
// Go memory: a buffer librbd reads or writes after lm_aio returns is
// pinned (runtime.Pinner) from before the call until its completion is
// delivered, as the cgo pointer rules require; ids, not pointers, travel
// through C as the completions' arguments.
type image struct {
	h  C.rbd_image_t
	ev *os.File // the eventfd librbd notifies

	// mu guards next, waiting (the waiters of the operations in flight,
	// by id) and broken. It is never held across a cgo call.
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]*waiter
	// broken is set when the eventfd fails (it cannot, short of a bug):
	// the operations in flight and every later one fail with it rather
	// than wait forever.
	broken error

	waiters sync.Pool // of *waiter, reused across operations

	// inflight counts the reads and writes in flight (direct or
	// asynchronous): one that starts alone runs direct. direct counts
	// the ones that ran direct (tests look at it).
	inflight atomic.Int64
	direct   atomic.Int64

	stopping atomic.Bool   // set by close before it wakes the poller
	pollDone chan struct{} // closed when the poller has returned
}

// waiter is one operation in flight: its result arrives on done.
type waiter struct {
	done chan int64
	pin  runtime.Pinner
}

// rbdError is a negative librbd return value as an error (syscall.Errno
// unwraps it, so errno() and errors.Is(err, syscall.EXXX) see it).
func rbdError(op string, r int64) error {
	return fmt.Errorf("%s: %w", op, syscall.Errno(-r))
}

// openImage opens name in io (rbd_open, head, no snapshot) and starts its
// completion poller.
func openImage(io *rados.IOContext, name string) (*image, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var h C.rbd_image_t
	if r := C.rbd_open(C.rados_ioctx_t(io.Pointer()), cname, &h, nil); r < 0 {
		return nil, rbdError("rbd_open", int64(r))
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		C.rbd_close(h)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if r := C.rbd_set_image_notification(h, C.int(fd), C.EVENT_TYPE_EVENTFD); r < 0 {
		C.rbd_close(h)
		unix.Close(fd)
		return nil, rbdError("rbd_set_image_notification", int64(r))
	}
	img := &image{h: h, ev: os.NewFile(uintptr(fd), "rbd-eventfd"), waiting: map[uint64]*waiter{}, pollDone: make(chan struct{})}
	img.waiters.New = func() any { return &waiter{done: make(chan int64, 1)} }
	go img.poll()
	return img, nil
}

// poll delivers completions until close stops it.
func (img *image) poll() {
	defer close(img.pollDone)
	var buf [8]byte
	var ids [64]C.uint64_t
	var rets [64]C.int64_t
	for {
		if _, err := img.ev.Read(buf[:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) {
				continue
			}
			// An eventfd read fails only when closed; anything else
			// would strand the waiters: fail them and all later calls.
			img.mu.Lock()
			img.broken = fmt.Errorf("completion eventfd: %w", err)
			for id, w := range img.waiting {
				delete(img.waiting, id)
				w.done <- -int64(syscall.EIO)
			}
			img.mu.Unlock()
			return
		}
		if img.stopping.Load() {
			return
		}
		for {
			n := int(C.lm_poll(img.h, &ids[0], &rets[0], C.int(len(ids))))
			if n <= 0 {
				break
			}
			img.mu.Lock()
			for i := range n {
				if w := img.waiting[uint64(ids[i])]; w != nil {
					delete(img.waiting, uint64(ids[i]))
					w.done <- int64(rets[i])
				}
			}
			img.mu.Unlock()
			if n < len(ids) {
				break
			}
		}
	}
}

// aio runs one asynchronous operation and waits for its result (bytes
// for a read, 0 for the others) or error.
func (img *image) aio(op C.int, off uint64, p []byte, length uint64, name string) (int64, error) {
	w := img.waiters.Get().(*waiter)
	var buf *C.char
	if len(p) > 0 {
		w.pin.Pin(&p[0])
		buf = (*C.char)(unsafe.Pointer(&p[0]))
	}
	img.mu.Lock()
	if err := img.broken; err != nil {
		img.mu.Unlock()
		w.pin.Unpin()
		img.waiters.Put(w)
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	img.next++
	id := img.next
	img.waiting[id] = w
	img.mu.Unlock()
	r := C.lm_aio(img.h, op, C.uint64_t(id), C.uint64_t(off), C.size_t(length), buf, C.size_t(len(p)))
	var ret int64
	if r < 0 {
		img.mu.Lock()
		delete(img.waiting, id)
		img.mu.Unlock()
		ret = int64(r)
	} else {
		ret = <-w.done
	}
	w.pin.Unpin()
	img.waiters.Put(w)
	if ret < 0 {
		return 0, rbdError(name, ret)
	}
	return ret, nil
}

// rw runs a read or write: direct (lm_sync, blocking this thread in C)
// when no other read or write is in flight, asynchronous otherwise. A
// lone operation, the queue-depth-1 case, so skips the eventfd, the
// poller goroutine and the hand-over to its waiter (several thread
// wake-ups per I/O); at depth the asynchronous path keeps threads free.
func (img *image) rw(op C.int, p []byte, off int64, aioName, syncName string) (int64, error) {
	if img.inflight.Add(1) != 1 || len(p) == 0 {
		defer img.inflight.Add(-1)
		return img.aio(op, uint64(off), p, uint64(len(p)), aioName)
	}
	img.direct.Add(1)
	r := C.lm_sync(img.h, op, C.uint64_t(off), C.size_t(len(p)), (*C.char)(unsafe.Pointer(&p[0])))
	img.inflight.Add(-1)
	if r < 0 {
		return 0, rbdError(syncName, int64(r))
	}
	return int64(r), nil
}

func (img *image) read(p []byte, off int64) (int, error) {
	n, err := img.rw(C.LM_READ, p, off, "rbd_aio_read", "rbd_read")
	if err == nil && int(n) != len(p) {
		err = fmt.Errorf("rbd_aio_read: %d of %d bytes: %w", n, len(p), syscall.EIO)
	}
	return int(n), err
}

func (img *image) write(p []byte, off int64) (int, error) {
	// A write's return value is 0 on success (all of it written).
	if _, err := img.rw(C.LM_WRITE, p, off, "rbd_aio_write", "rbd_write"); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeSame writes pattern over [off, off+length).
func (img *image) writeSame(off, length int64, pattern []byte) error {
	_, err := img.aio(C.LM_WRITESAME, uint64(off), pattern, uint64(length), "rbd_aio_writesame")
	return err
}

func (img *image) flush() error {
	_, err := img.aio(C.LM_FLUSH, 0, nil, 0, "rbd_aio_flush")
	return err
}

func (img *image) features() (uint64, error) {
	var f C.uint64_t
	if r := C.rbd_get_features(img.h, &f); r < 0 {
		return 0, rbdError("rbd_get_features", int64(r))
	}
	return uint64(f), nil
}

func (img *image) size() (int64, error) {
	var s C.uint64_t
	if r := C.rbd_get_size(img.h, &s); r < 0 {
		return 0, rbdError("rbd_get_size", int64(r))
	}
	return int64(s), nil
}

func (img *image) resize(size int64) error {
	if r := C.rbd_resize(img.h, C.uint64_t(size)); r < 0 {
		return rbdError("rbd_resize", int64(r))
	}
	return nil
}

// lockOwners lists the clients holding the exclusive lock.
func (img *image) lockOwners() ([]string, error) {
	buf := make([]byte, 4096)
	var count C.int
	if r := C.lm_owners(img.h, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &count); r < 0 {
		return nil, rbdError("rbd_lock_get_owners", int64(r))
	}
	if count == 0 {
		return nil, nil
	}
	s := C.GoString((*C.char)(unsafe.Pointer(&buf[0])))
	return strings.Fields(s), nil
}

func (img *image) lockBreak(owner string) error {
	c := C.CString(owner)
	defer C.free(unsafe.Pointer(c))
	if r := C.rbd_lock_break(img.h, C.RBD_LOCK_MODE_EXCLUSIVE, c); r < 0 {
		return rbdError("rbd_lock_break", int64(r))
	}
	return nil
}

func (img *image) lockAcquire() error {
	if r := C.rbd_lock_acquire(img.h, C.RBD_LOCK_MODE_EXCLUSIVE); r < 0 {
		return rbdError("rbd_lock_acquire", int64(r))
	}
	return nil
}

func (img *image) lockRelease() error {
	if r := C.rbd_lock_release(img.h); r < 0 {
		return rbdError("rbd_lock_release", int64(r))
	}
	return nil
}

func (img *image) isLockOwner() (bool, error) {
	var o C.int
	if r := C.rbd_is_exclusive_lock_owner(img.h, &o); r < 0 {
		return false, rbdError("rbd_is_exclusive_lock_owner", int64(r))
	}
	return o != 0, nil
}

func (img *image) metadataGet(key string) (string, error) {
	k := C.CString(key)
	defer C.free(unsafe.Pointer(k))
	buf := make([]byte, 4096)
	n := C.size_t(len(buf))
	if r := C.rbd_metadata_get(img.h, k, (*C.char)(unsafe.Pointer(&buf[0])), &n); r < 0 {
		return "", rbdError("rbd_metadata_get "+key, int64(r))
	}
	return C.GoString((*C.char)(unsafe.Pointer(&buf[0]))), nil
}

func (img *image) metadataSet(key, value string) error {
	k, v := C.CString(key), C.CString(value)
	defer C.free(unsafe.Pointer(k))
	defer C.free(unsafe.Pointer(v))
	if r := C.rbd_metadata_set(img.h, k, v); r < 0 {
		return rbdError("rbd_metadata_set "+key, int64(r))
	}
	return nil
}

// nextData is the first run of existing objects in [off, off+length),
// start -1 when none.
func (img *image) nextData(off, length int64) (start, end int64, err error) {
	var s, e C.int64_t
	if r := C.lm_next_data(img.h, C.uint64_t(off), C.uint64_t(length), &s, &e); r < 0 {
		return 0, 0, rbdError("rbd_diff_iterate2", int64(r))
	}
	return int64(s), int64(e), nil
}

// close stops the poller and closes the image. Every operation must have
// completed (Volume.Close waits for its calls first). The poller is
// stopped first: it must not be in rbd_poll_io_events while rbd_close
// frees the image (a late eventfd count would send it there).
func (img *image) close() error {
	img.stopping.Store(true)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1) // the eventfd counter +1
	if _, err := img.ev.Write(one[:]); err != nil {
		img.ev.Close() // fails the poller's read instead
	}
	<-img.pollDone
	var err error
	if r := C.rbd_close(img.h); r < 0 {
		err = rbdError("rbd_close", int64(r))
	}
	img.ev.Close()
	return err
}
