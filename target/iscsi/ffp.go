package iscsi

import (
	"errors"
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// taskState is where a SCSI task is. Transitions: receiving -> running ->
// responding -> done; receiving -> done (aborted or connection gone).
type taskState uint8

const (
	taskReceiving  taskState = iota // waiting for Data-Out
	taskRunning                     // in Nexus.Execute
	taskResponding                  // response being written
	taskDone
)

func (s taskState) String() string {
	switch s {
	case taskReceiving:
		return "receiving"
	case taskRunning:
		return "running"
	case taskResponding:
		return "responding"
	case taskDone:
		return "done"
	}
	return fmt.Sprintf("taskState(%d)", uint8(s))
}

// dataSeq is one output data sequence: the unsolicited burst or one R2T.
type dataSeq struct {
	ttt       uint32
	next, end uint32 // next expected offset, end offset
	sn        uint32 // next expected DataSN
}

// task is one SCSI command of a connection. Fields up to state are owned by
// the reader goroutine until the task runs; state and aborted are guarded
// by conn.mu.
type task struct {
	itt      uint32
	lunField [8]byte
	lun      uint64
	cdb      [16]byte
	edtl     uint32
	readLen  uint32
	writeLen uint32
	wbuf     *[]byte
	reserved int64 // write budget bytes held (budget.go); set under conn.mu
	imm      bool  // immediate command: counts against maxImmediate
	received uint32
	unsol    dataSeq
	nextR2T  uint32
	r2ts     []dataSeq
	r2tSN    uint32
	cmd      Command

	state   taskState
	aborted bool
	done    chan struct{}
}

// fullFeature reads PDUs until the connection ends.
func (c *conn) fullFeature() error {
	c.pending = make(map[uint32]*queuedPDU)
	var h header
	for {
		if c.draining.Load() {
			return errDraining
		}
		if err := pdu.ReadHeader(c.br, &h, c.lim); err != nil {
			if errors.Is(err, pdu.ErrPDU) && h.DataLen() > c.lim.MaxData {
				c.reject(&h, pdu.RejectProtocolError)
			}
			return err
		}
		c.lastRecv.Store(time.Now().UnixNano())
		var err error
		switch op := h.Opcode(); op {
		case pdu.OpSCSICmd, pdu.OpNopOut, pdu.OpTMFReq, pdu.OpTextReq, pdu.OpLogoutReq:
			err = c.sequenced(&h)
		case pdu.OpDataOut:
			err = c.dataOut(&h)
		case pdu.OpSNACKReq:
			// ERL 0: no SNACK support.
			if err = pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest); err == nil {
				err = c.reject(&h, pdu.RejectProtocolError)
			}
		default:
			if err = pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest); err == nil {
				err = c.reject(&h, pdu.RejectNotSupported)
			}
		}
		if err != nil {
			return err
		}
	}
}

// maxImmediate bounds the immediate SCSI commands one session may have
// outstanding. RFC 7143 §3.2.2.1 asks a target to take at least one; more
// are answered with a Reject, reason "too many immediate commands".
const maxImmediate = 8

