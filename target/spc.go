package target

// inquiry serves INQUIRY: standard data and the VPD pages.
func (st *luState) inquiry(c *Cmd) samStatus {
	cdb := c.CDB
	if cdb[1]&0x02 != 0 { // CmdDt (obsolete)
		return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
	}
	if cdb[1]&0x01 == 0 {
		if cdb[2] != 0 {
			return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
		}
		return c.respond(st.standardInquiry(), allocLength(c.CDB))
	}
	var page []byte
	switch cdb[2] {
	case 0x00:
		page = vpdPage(0x00, []byte{0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2})
	case 0x80:
		page = vpdPage(0x80, []byte(st.id.serial))
	case 0x83:
		page = vpdPage(0x83, st.deviceIdentification(c.tv.cfg.IQN, c.tv.port, c.tv.group))
	case 0x8f:
		page = vpdPage(0x8f, thirdPartyCopyPage())
	case 0xb0:
		page = vpdPage(0xb0, st.blockLimits())
	case 0xb1:
		b := make([]byte, 0x3c)
		put16(b[0:], 1) // MEDIUM ROTATION RATE: non-rotating medium
		page = vpdPage(0xb1, b)
	case 0xb2:
		flags := byte(0x80 | 0x40 | 0x20) // LBPU, LBPWS, LBPWS10
		if st.advertiseLBPRZ() {
			flags |= 0x04 // LBPRZ
		}
		page = vpdPage(0xb2, []byte{
			0,     // THRESHOLD EXPONENT
			flags, // see advertiseLBPRZ
			0x02,  // PROVISIONING TYPE: thin
			0,
		})
	default:
		return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
	}
	return c.respond(page, allocLength(cdb))
}

// standardInquiry builds the standard INQUIRY data of the LUN (SPC-4
// 6.6.2): a connected direct-access block device that claims SPC-4, with
// HiSup, CmdQue, the presented vendor, product and revision, and the
// version descriptors SAM-5, iSCSI, SPC-4 and SBC-3.
func (st *luState) standardInquiry() []byte {
	b := make([]byte, 74)
	b[2] = 0x06        // VERSION: SPC-4
	b[3] = 0x10 | 0x02 // HISUP, RESPONSE DATA FORMAT 2
	b[4] = byte(len(b) - 5)
	b[5] = 0x10 | 0x08 // SCCS, ACC, TPGS 01b (implicit ALUA, alua.go), 3PC (xcopy.go), PROTECT
	b[7] = 0x02        // CMDQUE
	copy(b[8:16], padded(st.id.vendor, 8))
	copy(b[16:32], padded(st.id.product, 16))
	copy(b[32:36], padded(st.id.revision, 4))
	for i, v := range []uint16{
		0x00a0, // SAM-5
		0x0960, // iSCSI
		0x0460, // SPC-4
		0x04c0, // SBC-3
	} {
		put16(b[58+2*i:], v)
	}
	return b
}

// noLUNInquiry builds standard INQUIRY data for a LUN number that has no
// logical unit (peripheral qualifier 011b, device type 1Fh).
func noLUNInquiry() []byte {
	b := make([]byte, 36)
	b[0] = 0x60 | 0x1f
	b[2] = 0x06
	b[3] = 0x12
	b[4] = 31
	b[7] = 0x02
	copy(b[8:16], padded(vendorID, 8))
	copy(b[16:32], padded(productID, 16))
	copy(b[32:36], padded(productRev, 4))
	return b
}

func padded(s string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
	return b
}

func vpdPage(code byte, body []byte) []byte {
	b := make([]byte, 4+len(body))
	b[1] = code
	put16(b[2:], uint16(len(body)))
	copy(b[4:], body)
	return b
}

