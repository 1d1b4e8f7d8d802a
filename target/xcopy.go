package target

import (
	"bytes"
	"errors"
	"io"
)

// EXTENDED COPY (LID1, SPC-4 6.4) and RECEIVE COPY RESULTS (6.18): the
// copy manager for VAAI full copy / ODX-like clones inside one target.
//
// Rules (written down in docs/design.md, "EXTENDED COPY"):
//   - Only identification descriptor CSCD descriptors (type E4h) naming a
//     logical-unit designator from VPD 0x83, and block-to-block segment
//     descriptors (type 02h), are implemented.
//   - A CSCD descriptor resolves only to a LUN the I_T nexus the command
//     came in on may reach: a LUN of the same target, not masked from the
//     initiator (targetView.lun). Naming any other LUN, even one this
//     server exports elsewhere, is COPY ABORTED, COPY TARGET DEVICE NOT
//     REACHABLE (LIO's CVE-2020-28374 let XCOPY reach LUNs the initiator
//     was not mapped to).
//   - The copy writes the destination through its LUN's volume handle
//     under the LUN's shared I/O lock: exactly the path of a host WRITE,
//     so a destination that is the source of a migration pair gets lm's
//     dual-write (both legs, intent marks) like any host write.
//   - A write-protected destination mapping answers DATA PROTECT, WRITE
//     PROTECTED; a write-protected source may be read.
//   - Each LUN a segment reads or writes is checked as a READ or a WRITE
//     from this nexus would be: a LUN whose ALUA state on this port is
//     not active cannot be named (COPY TARGET DEVICE NOT REACHABLE), and a
//     persistent or SPC-2 reservation that would refuse the READ or the
//     WRITE answers RESERVATION CONFLICT.
//   - The command runs synchronously; its result is kept per I_T nexus by
//     list ID (LIST ID USAGE 00b or 10b) for RECEIVE COPY RESULTS, COPY
//     STATUS, the last xcopyKeptResults of them.

// Copy manager limits, reported by RECEIVE COPY RESULTS (OPERATING
// PARAMETERS).
const (
	xcopyMaxTargetDescs  = 4
	xcopyMaxSegmentDescs = 16
	xcopyMaxDescListLen  = 1024
	xcopyMaxSegmentBytes = 64 << 20
	xcopyKeptResults     = 32
	xcopyHeaderLen       = 16
	xcopyTargetDescLen   = 32
	xcopyB2BDescLen      = 28 // block -> block segment descriptor, header included
)

// Descriptor type codes.
const (
	xcopySegBlockToBlock = 0x02
	xcopyCSCDIdent       = 0xe4
)

// copyResult is what RECEIVE COPY RESULTS, COPY STATUS reports of one
// finished EXTENDED COPY.
type copyResult struct {
	ok       bool
	segments uint16
	kib      uint32 // bytes written, in KiB (transfer count units F1h)
}

// xcopyFailure is an EXTENDED COPY refusal: a sense key and code.
type xcopyFailure struct {
	key  byte
	code asc
}

func (f xcopyFailure) Error() string { return "extended copy refused" }

func xfail(key byte, code asc) error { return xcopyFailure{key, code} }

// errXcopyConflict: a reservation refuses one of the copy's reads or
// writes (RESERVATION CONFLICT, no sense).
var errXcopyConflict = errors.New("extended copy: reservation conflict")

// xcopySegment is one parsed block -> block segment.
type xcopySegment struct {
	src, dst       uint16
	blocks         uint64
	srcLBA, dstLBA uint64
}

