package integration

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawIni is a minimal iSCSI initiator speaking raw PDUs: just enough to log
// in and send SCSI commands that misbehave on purpose.
type rawIni struct {
	nc    net.Conn
	br    *bufio.Reader
	wmu   sync.Mutex
	cmdSN uint32
	itt   uint32
	mrdsl uint32 // MaxRecvDataSegmentLength the target declared
}

func pad4(n int) int { return (n + 3) &^ 3 }

func (r *rawIni) writePDU(bhs [48]byte, data []byte) error {
	bhs[5], bhs[6], bhs[7] = byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	buf := append(bhs[:], data...)
	buf = append(buf, make([]byte, pad4(len(data))-len(data))...)
	r.wmu.Lock()
	defer r.wmu.Unlock()
	_, err := r.nc.Write(buf)
	return err
}

func (r *rawIni) readPDU() ([48]byte, []byte, error) {
	var bhs [48]byte
	if _, err := io.ReadFull(r.br, bhs[:]); err != nil {
		return bhs, nil, err
	}
	ahs := int(bhs[4]) * 4
	n := int(bhs[5])<<16 | int(bhs[6])<<8 | int(bhs[7])
	data := make([]byte, ahs+pad4(n))
	if _, err := io.ReadFull(r.br, data); err != nil {
		return bhs, nil, err
	}
	return bhs, data[ahs : ahs+n], nil
}

// dialRaw logs in to target iqn as initiator name straight into the full
// feature phase (no authentication, InitialR2T=Yes, no immediate data).
func dialRaw(t *testing.T, portal, iqn, name string) *rawIni {
	t.Helper()
	nc, err := net.DialTimeout("tcp", portal, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &rawIni{nc: nc, br: bufio.NewReaderSize(nc, 1<<20), itt: 1}
	var b [48]byte
	b[0] = 0x03 | 0x40       // Login Request, immediate
	b[1] = 0x80 | 1<<2 | 3   // T, CSG operational, NSG full feature
	b[8], b[13] = 0x80, 0x42 // ISID
	binary.BigEndian.PutUint32(b[16:], r.itt)
	keys := []string{"InitiatorName=" + name, "TargetName=" + iqn, "SessionType=Normal",
		"HeaderDigest=None", "DataDigest=None", "InitialR2T=Yes", "ImmediateData=No",
		"MaxRecvDataSegmentLength=262144", "MaxBurstLength=1048576", "FirstBurstLength=262144",
		"MaxOutstandingR2T=1", "ErrorRecoveryLevel=0"}
	if err := r.writePDU(b, []byte(strings.Join(keys, "\x00")+"\x00")); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	h, text, err := r.readPDU()
	if err != nil {
		t.Fatalf("login response: %v", err)
	}
	r.mrdsl = 8192
	for _, kv := range strings.Split(string(text), "\x00") {
		if v, ok := strings.CutPrefix(kv, "MaxRecvDataSegmentLength="); ok {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				t.Fatalf("login response %q: %v", kv, err)
			}
			r.mrdsl = uint32(n)
		}
	}
	nc.SetReadDeadline(time.Time{})
	if h[0]&0x3f != 0x23 || h[36] != 0 || h[1]&0x83 != 0x83 {
		t.Fatalf("login refused: opcode %#x flags %#x status %#02x%02x", h[0], h[1], h[36], h[37])
	}
	r.cmdSN = binary.BigEndian.Uint32(h[28:]) // ExpCmdSN
	return r
}

// write10 sends a non-immediate WRITE(10) of size bytes at lba with no
// data, whatever MaxCmdSN says.
func (r *rawIni) write10(lba uint32, size uint32) error {
	var b [48]byte
	b[0] = 0x01
	b[1] = 0x80 | 0x20 | 0x01 // F, W, simple
	r.itt++
	binary.BigEndian.PutUint32(b[16:], r.itt)
	binary.BigEndian.PutUint32(b[20:], size)
	binary.BigEndian.PutUint32(b[24:], r.cmdSN)
	r.cmdSN++
	b[32] = 0x2a
	binary.BigEndian.PutUint32(b[34:], lba)
	binary.BigEndian.PutUint16(b[39:], uint16(size/512))
	return r.writePDU(b, nil)
}

// ping sends an immediate NOP-Out with itt; its NOP-In comes back once the
// target has read everything sent before.
func (r *rawIni) ping(itt uint32) error {
	var b [48]byte
	b[0] = 0x00 | 0x40
	b[1] = 0x80
	binary.BigEndian.PutUint32(b[16:], itt)
	binary.BigEndian.PutUint32(b[20:], 0xffffffff)
	binary.BigEndian.PutUint32(b[24:], r.cmdSN)
	return r.writePDU(b, nil)
}

// floodStats counts what the target asked of a flooding initiator.
type floodStats struct {
	mu       sync.Mutex
	answered int // R2Ts answered with data
	last     int // R2Ts for the last burst of a write: left unanswered
}

