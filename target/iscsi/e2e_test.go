package iscsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func fileBytes(t *testing.T, b *fileBackend, off int64, n int) []byte {
	t.Helper()
	out := make([]byte, n)
	if _, err := b.f.ReadAt(out, off); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoginWriteRead(t *testing.T) {
	b := newFileBackend(t, 8<<20)
	s := startServer(t, b, nil)
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	if i.tsih == 0 {
		t.Fatal("TSIH 0 after login")
	}
	if i.resp["TargetPortalGroupTag"] != "1" {
		t.Fatalf("TargetPortalGroupTag = %q", i.resp["TargetPortalGroupTag"])
	}
	if got := i.resp["MaxRecvDataSegmentLength"]; got != "262144" {
		t.Fatalf("target MaxRecvDataSegmentLength = %q, want 262144", got)
	}
	data := pattern(128<<10, 1)
	i.writeBlocks(100, data)
	if !bytes.Equal(fileBytes(t, b, 100*testBlock, len(data)), data) {
		t.Fatal("file content differs from what was written")
	}
	r := i.readBlocks(100, len(data)/testBlock)
	if !bytes.Equal(r.in, data) || !r.sInData || r.resFlags != 0 {
		t.Fatalf("read back: equal=%v status-in-data=%v flags=%#x", bytes.Equal(r.in, data), r.sInData, r.resFlags)
	}
	tur := &icmd{cdb: make([]byte, 6)}
	if err := i.run(tur); err != nil || tur.status != 0 {
		t.Fatalf("TEST UNIT READY: %v status %#x", err, tur.status)
	}
	if err := i.logout(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "session release", 5*time.Second, func() bool { return s.sessionCount() == 0 && b.openNexus.Load() == 0 })
}

// TestDataOutModes writes with every combination of InitialR2T,
// ImmediateData, small bursts and several outstanding R2Ts.
func TestDataOutModes(t *testing.T) {
	b := newFileBackend(t, 8<<20)
	s := startServer(t, b, func(o *Options) { o.MaxOutstandingR2T = 4 })
	size := 300<<10 + 3*testBlock
	seed := uint64(10)
	for _, initialR2T := range []string{"Yes", "No"} {
		for _, imm := range []string{"Yes", "No"} {
			for _, burst := range []struct{ mrdsl, first, max, r2t string }{
				{"262144", "262144", "1048576", "1"},
				{"4096", "8192", "16384", "1"},
				{"1024", "2048", "65536", "4"},
			} {
				name := fmt.Sprintf("R2T=%s,Imm=%s,MRDSL=%s,FB=%s,MB=%s,OR2T=%s", initialR2T, imm, burst.mrdsl, burst.first, burst.max, burst.r2t)
				t.Run(name, func(t *testing.T) {
					i := dialIni(t, addrOf(s))
					keys := []kv{{Key: "InitialR2T", Value: initialR2T}, {Key: "ImmediateData", Value: imm},
						{Key: "FirstBurstLength", Value: burst.first}, {Key: "MaxBurstLength", Value: burst.max},
						{Key: "MaxOutstandingR2T", Value: burst.r2t}, {Key: "MaxRecvDataSegmentLength", Value: "8192"}}
					i.mustLogin(loginOpts{keys: keys})
					// the target's declared MRDSL limits what we send; cap it further
					mr := uint32(0)
					fmt.Sscan(burst.mrdsl, &mr)
					i.targetMRDSL = min(i.targetMRDSL, mr)
					seed++
					data := pattern(size, seed)
					lba := uint32((seed - 10) * 620)
					i.writeBlocks(lba, data)
					if !bytes.Equal(fileBytes(t, b, int64(lba)*testBlock, size), data) {
						t.Fatal("file differs")
					}
					r := i.readBlocks(lba, size/testBlock)
					if !bytes.Equal(r.in, data) {
						t.Fatal("read back differs")
					}
				})
			}
		}
	}
}

func TestDataInSplit(t *testing.T) {
	b := newFileBackend(t, 4<<20)
	s := startServer(t, b, nil)
	i := dialIni(t, addrOf(s))
	keys := append(dropKey(dropKey(defaultKeys(), "MaxRecvDataSegmentLength"), "MaxBurstLength"),
		kv{Key: "MaxRecvDataSegmentLength", Value: "4096"}, kv{Key: "MaxBurstLength", Value: "16384"})
	i.mustLogin(loginOpts{keys: keys})
	data := pattern(100<<10+512, 3)
	i.writeBlocks(0, data)
	r := i.readBlocks(0, len(data)/testBlock)
	if !bytes.Equal(r.in, data) {
		t.Fatal("read back differs")
	}
	if r.maxSeg > 4096 {
		t.Fatalf("Data-In segment of %d bytes, initiator accepts 4096", r.maxSeg)
	}
	if want := (len(data) + 4095) / 4096; r.dataInPDU != want {
		t.Fatalf("%d Data-In PDUs, want %d", r.dataInPDU, want)
	}
}

func TestResiduals(t *testing.T) {
	b := newFileBackend(t, 4<<20)
	s := startServer(t, b, nil)
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	i.writeBlocks(0, bytes.Repeat([]byte{'a'}, 4*testBlock))
	const O, U = 0x04, 0x02
	for _, tc := range []struct {
		name   string
		c      *icmd
		flags  byte
		resid  uint32
		inLen  int
		status byte
	}{
		{"read10 edtl 0", &icmd{cdb: read10(0, 1), read: true, edtl: 0}, O, 512, 0, 0},
		{"read10 edtl 10000", &icmd{cdb: read10(0, 1), read: true, edtl: 10000}, U, 10000 - 512, 512, 0},
		{"read10 edtl 200", &icmd{cdb: read10(0, 1), read: true, edtl: 200}, O, 312, 200, 0},
		{"read10 2 blocks edtl 512", &icmd{cdb: read10(0, 2), read: true, edtl: 512}, O, 512, 512, 0},
		{"read10 exact", &icmd{cdb: read10(0, 2), read: true, edtl: 1024}, 0, 0, 1024, 0},
		{"inquiry alloc 255", &icmd{cdb: []byte{0x12, 0, 0, 0, 255, 0}, read: true, edtl: 255}, U, 255 - 36, 36, 0},
		{"write10 edtl 0", &icmd{cdb: write10(0, 1), edtl: 0}, O, 512, 0, 0},
		{"write10 1 block edtl 1024", &icmd{cdb: write10(0, 1), edtl: 1024, out: bytes.Repeat([]byte{'b'}, 1024)}, U, 512, 0, 0},
		{"write10 2 blocks edtl 512", &icmd{cdb: write10(0, 2), edtl: 512, out: bytes.Repeat([]byte{'b'}, 512)}, O, 512, 0, 0},
		{"write10 1 block edtl 10000", &icmd{cdb: write10(0, 1), edtl: 10000, out: bytes.Repeat([]byte{'c'}, 10000)}, U, 10000 - 512, 0, 0},
		{"write16 1 block edtl 200", &icmd{cdb: write16(2, 1), edtl: 200, out: bytes.Repeat([]byte{'d'}, 200)}, O, 312, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := i.run(tc.c); err != nil {
				t.Fatal(err)
			}
			if tc.c.status != tc.status || tc.c.resFlags != tc.flags || tc.c.residual != tc.resid || len(tc.c.in) != tc.inLen {
				t.Fatalf("status %#x flags %#x residual %d data %d; want %#x %#x %d %d",
					tc.c.status, tc.c.resFlags, tc.c.residual, len(tc.c.in), tc.status, tc.flags, tc.resid, tc.inLen)
			}
		})
	}
	// An over-long write never reaches beyond what the CDB or EDTL allow.
	got := fileBytes(t, b, 0, 4*testBlock)
	want := append(bytes.Repeat([]byte{'c'}, 512), bytes.Repeat([]byte{'a'}, 512)...)
	want = append(want, bytes.Repeat([]byte{'d'}, 200)...)
	want = append(want, bytes.Repeat([]byte{'a'}, 4*testBlock-len(want))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("file after residual writes:\n got %q\nwant %q", got, want)
	}
}