// extendedCopy serves EXTENDED COPY (LID1).
func (st *luState) extendedCopy(c *Cmd) samStatus {
	cdb := c.CDB
	if cdb[1]&0x1f != 0 { // only LID1 (service action 00h)
		return c.failField(1)
	}
	plen := int(be32(cdb[10:14]))
	if plen == 0 {
		return c.produced(0)
	}
	p := c.Out
	if len(p) > plen {
		p = p[:plen]
	}
	if len(p) < xcopyHeaderLen {
		return c.fail(keyIllegalRequest, ascParameterListLength)
	}
	listID, usage := p[0], (p[1]>>3)&0x03
	if usage == 0x01 || p[1]&0x20 != 0 { // reserved usage; STR (no streams)
		return c.fail(keyIllegalRequest, ascInvalidFieldInParams)
	}
	tdl, sdl, inl := int(be16(p[2:4])), int(be32(p[8:12])), int(be32(p[12:16]))
	if inl != 0 { // no inline data
		return c.fail(keyIllegalRequest, ascInvalidFieldInParams)
	}
	if tdl+sdl > xcopyMaxDescListLen || xcopyHeaderLen+tdl+sdl > len(p) {
		return c.fail(keyIllegalRequest, ascParameterListLength)
	}
	res := copyResult{}
	keep := usage == 0x00 || usage == 0x02
	segs, devs, err := st.parseXcopy(c, p[xcopyHeaderLen:xcopyHeaderLen+tdl], p[xcopyHeaderLen+tdl:xcopyHeaderLen+tdl+sdl])
	if err == nil {
		err = st.runXcopy(c, segs, devs, &res)
	}
	if keep {
		c.nexus.keepCopyResult(listID, res)
	}
	if err == nil {
		return c.produced(0)
	}
	if errors.Is(err, errXcopyConflict) {
		return statusReservationConflict
	}
	var f xcopyFailure
	if errors.As(err, &f) {
		return c.fail(f.key, f.code)
	}
	return c.fail(keyHardwareError, ascInternalTargetFailure)
}

// parseXcopy checks the descriptor lists and resolves the CSCD
// descriptors to the logical units this nexus may reach.
func (st *luState) parseXcopy(c *Cmd, tds, sds []byte) ([]xcopySegment, []*luState, error) {
	if len(tds)%xcopyTargetDescLen != 0 {
		return nil, nil, xfail(keyIllegalRequest, ascInvalidFieldInParams)
	}
	if len(tds)/xcopyTargetDescLen > xcopyMaxTargetDescs {
		return nil, nil, xfail(keyIllegalRequest, ascTooManyTargetDescs)
	}
	// Segment descriptors: count first (TOO MANY before a bad type).
	var raw [][]byte
	for off := 0; off < len(sds); {
		if off+4 > len(sds) {
			return nil, nil, xfail(keyIllegalRequest, ascParameterListLength)
		}
		n := 4 + int(be16(sds[off+2:off+4]))
		if off+n > len(sds) {
			return nil, nil, xfail(keyIllegalRequest, ascParameterListLength)
		}
		raw = append(raw, sds[off:off+n])
		off += n
	}
	if len(raw) > xcopyMaxSegmentDescs {
		return nil, nil, xfail(keyIllegalRequest, ascTooManySegmentDescs)
	}
	var devs []*luState
	for off := 0; off < len(tds); off += xcopyTargetDescLen {
		d := tds[off : off+xcopyTargetDescLen]
		if d[0] != xcopyCSCDIdent {
			return nil, nil, xfail(keyIllegalRequest, ascUnsupportedTargetDesc)
		}
		if d[1]&0x1f != 0 { // peripheral device type: block devices only
			return nil, nil, xfail(keyCopyAborted, ascCopyTargetNotReachable)
		}
		dst := st.resolveCSCD(c, d[4:24])
		if dst == nil {
			return nil, nil, xfail(keyCopyAborted, ascCopyTargetNotReachable)
		}
		if bs := uint32(d[29])<<16 | uint32(d[30])<<8 | uint32(d[31]); bs != dst.bs {
			return nil, nil, xfail(keyCopyAborted, ascCopyTargetNotReachable)
		}
		devs = append(devs, dst)
	}
	segs := make([]xcopySegment, 0, len(raw))
	for _, s := range raw {
		if s[0] != xcopySegBlockToBlock {
			return nil, nil, xfail(keyIllegalRequest, ascUnsupportedSegmentDesc)
		}
		if len(s) != xcopyB2BDescLen {
			return nil, nil, xfail(keyIllegalRequest, ascInvalidFieldInParams)
		}
		segs = append(segs, xcopySegment{
			src: be16(s[4:6]), dst: be16(s[6:8]),
			blocks: uint64(be16(s[10:12])),
			srcLBA: be64(s[12:20]), dstLBA: be64(s[20:28]),
		})
	}
	return segs, devs, nil
}

