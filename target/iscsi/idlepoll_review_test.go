package iscsi

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// With one P (GOMAXPROCS=1: a one-CPU VM, or a container whose CPU limit
// is one, which Go turns into GOMAXPROCS=1) a poll takes the only P. It
// yields every pollYield reads, but the yielding goroutine goes to the
// global run queue and the scheduler takes it from there before it polls
// the network, so goroutines the netpoller would ready (every other
// connection's reader, the admin and metrics listeners, an imported LUN's
// initiator) wait for sysmon's network poll, every 10 ms, as long as a
// host at queue depth 1 keeps the poll catching. Measured: qemu-io
// reading at queue depth 1 on one connection, another connection's
// queue-depth-1 reads went from p90 58 us, max 250 us (--idle-poll off)
// to p90 8-20 ms, max 21 ms (100us). "At most half the Ps" must be none
// of one.
func TestIdlePollNeverTakesTheOnlyProcessor(t *testing.T) {
	old := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	s, i, _ := pollingIni(t, time.Minute)
	qd1(t, i, 2)
	if n := s.idle.caught.Load() + s.idle.missed.Load() + int64(s.idle.active.Load()); n != 0 {
		t.Fatalf("%d polls with GOMAXPROCS=1 (caught %d, missed %d, active %d): a poll holds the only P",
			n, s.idle.caught.Load(), s.idle.missed.Load(), s.idle.active.Load())
	}
}

// A command the host sent before it saw every status (its ExpStatSN lags
// statNext: a host at depth, even when the reader finds it alone) does
// not arm the poll, and disarms one a queue-depth-1 command left armed
// (a poll that catches stays armed). Here each queue-depth-1 READ is
// followed by two READs whose ExpStatSN is one behind: the only polls are
// those after the queue-depth-1 READs, each caught by the READ after it.
// (A broken check is caught when the reader starts its poll before the
// host's next READ comes, as it nearly always does.)
func TestIdlePollNotForAHostAtDepth(t *testing.T) {
	wantPolls(t)
	s, i, _ := pollingIni(t, time.Minute)
	read := func(k int, behind bool) {
		t.Helper()
		if behind {
			i.expStatSN-- // i.read moves it on again with the response
		}
		rd := &icmd{cdb: read10(uint32(k*8), 8), read: true, edtl: 4096}
		if err := i.run(rd); err != nil || rd.status != 0 {
			t.Fatalf("read %d: %v, status %#x", k, err, rd.status)
		}
	}
	const n = 10
	for k := range n {
		read(k, false)
		// The next READ comes while the reader polls: caught.
		waitFor(t, "the poll after a queue-depth-1 command", 10*time.Second, func() bool { return s.idle.active.Load() == 1 })
		read(k, true)
		read(k, true)
	}
	c, m, a := s.idle.caught.Load(), s.idle.missed.Load(), s.idle.active.Load()
	if c != n || m != 0 || a != 0 {
		t.Fatalf("polls caught %d, missed %d, active %d; want %d, 0, 0: a command with a lagging ExpStatSN armed or kept a poll", c, m, a, n)
	}
}

// A drain (Shutdown, CloseTargetSessions, CloseInitiatorSessions,
// ClosePortalSessions) stops the connection reading: a command the host
// sends after it does not run. A reader waiting in the netpoller is woken
// by drain's read deadline at once; a polling reader ignores the deadline
// until the poll ends and runs whatever it caught meanwhile.
func TestIdlePollDrainRunsNoLaterCommand(t *testing.T) {
	wantPolls(t)
	s, i, b := pollingIni(t, time.Minute)
	pollingAfter(t, s, i)
	onlyConn(t, s).drain()

	data := bytes.Repeat([]byte{0xee}, 4096)
	_ = i.sendCmd(&icmd{cdb: write10(64, 8), edtl: 4096, out: data}) // may fail: the target closed
	i.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := i.read(); err != nil {
			break // the connection closed
		}
	}
	got := make([]byte, 4096)
	if _, err := b.f.ReadAt(got, 64*testBlock); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, data) {
		t.Fatal("a WRITE sent after the connection was drained ran")
	}
}

// readerParked reports whether a connection's reader is parked in the
// netpoller, waiting for data (not polling).
func readerParked() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("(*conn).fullFeature")) && bytes.Contains(g, []byte("(*pollDesc).waitRead")) {
			return true
		}
	}
	return false
}

// The poll after a queue-depth-1 command catches the host's next PDU and,
// if it comes in pieces, the rest of it; it does not keep the reader
// polling for every piece of a long transfer. A write's data arrives in
// segments some tens of microseconds apart on a real link (a 1 MiB write
// takes 8 ms on 1 GbE): a poll that stays armed after each catch spins
// the reader through the whole transfer, a processor busy for as long as
// the data takes to come, where a sleeping reader costs a wake-up per
// batch of segments. Here a 4 KiB write comes in 16 pieces, each sent
// once the reader took the one before and waits for more (polling or
// parked): at most two polls (the header, the rest) should catch.
func TestIdlePollNotForEverySegment(t *testing.T) {
	wantPolls(t)
	s, i, _ := pollingIni(t, time.Minute)
	pollingAfter(t, s, i)

	data := bytes.Repeat([]byte{0x5a}, 4096)
	real := i.nc
	bc := &bufConn{Conn: real}
	i.nc = bc
	if err := i.sendCmd(&icmd{cdb: write10(80, 8), edtl: 4096, out: data}); err != nil {
		t.Fatal(err)
	}
	i.nc = real
	base := s.idle.caught.Load()
	const pieces = 16
	step := (len(bc.buf) + pieces - 1) / pieces
	sent := int64(0)
	for k := 0; k < len(bc.buf); k += step {
		if _, err := real.Write(bc.buf[k:min(k+step, len(bc.buf))]); err != nil {
			t.Fatal(err)
		}
		sent++
		if k+step < len(bc.buf) {
			waitFor(t, "the reader to take the piece and wait for the next", 10*time.Second, func() bool {
				return s.idle.active.Load() == 1 && s.idle.caught.Load() == base+sent || readerParked()
			})
		}
	}
	if p, err := i.expect(pdu.OpSCSIResp); err != nil || p.h.B[3] != 0 {
		t.Fatalf("the write: %v", err)
	}
	if n := s.idle.caught.Load() - base; n > 2 {
		t.Fatalf("%d polls caught pieces of one 4 KiB write sent in %d: the reader polled for each piece of its data", n, sent)
	}
}