func TestManyOutstanding(t *testing.T) {
	b := newFileBackend(t, 16<<20)
	s := startServer(t, b, func(o *Options) { o.QueueDepth = 16 })
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	if int(i.maxCmdSN-i.cmdSN)+1 != 16 {
		t.Fatalf("initial window %d, want 16", i.maxCmdSN-i.cmdSN+1)
	}
	var cmds []*icmd
	var want [][]byte
	for k := 0; k < 200; k++ {
		d := pattern(8192, uint64(k))
		want = append(want, d)
		cmds = append(cmds, &icmd{cdb: write10(uint32(k*16), 16), edtl: 8192, out: d})
	}
	if err := i.run(cmds...); err != nil {
		t.Fatal(err)
	}
	var reads []*icmd
	for k := 0; k < 200; k++ {
		reads = append(reads, &icmd{cdb: read10(uint32(k*16), 16), read: true, edtl: 8192})
	}
	if err := i.run(reads...); err != nil {
		t.Fatal(err)
	}
	for k, r := range reads {
		if r.status != 0 || !bytes.Equal(r.in, want[k]) {
			t.Fatalf("command %d: status %#x, data equal %v", k, r.status, bytes.Equal(r.in, want[k]))
		}
	}
}

// TestConcurrentExecution proves commands of one session run at the same
// time: two commands must both be inside Execute before either finishes.
func TestConcurrentExecution(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	var met func() int
	b.hook, met = meeting(0x28)
	s := startServer(t, b, nil)
	s.noInline = true // the first READ may otherwise run on the reader
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	c1 := &icmd{cdb: read10(0, 1), read: true, edtl: 512}
	c2 := &icmd{cdb: read10(1, 1), read: true, edtl: 512}
	if err := i.run(c1, c2); err != nil {
		t.Fatal(err)
	}
	if n := met(); n != 2 {
		t.Fatalf("commands of one session did not run concurrently: %d of 2 saw the other inside Execute", n)
	}
}