// sequenced applies CmdSN rules (RFC 7143 §3.2.2.1, §4.2.2.1) to a command
// PDU: immediate PDUs run now (SCSI commands up to maxImmediate at once),
// the next expected CmdSN runs and advances ExpCmdSN when it lies inside
// [ExpCmdSN, MaxCmdSN], later ones inside the window wait, and every
// non-immediate PDU outside the window is silently ignored. MaxCmdSN only
// moves as commands complete (windowLocked), so the window bounds the
// commands outstanding.
func (c *conn) sequenced(h *header) error {
	op := h.Opcode()
	if op == pdu.OpNopOut && h.ITT() == pdu.ReservedTag {
		return c.nopAnswer(h)
	}
	sn := h.CmdSN()
	if h.Immediate() {
		if op == pdu.OpSCSICmd {
			c.mu.Lock()
			if c.mu.immediate >= maxImmediate {
				c.mu.Unlock()
				c.log.Debug().Uint32("itt", h.ITT()).Msg("too many immediate commands: rejected")
				if err := pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest); err != nil {
					return err
				}
				return c.reject(h, pdu.RejectImmediateCmd)
			}
			c.mu.inflight++
			c.mu.immediate++
			c.mu.Unlock()
		}
		return c.dispatch(h, nil, false)
	}
	c.mu.Lock()
	c.windowLocked() // MaxCmdSN as it stands now
	if sn == c.mu.expCmdSN && c.inWindowLocked(sn) {
		c.mu.expCmdSN++
		if op == pdu.OpSCSICmd {
			c.mu.inflight++
		}
		c.mu.Unlock()
		if err := c.dispatch(h, nil, false); err != nil {
			return err
		}
		return c.runPending()
	}
	inWin := c.inWindowLocked(sn)
	exp := c.mu.expCmdSN
	c.mu.Unlock()
	if !inWin || len(c.pending) >= c.srv.opts.QueueDepth || c.pending[sn] != nil {
		c.log.Debug().Uint32("cmdsn", sn).Uint32("exp_cmdsn", exp).Uint8("opcode", op).Msg("CmdSN outside the window: ignored")
		return pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest)
	}
	// A waiting PDU's data is buffered too: it counts against the write
	// buffer budget like a write's (dropped like an out-of-window PDU when
	// there is no space), or sessions queueing a window of data-carrying
	// PDUs each could buffer window x MaxRecvDataSegmentLength past the cap.
	n := int64(h.DataLen())
	if n > 0 && !c.srv.budget.reserve(c, nil, n, false) {
		c.log.Debug().Uint32("cmdsn", sn).Uint32("exp_cmdsn", exp).Uint8("opcode", op).Msg("no buffer space for a PDU ahead of ExpCmdSN: ignored")
		return pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest)
	}
	q := &queuedPDU{h: header{B: h.B, AHS: append([]byte(nil), h.AHS...)}, reserved: n}
	q.data = make([]byte, h.DataLen())
	if err := pdu.ReadData(c.br, q.data, c.lim.DataDigest); err != nil {
		c.srv.budget.release(c, n)
		return err
	}
	c.pending[sn] = q
	return nil
}

// runPending dispatches queued PDUs whose CmdSN has come up.
func (c *conn) runPending() error {
	for len(c.pending) > 0 {
		c.mu.Lock()
		sn := c.mu.expCmdSN
		q := c.pending[sn]
		if q == nil {
			c.mu.Unlock()
			return nil
		}
		delete(c.pending, sn)
		if q.reserved > 0 {
			c.srv.budget.release(c, q.reserved)
		}
		c.mu.expCmdSN++
		if q.h.Opcode() == pdu.OpSCSICmd {
			c.mu.inflight++
		}
		c.mu.Unlock()
		if err := c.dispatch(&q.h, q.data, true); err != nil {
			return err
		}
	}
	return nil
}

// dispatch runs a sequenced PDU. queued says data holds its data segment
// already; otherwise the handler reads it from the connection.
func (c *conn) dispatch(h *header, data []byte, queued bool) error {
	switch h.Opcode() {
	case pdu.OpSCSICmd:
		return c.scsiCommand(h, data, queued)
	case pdu.OpNopOut:
		return c.nopOut(h, data, queued)
	case pdu.OpTMFReq:
		return c.taskMgmt(h, queued)
	case pdu.OpTextReq:
		return c.text(h, data, queued)
	case pdu.OpLogoutReq:
		return c.logout(h, queued)
	}
	return fmt.Errorf("dispatch opcode 0x%02x: %w", h.Opcode(), pdu.ErrPDU)
}

// segment returns the data segment of a small control PDU.
func (c *conn) segment(h *header, data []byte, queued bool) ([]byte, error) {
	if queued {
		return data, nil
	}
	buf := make([]byte, h.DataLen())
	if err := pdu.ReadData(c.br, buf, c.lim.DataDigest); err != nil {
		return nil, err
	}
	return buf, nil
}

func (c *conn) skip(h *header, queued bool) error {
	if queued {
		return nil
	}
	return pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest)
}

// releaseSlot gives back a command window slot taken for a command that
// never became a task.
func (c *conn) releaseSlot(h *header) {
	c.mu.Lock()
	c.slotDoneLocked(h.Immediate())
	c.mu.Unlock()
}

