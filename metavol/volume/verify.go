package volume

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Errors of a data volume changed underneath lmtgt (Verify, a short read,
// Open with Options.MinSize). Each means the bytes behind the volume are no
// longer the ones written through it: the caller must stop serving them
// (lmtgt takes the LUN offline) rather than read zeros.
var (
	// ErrShrunk: the file or device is smaller than the volume's size
	// (truncated behind our back, or a device that shrank).
	ErrShrunk = errors.New("data volume shrank underneath lmtgt")
	// ErrVanished: the open file was unlinked, or nothing is at its path
	// any more.
	ErrVanished = errors.New("data volume file vanished underneath lmtgt")
	// ErrReplaced: the path now names another file or device than the one
	// open.
	ErrReplaced = errors.New("data volume path now names another file")
)

// ErrOffline is what the layers above return for a logical unit that must
// not be served (its data volume was lost, or its migration state could
// not be loaded): the SCSI front end answers NOT READY, "logical unit not
// ready, manual intervention required". It lives here, in the package
// every layer imports, so the front end can match it without knowing why.
var ErrOffline = errors.New("logical unit offline: manual intervention required")

// Lost reports whether err says the volume changed underneath lmtgt
// (ErrShrunk, ErrVanished or ErrReplaced).
func Lost(err error) bool {
	return errors.Is(err, ErrShrunk) || errors.Is(err, ErrVanished) || errors.Is(err, ErrReplaced)
}

// VerifyOpen is the part of Verify that needs no path lookup: the open
// file still has a link and is not smaller than Size (a block device: its
// size). One fstat (an ioctl for a block device); it does not see a path
// that now names another file. The split uses it inside its pause, after
// a full Verify just before.
func (f *File) VerifyOpen() error {
	if err := f.rlock(); err != nil {
		return err
	}
	defer f.mu.RUnlock()
	size := f.size.Load()
	if f.kind == KindBlock {
		var sz uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(f.fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e == 0 && int64(sz) < size {
			return fmt.Errorf("volume %s: the device holds %d bytes, the volume %d: %w", f.path, sz, size, ErrShrunk)
		}
		return nil
	}
	var fst unix.Stat_t
	if err := fstatRetry(f.fd, &fst); err != nil {
		return fmt.Errorf("volume %s: verify: fstat: %w", f.path, err)
	}
	if fst.Nlink == 0 {
		return fmt.Errorf("volume %s: the open file was deleted (no link left): %w", f.path, ErrVanished)
	}
	if fst.Size < size {
		return fmt.Errorf("volume %s: the file holds %d bytes, the volume %d: %w", f.path, fst.Size, size, ErrShrunk)
	}
	return nil
}

// Verify checks that the volume is still whole and still what was opened:
// the open file has not been unlinked, its path names the same file (same
// device and inode; the same device number for a block device), and the
// file or device is not smaller than Size. It costs an fstat and a stat
// (plus an ioctl for a block device) and never does I/O on the data. It
// returns ErrVanished, ErrReplaced or ErrShrunk (wrapped, with the
// details), another error when the check itself failed (for example a
// permission error on the path), or nil.
func (f *File) Verify() error {
	if err := f.rlock(); err != nil {
		return err
	}
	defer f.mu.RUnlock()
	var fst unix.Stat_t
	if err := fstatRetry(f.fd, &fst); err != nil {
		return fmt.Errorf("volume %s: verify: fstat: %w", f.path, err)
	}
	if f.kind == KindFile && fst.Nlink == 0 {
		return fmt.Errorf("volume %s: the open file was deleted (no link left): %w", f.path, ErrVanished)
	}
	var pst unix.Stat_t
	if err := unix.Stat(f.path, &pst); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("volume %s: the path no longer exists: %w", f.path, ErrVanished)
		}
		return fmt.Errorf("volume %s: verify: stat: %w", f.path, err)
	}
	size := f.size.Load()
	switch f.kind {
	case KindBlock:
		if pst.Mode&unix.S_IFMT != unix.S_IFBLK || pst.Rdev != fst.Rdev {
			return fmt.Errorf("volume %s: the path now names another device (rdev %#x, open %#x): %w", f.path, pst.Rdev, fst.Rdev, ErrReplaced)
		}
		var sz uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(f.fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e == 0 && int64(sz) < size {
			return fmt.Errorf("volume %s: the device holds %d bytes, the volume %d: %w", f.path, sz, size, ErrShrunk)
		}
	default:
		if pst.Dev != fst.Dev || pst.Ino != fst.Ino {
			return fmt.Errorf("volume %s: the path now names another file (inode %d on device %#x; open: inode %d on %#x): %w",
				f.path, pst.Ino, pst.Dev, fst.Ino, fst.Dev, ErrReplaced)
		}
		if fst.Size < size {
			return fmt.Errorf("volume %s: the file holds %d bytes, the volume %d: %w", f.path, fst.Size, size, ErrShrunk)
		}
	}
	return nil
}

func fstatRetry(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}