func TestNopOutConsumesCmdSN(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, nil)
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	before := i.cmdSN
	p, err := i.nop(false, []byte("nopping\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if string(p.data) != "nopping\x00" || p.h.ITT() != i.itt {
		t.Fatalf("NOP-In data %q itt %#x", p.data, p.h.ITT())
	}
	if exp := p.h.U32(28); exp != before+1 {
		t.Fatalf("ExpCmdSN %d after non-immediate NOP-Out with CmdSN %d", exp, before)
	}
	if _, err := i.nop(true, nil); err != nil {
		t.Fatal(err)
	}
	i.readBlocks(0, 1) // the next command is not stuck
}

func TestTargetPing(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, func(o *Options) {
		o.NopInterval = 30 * time.Millisecond
		o.NopTimeout = 150 * time.Millisecond
	})
	t.Run("answered", func(t *testing.T) {
		i := dialIni(t, addrOf(s))
		i.mustLogin(loginOpts{})
		deadline := time.Now().Add(5 * time.Second)
		for i.nopIns < 3 {
			if time.Now().After(deadline) {
				t.Fatal("no target pings")
			}
			p, err := i.read()
			if err != nil {
				t.Fatalf("connection dropped although pings were answered: %v", err)
			}
			if p.h.Opcode() != pdu.OpNopIn || p.h.ITT() != pdu.ReservedTag {
				t.Fatalf("unexpected opcode %#x", p.h.Opcode())
			}
			i.answerNop(p)
		}
		i.readBlocks(0, 1)
	})
	t.Run("unanswered", func(t *testing.T) {
		i := dialIni(t, addrOf(s))
		i.mustLogin(loginOpts{})
		i.answerPings = false
		for {
			_, err := i.read()
			if err != nil {
				break // the target dropped us
			}
		}
	})
}

func TestCHAP(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	b.chap = &CHAP{User: "alice", Secret: "alicesecret1", MutualUser: "tgt", MutualSecret: "targetsecret"}
	s := startServer(t, b, nil)
	try := func(o loginOpts) (loginResult, error) {
		i := dialIni(t, addrOf(s))
		o.target = testIQN
		r, err := i.login(o)
		if err == nil && r.status == 0 {
			i.readBlocks(0, 1)
		}
		return r, err
	}
	for _, tc := range []struct {
		name   string
		o      loginOpts
		status uint16
		err    bool
	}{
		{"one-way right", loginOpts{user: "alice", secret: "alicesecret1"}, 0, false},
		{"one-way wrong secret", loginOpts{user: "alice", secret: "wrong"}, statusAuthFailure, false},
		{"wrong user", loginOpts{user: "bob", secret: "alicesecret1"}, statusAuthFailure, false},
		{"no CHAP offered", loginOpts{}, statusAuthFailure, false},
		{"mutual right", loginOpts{user: "alice", secret: "alicesecret1", mutualUser: "tgt", mutualSec: "targetsecret"}, 0, false},
		{"mutual, initiator expects another target secret", loginOpts{user: "alice", secret: "alicesecret1", mutualUser: "tgt", mutualSec: "other"}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := try(tc.o)
			if tc.err != (err != nil) {
				t.Fatalf("err = %v", err)
			}
			if err == nil && r.status != tc.status {
				t.Fatalf("status %#04x, want %#04x", r.status, tc.status)
			}
		})
	}
	b.mu.Lock()
	b.chap = &CHAP{User: "alice", Secret: "alicesecret1"}
	b.mu.Unlock()
	t.Run("mutual not configured", func(t *testing.T) {
		r, err := try(loginOpts{user: "alice", secret: "alicesecret1", mutualUser: "tgt", mutualSec: "x"})
		if err != nil || r.status != statusAuthFailure {
			t.Fatalf("status %#04x err %v, want 0x0201", r.status, err)
		}
	})
}

