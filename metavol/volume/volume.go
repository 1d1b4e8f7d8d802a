package volume

import (
	"bytes"
	"errors"
)

// Volume is the one interface for everything in lmtgt that stores bytes: data
// volumes (files, block devices), the LM router's per-LUN handle, and the
// fault-injecting wrapper used in tests. Every method is safe for concurrent
// use. Offsets and lengths are in bytes.
type Volume interface {
	// ReadAt reads len(p) bytes at off. Reading a hole or an unmapped range
	// yields zeros. A read past Size is an error.
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt writes len(p) bytes at off. A write past Size is an error.
	WriteAt(p []byte, off int64) (int, error)
	// Unmap deallocates [off, off+length); the range reads back as zeros.
	Unmap(off, length int64) error
	// Sync makes every completed write durable (fdatasync).
	Sync() error
	// Size is the volume's current size in bytes.
	Size() int64
	// Close releases the volume. It does not delete anything.
	Close() error
}

// Sentinel errors, matched with errors.Is.
var (
	// ErrOutOfRange: an I/O reaches past the end of the volume.
	ErrOutOfRange = errors.New("i/o out of range")
	// ErrClosed: the volume was closed.
	ErrClosed = errors.New("volume closed")
	// ErrNotFound: the file or device does not exist.
	ErrNotFound = errors.New("volume not found")
)

// IsZero reports whether b holds only zero bytes (an empty b does). It is
// the one zero-block test of lmtgt: the copier's hole detection, the crash
// volumes' page tracking and the tests above use it. b[0] is zero and every
// byte equals the one before it, so it needs no zero buffer and runs at
// memequal speed.
func IsZero(b []byte) bool {
	return len(b) == 0 || b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1])
}

// FileRef is a reference to bytes of a data volume's file, handed out so
// that they can be sent without a copy (sendfile(2) from Fd at Off). Fd
// stays open until Release is called, even if the volume is closed
// meanwhile: a descriptor number sent from after its close could name
// another file by then. The holder calls Release exactly once, when it
// no longer uses Fd.
type FileRef struct {
	Fd  int
	Off int64
	Len int64
	// Owner is what Release gives the reference back to (the *File:
	// an interface holding a pointer, so handing one out allocates
	// nothing).
	Owner Releaser
}

// Releaser gives back a FileRef.
type Releaser interface{ Release() }

// Release gives the reference back (a FileRef with no Owner: nothing).
func (r FileRef) Release() {
	if r.Owner != nil {
		r.Owner.Release()
	}
}

// RefReader is implemented by a volume that can hand out its bytes by
// descriptor (a *File, and lm's LUN handle when its route is an unwrapped
// file). ReadRef returns a reference to [off, off+n) with the same checks
// as ReadAt, or an error wrapping ErrNoRef when it cannot (the caller
// reads with ReadAt instead).
type RefReader interface {
	ReadRef(off, n int64) (FileRef, error)
}

// ErrNoRef: the volume cannot hand out a descriptor reference for this
// read (not a file, opened with O_DIRECT, wrapped); read with ReadAt.
var ErrNoRef = errors.New("no file reference for this volume")