// slotDoneLocked gives back the slot of a command that no longer counts as
// outstanding.
func (c *conn) slotDoneLocked(imm bool) {
	c.mu.inflight--
	if imm {
		c.mu.immediate--
	}
}

// Sense data for errors the transport itself reports.
func fixedSense(key, asc, ascq byte) []byte {
	s := make([]byte, 18)
	s[0] = 0x70
	s[2] = key
	s[7] = 10
	s[12] = asc
	s[13] = ascq
	return s
}

// scsiCommand starts a SCSI command: it checks the PDU, stores immediate
// data, and either runs the command or solicits the rest of its data.
func (c *conn) scsiCommand(h *header, data []byte, queued bool) error {
	rejectIt := func(reason byte, why string) error {
		c.releaseSlot(h)
		c.log.Debug().Uint32("itt", h.ITT()).Str("why", why).Msg("SCSI command rejected")
		if err := c.skip(h, queued); err != nil {
			return err
		}
		return c.reject(h, reason)
	}
	if c.nexus == nil {
		return rejectIt(pdu.RejectProtocolError, "SCSI command in a discovery session")
	}
	flags := h.Flags()
	rd, wr := flags&pdu.FlagRead != 0, flags&pdu.FlagWrite != 0
	dl := h.DataLen()
	edtl := h.EDTL()
	cdb, bidiRead, hasBidi, err := h.SCSICDB()
	if err != nil {
		return rejectIt(pdu.RejectInvalidPDUField, err.Error())
	}
	switch {
	case dl > 0 && !wr:
		return rejectIt(pdu.RejectProtocolError, "immediate data without W bit")
	case dl > 0 && !c.p.ImmediateData:
		return rejectIt(pdu.RejectProtocolError, "immediate data not negotiated")
	case dl > edtl:
		return rejectIt(pdu.RejectProtocolError, "immediate data beyond the expected length")
	case dl > c.p.FirstBurst:
		return rejectIt(pdu.RejectProtocolError, "immediate data beyond FirstBurstLength")
	}
	t := &task{itt: h.ITT(), lunField: h.LUNField(), edtl: edtl, imm: h.Immediate(), done: make(chan struct{})}
	t.lun = DecodeLUN(t.lunField)
	if rd && !wr {
		t.readLen = edtl
	}
	if wr {
		t.writeLen = edtl
		if rd && hasBidi {
			t.readLen = bidiRead
		}
	}
	if len(cdb) == 16 {
		t.cdb = [16]byte(cdb)
		t.cmd.CDB = t.cdb[:]
	} else {
		t.cmd.CDB = cdb
	}
	c.mu.Lock()
	if old := c.mu.tasks[t.itt]; old != nil && old.state < taskResponding {
		c.mu.Unlock()
		return rejectIt(pdu.RejectTaskInProgress, "initiator task tag in use")
	}
	c.mu.Unlock()

	if max(t.readLen, t.writeLen) > c.srv.opts.MaxTransferLength {
		// Too big to buffer: fail the command without touching data.
		if err := c.skip(h, queued); err != nil {
			return err
		}
		t.state = taskRunning
		c.mu.Lock()
		c.mu.tasks[t.itt] = t
		c.mu.Unlock()
		t.cmd.Status = 0x02
		t.cmd.Sense = fixedSense(0x05, 0x24, 0x00) // INVALID FIELD IN CDB
		t.readLen, t.writeLen = 0, 0
		c.cmdWG.Add(1)
		go c.complete(t, false)
		return nil
	}
	// The unsolicited burst: immediate data plus, with InitialR2T=No and
	// the F bit clear, Data-Out PDUs up to FirstBurstLength.
	unsolEnd := dl
	if wr && !c.p.InitialR2T && flags&pdu.FlagFinal == 0 {
		unsolEnd = max(min(c.p.FirstBurst, t.writeLen), dl)
	}
	t.unsol = dataSeq{ttt: pdu.ReservedTag, next: dl, end: unsolEnd}
	t.nextR2T = unsolEnd
	if t.writeLen > 0 {
		// Buffer space first (budget.go): nothing is allocated past the
		// server's write buffer cap.
		n := int64(t.writeLen)
		park := unsolEnd == 0
		if park {
			c.mu.Lock()
			c.mu.tasks[t.itt] = t
			c.mu.Unlock()
		}
		if !c.srv.budget.reserve(c, t, n, park) {
			if park {
				// Parked: no R2T until granted (c.granted).
				c.log.Debug().Uint32("itt", t.itt).Msg("write waits for buffer space")
				return nil
			}
			// Its unsolicited data is on the wire and has nowhere to go.
			c.log.Debug().Uint32("itt", t.itt).Msg("no write buffer space: TASK SET FULL")
			if err := c.skip(h, queued); err != nil {
				c.releaseSlot(h)
				return err
			}
			t.state = taskRunning
			c.mu.Lock()
			c.mu.tasks[t.itt] = t
			c.mu.Unlock()
			t.cmd.Status = 0x28 // TASK SET FULL
			t.readLen, t.writeLen = 0, 0
			c.cmdWG.Add(1)
			go c.complete(t, false)
			return nil
		}
		buf := c.srv.pool.get(int(t.writeLen))
		c.mu.Lock()
		t.wbuf, t.reserved = buf, n
		c.mu.Unlock()
	}
	if dl > 0 {
		dst := (*t.wbuf)[:dl]
		if queued {
			copy(dst, data)
		} else if err := pdu.ReadData(c.br, dst, c.lim.DataDigest); err != nil {
			c.srv.pool.put(t.wbuf)
			c.srv.budget.release(c, t.reserved)
			c.releaseSlot(h)
			return err
		}
	}
	t.received = dl
	c.mu.Lock()
	c.mu.tasks[t.itt] = t
	c.mu.Unlock()
	if t.received >= t.writeLen {
		c.run(t)
		return nil
	}
	if t.unsol.next >= t.unsol.end {
		return c.sendR2Ts(t)
	}
	return nil
}

