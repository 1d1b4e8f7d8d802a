package iscsi

import (
	"net"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// TestResponsesBatched: responses that complete while another response is
// being written are queued and go out together in one writev (flat
// combining in conn.send), in order, with consecutive StatSNs. Before,
// every response was its own writev: 1 + 8 writes here instead of 2.
func TestResponsesBatched(t *testing.T) {
	const (
		big   = 1 << 20
		small = 8
	)
	b := newFileBackend(t, 64<<20)
	s := startServer(t, b, func(o *Options) {
		o.MaxTransferLength = big
		o.NopInterval = -1
		o.NopTimeout = 5 * time.Minute
	})
	s.noInline = true // the reader must stay free to dispatch the small READs
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	c := connOf(t, s, i)
	// Small socket buffers on both ends, so that the 1 MiB Data-In blocks
	// the writer until the initiator reads.
	i.nc.(*net.TCPConn).SetReadBuffer(4096)
	c.nc.(*net.TCPConn).SetWriteBuffer(4096)
	w0 := c.writes.Load()
	cmds := []*icmd{{cdb: read10(0, big/512), read: true, edtl: big}}
	for n := 0; n < small; n++ {
		cmds = append(cmds, &icmd{cdb: read10(uint32(4096+n*8), 8), read: true, edtl: 4096})
	}
	if err := i.sendCmd(cmds[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the 1 MiB response to block its writer", time.Minute, func() bool {
		c.wq.Lock()
		defer c.wq.Unlock()
		return c.wq.busy && c.writes.Load() == w0+1
	})
	for _, cmd := range cmds[1:] {
		if err := i.sendCmd(cmd); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the small READs' responses to queue behind the blocked writer", time.Minute, func() bool {
		c.wq.Lock()
		defer c.wq.Unlock()
		return len(c.wq.queue) == small
	})
	byITT := map[uint32]*icmd{}
	for _, cmd := range cmds {
		byITT[cmd.itt] = cmd
	}
	var statSNs []uint32
	for left := len(cmds); left > 0; {
		p, err := i.read()
		if err != nil {
			t.Fatal(err)
		}
		if p.h.Opcode() != pdu.OpDataIn {
			t.Fatalf("opcode %#x, want Data-In", p.h.Opcode())
		}
		cmd := byITT[p.h.ITT()]
		if cmd == nil {
			t.Fatalf("Data-In for unknown itt %#x", p.h.ITT())
		}
		cmd.in = append(cmd.in, p.data...)
		if p.h.Flags()&0x01 != 0 {
			cmd.status = p.h.B[3]
			statSNs = append(statSNs, p.h.U32(24))
			left--
		}
	}
	for k, cmd := range cmds {
		if cmd.status != 0 || len(cmd.in) != int(cmd.edtl) {
			t.Errorf("command %d: status %#x, %d bytes, want GOOD and %d", k, cmd.status, len(cmd.in), cmd.edtl)
		}
	}
	for k := 1; k < len(statSNs); k++ {
		if statSNs[k] != statSNs[k-1]+1 {
			t.Errorf("StatSNs %v are not consecutive in write order", statSNs)
			break
		}
	}
	if got := c.writes.Load() - w0; got != 2 {
		t.Errorf("%d writes for 1 + %d responses, want 2 (the blocked one, then one batch)", got, small)
	}
}