// deviceIdentification builds the VPD 0x83 designators: the LUN's
// logical-unit designators (identityOf: its own NAA and T10 vendor ID, or
// the adopted ones), then the relative target port and the target port
// group of the port the command came through (alua.go), and the SCSI
// names of the target port and the target device.
func (st *luState) deviceIdentification(targetName string, relPort, group uint16) []byte {
	b := append([]byte(nil), st.id.luDesignators...)
	desc := func(proto, codeSet, assocType byte, id []byte) {
		b = append(b, proto<<4|codeSet, assocType, 0, byte(len(id)))
		b = append(b, id...)
	}
	var rel, tpg [4]byte
	put16(rel[2:], relPort)
	desc(5, 1, 0x80|0x10|0x04, rel[:]) // iSCSI, PIV, target port, relative port
	put16(tpg[2:], group)
	desc(5, 1, 0x80|0x10|0x05, tpg[:]) // iSCSI, PIV, target port, target port group
	portName := scsiName(targetName + ",t,0x" + hex4(tpgt))
	desc(5, 3, 0x80|0x10|0x08, portName) // UTF-8, target port, SCSI name
	desc(5, 3, 0x80|0x20|0x08, scsiName(targetName))
	return b
}

// scsiName is a NUL-terminated SCSI name string padded to a multiple of 4.
func scsiName(s string) []byte {
	n := len(s) + 1
	n = (n + 3) &^ 3
	if n > 256 {
		n = 256
	}
	b := make([]byte, n)
	copy(b[:n-1], s)
	return b
}

func hex4(v uint16) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[v>>12&0xf], digits[v>>8&0xf], digits[v>>4&0xf], digits[v&0xf]})
}

// blockLimits is the body of VPD page B0.
func (st *luState) blockLimits() []byte {
	b := make([]byte, 0x3c)
	// b[0] WSNZ = 0: WRITE SAME with 0 blocks means "to the end".
	b[1] = maxCompareAndWriteBlocks
	gran := uint16(unmapGranularityBytes >> st.shift)
	if gran == 0 {
		gran = 1
	}
	put16(b[2:], gran)                                   // OPTIMAL TRANSFER LENGTH GRANULARITY
	put32(b[4:], uint32(maxTransferBytes>>st.shift))     // MAXIMUM TRANSFER LENGTH
	put32(b[8:], uint32(optimalTransferBytes>>st.shift)) // OPTIMAL TRANSFER LENGTH
	put32(b[16:], maxUnmapBlocks)                        // MAXIMUM UNMAP LBA COUNT
	put32(b[20:], maxUnmapDescriptors)                   // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
	put32(b[24:], uint32(gran))                          // OPTIMAL UNMAP GRANULARITY
	put32(b[28:], 0x80000000)                            // UGAVALID, alignment 0
	put64(b[32:], maxWriteSameBlocks)                    // MAXIMUM WRITE SAME LENGTH
	return b
}

// reportLUNs serves REPORT LUNS from the target's own LUN table.
func (st *luState) reportLUNs(c *Cmd) samStatus {
	data, key, code := reportLUNsData(c.CDB, c.tv.numbersFor(c.nexus.info.Initiator))
	if key != 0 {
		return c.fail(key, code)
	}
	return c.respond(data, int(be32(c.CDB[6:10])))
}

// reportLUNsData builds REPORT LUNS parameter data for the sorted LUN
// numbers (SAM peripheral addressing below 256, flat space above).
func reportLUNsData(cdb []byte, nums []uint64) ([]byte, byte, asc) {
	switch cdb[2] { // SELECT REPORT
	case 0x00, 0x02:
	case 0x01: // well-known LUNs only: we have none
		nums = nil
	default:
		return nil, keyIllegalRequest, ascInvalidFieldInCDB
	}
	if be32(cdb[6:10]) < 16 {
		return nil, keyIllegalRequest, ascInvalidFieldInCDB
	}
	b := make([]byte, 8+8*len(nums))
	put32(b, uint32(8*len(nums)))
	for i, n := range nums {
		e := b[8+8*i:]
		if n < 256 {
			e[1] = byte(n)
		} else {
			e[0] = 0x40 | byte(n>>8)&0x3f
			e[1] = byte(n)
		}
	}
	return b, 0, 0
}