// sendR2Ts solicits data up to MaxOutstandingR2T sequences of at most
// MaxBurstLength each.
func (c *conn) sendR2Ts(t *task) error {
	pdus := c.nextR2Ts(t)
	if len(pdus) == 0 {
		return nil
	}
	return c.send(pdus...)
}

// nextR2Ts opens the next R2T sequences of t and returns their PDUs.
func (c *conn) nextR2Ts(t *task) []outPDU {
	var pdus []outPDU
	for uint32(len(t.r2ts)) < c.p.MaxOutR2T && t.nextR2T < t.writeLen {
		n := min(c.p.MaxBurst, t.writeLen-t.nextR2T)
		seq := dataSeq{ttt: c.newTTT(), next: t.nextR2T, end: t.nextR2T + n}
		t.r2ts = append(t.r2ts, seq)
		var b [pdu.BHSLen]byte
		b[0] = pdu.OpR2T
		b[1] = pdu.FlagFinal
		copy(b[8:16], t.lunField[:])
		pdu.Put32(b[16:], t.itt)
		pdu.Put32(b[20:], seq.ttt)
		pdu.Put32(b[36:], t.r2tSN)
		pdu.Put32(b[40:], seq.next)
		pdu.Put32(b[44:], n)
		t.r2tSN++
		t.nextR2T += n
		pdus = append(pdus, outPDU{hdr: b, stat: statPeek})
	}
	return pdus
}