// serve reads PDUs until the connection ends: it answers target pings,
// sends the data of every R2T except a write's last burst (so each write
// the target gave a buffer to fills it and never finishes), and reports
// NOP-In answers to pings on pong.
func (r *rawIni) serve(size uint32, st *floodStats, pong chan<- uint32) {
	for {
		h, _, err := r.readPDU()
		if err != nil {
			return
		}
		switch h[0] & 0x3f {
		case 0x31: // R2T
			off, n := binary.BigEndian.Uint32(h[40:]), binary.BigEndian.Uint32(h[44:])
			if off+n >= size {
				st.mu.Lock()
				st.last++
				st.mu.Unlock()
				continue
			}
			chunk := make([]byte, r.mrdsl)
			for k := range chunk {
				chunk[k] = 0xa5
			}
			var sn uint32
			for sent := uint32(0); sent < n; sn++ {
				m := min(n-sent, r.mrdsl)
				var b [48]byte
				b[0] = 0x05
				if sent+m == n {
					b[1] = 0x80
				}
				copy(b[16:24], h[16:24]) // ITT, TTT
				binary.BigEndian.PutUint32(b[36:], sn)
				binary.BigEndian.PutUint32(b[40:], off+sent)
				if r.writePDU(b, chunk[:m]) != nil {
					return
				}
				sent += m
			}
			st.mu.Lock()
			st.answered++
			st.mu.Unlock()
		case 0x20: // NOP-In
			itt := binary.BigEndian.Uint32(h[16:])
			if itt != 0xffffffff {
				pong <- itt
				continue
			}
			var b [48]byte
			b[0] = 0x00 | 0x40
			b[1] = 0x80
			binary.BigEndian.PutUint32(b[16:], 0xffffffff)
			copy(b[20:24], h[20:24])
			binary.BigEndian.PutUint32(b[24:], r.cmdSN)
			r.writePDU(b, nil)
		}
	}
}

// rssOf reads VmRSS of pid in bytes.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

func (d *Daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

// TestWriteFloodMemoryBounded is issue 7 finding 4: one session sends 200
// WRITEs of 16 MiB and never their data. The daemon's RSS must stay under
// its write buffer cap plus a margin, and another session must still do
// real I/O.
func TestWriteFloodMemoryBounded(t *testing.T) {
	needTools(t, "qemu-io")
	const (
		capBytes = 256 << 20
		margin   = 300 << 20
		writes   = 200
		size     = 16 << 20
	)
	d := StartDaemon(t, "", "--max-write-buffer", "256MiB")
	iqn := d.Export("flood", "64MiB", 512)
	pid := d.pid()
	before := rssOf(t, pid)

	r := dialRaw(t, d.Portal, iqn, "iqn.2026-11.org.lmtgt.test:flooder")
	var st floodStats
	pong := make(chan uint32, 4)
	go r.serve(size, &st, pong)
	peak := before
	check := func() {
		t.Helper()
		rss := rssOf(t, pid)
		peak = max(peak, rss)
		if rss > capBytes+margin {
			t.Fatalf("RSS reached %d MiB (before the flood %d MiB) with a %d MiB write buffer cap (limit %d MiB)", rss>>20, before>>20, capBytes>>20, (capBytes+margin)>>20)
		}
	}
	for k := 0; k < writes; k++ {
		if err := r.write10(0, size); err != nil {
			t.Fatalf("write %d: %v", k, err)
		}
		if k%10 == 0 {
			check()
		}
	}
	// Ping until a round brings no new R2T: the NOP-In comes back only
	// after the target has read everything sent before it (commands and
	// the data of the R2Ts answered so far) and sent the R2Ts they cause.
	prev := -1
	deadline := time.Now().Add(5 * time.Minute)
	for round := uint32(1); ; round++ {
		if time.Now().After(deadline) {
			t.Fatal("the flood did not settle")
		}
		if err := r.ping(0x7000 + round); err != nil {
			t.Fatal(err)
		}
		select {
		case <-pong:
		case <-time.After(cmdTimeout):
			t.Fatal("no NOP-In after the flood")
		}
		check()
		st.mu.Lock()
		n := st.answered
		st.mu.Unlock()
		if n == prev {
			break
		}
		prev = n
	}
	st.mu.Lock()
	filled := st.last
	st.mu.Unlock()
	t.Logf("RSS before the flood %d MiB, peak %d MiB; %d of %d writes got a buffer and filled it to its last burst", before>>20, peak>>20, filled, writes)
	if share := capBytes / 2 / size; filled > share {
		t.Fatalf("%d writes of one session got buffers; its share allows %d", filled, share)
	}
	// Another session does real I/O while the flood holds its share.
	url := d.URL(iqn, 0)
	qemuIOOK(t, url, "write -P 0x5a 32M 4M", "read -P 0x5a 32M 4M")
	t.Logf("RSS after qemu-io %d MiB", rssOf(t, pid)>>20)
}
