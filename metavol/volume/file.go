package volume

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kinds of data volume, as returned by (*File).Kind.
const (
	KindFile  = "file"
	KindBlock = "block"
)

// Options tune how a data volume is opened.
type Options struct {
	// Direct opens the volume with O_DIRECT (no page cache). Requests that
	// are not aligned to the volume's direct I/O alignment (buffer address,
	// offset and length) still work: they go through aligned bounce buffers,
	// and unaligned writes become a read-modify-write of the enclosing
	// aligned range (serialised against other writes, so slower). Callers
	// that want speed align to the LUN block size.
	Direct bool
	// MinSize, if positive, is the size the volume is known to have (its
	// record): Open fails with ErrShrunk when the file or device is
	// smaller, so a volume truncated while lmtgt was stopped is never
	// served with zeros where its data was.
	MinSize int64
}

// File is a data volume backed by a regular file or a raw block device. All
// methods are safe for concurrent use; I/O is positional (pread/pwrite), so
// there is no shared file offset.
type File struct {
	path   string
	kind   string
	direct bool
	// align is the direct I/O alignment (offset, length and buffer
	// address); 1 when the volume is not opened with O_DIRECT.
	align int64
	// sector is a block device's logical sector size (512 for files).
	sector int64
	// fd never changes after open; use it only while holding mu.RLock
	// (so Close cannot release the descriptor under a running call).
	fd   int
	size atomic.Int64

	// mu: shared by every call that uses fd, exclusive in Close. It also
	// serialises Resize against itself.
	mu     sync.RWMutex
	closed bool // guarded by mu
	// refs counts the FileRefs handed out and not yet released, plus
	// refClosed once Close ran: whoever brings it to exactly refClosed
	// (Close with no reference out, or the last Release after Close)
	// closes fd. New references are taken under mu.RLock and only while
	// !closed, so none is taken after Close added refClosed.
	refs atomic.Int64

	// rmw: shared by aligned direct writes, exclusive for unaligned
	// direct writes (read-modify-write of the enclosing aligned blocks),
	// so an RMW never overwrites a concurrent write with stale bytes.
	rmw sync.RWMutex
	// bounce holds aligned buffers of bounceSize bytes for direct I/O.
	bounce sync.Pool

	// dataHint is the last data extent NextData found (nil: none). An
	// offset inside it is answered without SEEK_DATA/SEEK_HOLE: on tmpfs
	// SEEK_HOLE walks every page up to the next hole, so a copier asking
	// once per chunk of a fully allocated file paid O(size) per call
	// (a 1 GiB LUN copied at 68 MB/s). Data turns into a hole only by
	// Unmap (which drops the hint) or by someone else punching the file:
	// then the hint errs on the safe side (data that reads as zeros is
	// copied, or reported mapped), never the other way.
	dataHint atomic.Pointer[extent]
	seeks    atomic.Int64 // SEEK_DATA/SEEK_HOLE pairs NextData made (tests)
}

// extent is a byte range [start, end) of a volume.
type extent struct{ start, end int64 }

// bounceSize is the size of a pooled direct I/O bounce buffer; larger
// unaligned requests are split into pieces of at most this size.
const bounceSize = 1 << 20

var _ Volume = (*File)(nil)

// Create makes a new sparse file of size bytes at path and opens it. It
// fails if path exists. The parent directory is synced so the new file
// survives a crash once Create returns.
func Create(path string, size int64, opts Options) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("volume %s: negative size %d", path, size)
	}
	flags := unix.O_RDWR | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	fd, err := openRetry(path, flags, 0o600)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("volume %s: already exists: %w", path, os.ErrExist)
		}
		if errors.Is(err, unix.EINVAL) && opts.Direct {
			// The kernel may have created the file before refusing
			// O_DIRECT; with O_EXCL it can only be ours: remove it.
			os.Remove(path)
			return nil, fmt.Errorf("volume %s: create with O_DIRECT: filesystem does not support direct I/O: %w", path, err)
		}
		return nil, fmt.Errorf("volume %s: create: %w", path, err)
	}
	fail := func(err error) (*File, error) {
		unix.Close(fd)
		os.Remove(path)
		return nil, err
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		return fail(fmt.Errorf("volume %s: set size %d: %w", path, size, err))
	}
	if err := unix.Fsync(fd); err != nil {
		return fail(fmt.Errorf("volume %s: fsync: %w", path, err))
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fail(fmt.Errorf("volume %s: %w", path, err))
	}
	return newFile(path, fd, KindFile, size, opts)
}

