package iscsi

import (
	"bytes"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// onlyConn is the server's one connection.
func onlyConn(t *testing.T, s *Server) *conn {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mu.conns) != 1 {
		t.Fatalf("%d connections, want 1", len(s.mu.conns))
	}
	for c := range s.mu.conns {
		return c
	}
	return nil
}

// The run-to-completion back-off times the command's run on the reader,
// not the wait for the rest of its PDU: a write alone on the connection
// whose data segment reaches the target long after its header (a slow
// link, a large PDU, an initiator that writes the header first) is no
// slow command, and the quick writes after it still run on the reader.
func TestInlineTimingExcludesTheWaitForData(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	b.quick.Store(true)
	s := startServer(t, b, nil)
	s.rtcSlow = 300 * time.Millisecond
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	c := onlyConn(t, s)

	// The write's PDU, header then data, written in two parts.
	data := bytes.Repeat([]byte{7}, 4096)
	real := i.nc
	bc := &bufConn{Conn: real}
	i.nc = bc
	if err := i.sendCmd(&icmd{cdb: write10(0, 8), edtl: 4096, out: data}); err != nil {
		t.Fatal(err)
	}
	i.nc = real
	if len(bc.buf) != pdu.BHSLen+4096 {
		t.Fatalf("the write went out as %d bytes, want one PDU with immediate data", len(bc.buf))
	}
	last := c.lastRecv.Load()
	if _, err := real.Write(bc.buf[:pdu.BHSLen]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the target to read the header", 10*time.Second, func() bool { return c.lastRecv.Load() != last })
	// The data arrives well past rtcSlow after the header.
	waitFor(t, "twice rtcSlow since the header", 10*time.Second, func() bool {
		return time.Since(time.Unix(0, c.lastRecv.Load())) > 2*s.rtcSlow
	})
	if _, err := real.Write(bc.buf[pdu.BHSLen:]); err != nil {
		t.Fatal(err)
	}
	if p, err := i.expect(pdu.OpSCSIResp); err != nil || p.h.B[3] != 0 {
		t.Fatalf("the write: %v", err)
	}

	// Two quick writes sent together: both run on the reader unless the
	// first write turned run-to-completion off.
	counts := countOnReader(b)
	together(t, i, func() {
		for k := range 2 {
			if err := i.sendCmd(&icmd{cdb: write10(uint32(8+8*k), 8), edtl: 4096, out: data}); err != nil {
				t.Fatal(err)
			}
		}
	})
	for range 2 {
		if p, err := i.expect(pdu.OpSCSIResp); err != nil || p.h.B[3] != 0 {
			t.Fatalf("a quick write: %v", err)
		}
	}
	if reader, writes := counts(); writes != 2 || reader != 2 {
		t.Fatalf("%d of %d quick writes ran on the reader, want both: the wait for the first write's data counted as its run time", reader, writes)
	}
}
