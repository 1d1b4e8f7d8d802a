package iscsi

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// connOf returns the server side of initiator i's connection.
func connOf(t *testing.T, s *Server, i *ini) *conn {
	t.Helper()
	local := i.nc.LocalAddr().String()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.mu.conns {
		if c.remote == local {
			return c
		}
	}
	t.Fatalf("no server connection for %s", local)
	return nil
}

// taskCount is the number of tasks the connection has dispatched and not
// yet finished.
func (c *conn) taskCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.mu.tasks)
}

func (b *writeBudget) heldBy(c *conn) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.held[c]
}

// floodWrites sends n WRITEs of size bytes with no data at all, ignoring
// MaxCmdSN, then an immediate NOP-Out: once its NOP-In is back the target
// has read every command. It returns the commands.
func floodWrites(t *testing.T, i *ini, n int, size uint32) []*icmd {
	t.Helper()
	var cmds []*icmd
	for k := 0; k < n; k++ {
		c := &icmd{cdb: write10(uint32(k)*(size/512), uint16(size/512)), edtl: size, noImm: true}
		if err := i.sendCmd(c); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	if err := i.nopSkipping(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// nopSkipping pings the target and waits for the answer, setting aside
// the R2Ts that arrive meanwhile in i.r2ts.
func (i *ini) nopSkipping() error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpNopOut | pdu.FlagImmed
	b[1] = pdu.FlagFinal
	itt := i.nextITT()
	pdu.Put32(b[16:], itt)
	pdu.Put32(b[20:], pdu.ReservedTag)
	pdu.Put32(b[24:], i.cmdSN)
	pdu.Put32(b[28:], i.expStatSN)
	if err := i.write(&b, nil); err != nil {
		return err
	}
	for {
		p, err := i.read()
		if err != nil {
			return err
		}
		switch {
		case p.h.Opcode() == pdu.OpNopIn && p.h.ITT() == itt:
			return nil
		case p.h.Opcode() == pdu.OpNopIn:
			if err := i.answerNop(p); err != nil {
				return err
			}
		case p.h.Opcode() == pdu.OpR2T:
			i.r2ts = append(i.r2ts, p)
		default:
			i.other = append(i.other, p)
		}
	}
}

// TestWriteFloodBounded floods sessions with unfinished large writes (no
// Data-Out ever sent) and checks the CmdSN window and the write buffer
// cap: commands beyond MaxCmdSN are not dispatched, reserved bytes never
// pass the cap nor a session its share, parked writes get no R2T, a write
// with unsolicited data gets TASK SET FULL when there is no space,
// immediate commands are bounded, and space freed by one session goes to
// the waiters of another (no deadlock).
func TestWriteFloodBounded(t *testing.T) {
	const (
		size  = 1 << 20
		limit = 4 << 20
		depth = 16
	)
	b := newFileBackend(t, 64<<20)
	s := startServer(t, b, func(o *Options) {
		o.QueueDepth = depth
		o.MaxTransferLength = size
		o.MaxWriteBuffer = limit
		o.NopInterval = -1
	})
	if st := s.budget.stats(); st.PerSession != limit/2 {
		t.Fatalf("per-session share %d, want %d", st.PerSession, limit/2)
	}
	keys := []kv{{Key: "InitialR2T", Value: "Yes"}, {Key: "ImmediateData", Value: "Yes"}, {Key: "MaxOutstandingR2T", Value: "1"}, {Key: "MaxBurstLength", Value: "1048576"}}

	a := dialIni(t, addrOf(s))
	a.mustLogin(loginOpts{keys: keys, isid: [6]byte{0x80, 0, 0, 0, 0, 1}})
	if w := a.maxCmdSN - a.cmdSN + 1; w != depth {
		t.Fatalf("window %d, want %d", w, depth)
	}
	cmdsA := floodWrites(t, a, 40, size)
	ca := connOf(t, s, a)
	if n := ca.taskCount(); n != depth {
		t.Fatalf("session A has %d commands dispatched, want %d (the window): commands beyond MaxCmdSN must be ignored", n, depth)
	}
	st := s.budget.stats()
	if st.Used != limit/2 || s.budget.heldBy(ca) != limit/2 || st.Waiting != depth-2 {
		t.Fatalf("after session A's flood: %+v, A holds %d; want A holding its share %d and %d waiting", st, s.budget.heldBy(ca), limit/2, depth-2)
	}
	// Exactly the two granted writes were asked for data.
	waitR2Ts := func(i *ini, n int) {
		t.Helper()
		for len(i.r2ts) < n {
			if err := i.nopSkipping(); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitR2Ts(a, 2)
	if len(a.r2ts) != 2 || len(a.other) != 0 {
		t.Fatalf("session A got %d R2Ts and %d other PDUs, want 2 R2Ts", len(a.r2ts), len(a.other))
	}

	bb := dialIni(t, addrOf(s))
	bb.mustLogin(loginOpts{keys: keys, isid: [6]byte{0x80, 0, 0, 0, 0, 2}})
	floodWrites(t, bb, depth, size)
	waitR2Ts(bb, 2)
	if st := s.budget.stats(); st.Used != limit || st.Waiting != 2*(depth-2) {
		t.Fatalf("after session B's flood: %+v", st)
	}

	// Session C: a write carrying immediate data has nowhere to go.
	cc := dialIni(t, addrOf(s))
	cc.mustLogin(loginOpts{keys: keys, isid: [6]byte{0x80, 0, 0, 0, 0, 3}})
	full := &icmd{cdb: write10(0, 8), edtl: 4096, out: bytes.Repeat([]byte{'c'}, 4096)}
	if err := cc.run(full); err != nil {
		t.Fatal(err)
	}
	if full.status != 0x28 {
		t.Fatalf("write with immediate data and no buffer space: status %#x, want TASK SET FULL", full.status)
	}
	// Nor is there room for a READ's Data-In.
	rd := &icmd{cdb: read10(0, 8), read: true, edtl: 4096}
	if err := cc.run(rd); err != nil {
		t.Fatal(err)
	}
	if rd.status != 0x28 || len(rd.in) != 0 {
		t.Fatalf("read with no buffer space: status %#x, %d bytes, want TASK SET FULL", rd.status, len(rd.in))
	}
	// Immediate commands are bounded: maxImmediate park, the next is rejected.
	for k := 0; k <= maxImmediate; k++ {
		c := &icmd{cdb: write10(uint32(k), 1), edtl: 512, noImm: true}
		c.itt = cc.nextITT()
		var h [pdu.BHSLen]byte
		h[0] = pdu.OpSCSICmd | pdu.FlagImmed
		h[1] = pdu.FlagFinal | pdu.FlagWrite | 1
		pdu.Put32(h[16:], c.itt)
		pdu.Put32(h[20:], c.edtl)
		pdu.Put32(h[24:], cc.cmdSN)
		copy(h[32:], c.cdb)
		if err := cc.write(&h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := cc.expect(pdu.OpReject); err != nil || p.h.B[2] != pdu.RejectImmediateCmd {
		t.Fatalf("immediate command over the bound: %v (%+v)", err, p)
	}
	ccConn := connOf(t, s, cc)
	if n := ccConn.taskCount(); n != maxImmediate {
		t.Fatalf("session C has %d immediate commands, want %d", n, maxImmediate)
	}

	// A finishes one granted write: its space goes to A's next waiter.
	r := a.r2ts[0]
	a.r2ts = a.r2ts[1:]
	var first *icmd
	var firstOff int64
	for k, c := range cmdsA {
		if c.itt == r.h.ITT() {
			first, firstOff = c, int64(k)*size
		}
	}
	if first == nil {
		t.Fatalf("R2T for unknown itt %#x", r.h.ITT())
	}
	first.out = bytes.Repeat([]byte{'a'}, size)
	for sent, sn := uint32(0), uint32(0); sent < r.h.U32(44); sn++ {
		n := min(r.h.U32(44)-sent, a.targetMRDSL)
		if err := a.dataOut(first, r.h.TTT(), sn, r.h.U32(40)+sent, n, sent+n == r.h.U32(44)); err != nil {
			t.Fatal(err)
		}
		sent += n
	}
	for {
		p, err := a.read()
		if err != nil {
			t.Fatal(err)
		}
		if p.h.Opcode() == pdu.OpR2T {
			a.r2ts = append(a.r2ts, p)
			continue
		}
		if p.h.Opcode() != pdu.OpSCSIResp || p.h.ITT() != first.itt || p.h.B[3] != 0 {
			t.Fatalf("want GOOD for itt %#x, got opcode %#x itt %#x status %#x", first.itt, p.h.Opcode(), p.h.ITT(), p.h.B[3])
		}
		break
	}
	waitR2Ts(a, 2) // the next parked write of A was granted
	if got := fileBytes(t, b, firstOff, size); !bytes.Equal(got, first.out) {
		t.Fatal("granted write did not reach the file")
	}

	// A goes away: what it held goes to C's parked writes (B is at its share).
	a.nc.Close()
	waitFor(t, "C's parked writes to be granted", 10*time.Second, func() bool {
		return s.budget.heldBy(ccConn) == maxImmediate*512
	})
	waitR2Ts(cc, maxImmediate)
	rd = &icmd{cdb: read10(0, 8), read: true, edtl: 4096}
	if err := cc.run(rd); err != nil {
		t.Fatal(err)
	}
	if rd.status != 0 || len(rd.in) != 4096 {
		t.Fatalf("read once there is room: status %#x, %d bytes", rd.status, len(rd.in))
	}
	st = s.budget.stats()
	if st.Peak > limit || st.Used > limit {
		t.Fatalf("write buffer reservations %+v passed the cap %d", st, limit)
	}
}

// TestStalledReaderDropped (found by the attack pass on issue 7): two
// sessions sending READs and never reading their socket kept their
// Data-In buffers reserved forever (the send blocked, and the pinger
// behind it on the write lock), so every other session's READ got TASK
// SET FULL until they went away. A send that cannot finish within
// NopTimeout now drops the connection and frees its buffers.
func TestStalledReaderDropped(t *testing.T) {
	const (
		size  = 1 << 20
		limit = 4 << 20
	)
	b := newFileBackend(t, 64<<20)
	s := startServer(t, b, func(o *Options) {
		o.QueueDepth = 16
		o.MaxTransferLength = size
		o.MaxWriteBuffer = limit
		o.NopInterval = 200 * time.Millisecond
		o.NopTimeout = time.Second
	})
	var stalled []*conn
	for k := byte(1); k <= 2; k++ {
		i := dialIni(t, addrOf(s))
		i.mustLogin(loginOpts{isid: [6]byte{0x80, 0, 0, 0, 0, k}})
		c := connOf(t, s, i)
		stalled = append(stalled, c)
		// Small socket buffers on both ends, so that 1 MiB of Data-In
		// cannot hide in the kernel.
		i.nc.(*net.TCPConn).SetReadBuffer(4096)
		c.nc.(*net.TCPConn).SetWriteBuffer(4096)
		for n := 0; n < 16; n++ {
			c := &icmd{cdb: read10(uint32(n)*(size/512), size/512), read: true, edtl: size}
			if err := i.sendCmd(c); err != nil {
				t.Fatal(err)
			}
		}
		// i never reads again.
	}
	open := func(c *conn) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.mu.conns[c]
		return ok
	}
	// Each stalled session is dropped (before the fix it kept its
	// connection and its reserved Data-In buffers forever) and the whole
	// budget comes back.
	waitFor(t, "the stalled sessions to be dropped and their buffers freed", time.Minute, func() bool {
		return !open(stalled[0]) && !open(stalled[1]) && s.budget.stats().Used == 0
	})
	ok := dialIni(t, addrOf(s))
	ok.mustLogin(loginOpts{isid: [6]byte{0x80, 0, 0, 0, 0, 9}})
	rd := &icmd{cdb: read10(0, 8), read: true, edtl: 4096}
	if err := ok.run(rd); err != nil {
		t.Fatal(err)
	}
	if rd.status != 0 || len(rd.in) != 4096 {
		t.Fatalf("read after the stalled sessions were dropped: status %#x, %d bytes", rd.status, len(rd.in))
	}
}
