package integration

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"
)

// pingedIni is a rawIni whose reader reports answered pings.
type pingedIni struct {
	*rawIni
	pong chan uint32
}

// nopAhead sends a non-immediate NOP-Out carrying data whose CmdSN lies
// ahead of ExpCmdSN by ahead (inside the window): the target must keep it
// (data and all) until the gap is filled, which never happens.
func (r *rawIni) nopAhead(ahead uint32, data []byte) error {
	var b [48]byte
	b[0] = 0x00
	b[1] = 0x80
	r.itt++
	binary.BigEndian.PutUint32(b[16:], r.itt)
	binary.BigEndian.PutUint32(b[20:], 0xffffffff)
	binary.BigEndian.PutUint32(b[24:], r.cmdSN+ahead)
	return r.writePDU(b, data)
}

// drain reads PDUs until the connection ends and reports the ITT of
// every NOP-In that answers a ping of ours on pong.
func (r *rawIni) drain(pong chan<- uint32) {
	for {
		h, _, err := r.readPDU()
		if err != nil {
			return
		}
		if h[0]&0x3f == 0x20 {
			if itt := binary.BigEndian.Uint32(h[16:]); itt != 0xffffffff {
				pong <- itt
			}
		}
	}
}

// TestQueuedAheadMemoryBounded (found by the attack pass on issue 7,
// finding 4's neighbour): PDUs whose CmdSN lies inside the window but
// ahead of ExpCmdSN wait for the gap, data and all, and that data was not
// counted against the write buffer cap: 16 sessions each queueing a
// window of NOP-Outs with 256 KiB of ping data took the RSS to about
// 16 x 127 x 256 KiB = 508 MiB with a 64 MiB cap (20 sessions: 650 MiB
// with a 256 MiB cap). The queued data now reserves buffer space (no
// space: the PDU is ignored like one outside the window), so RSS stays
// under the cap plus a margin, and the space comes back when the
// sessions end: another session still does I/O.
func TestQueuedAheadMemoryBounded(t *testing.T) {
	needTools(t, "qemu-io")
	const (
		capBytes = 64 << 20
		margin   = 300 << 20
		sessions = 16
		window   = 127
	)
	d := StartDaemon(t, "", "--max-write-buffer", "64MiB")
	iqn := d.Export("ahead", "64MiB", 512)
	pid := d.pid()
	before := rssOf(t, pid)
	peak := before
	var rs []pingedIni
	for s := 0; s < sessions; s++ {
		r := pingedIni{rawIni: dialRaw(t, d.Portal, iqn, fmt.Sprintf("iqn.2026-11.org.lmtgt.test:ahead%d", s))}
		r.pong = make(chan uint32, 1)
		go r.drain(r.pong)
		rs = append(rs, r)
		data := make([]byte, r.mrdsl)
		for k := uint32(1); k <= window; k++ {
			if err := r.nopAhead(k, data); err != nil {
				t.Fatalf("session %d, NOP-Out %d: %v", s, k, err)
			}
		}
	}
	// Every session still answers: the NOP-In to an immediate ping comes
	// back once the target has read everything sent before it.
	for s, r := range rs {
		check := func() {
			rss := rssOf(t, pid)
			peak = max(peak, rss)
			if rss > capBytes+margin+before {
				t.Fatalf("RSS reached %d MiB (before %d MiB) with a %d MiB write buffer cap", rss>>20, before>>20, capBytes>>20)
			}
		}
		check()
		if err := r.ping(0x7000); err != nil {
			t.Fatalf("session %d: %v", s, err)
		}
		select {
		case <-r.pong:
		case <-time.After(cmdTimeout):
			t.Fatalf("session %d: no NOP-In to a ping after its queued PDUs", s)
		}
		check()
	}
	t.Logf("RSS before %d MiB, peak %d MiB (cap %d MiB, %d sessions x %d PDUs x %d KiB queued)", before>>20, peak>>20, capBytes>>20, sessions, window, rs[0].mrdsl>>10)
	for _, r := range rs {
		r.nc.Close()
	}
	// The space comes back: a 16 MiB write (a whole buffer) still runs.
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x5a 0 16M", "read -P 0x5a 0 16M")
}