func TestLoginRefusals(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	b.allow = map[string]bool{"iqn.2024-01.org.lmtgt:ini": true}
	s := startServer(t, b, nil)
	for _, tc := range []struct {
		name   string
		o      loginOpts
		status uint16
	}{
		{"unknown target", loginOpts{target: "iqn.2024-01.org.lmtgt:nope"}, statusNotFound},
		// A refused initiator gets the same status as an unknown IQN: it
		// cannot enumerate targets.
		{"not in ACL", loginOpts{target: testIQN, initiator: "iqn.2024-01.org.lmtgt:intruder"}, statusNotFound},
		{"unknown TSIH", loginOpts{target: testIQN, tsih: 4242}, statusNoSession},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := dialIni(t, addrOf(s))
			r, err := i.login(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != tc.status {
				t.Fatalf("status %#04x, want %#04x", r.status, tc.status)
			}
		})
	}
	t.Run("missing InitiatorName", func(t *testing.T) {
		i := dialIni(t, addrOf(s))
		p, err := i.loginPDU(0, 1, true, []kv{{Key: "TargetName", Value: testIQN}, {Key: "AuthMethod", Value: "None"}})
		if err != nil {
			t.Fatal(err)
		}
		if status(p) != statusMissingParam {
			t.Fatalf("status %#04x", status(p))
		}
	})
	// the server still works
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	i.readBlocks(0, 1)
}

func TestReinstatement(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, nil)
	isid := [6]byte{0x80, 1, 2, 3, 4, 5}
	a := dialIni(t, addrOf(s))
	a.mustLogin(loginOpts{isid: isid})
	a.readBlocks(0, 1)
	oldTSIH := a.tsih

	// Same initiator and ISID, TSIH 0: the old session is closed.
	c := dialIni(t, addrOf(s))
	c.mustLogin(loginOpts{isid: isid})
	if _, err := a.read(); err == nil {
		t.Fatal("old connection still open after reinstatement")
	}
	c.readBlocks(0, 1)
	if n := s.sessionCount(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	waitFor(t, "old nexus closed", 5*time.Second, func() bool { return b.openNexus.Load() == 1 })

	// Reconnect naming the live session's TSIH: connection reinstatement.
	d := dialIni(t, addrOf(s))
	d.mustLogin(loginOpts{isid: isid, tsih: c.tsih})
	if d.tsih != c.tsih {
		t.Fatalf("TSIH %d after reinstatement, want %d", d.tsih, c.tsih)
	}
	d.readBlocks(0, 1)
	// A stale TSIH (the first session's) is refused, never a crash.
	e := dialIni(t, addrOf(s))
	r, err := e.login(loginOpts{isid: isid, tsih: oldTSIH, target: testIQN})
	if oldTSIH != d.tsih && (err != nil || r.status != statusNoSession) {
		t.Fatalf("stale TSIH: status %#04x err %v", r.status, err)
	}
	d.readBlocks(0, 1)
}

