package pdu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// Sock is the hot path's socket I/O of one iSCSI connection, shared by the
// target transport and the initiator: read(2) and writev(2) on the
// connection's non-blocking descriptor issued with syscall.RawSyscall,
// waiting through the runtime's netpoller (syscall.RawConn) only when the
// socket answers EAGAIN. net.Conn's Read and net.Buffers' WriteTo go
// through the scheduler's system call hooks instead (entersyscall and
// exitsyscall), and the first of those after every moment with all Ps idle
// wakes the runtime's sysmon thread from its deep sleep and resets its
// polling to 20 us: at queue depth 1 every command has such a moment (the
// process waits for the host, then for the remote target), so each one
// paid a sysmon wake-up and a few of its 20 us sleeps (futex and
// nanosleep calls, context switches: docs/benchmarks.md, "The
// pass-through hop"). A non-blocking socket call never blocks, so it
// needs no hand-off of the P. Deadlines and Close work as for net.Conn
// (the wait is the netpoller's). A connection that is not a
// syscall.Conn (a test's net.Pipe) uses its own Read and WriteTo.
//
// One goroutine reads and one writes at a time (each side's owner
// serialises them); Read and Writev may run concurrently.
type Sock struct {
	nc net.Conn
	rc syscall.RawConn // nil: plain nc

	// The functions handed to rc, made once (a closure per call would be
	// an allocation per call), and their arguments and results.
	readFn, writeFn func(fd uintptr) bool
	rbuf            []byte
	rn              uintptr
	rerr            syscall.Errno
	iov             []syscall.Iovec // Writev's, reused
	wn              int64
	werr            syscall.Errno
	// more: writeAll uses sendmsg(MSG_MORE) instead of writev (WritevMore).
	more bool
	msg  syscall.Msghdr

	// The poll of the next Read (SpinNextRead): its budget, the callers'
	// admission and report functions. Used by the reader only.
	spinFor  time.Duration
	spinTry  func() bool
	spinDone func(caught bool)

	// SendFile's function and its arguments.
	fileFn     func(fd uintptr) bool
	ffd        int
	foff, flen int64
	feof       bool
}

// iovMax is the most iovecs one writev takes (Linux UIO_MAXIOV).
const iovMax = 1024

// NewSock wraps nc.
func NewSock(nc net.Conn) *Sock {
	s := &Sock{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			s.rc = rc
		}
	}
	s.readFn, s.writeFn, s.fileFn = s.readOnce, s.writeAll, s.sendFileAll
	return s
}

// Read is io.Reader: one read(2) of at most len(p) bytes, waiting for data
// when there is none yet.
func (s *Sock) Read(p []byte) (int, error) {
	if s.rc == nil {
		return s.nc.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf = p
	err := s.rc.Read(s.readFn)
	s.rbuf = nil
	n, errno := s.rn, s.rerr
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: s.nc.LocalAddr(), Addr: s.nc.RemoteAddr(), Err: errno}
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// SpinNextRead makes the next Read that finds no data poll the socket for
// up to d (yielding the processor between polls) before it waits through
// the netpoller, if try, called then, admits it; done is told whether the
// poll caught data. A waiting goroutine is woken through the netpoller
// and its thread through the kernel, which on a virtual machine whose
// idle vCPU halts costs more than the wait itself at queue depth 1: the
// target arms this after answering a command when nothing else is in
// flight, when the host's next command is due within microseconds. The
// next Read consumes the arming whether it polls or not (data already
// there, or try refusing). Reader only; try and done run on the reader.
func (s *Sock) SpinNextRead(d time.Duration, try func() bool, done func(caught bool)) {
	s.spinFor, s.spinTry, s.spinDone = d, try, done
}

// readOnce is rc.Read's function: false (wait and call again) on EAGAIN.
// An armed Read that finds no data polls first; the arming is used up
// either way.
func (s *Sock) readOnce(fd uintptr) bool {
	d := s.spinFor
	s.spinFor = 0
	if s.readRaw(fd) {
		return true
	}
	if d <= 0 || !s.spinTry() {
		return false
	}
	caught := s.poll(fd, d)
	s.spinDone(caught)
	return caught
}

// readRaw is one read(2) into rbuf; false on EAGAIN.
func (s *Sock) readRaw(fd uintptr) bool {
	p := s.rbuf
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		s.rn, s.rerr = n, e
		if e != 0 {
			s.rn = 0
		}
		return e != syscall.EAGAIN
	}
}

// poll reads again until data (or an error or EOF) comes or d has
// passed; false if it never came. It yields the processor every
// pollYield tries, not at each: a yield with another P idle wakes a
// thread to take the poller's goroutine (a futex wake-up per yield).
func (s *Sock) poll(fd uintptr, d time.Duration) bool {
	start := time.Now()
	for i := 1; ; i++ {
		if i%pollYield == 0 {
			runtime.Gosched()
		}
		if s.readRaw(fd) {
			return true
		}
		if time.Since(start) >= d {
			return false
		}
	}
}

