package iscsi

import "github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"

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
	return c.respondData(t, len(in), in, nil)
}

// respondData is respond for size bytes of Data-In, taken from in, or
// from file f when f is not nil (zerocopy.go).
func (c *conn) respondData(t *task, size int, in []byte, f *FileData) error {
	cmd := &t.cmd
	rflags, rcount := residual(t, size)
	statusInData := size > 0 && cmd.Status == 0 && len(cmd.Sense) == 0
	seg := max(c.p.MaxXmitDSL, 512)
	burst := max(c.p.MaxBurst, seg)
	npdu := 0
	if size > 0 {
		npdu = (size + int(seg) - 1) / int(seg)
		// bursts end early only if the burst is not a multiple of seg
		npdu += size / int(burst)
	}
	var stack [8]outPDU
	pdus := stack[:0]
	if npdu+1 > len(stack) {
		pdus = make([]outPDU, 0, npdu+1)
	}
	var off, inBurst, dataSN uint32
	total := uint32(size)
	for off < total {
		n := min(seg, total-off, burst-inBurst)
		last := off+n == total
		if f != nil {
			pdus = append(pdus, outPDU{fd: int32(f.Fd), foff: f.Off + int64(off), flen: n})
		} else {
			pdus = append(pdus, outPDU{data: in[off : off+n]})
		}
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
	if t.hold && f == nil && len(in) == 0 {
		// rtc.go: sent with the batch. Only a response that refers to no
		// buffer or file its caller frees after this returns (today only
		// WRITEs are held: quickWrite).
		c.hold(pdus)
		return nil
	}
	return c.sendMayYield(max(t.readLen, t.writeLen) <= yieldMax, pdus...)
}