// Open opens an existing regular file or raw block device. The size of a
// block device is read from the device.
func Open(path string, opts Options) (*File, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("volume %s: %w", path, ErrNotFound)
		}
		return nil, fmt.Errorf("volume %s: stat: %w", path, err)
	}
	var kind string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		kind = KindFile
	case unix.S_IFBLK:
		kind = KindBlock
	default:
		return nil, fmt.Errorf("volume %s: neither a regular file nor a block device (mode %#o)", path, st.Mode)
	}
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	fd, err := openRetry(path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("volume %s: %w", path, ErrNotFound)
		}
		if errors.Is(err, unix.EINVAL) && opts.Direct {
			return nil, fmt.Errorf("volume %s: open with O_DIRECT: filesystem does not support direct I/O: %w", path, err)
		}
		return nil, fmt.Errorf("volume %s: open: %w", path, err)
	}
	var size int64
	if kind == KindBlock {
		var sz uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e != 0 {
			// Fall back to seeking to the end.
			end, err := unix.Seek(fd, 0, io.SeekEnd)
			if err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("volume %s: device size: %w", path, e)
			}
			sz = uint64(end)
		}
		size = int64(sz)
	} else {
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("volume %s: fstat: %w", path, err)
		}
		size = st.Size
	}
	if opts.MinSize > 0 && size < opts.MinSize {
		unix.Close(fd)
		return nil, fmt.Errorf("volume %s: holds %d bytes, the volume had %d: %w", path, size, opts.MinSize, ErrShrunk)
	}
	return newFile(path, fd, kind, size, opts)
}

func openRetry(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, mode)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

func syncDir(dir string) error {
	fd, err := openRetry(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func newFile(path string, fd int, kind string, size int64, opts Options) (*File, error) {
	f := &File{path: path, kind: kind, direct: opts.Direct, fd: fd, align: 1, sector: 512}
	f.size.Store(size)
	if kind == KindBlock {
		if ss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && ss >= 512 && ss&(ss-1) == 0 {
			f.sector = int64(ss)
		}
	}
	if opts.Direct {
		f.align = directAlign(fd, kind)
		align := f.align
		f.bounce.New = func() any {
			b := alignedBuf(bounceSize, align)
			return &b
		}
	}
	return f, nil
}

// directAlign finds the O_DIRECT alignment: statx(STATX_DIOALIGN) where the
// kernel reports it, the logical sector size for block devices, else 4096
// (safe on every common filesystem).
func directAlign(fd int, kind string) int64 {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err == nil &&
		stx.Mask&unix.STATX_DIOALIGN != 0 && stx.Dio_offset_align > 0 {
		a := int64(stx.Dio_offset_align)
		if m := int64(stx.Dio_mem_align); m > a {
			a = m
		}
		if a&(a-1) == 0 {
			return a
		}
	}
	if kind == KindBlock {
		if ss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && ss > 0 && ss&(ss-1) == 0 {
			return int64(ss)
		}
	}
	return 4096
}

// alignedBuf returns n bytes whose first byte is aligned to align.
func alignedBuf(n int, align int64) []byte {
	b := make([]byte, n+int(align))
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1)); r != 0 {
		off = int(align) - r
	}
	return b[off : off+n : off+n]
}

// Path is the file or device path the volume was opened with.
func (f *File) Path() string { return f.path }

// Kind is KindFile or KindBlock.
func (f *File) Kind() string { return f.kind }

// Direct reports whether the volume was opened with O_DIRECT.
func (f *File) Direct() bool { return f.direct }