func TestDiscovery(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	b.targets = append(b.targets, "iqn.2024-01.org.lmtgt:second")
	s := startServer(t, b, func(o *Options) { o.TPGT = 7 })
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{discovery: true})
	got, err := i.text([]kv{{Key: "SendTargets", Value: "All"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got["TargetName"]) != 2 || got["TargetName"][0] != testIQN {
		t.Fatalf("targets %v", got["TargetName"])
	}
	want := addrOf(s) + ",7"
	if len(got["TargetAddress"]) != 2 || got["TargetAddress"][0] != want {
		t.Fatalf("addresses %v, want %s", got["TargetAddress"], want)
	}
	for _, bad := range []kv{{Key: "SendTargetsPlease", Value: "All"}, {Key: "SendTargets", Value: "Alle"}, {Key: "sENDtARGETS", Value: "aLL"}} {
		got, err := i.text([]kv{bad})
		if err != nil {
			t.Fatal(err)
		}
		if len(got["TargetName"]) != 0 {
			t.Fatalf("%v answered targets", bad)
		}
	}
	// SCSI in a discovery session is a protocol error.
	if err := i.run(&icmd{cdb: make([]byte, 6)}); err == nil || !strings.Contains(err.Error(), "reject") {
		t.Fatalf("SCSI command in discovery: %v", err)
	}
	if err := i.logout(); err != nil {
		t.Fatal(err)
	}
	// SendTargets inside a normal session names only the session's own
	// target (RFC 7143 appendix C): listing the others let anyone with
	// access to one target skip discovery authentication (found by the
	// attack pass on issue 7).
	n := dialIni(t, addrOf(s))
	n.mustLogin(loginOpts{})
	for _, v := range []string{"All", ""} {
		got, err = n.text([]kv{{Key: "SendTargets", Value: v}})
		if err != nil || len(got["TargetName"]) != 1 || got["TargetName"][0] != testIQN {
			t.Fatalf("SendTargets=%s in a normal session: %v %v", v, got, err)
		}
	}
	got, err = n.text([]kv{{Key: "SendTargets", Value: "iqn.2024-01.org.lmtgt:second"}})
	if err != nil || len(got["TargetName"]) != 0 || len(got["SendTargets"]) != 1 || got["SendTargets"][0] != "Reject" {
		t.Fatalf("SendTargets=<another target> in a normal session: %v %v", got, err)
	}
}

func TestDigests(t *testing.T) {
	b := newFileBackend(t, 4<<20)
	s := startServer(t, b, nil)
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{digest: true})
	if !i.hd || !i.dd {
		t.Fatalf("digests not negotiated: %v", i.resp)
	}
	data := pattern(70000/512*512, 5)
	i.writeBlocks(3, data)
	r := i.readBlocks(3, len(data)/testBlock)
	if !bytes.Equal(r.in, data) {
		t.Fatal("read back differs")
	}
	// A corrupt data digest drops the connection.
	var h [pdu.BHSLen]byte
	h[0] = pdu.OpNopOut | pdu.FlagImmed
	h[1] = pdu.FlagFinal
	pdu.Put32(h[16:], 77)
	pdu.Put32(h[20:], pdu.ReservedTag)
	i.dd = false
	buf := []byte("ping")
	pdu.SetDataLen(&h, 4)
	raw := append(append([]byte(nil), h[:]...), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(raw[48:], pdu.CRC32C(h[:]))
	raw = append(raw, buf...)
	raw = append(raw, 1, 2, 3, 4) // wrong data digest
	i.nc.Write(raw)
	if _, err := i.read(); err == nil {
		t.Fatal("connection alive after a bad data digest")
	}
}

func TestTaskManagement(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	b.hook = func(c *Command) {
		if c.CDB[0] == 0x28 && c.CDB[5] == 9 { // READ at LBA 9 blocks
			entered <- struct{}{}
			<-release
		}
	}
	s := startServer(t, b, nil)
	s.noInline = true // keep the reader free while the READ is held
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})

	blocked := &icmd{cdb: read10(9, 1), read: true, edtl: 512}
	if err := i.sendCmd(blocked); err != nil {
		t.Fatal(err)
	}
	<-entered
	// ABORT TASK waits for the running command and suppresses its answer.
	go func() { time.Sleep(20 * time.Millisecond); close(release) }()
	resp, err := i.tmf(TMFAbortTask, 0, blocked.itt, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp != byte(TMFComplete) {
		t.Fatalf("abort response %d", resp)
	}
	resp, err = i.tmf(TMFAbortTask, 0, 0xdead, 0)
	if err != nil || resp != byte(TMFTaskNotExist) {
		t.Fatalf("abort of unknown task: %d %v", resp, err)
	}
	for _, fn := range []TMFunction{TMFAbortTaskSet, TMFClearTaskSet, TMFLogicalUnitReset, TMFTargetWarmReset} {
		resp, err = i.tmf(fn, 0, pdu.ReservedTag, 0)
		if err != nil || resp != byte(TMFComplete) {
			t.Fatalf("TMF %d: %d %v", fn, resp, err)
		}
	}
	resp, err = i.tmf(TMFClearACA, 0, pdu.ReservedTag, 0)
	if err != nil || resp != byte(TMFNotSupported) {
		t.Fatalf("CLEAR ACA: %d %v", resp, err)
	}
	// the aborted command never answered; the session still works
	r := i.readBlocks(0, 1)
	if r.itt == blocked.itt {
		t.Fatal("itt reuse")
	}
	log := b.tmfLog()
	if len(log) < 5 || log[0] != TMFAbortTask || log[3] != TMFLogicalUnitReset {
		t.Fatalf("backend saw TMFs %v", log)
	}
	resp, err = i.tmf(TMFTargetColdReset, 0, pdu.ReservedTag, 0)
	if err != nil || resp != byte(TMFComplete) {
		t.Fatalf("cold reset: %d %v", resp, err)
	}
	if _, err := i.read(); err == nil {
		t.Fatal("connection alive after TARGET COLD RESET")
	}
}

