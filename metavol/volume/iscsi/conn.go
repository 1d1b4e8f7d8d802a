package iscsi

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// conn is one TCP connection in the full feature phase. It owns two
// goroutines: the reader (PDUs from the target, handled in place: Data-In
// straight into the caller's buffer, commands completed directly) and the
// writer (flushes what the reader or the owner queued). A caller that
// queued a command writes it itself when no write is under way (flush), so
// a command usually reaches the socket without a goroutine hand-off, and
// PDUs queued together go out in one writev. The owner starts the
// goroutines (start) and stops them (stop), which also waits for a
// caller's write in progress.
type conn struct {
	cl   *Client
	nc   net.Conn
	sock *pdu.Sock // the hot path's reads (through br) and writes
	br   *bufio.Reader
	p    Params
	errc chan error    // first reader/writer failure (cap 1)
	quit chan struct{} // closed by stop

	// heard: a PDU came since the owner last looked (NOP interval).
	heard atomic.Bool
	tail  pdu.Tail // the reader's: padding and digest of a segment

	wmu     sync.Mutex
	wq      *wbatch   // guarded by wmu: PDUs waiting to be written
	spare   *wbatch   // guarded by wmu: the other batch, while not being written
	writing bool      // guarded by wmu: a flush is under way (a caller's or the writer's)
	kicked  bool      // guarded by wmu: the writer goroutine was asked to flush
	dead    bool      // guarded by wmu: a write failed or stop began; queue nothing more
	wdone   sync.Cond // on wmu: writing went false (stop waits for it)
	wsig    chan struct{}

	wg sync.WaitGroup
}

// wbatch is PDUs queued for one writev: the headers (and pad/digest tails)
// live in arena, the data segments are callers' buffers, referenced.
type wbatch struct {
	arena []byte
	bufs  net.Buffers
}

func newConn(li *loggedIn, cl *Client) *conn {
	if tc, ok := li.nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true) // Go's default, stated: a PDU must not wait for an ACK
	}
	c := &conn{cl: cl, nc: li.nc, sock: li.sock, br: li.br, p: li.p, errc: make(chan error, 1),
		quit: make(chan struct{}), wsig: make(chan struct{}, 1),
		wq:    &wbatch{arena: make([]byte, 0, 4096)},
		spare: &wbatch{arena: make([]byte, 0, 4096)}}
	c.wdone.L = &c.wmu
	return c
}

// start runs the reader and the writer.
func (c *conn) start() {
	c.wg.Add(2)
	go c.reader()
	go c.writer()
}

func (c *conn) fail(err error) {
	select {
	case c.errc <- err:
	default:
	}
}

// reader reads PDUs and handles them. A Data-In segment is read straight
// into its command's buffer: the command is in flight on this connection,
// and only this goroutine completes or requeues a command in flight while
// the connection lives (the owner stops the reader before it touches
// them), so the buffer is the caller's until the status is handled here.
// Segments are bounded by the MaxRecvDataSegmentLength we declared.
func (c *conn) reader() {
	defer c.wg.Done()
	cl := c.cl
	lim := pdu.Limits{HeaderDigest: c.p.HeaderDigest, DataDigest: c.p.DataDigest, MaxData: max(c.p.OurMRDSL, 8192)}
	var h pdu.Header
	for {
		if err := pdu.ReadHeader(c.br, &h, lim); err != nil {
			c.fail(err)
			return
		}
		if !c.heard.Load() {
			c.heard.Store(true)
		}
		var data []byte
		if h.Opcode() == pdu.OpDataIn {
			cl.mu.Lock()
			cl.seqLocked(&h)
			t, err := cl.dataInTargetLocked(&h)
			cl.mu.Unlock()
			if err != nil {
				c.fail(err)
				return
			}
			n := h.DataLen()
			if t == nil {
				err = pdu.DiscardData(c.br, n, c.p.DataDigest)
			} else {
				off := h.BufferOffset()
				err = pdu.ReadDataTail(c.br, t.data[off:off+n], c.p.DataDigest, &c.tail)
			}
			if err != nil {
				c.fail(err)
				return
			}
			if h.Flags()&0x01 == 0 { // no status: nothing else to do
				continue
			}
		} else if n := h.DataLen(); n > 0 {
			data = make([]byte, n) // rare: sense data, NOP-In echo, reject
			if err := pdu.ReadData(c.br, data, c.p.DataDigest); err != nil {
				c.fail(err)
				return
			}
		}
		cl.mu.Lock()
		if h.Opcode() != pdu.OpDataIn {
			cl.seqLocked(&h)
		}
		err := cl.handleLocked(c, &h, data)
		// only R2T (Data-Out), a target's ping (our answer) and commands
		// issued from the queue leave PDUs to write: a plain completion
		// does not touch the write side
		kick := h.Opcode() == pdu.OpR2T || h.Opcode() == pdu.OpNopIn
		if err == nil && cl.issueLocked() != nil {
			kick = true
		}
		cl.mu.Unlock()
		if err != nil {
			c.fail(err)
			return
		}
		if kick {
			c.kick()
		}
	}
}