// dataOut stores one SCSI Data-Out PDU in its task's buffer after checking
// it belongs to the current sequence (offset, length, DataSN, TTT).
func (c *conn) dataOut(h *header) error {
	dl := h.DataLen()
	itt := h.ITT()
	c.mu.Lock()
	t := c.mu.tasks[itt]
	if t != nil && (t.state != taskReceiving || t.aborted) {
		t = nil
	}
	parked := t != nil && t.wbuf == nil
	c.mu.Unlock()
	if parked {
		// No R2T went out yet: data now breaks the sequence.
		c.log.Warn().Uint32("itt", itt).Msg("Data-Out for a write still waiting for buffer space; task dropped")
		if err := pdu.DiscardData(c.br, dl, c.lim.DataDigest); err != nil {
			return err
		}
		c.mu.Lock()
		if t.state == taskReceiving && c.mu.tasks[itt] == t {
			c.dropTaskLocked(itt, t)
		}
		c.mu.Unlock()
		return c.reject(h, pdu.RejectProtocolError)
	}
	if t == nil {
		// Late data for an aborted or finished task: drop it quietly.
		c.log.Debug().Uint32("itt", itt).Msg("Data-Out for no waiting task: dropped")
		return pdu.DiscardData(c.br, dl, c.lim.DataDigest)
	}
	ttt := h.TTT()
	var seq *dataSeq
	idx := -1
	if ttt == pdu.ReservedTag {
		seq = &t.unsol
	} else {
		for i := range t.r2ts {
			if t.r2ts[i].ttt == ttt {
				seq, idx = &t.r2ts[i], i
			}
		}
	}
	off := h.BufferOffset()
	var bad string
	switch {
	case seq == nil:
		bad = "unknown target transfer tag"
	case h.DataSN() != seq.sn:
		bad = fmt.Sprintf("DataSN %d, expected %d", h.DataSN(), seq.sn)
	case off != seq.next:
		bad = fmt.Sprintf("buffer offset %d, expected %d", off, seq.next)
	case uint64(off)+uint64(dl) > uint64(seq.end):
		bad = fmt.Sprintf("data %d+%d beyond the sequence end %d", off, dl, seq.end)
	}
	if bad != "" {
		// ERL 0 cannot recover a broken data sequence: reject the PDU and
		// drop the task (the initiator fails the command on the Reject);
		// the connection and its other tasks carry on.
		c.log.Warn().Uint32("itt", itt).Str("why", bad).Msg("bad Data-Out; task dropped")
		if err := pdu.DiscardData(c.br, dl, c.lim.DataDigest); err != nil {
			return err
		}
		c.mu.Lock()
		if t.state == taskReceiving && c.mu.tasks[itt] == t {
			c.dropTaskLocked(itt, t)
		}
		c.mu.Unlock()
		return c.reject(h, pdu.RejectProtocolError)
	}
	if err := pdu.ReadData(c.br, (*t.wbuf)[off:off+dl], c.lim.DataDigest); err != nil {
		return err
	}
	seq.next += dl
	seq.sn++
	t.received += dl
	complete := seq.next == seq.end
	if h.Final() && !complete {
		if idx >= 0 {
			c.log.Warn().Uint32("itt", itt).Msg("F bit before the end of an R2T sequence; task dropped")
			c.mu.Lock()
			if t.state == taskReceiving && c.mu.tasks[itt] == t {
				c.dropTaskLocked(itt, t)
			}
			c.mu.Unlock()
			return c.reject(h, pdu.RejectProtocolError)
		}
		// The initiator ended its unsolicited burst early: solicit the rest.
		t.unsol.end = seq.next
		t.nextR2T = seq.next
		complete = true
	}
	if !complete {
		return nil
	}
	if idx >= 0 {
		t.r2ts = append(t.r2ts[:idx], t.r2ts[idx+1:]...)
	}
	if t.received >= t.writeLen {
		c.run(t)
		return nil
	}
	return c.sendR2Ts(t)
}

// run starts executing a task whose data is complete. A READ or WRITE
// that is the only command in flight runs on the reader goroutine itself:
// no hand-off, which is what queue depth 1 latency is made of. Anything
// else, or any command while others are in flight, gets its own goroutine
// so commands of one session run concurrently.
func (c *conn) run(t *task) {
	c.mu.Lock()
	t.state = taskRunning
	inline := c.mu.inflight == 1 && c.br.Buffered() == 0 && !c.srv.noInline && isReadWrite(t.cdb[0])
	if inline {
		c.mu.inlineBusy = true
	}
	c.mu.Unlock()
	c.cmdWG.Add(1)
	if inline {
		c.complete(t, true)
		c.mu.Lock()
		c.mu.inlineBusy = false
		c.mu.Unlock()
		return
	}
	go c.complete(t, true)
}

// isReadWrite reports READ/WRITE (6/10/12/16): the commands worth running
// without a hand-off.
func isReadWrite(op byte) bool {
	switch op {
	case 0x08, 0x28, 0xa8, 0x88, 0x0a, 0x2a, 0xaa, 0x8a:
		return true
	}
	return false
}