// pollYield: poll yields once per this many reads (about 10 us).
const pollYield = 32

// Writev writes every byte of bufs (writev(2), as many calls as it takes)
// and returns how many it wrote.
func (s *Sock) Writev(bufs [][]byte) (int64, error) {
	if s.rc == nil {
		b := net.Buffers(bufs)
		return b.WriteTo(s.nc)
	}
	iov := s.iov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			iov = append(iov, syscall.Iovec{Base: &b[0], Len: uint64(len(b))})
		}
	}
	s.iov, s.wn, s.werr = iov, 0, 0
	err := s.rc.Write(s.writeFn)
	clear(iov) // drop the references to the callers' buffers
	s.iov = iov[:0]
	if err == nil && s.werr != 0 {
		err = &net.OpError{Op: "write", Net: "tcp", Source: s.nc.LocalAddr(), Addr: s.nc.RemoteAddr(), Err: s.werr}
	}
	return s.wn, err
}

// writeAll is rc.Write's function: it writes s.iov until it is empty or
// the socket answers EAGAIN (false: wait and call again) or fails.
func (s *Sock) writeAll(fd uintptr) bool {
	iov := s.iov
	defer func() { s.iov = iov }()
	for len(iov) > 0 {
		var n uintptr
		var e syscall.Errno
		if s.more {
			s.msg.Iov, s.msg.Iovlen = &iov[0], uint64(min(len(iov), iovMax))
			n, _, e = syscall.RawSyscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.msg)), syscall.MSG_MORE)
			s.msg.Iov = nil
		} else {
			n, _, e = syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(min(len(iov), iovMax)))
		}
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			s.werr = e
			return true
		}
		s.wn += int64(n)
		for n > 0 {
			if uint64(n) < iov[0].Len {
				iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(iov[0].Base), n))
				iov[0].Len -= uint64(n)
				break
			}
			n -= uintptr(iov[0].Len)
			iov = iov[1:]
		}
	}
	return true
}

// WritevMore is Writev with MSG_MORE (sendmsg(2)): the kernel keeps the
// bytes back to go out with what is written next (the file data SendFile
// sends behind a Data-In header), instead of pushing a segment of its
// own. A connection that is not a syscall.Conn writes them as Writev.
func (s *Sock) WritevMore(bufs [][]byte) (int64, error) {
	s.more = true
	n, err := s.Writev(bufs)
	s.more = false
	return n, err
}

// CanSendFile reports whether SendFile sends from the file without a
// copy through user space (the connection is a real socket).
func (s *Sock) CanSendFile() bool { return s.rc != nil }

// SendFile sends n bytes of the file fd from offset off (sendfile(2): page
// cache pages go to the socket by reference), as many calls as it takes,
// waiting through the netpoller when the socket is full, so the write
// deadline and Close work as for Writev. The file's offset is not used.
// A file that ends before off+n is an error (io.ErrUnexpectedEOF), never
// a short send reported as success. Unlike Writev it uses syscall.Syscall,
// not RawSyscall: sendfile reads the file, and a page not in the cache
// blocks it on the disk, which must release the P. A connection that is
// not a syscall.Conn cannot (CanSendFile).
func (s *Sock) SendFile(fd int, off, n int64) (int64, error) {
	if s.rc == nil {
		return 0, errors.New("sendfile: not a socket")
	}
	s.ffd, s.foff, s.flen, s.feof, s.wn, s.werr = fd, off, n, false, 0, 0
	err := s.rc.Write(s.fileFn)
	switch {
	case err != nil:
	case s.werr != 0:
		err = &net.OpError{Op: "sendfile", Net: "tcp", Source: s.nc.LocalAddr(), Addr: s.nc.RemoteAddr(), Err: s.werr}
	case s.feof:
		err = fmt.Errorf("sendfile at %d: the file ends before %d: %w", s.foff, off+n, io.ErrUnexpectedEOF)
	}
	return s.wn, err
}

// sendFileAll is rc.Write's function for SendFile: false (wait and call
// again) on EAGAIN.
func (s *Sock) sendFileAll(fd uintptr) bool {
	for s.flen > 0 {
		// The kernel advances foff by what it sent.
		n, _, e := syscall.Syscall6(syscall.SYS_SENDFILE, fd, uintptr(s.ffd), uintptr(unsafe.Pointer(&s.foff)), uintptr(min(s.flen, 1<<30)), 0, 0)
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			s.werr = e
			return true
		}
		if n == 0 {
			s.feof = true
			return true
		}
		s.wn += int64(n)
		s.flen -= int64(n)
	}
	return true
}
