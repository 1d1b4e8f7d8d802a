package iscsi

import (
	"bytes"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// bufConn collects what the test initiator writes, so that several PDUs
// reach the target in one write (they arrive together, as a pipelining
// initiator's do).
type bufConn struct {
	net.Conn
	buf []byte
}

func (b *bufConn) Write(p []byte) (int, error) { b.buf = append(b.buf, p...); return len(p), nil }

// together runs send with i's writes collected, then writes them at once.
func together(t *testing.T, i *ini, send func()) {
	t.Helper()
	real := i.nc
	bc := &bufConn{Conn: real}
	i.nc = bc
	send()
	i.nc = real
	if _, err := real.Write(bc.buf); err != nil {
		t.Fatal(err)
	}
}

// onReader reports whether the calling goroutine is a connection's reader.
func onReader() bool {
	buf := make([]byte, 16<<10)
	return bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("(*conn).fullFeature"))
}

// countOnReader sets b's hook to count the WRITEs b executes and those of
// them that ran on a connection's reader; counts reads both.
func countOnReader(b *fileBackend) (counts func() (reader, writes int)) {
	var mu sync.Mutex
	reader, writes := 0, 0
	b.mu.Lock() // the server may be running
	b.hook = func(c *Command) {
		if c.CDB[0] != 0x2a {
			return
		}
		mu.Lock()
		writes++
		if onReader() {
			reader++
		}
		mu.Unlock()
	}
	b.mu.Unlock()
	return func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return reader, writes
	}
}

// Writes the backend calls quick run on the reader at queue depth, their
// responses held and sent before anything the reader answers after them
// (here a NOP-Out sent behind them), in StatSN order, with the data
// written.
func TestQuickWritesRunOnTheReaderAtDepth(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	b.quick.Store(true)
	counts := countOnReader(b)
	s := startServer(t, b, nil)
	s.rtcSlow = time.Hour // no back-off: every quick write stays inline
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})

	const n = 8
	data := make([]byte, n*4096)
	for k := range data {
		data[k] = byte(k/4096 + 1)
	}
	cmds := make([]*icmd, n)
	var nopITT uint32
	together(t, i, func() {
		for k := range cmds {
			cmds[k] = &icmd{cdb: write10(uint32(k*8), 8), edtl: 4096, out: data[k*4096 : (k+1)*4096]}
			if err := i.sendCmd(cmds[k]); err != nil {
				t.Fatal(err)
			}
		}
		var h [pdu.BHSLen]byte
		h[0] = pdu.OpNopOut | pdu.FlagImmed
		h[1] = pdu.FlagFinal
		nopITT = i.nextITT()
		pdu.Put32(h[16:], nopITT)
		pdu.Put32(h[20:], pdu.ReservedTag)
		pdu.Put32(h[24:], i.cmdSN)
		pdu.Put32(h[28:], i.expStatSN)
		if err := i.write(&h, nil); err != nil {
			t.Fatal(err)
		}
	})
	var statSN []uint32
	for got := 0; got < n; {
		p, err := i.read()
		if err != nil {
			t.Fatal(err)
		}
		switch p.h.Opcode() {
		case pdu.OpSCSIResp:
			if p.h.B[3] != 0 {
				t.Fatalf("write itt %#x: status %#x", p.h.ITT(), p.h.B[3])
			}
			statSN = append(statSN, p.h.U32(24))
			got++
		case pdu.OpNopIn:
			t.Fatalf("NOP-In before the responses of the writes sent ahead of the NOP-Out (%d of %d answered)", got, n)
		default:
			t.Fatalf("unexpected opcode %#x", p.h.Opcode())
		}
	}
	for k := 1; k < n; k++ {
		if statSN[k] != statSN[k-1]+1 {
			t.Fatalf("StatSN of the responses %v: not consecutive", statSN)
		}
	}
	p, err := i.read()
	if err != nil || p.h.Opcode() != pdu.OpNopIn || p.h.ITT() != nopITT {
		t.Fatalf("after the writes: %v opcode %#x, want the NOP-In", err, p.h.Opcode())
	}
	if reader, writes := counts(); writes != n || reader != n {
		t.Fatalf("%d of %d writes ran on the reader, want all (quick, no back-off)", reader, writes)
	}
	if b.quickAsked.Load() == 0 {
		t.Fatal("no write was run at depth (the nexus was never asked Quick)")
	}
	if got := i.readBlocks(0, n*8).in; !bytes.Equal(got, data) {
		t.Fatal("data read back differs from the pipelined writes")
	}
}

// A command that ran on the reader for longer than rtcSlow sends the next
// quick writes to the workers: two writes sent together then run at once
// (here the first waits inside Execute until the second is there too; on
// the reader it would wait for ever).
func TestSlowInlineCommandSendsWritesToWorkers(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	b.quick.Store(true)
	s := startServer(t, b, nil)
	s.rtcSlow = 0 // every inline command is slow
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	i.writeBlocks(0, make([]byte, 4096)) // alone: runs on the reader, slow

	hook, met := meeting(0x2a)
	b.mu.Lock() // the server is running
	b.hook = hook
	b.mu.Unlock()
	c1 := &icmd{cdb: write10(8, 8), edtl: 4096, out: make([]byte, 4096)}
	c2 := &icmd{cdb: write10(16, 8), edtl: 4096, out: make([]byte, 4096)}
	together(t, i, func() {
		for _, c := range []*icmd{c1, c2} {
			if err := i.sendCmd(c); err != nil {
				t.Fatal(err)
			}
		}
	})
	for got := 0; got < 2; got++ {
		p, err := i.expect(pdu.OpSCSIResp)
		if err != nil {
			t.Fatal(err)
		}
		if p.h.B[3] != 0 {
			t.Fatalf("status %#x", p.h.B[3])
		}
	}
	if n := met(); n != 2 {
		t.Fatalf("after a slow inline command, writes did not go to workers: %d of 2 saw the other inside Execute", n)
	}
}