func TestAbortWaitingForData(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, nil)
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{keys: []kv{{Key: "InitialR2T", Value: "Yes"}, {Key: "ImmediateData", Value: "No"}}})
	c := &icmd{cdb: write10(0, 8), edtl: 4096, out: make([]byte, 4096)}
	if err := i.sendCmd(c); err != nil {
		t.Fatal(err)
	}
	if _, err := i.expect(pdu.OpR2T); err != nil {
		t.Fatal(err)
	}
	resp, err := i.tmf(TMFAbortTask, 0, c.itt, 0)
	if err != nil || resp != byte(TMFComplete) {
		t.Fatalf("abort: %d %v", resp, err)
	}
	// late data for the aborted task is dropped quietly
	if err := i.dataOut(c, 1, 0, 0, 512, true); err != nil {
		t.Fatal(err)
	}
	i.readBlocks(0, 1)
}

func TestOverlongDataOut(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, nil)
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{keys: []kv{{Key: "InitialR2T", Value: "No"}, {Key: "ImmediateData", Value: "No"}}})
	i.writeBlocks(0, bytes.Repeat([]byte{'a'}, 2048))
	// EDTL 512 but the initiator pushes 1024 bytes of unsolicited data.
	c := &icmd{cdb: write10(0, 1), edtl: 512, noImm: true, itt: i.nextITT()}
	var h [pdu.BHSLen]byte
	h[0] = pdu.OpSCSICmd
	h[1] = pdu.FlagWrite | 1
	pdu.Put32(h[16:], c.itt)
	pdu.Put32(h[20:], 512)
	pdu.Put32(h[24:], i.cmdSN)
	i.cmdSN++
	copy(h[32:], c.cdb)
	i.write(&h, nil)
	c.out = bytes.Repeat([]byte{'x'}, 1024)
	i.dataOut(c, pdu.ReservedTag, 0, 0, 1024, true)
	p, err := i.expect(pdu.OpReject)
	if err != nil {
		t.Fatalf("over-long Data-Out: %v", err)
	}
	if p.h.B[2] != pdu.RejectProtocolError {
		t.Fatalf("reject reason %#x", p.h.B[2])
	}
	i.readBlocks(0, 1) // the session carries on
	if got := fileBytes(t, b, 512, 1536); !bytes.Equal(got, bytes.Repeat([]byte{'a'}, 1536)) {
		t.Fatal("data beyond EDTL reached the file")
	}
	j := dialIni(t, addrOf(s))
	j.mustLogin(loginOpts{})
	j.readBlocks(0, 1)
}

func TestMaxTransferLength(t *testing.T) {
	b := newFileBackend(t, 4<<20)
	s := startServer(t, b, func(o *Options) { o.MaxTransferLength = 64 << 10 })
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	c := &icmd{cdb: read10(0, 256), read: true, edtl: 128 << 10}
	if err := i.run(c); err != nil {
		t.Fatal(err)
	}
	if c.status != 0x02 || len(c.sense) < 14 || c.sense[2] != 0x05 || c.sense[12] != 0x24 {
		t.Fatalf("status %#x sense %x", c.status, c.sense)
	}
	i.readBlocks(0, 128)
}

