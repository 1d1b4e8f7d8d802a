package iscsi

import (
	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

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
	c.mu.Lock()
	t := c.newTaskLocked()
	c.mu.Unlock()
	t.state = taskReceiving
	t.itt, t.lunField, t.edtl, t.imm = h.ITT(), h.LUNField(), edtl, h.Immediate()
	t.lun = DecodeLUN(t.lunField)
	t.expStatSN = h.ExpStatSN()
	t.cmd.Arrived = c.rxAt
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
		c.toWorker(t, false)
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
			c.toWorker(t, false)
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

// run starts executing a task whose data is complete. A READ or WRITE
// that is the only command in flight runs on the reader goroutine itself:
// no hand-off, which is what queue depth 1 latency is made of. A small
// WRITE served from memory runs there even with others in flight, its
// response held for a batch (rtc.go). Anything else goes to one of the
// connection's workers (worker.go) so commands of one session run
// concurrently.
func (c *conn) run(t *task) {
	c.mu.Lock()
	t.state = taskRunning
	rw := !c.srv.noInline && isReadWrite(t.cdb[0])
	alone := rw && c.mu.inflight == 1 && c.br.Buffered() == 0
	c.mu.Unlock()
	held := rw && !alone && c.quickWrite(t)
	// The host is at queue depth 1: nothing else in flight, and it had
	// seen every status when it sent this command (at depth it sends on
	// before reading what was answered). Then the reader polls for its
	// next command (idlepoll.go).
	qd1 := alone && t.expStatSN == c.statNext.Load()
	if !qd1 {
		c.disarmIdlePoll()
	}
	if !alone && !held {
		c.cmdWG.Add(1)
		c.toWorker(t, true)
		return
	}
	c.mu.Lock()
	c.mu.inlineBusy = true
	c.mu.Unlock()
	c.cmdWG.Add(1)
	c.runInline(t, held)
	c.mu.Lock()
	c.mu.inlineBusy = false
	c.mu.Unlock()
	if qd1 {
		c.armIdlePoll()
	}
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
		cmd.FileOK = c.fileOK(t)
		c.execute(cmd)
	}
	n := min(max(cmd.DataInLen, 0), int(t.readLen))
	file := c.fileDataIn(t, n) // zerocopy.go
	if file != nil {
		// Sent from the file: no buffer held during the send.
		c.srv.pool.put(rbuf)
		c.srv.budget.release(c, rres)
		rbuf, rres = nil, 0
	}
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
		var err error
		if file != nil {
			err = c.respondData(t, n, nil, file)
		} else {
			err = c.respond(t, in)
		}
		if err != nil {
			c.log.Debug().Err(err).Uint32("itt", t.itt).Msg("response not sent")
		}
	}
	if file != nil {
		file.Owner.Release()
	}
	if rbuf != nil {
		c.srv.pool.put(rbuf)
	}
	if rres > 0 {
		c.srv.budget.release(c, rres)
	}
	c.freeWrite(t)
	c.mu.Lock()
	if c.mu.tasks[t.itt] == t {
		delete(c.mu.tasks, t.itt)
	}
	c.freeTaskLocked(t)
	c.mu.Unlock()
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
