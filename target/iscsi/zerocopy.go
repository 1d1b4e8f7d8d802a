package iscsi

import (
	"net"
	"sync/atomic"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// Zero-copy Data-In. A large READ served from a file is not read into a
// buffer and then written to the socket (two copies of every byte in the
// daemon: pread from the page cache, writev into socket buffers); the
// backend hands the transport a reference to the bytes in the file
// (Command.DataInFile: descriptor, offset, length, an owner to release)
// and the writer sends them with sendfile(2), which gives the page
// cache's pages to the socket by reference. Headers are still written by
// us (header digests work); a connection with DataDigest keeps the copy
// (the digest must cover exactly what is sent, and computing it reads
// every byte anyway), and so does a connection that is not a real socket.
//
// Memory: a zero-copy READ still reserves and takes its Data-In buffer
// from the budget before the backend runs (the backend may answer with
// a copy after all: a remote or wrapped volume, a LUN in a migration),
// but gives both back as soon as the backend answered with a file, before
// the send. The send is what a stalled initiator stretches (up to
// NopTimeout), and it holds no buffer: only a descriptor reference.
//
// Lifetime: the reference is released (Owner.Release) after the send
// returned, written or failed; the owner keeps the descriptor open until
// then (volume.File counts references; its Close does not wait for them).
// No lock is held across the send but the connection's write lock, as
// for every other write.
//
// Ordering and StatSN are those of every other PDU: a file PDU is one PDU
// of the batch, its header written in the same place of the stream.

// zeroCopyMin is the smallest READ sent with sendfile, chosen by
// measurement (docs/benchmarks.md "Zero-copy Data-In": same-run A/B of
// the daemon's CPU per READ against the copy, tmpfs LUN, qemu-img bench
// at depth 8, 256 KiB segments): sendfile cost more CPU than the copy at
// 64 KiB (+6 %), 128 KiB (+13 %), 256 KiB (+18 %) and 512 KiB (+7 %),
// and less from 1 MiB (-9 %) and 2 MiB (-21 %). Per READ it adds a
// fixed cost the copy does not have (a sendmsg for each header and a
// sendfile for each Data-In PDU instead of one writev per batch of
// responses, the page references the splice takes and the socket drops)
// and saves the two copies, which only pay for it from about 1 MiB.
const zeroCopyMin = 1 << 20

// zeroCopyMinSeg is the smallest negotiated data segment with which
// zero-copy is used: with smaller segments the two system calls per PDU
// cost more than copying a segment.
const zeroCopyMinSeg = 16 << 10

// FileData is Data-In held in a file (Command.DataInFile).
type FileData struct {
	Fd  int
	Off int64
	Len int64
	// Owner keeps Fd open until Release (an interface holding a
	// pointer: handing one out allocates nothing).
	Owner interface{ Release() }
}

// zeroCopyCounters count READs by how their Data-In was sent.
type zeroCopyCounters struct {
	sends     atomic.Uint64 // READs whose Data-In was offered to sendfile
	bytes     atomic.Uint64 // their Data-In bytes
	fallbacks atomic.Uint64 // FileOK offered, the backend answered with a copy
}

// ZeroCopyStats are the zero-copy Data-In counters of a Server.
type ZeroCopyStats struct {
	// Reads is the number of READs whose Data-In went with sendfile;
	// Bytes their Data-In bytes.
	Reads, Bytes uint64
	// Copied is the number of READs that could have gone with sendfile
	// but whose backend answered with a copy.
	Copied uint64
}

// ZeroCopyStats returns the zero-copy Data-In counters.
func (s *Server) ZeroCopyStats() ZeroCopyStats {
	z := &s.zc
	return ZeroCopyStats{Reads: z.sends.Load(), Bytes: z.bytes.Load(), Copied: z.fallbacks.Load()}
}

// fileOK reports whether t's Data-In may be sent from a file.
func (c *conn) fileOK(t *task) bool {
	return t.readLen >= zeroCopyMin && t.writeLen == 0 && !c.lim.DataDigest &&
		c.p.MaxXmitDSL >= zeroCopyMinSeg && c.srv.zeroCopy && c.sock.CanSendFile()
}

// fileDataIn returns the file t's backend answered with for its n bytes
// of Data-In, or nil when it filled DataIn (or answered nothing). A file
// answer the transport cannot take (not offered, not GOOD, shorter than
// n) is released and the command answered HARDWARE ERROR: a backend bug,
// but never data that is not there.
func (c *conn) fileDataIn(t *task, n int) *FileData {
	cmd := &t.cmd
	f := &cmd.DataInFile
	if f.Owner == nil {
		if cmd.FileOK && n > 0 {
			c.srv.zc.fallbacks.Add(1)
		}
		return nil
	}
	if !cmd.FileOK || cmd.Status != 0 || len(cmd.Sense) > 0 || n <= 0 || f.Len < int64(n) {
		f.Owner.Release()
		*f = FileData{}
		c.log.Error().Uint32("itt", t.itt).Msg("backend answered with a file Data-In the transport cannot send")
		cmd.Status = 0x02
		cmd.Sense = fixedSense(0x04, 0x44, 0x00) // HARDWARE ERROR, INTERNAL TARGET FAILURE
		cmd.DataInLen = 0
		return nil
	}
	c.srv.zc.sends.Add(1)
	c.srv.zc.bytes.Add(uint64(n))
	return f
}

// sendFilePDU writes iov (everything before p's data, p's header last)
// with MSG_MORE, so it leaves with the data, then p's data with sendfile;
// it returns iov emptied, holding p's pad if any. wmu held.
func (c *conn) sendFilePDU(iov net.Buffers, p *outPDU) (net.Buffers, error) {
	if _, err := c.sock.WritevMore(iov); err != nil {
		return iov, err
	}
	clear(iov)
	iov = iov[:0]
	if _, err := c.sock.SendFile(int(p.fd), p.foff, int64(p.flen)); err != nil {
		return iov, err
	}
	if pad := pdu.PadLen(p.flen); pad > 0 {
		iov = append(iov, zeroPad[:pad])
	}
	return iov, nil
}