// Alignment is the alignment (offset, length, buffer address) at which I/O
// goes straight to the device without bounce buffers: the direct I/O
// alignment with Options.Direct, 1 otherwise.
func (f *File) Alignment() int64 { return f.align }

// Fd is the open file descriptor. It stays valid until Close; callers must
// not close it or change its file offset assumptions (the volume uses
// positional I/O only).
func (f *File) Fd() uintptr { return uintptr(f.fd) }

// Size is the current size in bytes.
func (f *File) Size() int64 { return f.size.Load() }

func (f *File) rlock() error {
	f.mu.RLock()
	if f.closed {
		f.mu.RUnlock()
		return fmt.Errorf("volume %s: %w", f.path, ErrClosed)
	}
	return nil
}

func (f *File) checkRange(op string, off, n int64) error {
	size := f.size.Load()
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("volume %s: %s [%d, %d) beyond size %d: %w", f.path, op, off, off+n, size, ErrOutOfRange)
	}
	return nil
}

func (f *File) aligned(p []byte, off int64) bool {
	if f.align <= 1 {
		return true
	}
	a := f.align - 1
	if off&a != 0 || int64(len(p))&a != 0 {
		return false
	}
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))&uintptr(a) == 0
}

// ReadAt reads len(p) bytes at off. Holes read as zeros.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.rlock(); err != nil {
		return 0, err
	}
	defer f.mu.RUnlock()
	if err := f.checkRange("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	if f.aligned(p, off) {
		return f.pread(p, off)
	}
	return f.readBounce(p, off)
}

// WriteAt writes len(p) bytes at off.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if err := f.rlock(); err != nil {
		return 0, err
	}
	defer f.mu.RUnlock()
	if err := f.checkRange("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := f.checkTail(off, int64(len(p))); err != nil {
		return 0, err
	}
	if !f.direct {
		return f.pwrite(p, off)
	}
	a := f.align - 1
	if off&a == 0 && int64(len(p))&a == 0 {
		// Offset and length aligned: no read-modify-write needed.
		f.rmw.RLock()
		defer f.rmw.RUnlock()
		if f.aligned(p, off) {
			return f.pwrite(p, off)
		}
		return f.writeBounce(p, off)
	}
	f.rmw.Lock()
	defer f.rmw.Unlock()
	return f.writeBounce(p, off)
}

// checkTail guards the writes that could give a file truncated behind our
// back its full size again (a write ending in the last alignment block,
// or a direct write whose last block is trimmed back to Size): once the
// size is restored, holes where the data was could no longer be told from
// data by Verify. One fstat, on those writes only.
func (f *File) checkTail(off, n int64) error {
	if f.kind != KindFile || n == 0 || off+n <= f.size.Load()-f.align {
		return nil
	}
	return f.notShrunk()
}

// notShrunk fails with ErrShrunk when the file is smaller than Size.
func (f *File) notShrunk() error {
	var st unix.Stat_t
	if err := fstatRetry(f.fd, &st); err != nil {
		return fmt.Errorf("volume %s: fstat: %w", f.path, err)
	}
	if size := f.size.Load(); st.Size < size {
		return fmt.Errorf("volume %s: the file holds %d bytes, the volume %d: %w", f.path, st.Size, size, ErrShrunk)
	}
	return nil
}

// pread reads exactly len(p) bytes at off.
func (f *File) pread(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(f.fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("volume %s: read at %d: %w", f.path, off+int64(done), err)
		}
		if n == 0 {
			// The file is shorter than our size (truncated behind our
			// back): an error, never zeros.
			return done, fmt.Errorf("volume %s: read at %d: the file ends before the volume's size %d: %w (%w)",
				f.path, off+int64(done), f.size.Load(), ErrShrunk, io.ErrUnexpectedEOF)
		}
		done += n
	}
	return done, nil
}

// pwrite writes exactly len(p) bytes at off.
func (f *File) pwrite(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pwrite(f.fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("volume %s: write at %d: %w", f.path, off+int64(done), err)
		}
		if n == 0 {
			return done, fmt.Errorf("volume %s: write at %d: %w", f.path, off+int64(done), io.ErrShortWrite)
		}
		done += n
	}
	return done, nil
}