// complete executes t (when exec) and sends its response. It owns t from
// now on.
func (c *conn) complete(t *task, exec bool) {
	defer c.cmdWG.Done()
	cmd := &t.cmd
	var rbuf *[]byte
	var rres int64 // budget held for the Data-In buffer
	if exec && t.readLen > 0 {
		if c.srv.budget.reserve(c, t, int64(t.readLen), false) {
			rres = int64(t.readLen)
		} else {
			// No room for its Data-In under the buffer cap: not run.
			c.log.Debug().Uint32("itt", t.itt).Msg("no buffer space for Data-In: TASK SET FULL")
			exec = false
			cmd.Status = 0x28 // TASK SET FULL
			t.readLen, t.writeLen = 0, 0
		}
	}
	if exec {
		cmd.LUN = t.lun
		cmd.Tag = t.itt
		cmd.ExpectedReadLength = t.readLen
		cmd.ExpectedWriteLength = t.writeLen
		if t.wbuf != nil {
			cmd.DataOut = (*t.wbuf)[:t.received:t.received]
		}
		if t.readLen > 0 {
			rbuf = c.srv.pool.get(int(t.readLen))
			cmd.DataIn = (*rbuf)[:t.readLen:t.readLen]
		} else {
			cmd.DataIn = t.cdb[:0:0] // empty, not nil, no allocation
		}
		c.execute(cmd)
	}
	n := min(max(cmd.DataInLen, 0), int(t.readLen))
	c.mu.Lock()
	aborted := t.aborted
	c.slotDoneLocked(t.imm)
	t.state = taskResponding
	c.mu.Unlock()
	if !aborted {
		var in []byte
		if n > 0 {
			in = cmd.DataIn[:n]
		}
		if err := c.respond(t, in); err != nil {
			c.log.Debug().Err(err).Uint32("itt", t.itt).Msg("response not sent")
		}
	}
	c.mu.Lock()
	if c.mu.tasks[t.itt] == t {
		delete(c.mu.tasks, t.itt)
	}
	t.state = taskDone
	c.mu.Unlock()
	if rbuf != nil {
		c.srv.pool.put(rbuf)
	}
	if rres > 0 {
		c.srv.budget.release(c, rres)
	}
	if t.wbuf != nil {
		c.srv.pool.put(t.wbuf)
		t.wbuf = nil
	}
	if t.reserved > 0 {
		c.srv.budget.release(c, t.reserved)
		t.reserved = 0
	}
	cmd.DataIn, cmd.DataOut = nil, nil
	close(t.done)
}

// execute calls the backend, turning a panic into CHECK CONDITION.
func (c *conn) execute(cmd *Command) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error().Interface("panic", r).Hex("cdb", cmd.CDB).Msg("backend panic in Execute")
			cmd.Status = 0x02
			cmd.Sense = fixedSense(0x04, 0x44, 0x00) // HARDWARE ERROR, INTERNAL TARGET FAILURE
			cmd.DataInLen = 0
		}
	}()
	c.nexus.Execute(cmd)
}

// residual computes the SCSI Response residual flags (O 0x04, U 0x02) and
// count from the expected length and what the command moved.
func residual(t *task, dataIn int) (flags byte, count uint32) {
	cmd := &t.cmd
	edtl := int64(t.edtl)
	read := t.readLen > 0 || (t.writeLen == 0 && dataIn > 0)
	if t.writeLen == 0 && t.readLen == 0 && !cmd.HasTransferLength {
		return 0, 0
	}
	var want int64
	if read {
		want = int64(dataIn)
		if cmd.HasTransferLength && int64(cmd.TransferLength) > want {
			want = int64(cmd.TransferLength)
		}
		switch {
		case want > edtl:
			return 0x04, uint32(want - edtl)
		case int64(dataIn) < edtl:
			return 0x02, uint32(edtl - int64(dataIn))
		}
		return 0, 0
	}
	want = int64(t.received)
	if cmd.HasTransferLength {
		want = int64(cmd.TransferLength)
	}
	switch {
	case want > edtl:
		return 0x04, uint32(want - edtl)
	case want < edtl:
		return 0x02, uint32(edtl - want)
	}
	return 0, 0
}

