package iscsi

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// TestGarbageIsolated sends garbage, half PDUs and protocol violations on
// many connections while another session does I/O; that session must never
// notice and the server must keep accepting logins.
func TestGarbageIsolated(t *testing.T) {
	b := newFileBackend(t, 4<<20)
	s := startServer(t, b, func(o *Options) { o.LoginTimeout = 300 * time.Millisecond })
	addr := addrOf(s)

	good := dialIni(t, addr)
	good.mustLogin(loginOpts{isid: [6]byte{0x80, 9, 9, 9, 9, 9}})
	data := pattern(64<<10, 42)
	good.writeBlocks(0, data)

	stop := make(chan struct{})
	var ioErr atomic.Value
	var ios atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c := &icmd{cdb: read10(0, 128), read: true, edtl: 64 << 10}
			if err := good.run(c); err != nil {
				ioErr.Store(err)
				return
			}
			if c.status != 0 || !bytes.Equal(c.in, data) {
				ioErr.Store(io.ErrUnexpectedEOF)
				return
			}
			ios.Add(1)
		}
	}()

	raw := func(name string, payload []byte, expectClose bool) {
		t.Helper()
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write(payload)
		if expectClose {
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			// A reset is a close too (the kernel sends one when the
			// target closes with bytes it did not read).
			if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%s: connection not closed by the target: %v", name, err)
			}
		}
	}
	var bhs [pdu.BHSLen]byte
	raw("random bytes", pattern(4096, 7), true)
	raw("half a BHS, then silence", pattern(20, 8), true)
	bhs[0] = pdu.OpLoginReq | pdu.FlagImmed
	pdu.SetDataLen(&bhs, 0xffffff)
	raw("login with an absurd data length", bhs[:], true)
	bhs = [pdu.BHSLen]byte{}
	bhs[0] = pdu.OpSCSICmd
	raw("SCSI command before login", bhs[:], true)
	raw("nothing at all", nil, true)

	// Violations after a valid login.
	after := func(name string, payload []byte, wantReject bool) {
		t.Helper()
		i := dialIni(t, addr)
		i.mustLogin(loginOpts{})
		i.nc.Write(payload)
		if wantReject {
			p, err := i.expect(pdu.OpReject)
			if err != nil {
				t.Errorf("%s: no Reject: %v", name, err)
				return
			}
			// still usable after a Reject
			i.readBlocks(0, 1)
			_ = p
			return
		}
		i.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, err := i.read(); err != nil {
				break
			}
		}
	}
	mk := func(op byte, dl uint32, ahsWords byte) []byte {
		var h [pdu.BHSLen]byte
		h[0] = op
		h[1] = pdu.FlagFinal
		h[4] = ahsWords
		pdu.SetDataLen(&h, dl)
		pdu.Put32(h[16:], 0x777)
		return h[:]
	}
	after("unknown opcode", mk(0x1f|pdu.FlagImmed, 0, 0), true)
	after("SNACK at ERL 0", mk(pdu.OpSNACKReq, 0, 0), true)
	after("Data-Out for no task", append(mk(pdu.OpDataOut, 8, 0), make([]byte, 8)...), false)
	after("segment over MaxRecvDataSegmentLength", mk(pdu.OpNopOut|pdu.FlagImmed, 1<<23, 0), false)
	after("truncated header", mk(pdu.OpSCSICmd, 0, 0)[:33], false)
	after("bad AHS", append(mk(pdu.OpSCSICmd|pdu.FlagImmed, 0, 2), 0, 99, 1, 0, 0, 0, 0, 0), true)
	after("immediate data without W bit", append(mk(pdu.OpSCSICmd|pdu.FlagImmed, 4, 0), 1, 2, 3, 4), true)
	after("login during full feature phase", mk(pdu.OpLoginReq|pdu.FlagImmed, 0, 0), true)

	// A login that never completes is dropped after LoginTimeout.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Errorf("idle login not dropped: %v", err)
	}
	nc.Close()

	waitFor(t, "I/O on the good session", 10*time.Second, func() bool { return ios.Load() > 5 || ioErr.Load() != nil })
	close(stop)
	wg.Wait()
	if err := ioErr.Load(); err != nil {
		t.Fatalf("the good session broke: %v", err)
	}
	good.readBlocks(0, 1)
	fresh := dialIni(t, addr)
	fresh.mustLogin(loginOpts{})
	fresh.readBlocks(0, 1)
	waitFor(t, "garbage sessions released", 5*time.Second, func() bool { return s.sessionCount() == 2 })
}

// TestMaxConnections (found by the attack pass on issue 7): connections
// were not bounded, so an outsider opening enough of them (half logins
// cycled every LoginTimeout, or idle discovery sessions) took every file
// descriptor: the admin API's and the portal's accepts failed with EMFILE
// and the meta volume could not open a file. Past MaxConnections a new
// connection is closed at once; one that ends makes room.
func TestMaxConnections(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, func(o *Options) { o.MaxConnections = 3 })
	var idle []net.Conn
	for k := 0; k < 3; k++ {
		nc, err := net.Dial("tcp", addrOf(s))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		idle = append(idle, nc)
	}
	count := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.mu.conns)
	}
	waitFor(t, "3 connections served", 10*time.Second, func() bool { return count() == 3 })
	extra, err := net.Dial("tcp", addrOf(s))
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second)) // under LoginTimeout (15s)
	if n, err := extra.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection past MaxConnections: read %d bytes, %v; want it closed", n, err)
	}
	if n := count(); n != 3 {
		t.Fatalf("%d connections served, want 3", n)
	}
	idle[0].Close()
	waitFor(t, "the closed connection to end", 10*time.Second, func() bool { return count() == 2 })
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	i.readBlocks(0, 1)
}