func (f *File) getBounce() *[]byte  { return f.bounce.Get().(*[]byte) }
func (f *File) putBounce(b *[]byte) { f.bounce.Put(b) }

// span returns the aligned range enclosing [off, off+n), clipped to a piece
// of at most bounceSize bytes starting at the aligned start.
func (f *File) span(off, n int64) (start, end int64) {
	a := f.align
	start = off &^ (a - 1)
	end = (off + n + a - 1) &^ (a - 1)
	if end-start > bounceSize {
		end = start + bounceSize
	}
	return start, end
}

// readBounce serves an unaligned direct read through aligned buffers.
func (f *File) readBounce(p []byte, off int64) (int, error) {
	bp := f.getBounce()
	defer f.putBounce(bp)
	buf := *bp
	done := 0
	for done < len(p) {
		cur := off + int64(done)
		start, end := f.span(cur, int64(len(p)-done))
		// The last aligned block may reach past the end of a file whose
		// size is not aligned; pread then returns short, which is fine as
		// long as it covers what we need.
		got, err := f.preadUpTo(buf[:end-start], start)
		if err != nil {
			return done, err
		}
		need := cur - start
		if int64(got) <= need {
			return done, fmt.Errorf("volume %s: read at %d: the file ends before the volume's size %d: %w (%w)",
				f.path, cur, f.size.Load(), ErrShrunk, io.ErrUnexpectedEOF)
		}
		done += copy(p[done:], buf[need:got])
	}
	return done, nil
}

// preadUpTo reads into p at off until p is full or end of file.
func (f *File) preadUpTo(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(f.fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("volume %s: read at %d: %w", f.path, off+int64(done), err)
		}
		done += n
		if n == 0 || int64(n)&(f.align-1) != 0 {
			// End of file (a direct read ends short only there; asking
			// again at an unaligned offset would be refused).
			break
		}
	}
	return done, nil
}

// writeBounce serves a direct write through aligned buffers, reading the
// partial blocks at either end first. The caller holds rmw exclusively if
// off or len(p) is unaligned.
func (f *File) writeBounce(p []byte, off int64) (int, error) {
	bp := f.getBounce()
	defer f.putBounce(bp)
	buf := *bp
	size := f.size.Load()
	done := 0
	for done < len(p) {
		cur := off + int64(done)
		start, end := f.span(cur, int64(len(p)-done))
		chunk := buf[:end-start]
		need := cur - start
		n := copy(chunk[need:], p[done:])
		if need != 0 || need+int64(n) != int64(len(chunk)) {
			// Partial block(s): fetch the current bytes of the whole span
			// (simpler than the two edge blocks, and spans are small).
			got, err := f.preadUpTo(chunk, start)
			if err != nil {
				return done, err
			}
			clear(chunk[got:])
			copy(chunk[need:], p[done:done+n])
		}
		// Never extend the file past its size: a file whose size is not
		// aligned gets its last block written in full, then trimmed.
		if _, err := f.pwrite(chunk, start); err != nil {
			return done, err
		}
		if end > size && f.kind == KindFile {
			if err := unix.Ftruncate(f.fd, size); err != nil {
				return done, fmt.Errorf("volume %s: trim to size %d: %w", f.path, size, err)
			}
		}
		done += n
	}
	return done, nil
}

