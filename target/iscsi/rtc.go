package iscsi

import (
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// Run-to-completion at depth. A command alone on its connection runs on
// the reader goroutine (command.go, run). With others in flight, a small
// WRITE that the backend serves from memory (QuickNexus: a local file's
// page cache) runs on the reader too, and its response is held back
// (conn.held) until the reader has nothing more buffered: then every held
// response goes out in one send. Measured on 4 KiB writes at queue depth
// 32 (tmpfs LUN, 2 cores): one goroutine hand-off and one wake-up less per
// command, and responses batched by what the initiator sent together.
//
// Why only writes: a buffered write completes in the page cache; a
// buffered read waits for the device whenever its blocks are not cached,
// and a reader busy with one read would hold up every other command of
// the connection (a disk's parallelism lost). Reads keep the workers.
// A write may still wait (dirty page throttling, a partial page to read
// in, the journal): a command that ran on the reader for longer than
// Server.rtcSlow turns this off for the connection's next rtcBackoff
// commands, so a slow volume costs one serialised command in rtcBackoff.

const (
	// rtcMax: larger writes go to workers (their copy is worth a core of
	// its own, as yieldMax says for batching).
	rtcMax = yieldMax
	// rtcSlowDefault (Server.rtcSlow): an inline command that took longer
	// waited for something.
	rtcSlowDefault = 100 * time.Microsecond
	// rtcBackoff: commands sent to workers after a slow inline write.
	rtcBackoff = 256
	// heldMax bounds the responses held at once.
	heldMax = 64
)

// QuickNexus is an optional Nexus extension. Quick reports whether a
// buffered WRITE of lun completes in memory, without waiting for a
// device or the network (a local file's page cache; not a remote LUN, an
// RBD image, O_DIRECT, or a LUN being migrated, whose writes go to two
// volumes). Called on the reader for each candidate command: it must be
// cheap and never block.
type QuickNexus interface {
	Quick(lun uint64) bool
}

// quickWrite reports whether t runs on the reader at depth. Reader only.
func (c *conn) quickWrite(t *task) bool {
	if !isWrite(t.cdb[0]) || t.writeLen > rtcMax || t.readLen > 0 || fuaBit(t.cdb[:]) {
		return false
	}
	if c.rtcOff > 0 {
		c.rtcOff--
		return false
	}
	q, ok := c.nexus.(QuickNexus)
	return ok && q.Quick(t.lun)
}

// isWrite reports WRITE (6/10/12/16).
func isWrite(op byte) bool {
	switch op {
	case 0x0a, 0x2a, 0xaa, 0x8a:
		return true
	}
	return false
}

// fuaBit reports a WRITE(10/12/16) with Force Unit Access: it syncs.
func fuaBit(cdb []byte) bool {
	return cdb[0] != 0x0a && cdb[1]&0x08 != 0
}

// runInline runs t on the reader; held: its response is held for the
// batch. Reader only.
func (c *conn) runInline(t *task, held bool) {
	start := time.Now()
	t.hold = held // complete owns t from now on: set before
	c.complete(t, true)
	if time.Since(start) > c.srv.rtcSlow {
		c.rtcOff = rtcBackoff
	}
}

// hold keeps the PDUs of a response until flushHeld. Reader only.
func (c *conn) hold(pdus []outPDU) {
	c.held = append(c.held, pdus...)
}

// flushDue reports whether the held responses must go now, before the
// reader reads on: nothing more is buffered (the read could block), the
// next PDU is not a SCSI command or Data-Out (a TMF, NOP, logout or text
// request must see every earlier response sent), its data is not all
// buffered, or enough are held.
func (c *conn) flushDue(h *header) bool {
	if len(c.held) == 0 {
		return false
	}
	if h == nil {
		return c.br.Buffered() < pdu.BHSLen || len(c.held) >= heldMax
	}
	op := h.Opcode()
	return op != pdu.OpSCSICmd && op != pdu.OpDataOut || c.br.Buffered() < int(h.DataLen())
}

// flushHeld sends the held responses in one send. Reader only.
func (c *conn) flushHeld() error {
	if len(c.held) == 0 {
		return nil
	}
	err := c.send(c.held...)
	clear(c.held) // drop references to sense data
	c.held = c.held[:0]
	return err
}