// respond sends Data-In (split at the initiator's MaxRecvDataSegmentLength
// and MaxBurstLength) and the status, in the last Data-In when possible.
func (c *conn) respond(t *task, in []byte) error {
	cmd := &t.cmd
	rflags, rcount := residual(t, len(in))
	statusInData := len(in) > 0 && cmd.Status == 0 && len(cmd.Sense) == 0
	seg := max(c.p.MaxXmitDSL, 512)
	burst := max(c.p.MaxBurst, seg)
	npdu := 0
	if len(in) > 0 {
		npdu = (len(in) + int(seg) - 1) / int(seg)
		// bursts end early only if the burst is not a multiple of seg
		npdu += len(in) / int(burst)
	}
	var stack [8]outPDU
	pdus := stack[:0]
	if npdu+1 > len(stack) {
		pdus = make([]outPDU, 0, npdu+1)
	}
	var off, inBurst, dataSN uint32
	total := uint32(len(in))
	for off < total {
		n := min(seg, total-off, burst-inBurst)
		last := off+n == total
		pdus = append(pdus, outPDU{data: in[off : off+n]})
		b := &pdus[len(pdus)-1].hdr
		b[0] = pdu.OpDataIn
		if last || inBurst+n == burst {
			b[1] |= pdu.FlagFinal
		}
		copy(b[8:16], t.lunField[:])
		pdu.Put32(b[16:], t.itt)
		pdu.Put32(b[20:], pdu.ReservedTag)
		pdu.Put32(b[36:], dataSN)
		pdu.Put32(b[40:], off)
		stat := statNone
		if last && statusInData {
			b[1] |= 0x01 | rflags
			b[3] = cmd.Status
			pdu.Put32(b[44:], rcount)
			stat = statTake
		}
		pdus[len(pdus)-1].stat = stat
		dataSN++
		off += n
		inBurst += n
		if inBurst == burst {
			inBurst = 0
		}
	}
	if !statusInData {
		pdus = append(pdus, outPDU{stat: statTake})
		b := &pdus[len(pdus)-1].hdr
		b[0] = pdu.OpSCSIResp
		b[1] = pdu.FlagFinal | rflags
		b[3] = cmd.Status
		pdu.Put32(b[16:], t.itt)
		pdu.Put32(b[36:], dataSN+t.r2tSN)
		pdu.Put32(b[44:], rcount)
		var sense []byte
		if len(cmd.Sense) > 0 {
			sl := min(len(cmd.Sense), 0xffff, int(c.p.MaxXmitDSL)-2)
			sense = make([]byte, 2+sl)
			pdu.Put16(sense, uint16(sl))
			copy(sense[2:], cmd.Sense[:sl])
		}
		pdus[len(pdus)-1].data = sense
	}
	return c.send(pdus...)
}

// abortWaitingTasks drops every task still waiting for Data-Out. Reader
// goroutine only (it owns those tasks' buffers).
func (c *conn) abortWaitingTasks() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for itt, t := range c.mu.tasks {
		if t.state == taskReceiving {
			c.dropTaskLocked(itt, t)
		}
	}
}

func (c *conn) dropTaskLocked(itt uint32, t *task) {
	t.aborted = true
	delete(c.mu.tasks, itt)
	c.slotDoneLocked(t.imm)
	t.state = taskDone
	if t.wbuf != nil {
		c.srv.pool.put(t.wbuf)
		t.wbuf = nil
	}
	if t.reserved > 0 {
		c.srv.budget.release(c, t.reserved)
		t.reserved = 0
	} else {
		c.srv.budget.cancel(t)
	}
	close(t.done)
}

// nopOut answers an initiator ping with a NOP-In echoing its data.
func (c *conn) nopOut(h *header, data []byte, queued bool) error {
	data, err := c.segment(h, data, queued)
	if err != nil {
		return err
	}
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpNopIn
	b[1] = pdu.FlagFinal
	copy(b[8:16], h.B[8:16])
	pdu.Put32(b[16:], h.ITT())
	pdu.Put32(b[20:], pdu.ReservedTag)
	return c.send(outPDU{hdr: b, data: data, stat: statTake})
}

