package iscsi

import (
	"bufio"
	"net"
	"sync"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// inPDU is one PDU received from the target; data is its own buffer.
type inPDU struct {
	h    pdu.Header
	data []byte
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

	wg sync.WaitGroup
}

func newConn(li *loggedIn) *conn {
	c := &conn{nc: li.nc, br: li.br, p: li.p, in: make(chan inPDU, 16), errc: make(chan error, 1),
		quit: make(chan struct{}), wsig: make(chan struct{}, 1)}
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
			p.data = make([]byte, n)
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