// resolveCSCD finds the logical unit a CSCD designator (SPC-4 designation
// descriptor, 20 bytes: code set, association and type, length, value)
// names among the LUNs of c's target that c's initiator may reach. Only
// logical-unit designators (association 0) name a LUN.
func (st *luState) resolveCSCD(c *Cmd, desig []byte) *luState {
	if desig[1]&0x30 != 0 {
		return nil
	}
	l := int(desig[3])
	if l == 0 || 4+l > len(desig) {
		return nil
	}
	want := desig[:4+l]
	ini := c.nexus.info.Initiator
	for _, num := range c.tv.numbersFor(ini) {
		d := c.tv.lun(num, ini)
		cand := d.cur()
		if hasLUDesignator(cand.id.luDesignators, want) {
			if !c.tv.accessState(d.id).Active() { // ALUA: not reachable on this port now
				return nil
			}
			return cand
		}
	}
	return nil
}

// hasLUDesignator reports whether the designation descriptor want (its
// PROTOCOL IDENTIFIER and PIV ignored) is among the descriptors list.
func hasLUDesignator(list, want []byte) bool {
	for off := 0; off+4 <= len(list); {
		n := 4 + int(list[off+3])
		if off+n > len(list) {
			return false
		}
		d := list[off : off+n]
		if len(d) == len(want) && d[0]&0x0f == want[0]&0x0f && d[1]&0x3f == want[1]&0x3f && bytes.Equal(d[4:], want[4:]) {
			return true
		}
		off += n
	}
	return false
}

// runXcopy checks and runs the segments in order; res counts what was
// done.
func (st *luState) runXcopy(c *Cmd, segs []xcopySegment, devs []*luState, res *copyResult) error {
	for _, s := range segs {
		if int(s.src) >= len(devs) || int(s.dst) >= len(devs) {
			return xfail(keyCopyAborted, ascCopyTargetNotReachable)
		}
		src, dst := devs[s.src], devs[s.dst]
		if src.bs != dst.bs {
			return xfail(keyCopyAborted, ascCopyTargetNotReachable)
		}
		if s.blocks<<src.shift > xcopyMaxSegmentBytes {
			return xfail(keyIllegalRequest, ascInvalidFieldInParams)
		}
		if s.blocks > 0 && (!src.inRange(s.srcLBA, s.blocks) || !dst.inRange(s.dstLBA, s.blocks)) {
			return xfail(keyCopyAborted, ascNone)
		}
		if st.xcopyReadOnly(c, dst) {
			return xfail(keyDataProtect, ascWriteProtected)
		}
		// Model READ(16) and WRITE(16) CDBs: the reservation check of a
		// host read of the source and a host write of the destination.
		rd, wr := [16]byte{0x88}, [16]byte{0x8a}
		if src.dev.res.conflict(c.nexus.key, rd[:]) || dst.dev.res.conflict(c.nexus.key, wr[:]) {
			return errXcopyConflict
		}
		if err := copyBlocks(src, dst, s); err != nil {
			return err
		}
		res.segments++
		res.kib += uint32((s.blocks << dst.shift) >> 10)
	}
	res.ok = true
	return nil
}

// xcopyReadOnly reports whether every mapping through which c's nexus
// reaches dst is write-protected.
func (st *luState) xcopyReadOnly(c *Cmd, dst *luState) bool {
	ini := c.nexus.info.Initiator
	for _, num := range c.tv.numbersFor(ini) {
		if c.tv.luns[num] == dst.dev && !c.tv.readOnly[num] {
			return false
		}
	}
	return true
}