// requestSense serves REQUEST SENSE when no unit attention is pending
// (Execute answers pending ones): no sense.
func (st *luState) requestSense(c *Cmd) samStatus {
	s := buildSense(keyNoSense, ascNone, 0, false)
	return c.respond(s, int(c.CDB[4]))
}

// startStop serves START STOP UNIT: the medium is not removable and is
// always ready, so every power condition is accepted.
func (st *luState) startStop(c *Cmd) samStatus {
	return c.produced(0)
}

// preventAllow serves PREVENT ALLOW MEDIUM REMOVAL (nothing to prevent).
func (st *luState) preventAllow(c *Cmd) samStatus {
	return c.produced(0)
}

// formatUnit serves FORMAT UNIT without parameter data: nothing to do.
func (st *luState) formatUnit(c *Cmd) samStatus {
	if c.CDB[1]&0x10 != 0 || c.CDB[1]&0x80 != 0 { // FMTDATA, FMTPINFO
		return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
	}
	return c.produced(0)
}

// readDefectData serves READ DEFECT DATA(10/12): a file has no defects,
// so the lists are empty (PLISTV/GLISTV echo what was asked for).
func (st *luState) readDefectData(c *Cmd) samStatus {
	cdb := c.CDB
	flags := cdb[2] & 0x1f
	if cdb[0] == 0x37 {
		return c.respond([]byte{0, flags, 0, 0}, int(be16(cdb[7:9])))
	}
	return c.respond([]byte{0, cdb[1] & 0x1f, 0, 0, 0, 0, 0, 0}, int(be32(cdb[6:10])))
}

// opInfo describes one supported command for REPORT SUPPORTED OPERATION
// CODES.
type opInfo struct {
	op     byte
	sa     uint16
	hasSA  bool
	cdbLen int
}

var supportedOps = []opInfo{
	{op: 0x00, cdbLen: 6}, {op: 0x03, cdbLen: 6}, {op: 0x04, cdbLen: 6},
	{op: 0x08, cdbLen: 6}, {op: 0x0a, cdbLen: 6}, {op: 0x12, cdbLen: 6},
	{op: 0x15, cdbLen: 6}, {op: 0x16, cdbLen: 6}, {op: 0x17, cdbLen: 6},
	{op: 0x1a, cdbLen: 6}, {op: 0x1b, cdbLen: 6}, {op: 0x1d, cdbLen: 6},
	{op: 0x1e, cdbLen: 6}, {op: 0x25, cdbLen: 10}, {op: 0x28, cdbLen: 10},
	{op: 0x2a, cdbLen: 10}, {op: 0x2e, cdbLen: 10}, {op: 0x2f, cdbLen: 10},
	{op: 0x34, cdbLen: 10}, {op: 0x37, cdbLen: 10}, {op: 0x35, cdbLen: 10}, {op: 0x41, cdbLen: 10},
	{op: 0x42, cdbLen: 10}, {op: 0x55, cdbLen: 10}, {op: 0x56, cdbLen: 10},
	{op: 0x57, cdbLen: 10}, {op: 0x5a, cdbLen: 10},
	{op: 0x5e, sa: 0, hasSA: true, cdbLen: 10}, {op: 0x5e, sa: 1, hasSA: true, cdbLen: 10},
	{op: 0x5e, sa: 2, hasSA: true, cdbLen: 10}, {op: 0x5e, sa: 3, hasSA: true, cdbLen: 10},
	{op: 0x5f, sa: 0, hasSA: true, cdbLen: 10}, {op: 0x5f, sa: 1, hasSA: true, cdbLen: 10},
	{op: 0x5f, sa: 2, hasSA: true, cdbLen: 10}, {op: 0x5f, sa: 3, hasSA: true, cdbLen: 10},
	{op: 0x5f, sa: 4, hasSA: true, cdbLen: 10}, {op: 0x5f, sa: 5, hasSA: true, cdbLen: 10},
	{op: 0x5f, sa: 6, hasSA: true, cdbLen: 10},
	{op: 0x83, sa: 0x00, hasSA: true, cdbLen: 16},
	{op: 0x84, sa: 0x00, hasSA: true, cdbLen: 16}, {op: 0x84, sa: 0x03, hasSA: true, cdbLen: 16},
	{op: 0x88, cdbLen: 16}, {op: 0x89, cdbLen: 16}, {op: 0x8a, cdbLen: 16}, {op: 0x8b, cdbLen: 16},
	{op: 0x8e, cdbLen: 16}, {op: 0x8f, cdbLen: 16}, {op: 0x90, cdbLen: 16},
	{op: 0x91, cdbLen: 16}, {op: 0x93, cdbLen: 16},
	{op: 0x9e, sa: 0x10, hasSA: true, cdbLen: 16}, {op: 0x9e, sa: 0x12, hasSA: true, cdbLen: 16},
	{op: 0xa0, cdbLen: 12}, {op: 0xa3, sa: 0x0a, hasSA: true, cdbLen: 12}, {op: 0xa3, sa: 0x0c, hasSA: true, cdbLen: 12},
	{op: 0xa8, cdbLen: 12}, {op: 0xaa, cdbLen: 12}, {op: 0xae, cdbLen: 12},
	{op: 0xaf, cdbLen: 12}, {op: 0xb7, cdbLen: 12},
}