// Unmap deallocates [off, off+length): a hole is punched in a file
// (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE), a block device range is zeroed
// with BLKZEROOUT (which unmaps where the device can do so and still
// guarantees zeros). Either way the range reads back as zeros.
func (f *File) Unmap(off, length int64) error {
	if err := f.rlock(); err != nil {
		return err
	}
	defer f.mu.RUnlock()
	if err := f.checkRange("unmap", off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if err := f.checkTail(off, length); err != nil { // zeros may be written (no hole punching)
		return err
	}
	if f.direct {
		// A concurrent read-modify-write must not write back stale bytes
		// over the freshly zeroed range; and if zeroing has to write
		// partial blocks itself, it is a read-modify-write too.
		if a := f.align - 1; off&a != 0 || length&a != 0 {
			f.rmw.Lock()
			defer f.rmw.Unlock()
		} else {
			f.rmw.RLock()
			defer f.rmw.RUnlock()
		}
	}
	if f.kind == KindBlock {
		return f.zeroDevice(off, length)
	}
	// The range may become a hole: NextData must look again (dropped
	// before and after the punch, so a NextData running meanwhile cannot
	// leave a hint that covers it).
	f.dataHint.Store(nil)
	defer f.dataHint.Store(nil)
	for {
		err := unix.Fallocate(f.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == unix.EINTR {
			continue
		}
		if err == nil {
			return nil
		}
		if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
			// Filesystem without hole punching: write zeros instead.
			return f.writeZeros(off, length)
		}
		return fmt.Errorf("volume %s: unmap [%d, %d): %w", f.path, off, off+length, err)
	}
}

// zeroDevice zeroes [off, off+length) of a block device: BLKZEROOUT for the
// sector-aligned middle, written zeros for the edges.
func (f *File) zeroDevice(off, length int64) error {
	sector := f.sector
	end := off + length
	start := (off + sector - 1) &^ (sector - 1)
	stop := end &^ (sector - 1)
	if start >= stop {
		return f.writeZeros(off, length)
	}
	if start > off {
		if err := f.writeZeros(off, start-off); err != nil {
			return err
		}
	}
	rng := [2]uint64{uint64(start), uint64(stop - start)}
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(f.fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rng)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			if e == unix.EOPNOTSUPP || e == unix.ENOTTY || e == unix.EINVAL {
				if err := f.writeZeros(start, stop-start); err != nil {
					return err
				}
				break
			}
			return fmt.Errorf("volume %s: zero out [%d, %d): %w", f.path, start, stop, e)
		}
		break
	}
	if end > stop {
		return f.writeZeros(stop, end-stop)
	}
	return nil
}

