package iscsi

import (
	"encoding/binary"
	"io"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// TestCommandsDoNotAllocate: in steady state a 4 KiB READ or WRITE costs
// the transport no heap allocation, with several commands in flight (so
// they go through the connection's workers and batched responses, not
// only the inline path). The initiator side of this test is written to
// allocate nothing itself: fixed buffers, raw PDUs. Before, each command
// allocated its task and done channel and started a goroutine.
func TestCommandsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items: allocation counts are meaningless")
	}
	const depth = 4
	b := newFileBackend(t, 16<<20)
	s := startServer(t, b, func(o *Options) { o.NopInterval = -1 })
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	var (
		cmds [depth][pdu.BHSLen + 4096]byte
		resp [pdu.BHSLen + 4096]byte
		data = make([]byte, 4096)
	)
	for _, write := range []bool{false, true} {
		name := "read"
		if write {
			name = "write"
		}
		round := func() {
			for k := range cmds {
				b := cmds[k][:pdu.BHSLen]
				clear(b)
				b[0] = pdu.OpSCSICmd
				b[1] = pdu.FlagFinal | 0x01
				n := pdu.BHSLen
				b[32] = 0x28 // READ(10)
				if write {
					b[1] |= pdu.FlagWrite
					b[32] = 0x2a           // WRITE(10)
					pdu.Put32(b[4:], 4096) // DataSegmentLength (TotalAHSLength 0)
					n += copy(cmds[k][pdu.BHSLen:], data)
				} else {
					b[1] |= pdu.FlagRead
				}
				pdu.Put32(b[34:], uint32(k*8)) // LBA
				b[40] = 8                      // blocks
				i.itt++
				pdu.Put32(b[16:], i.itt)
				pdu.Put32(b[20:], 4096)
				pdu.Put32(b[24:], i.cmdSN)
				i.cmdSN++
				pdu.Put32(b[28:], i.expStatSN)
				if _, err := i.nc.Write(cmds[k][:n]); err != nil {
					t.Fatal(err)
				}
			}
			for range depth {
				if _, err := io.ReadFull(i.br, resp[:pdu.BHSLen]); err != nil {
					t.Fatal(err)
				}
				h := resp[:pdu.BHSLen]
				dl := int(h[5])<<16 | int(h[6])<<8 | int(h[7])
				if dl > 0 {
					if _, err := io.ReadFull(i.br, resp[pdu.BHSLen:pdu.BHSLen+dl]); err != nil {
						t.Fatal(err)
					}
				}
				op := h[0] & 0x3f
				if (op != pdu.OpDataIn && op != pdu.OpSCSIResp) || h[3] != 0 {
					t.Fatalf("%s: opcode %#x status %#x, want a GOOD response", name, op, h[3])
				}
				i.expStatSN = binary.BigEndian.Uint32(h[24:]) + 1
			}
		}
		for range 50 { // warm up: workers started, pools filled
			round()
		}
		allocs := testing.AllocsPerRun(200, round) / depth
		if allocs > 0 {
			t.Errorf("%s: %.2f allocations per command, want 0", name, allocs)
		}
	}
}
