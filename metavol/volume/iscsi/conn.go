package iscsi

import (
	"bufio"
	"net"
	"sync"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// inPDU is one PDU received from the target; data is its own buffer.
// pooled: data comes from the session's Data-In pool, and the owner gives
// it back (releaseData) once it has copied it into the task's buffer.
type inPDU struct {
	h      pdu.Header
	data   []byte
	pooled *[]byte
}

// conn is one TCP connection in the full feature phase. It owns two
// goroutines: the reader (PDUs -> in) and the writer (queue -> socket). The
// session's owner goroutine is their only user; it stops them with stop,
// which waits for both.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader
	p    Params
	in   chan inPDU    // reader -> owner
	errc chan error    // first reader/writer failure (cap 1)
	quit chan struct{} // closed by stop

	wmu  sync.Mutex
	wq   net.Buffers   // guarded by wmu: buffers waiting for the writer
	wsig chan struct{} // cap 1: the writer has work

	// dataIn recycles the segment buffers of Data-In PDUs (the bulk of
	// what a session receives): a 1 MiB read no longer allocates and
	// zeroes four fresh 256 KiB buffers. Shared with the owner, which puts
	// a buffer back once it has copied it out; nothing else keeps one.
	dataIn *sync.Pool

	wg sync.WaitGroup
}

func newConn(li *loggedIn, dataIn *sync.Pool) *conn {
	c := &conn{nc: li.nc, br: li.br, p: li.p, in: make(chan inPDU, 16), errc: make(chan error, 1),
		quit: make(chan struct{}), wsig: make(chan struct{}, 1), dataIn: dataIn}
	c.wg.Add(2)
	go c.reader()
	go c.writer()
	return c
}

func (c *conn) fail(err error) {
	select {
	case c.errc <- err:
	default:
	}
}

// reader reads PDUs and hands them to the owner. Segments are bounded by the
// MaxRecvDataSegmentLength we declared; at most cap(in)+1 are buffered.
func (c *conn) reader() {
	defer c.wg.Done()
	lim := pdu.Limits{HeaderDigest: c.p.HeaderDigest, DataDigest: c.p.DataDigest, MaxData: max(c.p.OurMRDSL, 8192)}
	for {
		var p inPDU
		if err := pdu.ReadHeader(c.br, &p.h, lim); err != nil {
			c.fail(err)
			return
		}
		if n := p.h.DataLen(); n > 0 {
			if p.h.Opcode() == pdu.OpDataIn {
				p.pooled = c.dataBuf(int(n))
				p.data = (*p.pooled)[:n]
			} else {
				p.data = make([]byte, n)
			}
			if err := pdu.ReadData(c.br, p.data, c.p.DataDigest); err != nil {
				c.fail(err)
				return
			}
		}
		select {
		case c.in <- p:
		case <-c.quit:
			return
		}
	}
}

// dataBuf returns a buffer of at least n bytes from the Data-In pool.
func (c *conn) dataBuf(n int) *[]byte {
	if b, ok := c.dataIn.Get().(*[]byte); ok && cap(*b) >= n {
		return b
	}
	b := make([]byte, max(n, int(c.p.OurMRDSL)))
	return &b
}

// releaseData gives a Data-In segment buffer back to the pool. The owner
// calls it after the PDU is handled; p.data must not be used after.
func (c *conn) releaseData(p *inPDU) {
	if p.pooled != nil {
		c.dataIn.Put(p.pooled)
		p.pooled, p.data = nil, nil
	}
}

// writer writes queued buffers with writev until stopped or failed.
func (c *conn) writer() {
	defer c.wg.Done()
	for {
		select {
		case <-c.wsig:
		case <-c.quit:
			return
		}
		c.wmu.Lock()
		bufs := c.wq
		c.wq = nil
		c.wmu.Unlock()
		if _, err := bufs.WriteTo(c.nc); err != nil {
			c.fail(err)
			return
		}
	}
}

// send queues one PDU; it never blocks. data is not copied: the caller
// keeps it unchanged until the command completes (the owner guarantees it
// by stopping the connection before it completes a command with an error).
func (c *conn) send(b *[pdu.BHSLen]byte, data []byte) {
	bufs := encodePDU(b, data, c.p.HeaderDigest, c.p.DataDigest)
	c.wmu.Lock()
	c.wq = append(c.wq, bufs...)
	c.wmu.Unlock()
	select {
	case c.wsig <- struct{}{}:
	default:
	}
}

// stop closes the socket and waits for the reader and writer to exit.
func (c *conn) stop() {
	close(c.quit)
	c.nc.Close()
	c.wg.Wait()
}