// writeZeros writes zeros over [off, off+length). The caller holds mu
// shared and, with O_DIRECT, rmw exclusively if the range is unaligned
// (Unmap does), since writeBounce then reads and rewrites edge blocks.
func (f *File) writeZeros(off, length int64) error {
	zero := make([]byte, min(length, bounceSize))
	for length > 0 {
		n := min(length, bounceSize)
		var err error
		if f.direct {
			_, err = f.writeBounce(zero[:n], off)
		} else {
			_, err = f.pwrite(zero[:n], off)
		}
		if err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Sync makes every completed write durable (fdatasync).
func (f *File) Sync() error {
	if err := f.rlock(); err != nil {
		return err
	}
	defer f.mu.RUnlock()
	for {
		err := unix.Fdatasync(f.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("volume %s: sync: %w", f.path, err)
		}
		return nil
	}
}

// Resize grows a file volume to size bytes (the new range is a hole).
// Shrinking is refused, as is resizing a block device: its size is the
// device's.
func (f *File) Resize(size int64) error {
	if err := f.rlock(); err != nil {
		return err
	}
	defer f.mu.RUnlock()
	if f.kind == KindBlock {
		return fmt.Errorf("volume %s: a block device cannot be resized (size %d)", f.path, f.size.Load())
	}
	f.rmw.Lock() // one resize at a time, and no RMW trimming meanwhile
	defer f.rmw.Unlock()
	cur := f.size.Load()
	if size < cur {
		return fmt.Errorf("volume %s: cannot shrink from %d to %d bytes", f.path, cur, size)
	}
	if size == cur {
		return nil
	}
	// Growing a file truncated behind our back would give it back its
	// size with holes where the data was: refuse.
	if err := f.notShrunk(); err != nil {
		return err
	}
	if err := unix.Ftruncate(f.fd, size); err != nil {
		return fmt.Errorf("volume %s: resize to %d: %w", f.path, size, err)
	}
	if err := unix.Fsync(f.fd); err != nil {
		return fmt.Errorf("volume %s: resize to %d: fsync: %w", f.path, size, err)
	}
	f.size.Store(size)
	return nil
}

// NextData returns [start, end), the first extent holding data at or after
// off (SEEK_DATA/SEEK_HOLE), clipped to Size. It returns io.EOF when there
// is no data at or after off. Filesystems without hole tracking report the
// whole rest of the file as data; so does a block device.
func (f *File) NextData(off int64) (start, end int64, err error) {
	if err := f.rlock(); err != nil {
		return 0, 0, err
	}
	defer f.mu.RUnlock()
	size := f.size.Load()
	if off < 0 {
		return 0, 0, fmt.Errorf("volume %s: next data at negative offset %d: %w", f.path, off, ErrOutOfRange)
	}
	if off >= size {
		return 0, 0, io.EOF
	}
	if f.kind == KindBlock {
		return off, size, nil
	}
	// A file truncated behind our back has no data past its new end, and
	// SEEK_DATA would say so: callers (GET LBA STATUS) would then tell the
	// host "deallocated, reads as zeros" where its data was. Refuse
	// instead (one fstat; this is not on the read/write path).
	var st unix.Stat_t
	if err := fstatRetry(f.fd, &st); err != nil {
		return 0, 0, fmt.Errorf("volume %s: next data: fstat: %w", f.path, err)
	}
	if st.Size < size {
		return 0, 0, fmt.Errorf("volume %s: next data at %d: the file holds %d bytes, the volume %d: %w", f.path, off, st.Size, size, ErrShrunk)
	}
	if h := f.dataHint.Load(); h != nil && h.start <= off && off < h.end {
		return off, min(h.end, size), nil
	}
	f.seeks.Add(1)
	start, err = seekRetry(f.fd, off, unix.SEEK_DATA)
	if err == unix.ENXIO {
		return 0, 0, io.EOF
	}
	if err == unix.EINVAL || err == unix.EOPNOTSUPP {
		return off, size, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("volume %s: seek data at %d: %w", f.path, off, err)
	}
	if start >= size {
		return 0, 0, io.EOF
	}
	end, err = seekRetry(f.fd, start, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, fmt.Errorf("volume %s: seek hole at %d: %w", f.path, start, err)
	}
	end = min(end, size)
	f.dataHint.Store(&extent{start: start, end: end})
	return start, end, nil
}

func seekRetry(fd int, off int64, whence int) (int64, error) {
	for {
		n, err := unix.Seek(fd, off, whence)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// refClosed is the flag Close adds to File.refs.
const refClosed = 1 << 62

// ReadRef hands out a reference to [off, off+n) of the file for a
// zero-copy send (volume.RefReader): the range is checked as ReadAt
// checks it, and the descriptor stays open until the reference is
// released, whatever Close does meanwhile (Close returns at once; the
// last Release closes the descriptor). Refused (ErrNoRef) with O_DIRECT:
// a splice from a direct-I/O file bypasses the page cache the feature
// relies on, and is not verified here.
func (f *File) ReadRef(off, n int64) (FileRef, error) {
	if f.direct {
		return FileRef{}, ErrNoRef // a signal, not wrapped: no allocation per READ
	}
	if err := f.rlock(); err != nil {
		return FileRef{}, err
	}
	defer f.mu.RUnlock()
	if err := f.checkRange("read", off, n); err != nil {
		return FileRef{}, err
	}
	f.refs.Add(1)
	return FileRef{Fd: f.fd, Off: off, Len: n, Owner: f}, nil
}

// Release gives back one reference of ReadRef (volume.Releaser); the last
// one after Close closes the descriptor.
func (f *File) Release() {
	if f.refs.Add(-1) == refClosed {
		unix.Close(f.fd)
	}
}

// Refs is the number of references out (tests).
func (f *File) Refs() int64 { return f.refs.Load() &^ refClosed }

// Close releases the descriptor after in-flight calls finish and every
// reference handed out by ReadRef is released (without waiting for
// those: the last Release closes it). Closing again is a no-op; every
// other call after Close returns ErrClosed.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.refs.Add(refClosed) != refClosed {
		return nil // the last Release closes fd
	}
	if err := unix.Close(f.fd); err != nil {
		return fmt.Errorf("volume %s: close: %w", f.path, err)
	}
	return nil
}
