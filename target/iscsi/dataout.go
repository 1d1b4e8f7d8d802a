package iscsi

import (
	"fmt"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

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
		return c.dropDataOut(h, t)
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
		return c.dropDataOut(h, t)
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

// dropDataOut refuses Data-Out PDU h of task t, which breaks the task's
// data sequence: it discards the PDU's data, drops the task if it still
// waits for data, and rejects the PDU (protocol error).
func (c *conn) dropDataOut(h *header, t *task) error {
	if err := pdu.DiscardData(c.br, h.DataLen(), c.lim.DataDigest); err != nil {
		return err
	}
	itt := h.ITT()
	c.mu.Lock()
	if t.state == taskReceiving && c.mu.tasks[itt] == t {
		c.dropTaskLocked(itt, t)
	}
	c.mu.Unlock()
	return c.reject(h, pdu.RejectProtocolError)
}