func TestShutdownDrains(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	entered := make(chan struct{})
	release := make(chan struct{})
	b.hook = func(c *Command) {
		if c.CDB[0] == 0x28 {
			close(entered)
			<-release
		}
	}
	o := Options{Portals: []string{"127.0.0.1:0"}, Backend: b}
	s, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	c := &icmd{cdb: read10(0, 1), read: true, edtl: 512}
	if err := i.sendCmd(c); err != nil {
		t.Fatal(err)
	}
	<-entered
	done := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	close(release)
	if err := i.run(); err != nil {
		t.Fatal(err)
	}
	p, err := i.expect(pdu.OpDataIn)
	if err != nil || p.h.ITT() != c.itt {
		t.Fatalf("in-flight command not answered during shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b.openNexus.Load() != 0 {
		t.Fatal("nexus left open")
	}
}

func TestStartErrors(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, nil)
	taken := addrOf(s)
	s2, err := NewServer(Options{Portals: []string{"127.0.0.1:0", taken}, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	err = s2.Start()
	if err == nil || !strings.Contains(err.Error(), taken) {
		t.Fatalf("Start on a busy portal: %v (must name %s)", err, taken)
	}
	if _, err := NewServer(Options{Portals: []string{"nonsense"}, Backend: b}); err == nil {
		t.Fatal("bad portal accepted")
	}
}

func TestDiscoveryCHAPAndLongAnswer(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	for k := 0; k < 200; k++ {
		b.targets = append(b.targets, fmt.Sprintf("iqn.2024-01.org.lmtgt:many-%03d", k))
	}
	b.discChap = &CHAP{User: "disc", Secret: "discsecret12"}
	s := startServer(t, b, nil)
	bad := dialIni(t, addrOf(s))
	r, err := bad.login(loginOpts{discovery: true, user: "disc", secret: "nope"})
	if err != nil || r.status != statusAuthFailure {
		t.Fatalf("discovery with a wrong secret: %#04x %v", r.status, err)
	}
	i := dialIni(t, addrOf(s))
	keys := append(dropKey(defaultKeys(), "MaxRecvDataSegmentLength"), kv{Key: "MaxRecvDataSegmentLength", Value: "512"})
	i.mustLogin(loginOpts{discovery: true, user: "disc", secret: "discsecret12", keys: keys})
	// The answer is longer than 512 bytes: it comes in pieces (C bit), each
	// fetched with an empty Text Request carrying the target's TTT.
	var b0 [pdu.BHSLen]byte
	b0[0] = pdu.OpTextReq | pdu.FlagImmed
	b0[1] = pdu.FlagFinal
	pdu.Put32(b0[16:], i.nextITT())
	pdu.Put32(b0[20:], pdu.ReservedTag)
	pdu.Put32(b0[24:], i.cmdSN)
	if err := i.write(&b0, pdu.EncodeText([]kv{{Key: "SendTargets", Value: "All"}})); err != nil {
		t.Fatal(err)
	}
	var all []byte
	for pieces := 1; ; pieces++ {
		p, err := i.expect(pdu.OpTextResp)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.data) > 512 {
			t.Fatalf("text piece of %d bytes over 512", len(p.data))
		}
		all = append(all, p.data...)
		if p.h.Final() {
			if pieces < 10 {
				t.Fatalf("only %d pieces", pieces)
			}
			break
		}
		if p.h.Flags()&pdu.FlagContinue == 0 || p.h.TTT() == pdu.ReservedTag {
			t.Fatalf("non-final text piece: flags %#x ttt %#x", p.h.Flags(), p.h.TTT())
		}
		var nb [pdu.BHSLen]byte
		nb[0] = pdu.OpTextReq | pdu.FlagImmed
		nb[1] = pdu.FlagFinal
		pdu.Put32(nb[16:], p.h.ITT())
		pdu.Put32(nb[20:], p.h.TTT())
		pdu.Put32(nb[24:], i.cmdSN)
		if err := i.write(&nb, nil); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := parseTextMulti(all)
	if len(got["TargetName"]) != 201 || len(got["TargetAddress"]) != 201 {
		t.Fatalf("%d targets, %d addresses", len(got["TargetName"]), len(got["TargetAddress"]))
	}
}