// writer flushes the queue when kicked, until stopped.
func (c *conn) writer() {
	defer c.wg.Done()
	for {
		select {
		case <-c.wsig:
		case <-c.quit:
			c.wmu.Lock()
			if c.kicked {
				c.kicked, c.writing = false, false
				c.wdone.Broadcast()
			}
			c.wmu.Unlock()
			return
		}
		c.wmu.Lock()
		c.kicked = false
		c.writeLoop()
		c.wmu.Unlock()
	}
}

// writeLoop writes batches until the queue is empty; wmu is held on entry
// and exit (not during the write) and writing is true on entry.
func (c *conn) writeLoop() {
	for !c.dead && len(c.wq.bufs) > 0 {
		out := c.wq
		c.wq, c.spare = c.spare, nil
		c.wmu.Unlock()
		_, err := c.sock.Writev(out.bufs)
		clear(out.bufs) // drop the references to callers' buffers
		out.bufs, out.arena = out.bufs[:0], out.arena[:0]
		c.wmu.Lock()
		c.spare = out
		if err != nil {
			c.dead = true
			c.fail(err)
		}
	}
	if c.dead {
		clear(c.wq.bufs)
		c.wq.bufs, c.wq.arena = c.wq.bufs[:0], c.wq.arena[:0]
	}
	c.writing = false
	c.wdone.Broadcast()
}

// queue appends one PDU to the write queue; it never blocks or writes.
// data is not copied: it stays unchanged until the command completes (the
// owner stops the connection, which waits for every write, before it
// completes a command with an error). Callers hold Client.mu (the order
// is Client.mu, then wmu).
func (c *conn) queue(b *[pdu.BHSLen]byte, data []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.dead {
		return
	}
	w := c.wq
	start := len(w.arena)
	w.arena = append(w.arena, b[:]...)
	// the length and digest are set on the arena's copy: b stays on the
	// caller's stack (passed to the CRC it would escape)
	hb := (*[pdu.BHSLen]byte)(w.arena[start:])
	pdu.SetDataLen(hb, uint32(len(data)))
	if c.p.HeaderDigest {
		w.arena = appendLE32(w.arena, pdu.CRC32C(hb[:]))
	}
	head := w.arena[start:len(w.arena):len(w.arena)]
	if len(data) == 0 {
		w.bufs = append(w.bufs, head)
		return
	}
	pad := pdu.PadLen(uint32(len(data)))
	if !c.p.DataDigest && pad == 0 {
		w.bufs = append(w.bufs, head, data)
		return
	}
	start = len(w.arena)
	var zeros [3]byte
	w.arena = append(w.arena, zeros[:pad]...)
	if c.p.DataDigest {
		w.arena = appendLE32(w.arena, pdu.CRC32CUpdate(pdu.CRC32C(data), w.arena[start:start+int(pad)]))
	}
	w.bufs = append(w.bufs, head, data, w.arena[start:len(w.arena):len(w.arena)])
}

// flush writes the queue from the calling goroutine unless a write is
// already under way (then that one writes what we queued).
func (c *conn) flush() {
	c.wmu.Lock()
	if !c.writing && !c.dead && len(c.wq.bufs) > 0 {
		c.writing = true
		c.writeLoop()
	}
	c.wmu.Unlock()
}

// kick has the writer goroutine flush the queue unless a write is already
// under way. The reader and the owner use it: they must not block on the
// socket (the reader would stop reading while the target waits for us to).
func (c *conn) kick() {
	c.wmu.Lock()
	if c.writing || c.dead || len(c.wq.bufs) == 0 {
		c.wmu.Unlock()
		return
	}
	c.writing, c.kicked = true, true
	c.wmu.Unlock()
	select {
	case c.wsig <- struct{}{}:
	default:
	}
}

// stop closes the socket and waits for the reader, the writer and any
// caller's write in progress to finish.
func (c *conn) stop() {
	close(c.quit)
	c.nc.Close()
	c.wg.Wait()
	c.wmu.Lock()
	c.dead = true
	for c.writing {
		c.wdone.Wait()
	}
	c.wmu.Unlock()
}
