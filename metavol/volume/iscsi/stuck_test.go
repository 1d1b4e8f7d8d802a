package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// stuckTarget is a tiny iSCSI target speaking just enough of the protocol
// (login without auth, READ(16) of a fixed pattern, NOP, ABORT TASK) to
// withhold answers on purpose: the one case where a real target cannot be
// made to hang a command on demand. Behaviour per connection number:
// conn 1 withholds the first READ; it answers ABORT TASK only when
// answerTMF; when mute it answers nothing at all after login.
type stuckTarget struct {
	t         *testing.T
	ln        net.Listener
	answerTMF bool
	mute      bool

	mu    sync.Mutex
	conns int
	tmfs  [][2]uint32 // (referenced ITT, RefCmdSN) of each ABORT TASK seen
	held  [][2]uint32 // (ITT, CmdSN) of withheld READs
	wg    sync.WaitGroup
}

func startStuck(t *testing.T, answerTMF, mute bool) *stuckTarget {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stuckTarget{t: t, ln: ln, answerTMF: answerTMF, mute: mute}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			n := s.conns
			s.mu.Unlock()
			s.wg.Add(1)
			go func() { defer s.wg.Done(); defer nc.Close(); s.serve(nc, n) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func pattern(lba uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(lba) ^ byte(i)
	}
	return b
}

func (s *stuckTarget) serve(nc net.Conn, connNo int) {
	br := bufio.NewReader(nc)
	var statSN uint32 = 1
	var expCmdSN uint32
	write := func(b *[pdu.BHSLen]byte, data []byte) { writePDU(nc, b, data, false, false) }
	// never answer the first READ on connection 1
	holdNext := connNo == 1
	for {
		var h pdu.Header
		if err := pdu.ReadHeader(br, &h, pdu.Limits{MaxData: 1 << 20}); err != nil {
			return
		}
		data := make([]byte, h.DataLen())
		if err := pdu.ReadData(br, data, false); err != nil {
			return
		}
		if !h.Immediate() && h.Opcode() != pdu.OpDataOut {
			expCmdSN = h.CmdSN() + 1
		} else if h.Opcode() != pdu.OpDataOut {
			expCmdSN = h.CmdSN()
		}
		var b [pdu.BHSLen]byte
		pdu.Put32(b[16:], h.ITT())
		pdu.Put32(b[24:], statSN)
		pdu.Put32(b[28:], expCmdSN)
		pdu.Put32(b[32:], expCmdSN+16)
		switch h.Opcode() {
		case pdu.OpLoginReq:
			csg, nsg := h.Flags()>>2&3, h.Flags()&3
			b[0] = pdu.OpLoginResp
			b[1] = pdu.FlagFinal | csg<<2 | nsg
			copy(b[8:14], h.B[8:14])
			pdu.Put16(b[14:], 1)
			var keys []pdu.KV
			if csg == 0 {
				keys = []pdu.KV{{Key: "AuthMethod", Value: "None"}}
			} else {
				keys = []pdu.KV{{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
					{Key: "MaxRecvDataSegmentLength", Value: "65536"}, {Key: "InitialR2T", Value: "Yes"},
					{Key: "ImmediateData", Value: "Yes"}, {Key: "MaxBurstLength", Value: "262144"},
					{Key: "FirstBurstLength", Value: "65536"}, {Key: "MaxOutstandingR2T", Value: "1"}}
			}
			pdu.Put32(b[28:], h.CmdSN())
			pdu.Put32(b[32:], h.CmdSN()+16)
			write(&b, pdu.EncodeText(keys))
			statSN++
			continue
		}
		if s.mute {
			continue
		}
		switch h.Opcode() {
		case pdu.OpNopOut:
			if h.ITT() == pdu.ReservedTag {
				continue
			}
			b[0] = pdu.OpNopIn
			b[1] = pdu.FlagFinal
			pdu.Put32(b[20:], pdu.ReservedTag)
			write(&b, nil)
			statSN++
		case pdu.OpSCSICmd:
			cdb := h.B[32:48]
			if cdb[0] != opRead16 {
				b[0] = pdu.OpSCSIResp
				b[1] = pdu.FlagFinal
				write(&b, nil)
				statSN++
				continue
			}
			if holdNext {
				holdNext = false
				s.mu.Lock()
				s.held = append(s.held, [2]uint32{h.ITT(), h.CmdSN()})
				s.mu.Unlock()
				continue
			}
			lba := binary.BigEndian.Uint64(cdb[2:10])
			b[0] = pdu.OpDataIn
			b[1] = pdu.FlagFinal | 0x01
			pdu.Put32(b[20:], pdu.ReservedTag)
			write(&b, pattern(lba, int(h.EDTL())))
			statSN++
		case pdu.OpTMFReq:
			s.mu.Lock()
			s.tmfs = append(s.tmfs, [2]uint32{h.U32(20), h.U32(32)})
			s.mu.Unlock()
			if !s.answerTMF {
				continue
			}
			b[0] = pdu.OpTMFResp
			b[1] = pdu.FlagFinal
			b[2] = 0 // function complete
			write(&b, nil)
			statSN++
		case pdu.OpLogoutReq:
			b[0] = pdu.OpLogoutResp
			b[1] = pdu.FlagFinal
			write(&b, nil)
			return
		}
	}
}

func (s *stuckTarget) snapshot() (conns int, tmfs, held [][2]uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, append([][2]uint32(nil), s.tmfs...), append([][2]uint32(nil), s.held...)
}

func dialStuck(t *testing.T, s *stuckTarget, cfg Config) *Client {
	cfg.Portal, cfg.Target = s.ln.Addr().String(), "iqn.2026-11.org.lmtgt.test:stuck"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readLBA(t *testing.T, c *Client, lba uint64) {
	t.Helper()
	buf := make([]byte, 4096)
	type result struct {
		r   Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.exec(Command{CDB: cdbRW16s(opRead16, lba, 8), Data: buf, Read: true})
		done <- result{r, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("read lba %d still stuck after 30s: %+v", lba, c.Stats())
	}
	r, err := res.r, res.err
	if err != nil || r.Status != 0 {
		t.Fatalf("read lba %d: %v (status %d)", lba, err, r.Status)
	}
	if !bytes.Equal(buf, pattern(lba, 4096)) {
		t.Fatalf("read lba %d: wrong data", lba)
	}
}

// TestStuckCommandAborted: a command without an answer is aborted with
// ABORT TASK (referencing its ITT and CmdSN) after CommandTimeout and sent
// again; the caller gets its data and never sees the hang.
func TestStuckCommandAborted(t *testing.T) {
	s := startStuck(t, true, false)
	c := dialStuck(t, s, Config{CommandTimeout: 300 * time.Millisecond, AbortTimeout: 5 * time.Second})
	readLBA(t, c, 77)
	conns, tmfs, held := s.snapshot()
	if len(held) != 1 || len(tmfs) != 1 || tmfs[0] != held[0] {
		t.Fatalf("ABORT TASKs %v for withheld commands %v (want one, same ITT and CmdSN)", tmfs, held)
	}
	st := c.Stats()
	if conns != 1 || st.Aborts != 1 || st.Reissued != 1 || st.ConnDrops != 0 {
		t.Fatalf("conns %d stats %+v", conns, st)
	}
}

// TestStuckAbortUnanswered: when ABORT TASK gets no answer either, the
// session is dropped and re-established and the command re-issued on the
// new connection.
func TestStuckAbortUnanswered(t *testing.T) {
	s := startStuck(t, false, false)
	c := dialStuck(t, s, Config{CommandTimeout: 300 * time.Millisecond, AbortTimeout: 300 * time.Millisecond,
		ReconnectMin: 10 * time.Millisecond})
	readLBA(t, c, 5)
	conns, tmfs, held := s.snapshot()
	st := c.Stats()
	if conns != 2 || len(tmfs) != 1 || len(held) != 1 || st.ConnDrops != 1 || st.Logins != 2 || st.Reissued != 1 {
		t.Fatalf("conns %d tmfs %v held %v stats %+v", conns, tmfs, held, st)
	}
}

// TestDeadTargetDetectedByNop: a target that stops answering (but keeps
// the TCP connection open) is detected by our idle NOP-Out and the session
// is re-established.
func TestDeadTargetDetectedByNop(t *testing.T) {
	s := startStuck(t, true, true)
	c := dialStuck(t, s, Config{NopInterval: 100 * time.Millisecond, NopTimeout: 200 * time.Millisecond,
		ReconnectMin: 10 * time.Millisecond})
	if !poll(20*time.Second, func() bool { st := c.Stats(); return st.ConnDrops >= 1 && st.Logins >= 2 }) {
		t.Fatalf("mute target never detected: %+v", c.Stats())
	}
	if c.Stats().NopsOut < 1 {
		t.Fatalf("no NOP-Out sent: %+v", c.Stats())
	}
}