// copyBlocks copies one segment in chunks: reads from src's volume, writes
// through dst's volume under dst's shared I/O lock, as a host WRITE does
// (sbc.go write), so lm routes it (dual-write under migration). An
// overlapping copy within one LUN runs backwards when the destination is
// above the source.
func copyBlocks(src, dst *luState, s xcopySegment) error {
	length := int64(s.blocks << src.shift)
	if length == 0 {
		return nil
	}
	bp := dst.dev.srv.chunks.Get().(*[]byte)
	defer dst.dev.srv.chunks.Put(bp)
	chunk := *bp
	so, do := int64(s.srcLBA<<src.shift), int64(s.dstLBA<<dst.shift)
	backwards := src.dev == dst.dev && do > so && do < so+length
	for done := int64(0); done < length; {
		l := min(length-done, int64(len(chunk)))
		at := done
		if backwards {
			at = length - done - l
		}
		buf := chunk[:l]
		if _, err := src.vol.ReadAt(buf, so+at); err != nil && err != io.EOF {
			return xfail(keyMediumError, ascReadError)
		}
		src.dev.stats.read(int(l))
		dst.dev.io.RLock()
		_, err := dst.vol.WriteAt(buf, do+at)
		dst.dev.io.RUnlock()
		if err != nil {
			return xfail(keyMediumError, ascWriteError)
		}
		dst.dev.stats.write(l)
		done += l
	}
	return nil
}

// receiveCopyResults serves RECEIVE COPY RESULTS: COPY STATUS (00h) and
// OPERATING PARAMETERS (03h).
func (st *luState) receiveCopyResults(c *Cmd) samStatus {
	cdb := c.CDB
	alloc := int(be32(cdb[10:14]))
	switch cdb[1] & 0x1f {
	case 0x00: // COPY STATUS
		r, ok := c.nexus.copyResult(cdb[2])
		if !ok {
			return c.failField(2)
		}
		b := make([]byte, 12)
		put32(b, 8)
		b[4] = 0x01 // completed successfully
		if !r.ok {
			b[4] = 0x02 // completed with error
		}
		put16(b[5:], r.segments)
		b[7] = 0xf1 // TRANSFER COUNT UNITS: kibibytes
		put32(b[8:], r.kib)
		return c.respond(b, alloc)
	case 0x03: // OPERATING PARAMETERS
		codes := []byte{xcopySegBlockToBlock, xcopyCSCDIdent}
		b := make([]byte, 44+len(codes))
		put32(b, uint32(len(b)-4))
		b[4] = 0x01 // SNLID: LIST ID USAGE 11b is supported
		put16(b[8:], xcopyMaxTargetDescs)
		put16(b[10:], xcopyMaxSegmentDescs)
		put32(b[12:], xcopyMaxDescListLen)
		put32(b[16:], xcopyMaxSegmentBytes)
		put16(b[34:], 1)         // TOTAL CONCURRENT COPIES
		b[36] = 1                // MAXIMUM CONCURRENT COPIES
		b[37] = byte(st.shift)   // DATA SEGMENT GRANULARITY (log2 bytes)
		b[43] = byte(len(codes)) // IMPLEMENTED DESCRIPTOR LIST LENGTH
		copy(b[44:], codes)
		return c.respond(b, alloc)
	}
	return c.failField(1)
}

// thirdPartyCopyPage is the body of VPD page 0x8F (SPC-4 7.8.17): one
// Supported Commands descriptor listing EXTENDED COPY (LID1) and RECEIVE
// COPY RESULTS (COPY STATUS, OPERATING PARAMETERS).
func thirdPartyCopyPage() []byte {
	cmds := []byte{
		0x83, 1, 0x00, // EXTENDED COPY, LID1
		0x84, 2, 0x00, 0x03, // RECEIVE COPY RESULTS
	}
	n := 1 + len(cmds)
	n = (n + 3) &^ 3 // descriptor length: a multiple of 4
	d := make([]byte, 4+n)
	put16(d[0:], 0x0001) // SUPPORTED COMMANDS
	put16(d[2:], uint16(n))
	d[4] = byte(len(cmds))
	copy(d[5:], cmds)
	return d
}

// keepCopyResult remembers the result of the EXTENDED COPY with list ID
// id for RECEIVE COPY RESULTS (the last xcopyKeptResults of them).
func (n *nexus) keepCopyResult(id byte, r copyResult) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.copies == nil {
		n.copies = map[byte]copyResult{}
	}
	if _, ok := n.copies[id]; !ok {
		n.copyOrder = append(n.copyOrder, id)
		if len(n.copyOrder) > xcopyKeptResults {
			delete(n.copies, n.copyOrder[0])
			n.copyOrder = n.copyOrder[1:]
		}
	}
	n.copies[id] = r
}

// copyResult returns the kept result of list ID id.
func (n *nexus) copyResult(id byte) (copyResult, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.copies[id]
	return r, ok
}