// reportSupportedOpcodes serves REPORT SUPPORTED OPERATION CODES.
func (st *luState) reportSupportedOpcodes(c *Cmd) samStatus {
	cdb := c.CDB
	rctd := cdb[2]&0x80 != 0
	opts := cdb[2] & 0x07
	reqOp, reqSA := cdb[3], be16(cdb[4:6])
	alloc := int(be32(cdb[6:10]))
	timeouts := func(b []byte) []byte {
		t := make([]byte, 12)
		put16(t, 0x0a)
		return append(b, t...)
	}
	var out []byte
	switch opts {
	case 0: // all commands
		out = make([]byte, 4)
		for _, o := range supportedOps {
			d := make([]byte, 8)
			d[0] = o.op
			put16(d[2:], o.sa)
			if o.hasSA {
				d[5] |= 0x01
			}
			if rctd {
				d[5] |= 0x02
			}
			put16(d[6:], uint16(o.cdbLen))
			if rctd {
				d = timeouts(d)
			}
			out = append(out, d...)
		}
		put32(out, uint32(len(out)-4))
	case 1, 2, 3:
		var found *opInfo
		anySA := false
		for i := range supportedOps {
			o := &supportedOps[i]
			if o.op != reqOp {
				continue
			}
			anySA = anySA || o.hasSA
			if !o.hasSA || o.sa == reqSA {
				found = o
			}
		}
		if opts == 1 && anySA || opts == 2 && found != nil && !found.hasSA {
			return c.failField(2)
		}
		if opts == 2 && found == nil && !anySA {
			return c.failField(2)
		}
		out = make([]byte, 4)
		if found == nil {
			out[1] = 0x01 // not supported
		} else {
			out[1] = 0x03 // supported, standard
			if rctd {
				out[1] |= 0x80
			}
			put16(out[2:], uint16(found.cdbLen))
			usage := make([]byte, found.cdbLen)
			usage[0] = found.op
			for i := 1; i < found.cdbLen-1; i++ {
				usage[i] = 0xff
			}
			if found.hasSA {
				usage[1] = byte(found.sa) & 0x1f
			}
			out = append(out, usage...)
			if rctd {
				out = timeouts(out)
			}
		}
	default:
		return c.failField(2)
	}
	return c.respond(out, alloc)
}
