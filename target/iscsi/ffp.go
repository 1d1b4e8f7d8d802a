package iscsi

import (
	"errors"
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// fullFeature reads PDUs until the connection ends.
func (c *conn) fullFeature() error {
	c.pending = make(map[uint32]*queuedPDU)
	var h header
	defer c.flushHeld() // responses held when the loop ends (rtc.go)
	for {
		if c.draining.Load() {
			return errDraining
		}
		if c.flushDue(nil) {
			if err := c.flushHeld(); err != nil {
				return err
			}
		}
		if err := pdu.ReadHeader(c.br, &h, c.lim); err != nil {
			if errors.Is(err, pdu.ErrPDU) && h.DataLen() > c.lim.MaxData {
				c.reject(&h, pdu.RejectProtocolError)
			}
			return err
		}
		if c.draining.Load() {
			return errDraining // a poll may have read past the drain
		}
		c.rxAt = time.Now()
		c.lastRecv.Store(c.rxAt.UnixNano())
		c.noteActivity(c.rxAt)
		c.armDataPoll(&h)
		if c.flushDue(&h) {
			if err := c.flushHeld(); err != nil {
				return err
			}
		}
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