// nopAnswer handles a NOP-Out with ITT 0xffffffff: the answer to a
// target ping (or an initiator ping wanting no reply).
func (c *conn) nopAnswer(h *header) error {
	if err := pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest); err != nil {
		return err
	}
	c.mu.Lock()
	if h.TTT() != pdu.ReservedTag && h.TTT() == c.mu.pingTTT {
		c.mu.pingAt = 0
	}
	if !h.Immediate() && h.CmdSN() == c.mu.expCmdSN {
		c.mu.expCmdSN++
	}
	c.mu.Unlock()
	return nil
}

// taskMgmt handles a Task Management Function request. Affected tasks are
// aborted (their responses suppressed); the answer goes out once running
// ones have stopped.
func (c *conn) taskMgmt(h *header, queued bool) error {
	if err := c.skip(h, queued); err != nil {
		return err
	}
	if c.nexus == nil {
		return c.reject(h, pdu.RejectProtocolError)
	}
	fn := TMFunction(h.Flags() & 0x7f)
	lun := DecodeLUN(h.LUNField())
	itt := h.ITT()
	var victims []*task
	resp := TMFComplete
	c.mu.Lock()
	switch fn {
	case TMFAbortTask:
		t := c.mu.tasks[h.U32(20)]
		if t == nil || t.state >= taskResponding {
			resp = TMFTaskNotExist
		}
		if t != nil {
			victims = append(victims, t)
		}
	case TMFAbortTaskSet, TMFClearTaskSet, TMFLogicalUnitReset:
		for _, t := range c.mu.tasks {
			if t.lun == lun {
				victims = append(victims, t)
			}
		}
	case TMFTargetWarmReset, TMFTargetColdReset:
		for _, t := range c.mu.tasks {
			victims = append(victims, t)
		}
	case TMFTaskReassign:
		resp = TMFReassignUnsupported
	default:
		resp = TMFNotSupported
	}
	for _, t := range victims {
		if t.state == taskReceiving {
			c.dropTaskLocked(t.itt, t)
		} else if t.state == taskRunning {
			t.aborted = true
		}
	}
	c.mu.Unlock()
	c.log.Info().Uint8("function", uint8(fn)).Uint64("lun", lun).Int("tasks", len(victims)).Msg("task management")
	if resp == TMFReassignUnsupported || resp == TMFNotSupported {
		return c.sendTMFResp(itt, resp)
	}
	c.cmdWG.Add(1)
	go func() {
		defer c.cmdWG.Done()
		defer func() {
			if r := recover(); r != nil {
				c.log.Error().Interface("panic", r).Msg("task management panic")
				c.closeNow()
			}
		}()
		for _, t := range victims {
			<-t.done
		}
		if resp == TMFComplete {
			r := c.nexus.TaskManagement(fn, lun)
			switch fn {
			case TMFLogicalUnitReset, TMFTargetWarmReset, TMFTargetColdReset:
				resp = r
			}
		}
		c.sendTMFResp(itt, resp)
		if fn == TMFTargetColdReset {
			c.closeNow()
		}
	}()
	return nil
}

func (c *conn) sendTMFResp(itt uint32, r TMFResponse) error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpTMFResp
	b[1] = pdu.FlagFinal
	b[2] = byte(r)
	pdu.Put32(b[16:], itt)
	return c.send(outPDU{hdr: b, stat: statTake})
}

// logout ends the session or connection after running commands answer.
func (c *conn) logout(h *header, queued bool) error {
	if err := c.skip(h, queued); err != nil {
		return err
	}
	reason := h.Flags() & 0x7f
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpLogoutResp
	b[1] = pdu.FlagFinal
	pdu.Put32(b[16:], h.ITT())
	if reason > 1 {
		// 2 = remove the connection for recovery: not at ERL 0.
		b[2] = 2
		return c.send(outPDU{hdr: b, stat: statTake})
	}
	c.abortWaitingTasks()
	c.cmdWG.Wait()
	pdu.Put16(b[40:], uint16(c.p.Time2Wait))
	pdu.Put16(b[42:], uint16(c.p.Time2Retain))
	if err := c.send(outPDU{hdr: b, stat: statTake}); err != nil {
		return err
	}
	return errLoggedOut
}
