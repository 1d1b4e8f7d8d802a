package target

// serve dispatches c to its handler. This file is the one place that maps
// an opcode (and, for MAINTENANCE IN and SERVICE ACTION IN(16), a service
// action) to the code that answers it; an opcode not listed is INVALID COMMAND
// OPERATION CODE. Execute has already resolved the LUN, reported unit
// attentions and reservation conflicts (pr.go classify); REPORT SUPPORTED
// OPERATION CODES lists supportedOps (spc.go), which must follow this
// table (TestDispatchMatchesSupportedOps).
//
// Handlers answer through c's methods (cmd.go) and return the status.
// Only the three gotgt adapter cases (st.gt, gotgt.go) reach gotgt.
func (st *luState) serve(c *Cmd) samStatus {
	if c.readOnly && changesMedium(c.CDB[0]) {
		return c.fail(keyDataProtect, ascWriteProtected)
	}
	switch c.CDB[0] {
	// SPC: device management.
	case 0x00:
		return st.testUnitReady(c)
	case 0x03:
		return st.requestSense(c)
	case 0x12:
		return st.inquiry(c)
	case 0xa0:
		return st.reportLUNs(c)
	case 0xa3:
		return st.maintenanceIn(c)
	case 0x1b:
		return st.startStop(c)
	case 0x1e:
		return st.preventAllow(c)

	// SPC: mode pages and diagnostics, served by gotgt.
	case 0x1a, 0x5a: // MODE SENSE(6/10)
		return st.modeSense(c)
	case 0x15, 0x55: // MODE SELECT(6/10)
		return st.gt.modeSelect(c)
	case 0x1d: // SEND DIAGNOSTIC
		return st.gt.sendDiagnostics(c)

	// SPC: reservations (pr.go).
	case 0x16, 0x56:
		return st.reserve(c)
	case 0x17, 0x57:
		return st.release(c)
	case 0x5e:
		return st.persistentReserveIn(c)
	case 0x5f:
		return st.persistentReserveOut(c)

	// SBC: data path (sbc.go).
	case 0x08, 0x28, 0xa8, 0x88: // READ(6/10/12/16)
		return st.read(c)
	case 0x0a, 0x2a, 0xaa, 0x8a, // WRITE(6/10/12/16)
		0x2e, 0xae, 0x8e: // WRITE AND VERIFY(10/12/16)
		return st.write(c)
	case 0x2f, 0xaf, 0x8f:
		return st.verify(c)
	case 0x34, 0x90:
		return st.prefetch(c)
	case 0x35, 0x91:
		return st.syncCache(c)
	case 0x41, 0x93:
		return st.writeSame(c)
	case 0x42:
		return st.unmap(c)
	case 0x83: // EXTENDED COPY (LID1), xcopy.go
		return st.extendedCopy(c)
	case 0x84: // RECEIVE COPY RESULTS, xcopy.go
		return st.receiveCopyResults(c)
	case 0x89:
		return st.compareAndWrite(c)
	case 0x8b:
		return st.orWrite(c)

	// SBC: capacity, provisioning, media.
	case 0x25:
		return st.readCapacity10(c)
	case 0x9e: // SERVICE ACTION IN(16): READ CAPACITY(16), GET LBA STATUS
		return st.serviceActionIn16(c)
	case 0x04:
		return st.formatUnit(c)
	case 0x37, 0xb7:
		return st.readDefectData(c)
	}
	return c.fail(keyIllegalRequest, ascInvalidOpcode)
}

// maintenanceIn dispatches MAINTENANCE IN by service action.
func (st *luState) maintenanceIn(c *Cmd) samStatus {
	switch c.CDB[1] & 0x1f {
	case 0x0c:
		return st.reportSupportedOpcodes(c)
	}
	return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
}

// serviceActionIn16 dispatches SERVICE ACTION IN(16) by service action.
func (st *luState) serviceActionIn16(c *Cmd) samStatus {
	switch c.CDB[1] & 0x1f {
	case 0x10:
		return st.readCapacity16(c)
	case 0x12:
		return st.getLBAStatus(c)
	}
	return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
}

// changesMedium reports whether opcode op changes the logical unit's
// blocks: the commands a write-protected mapping refuses with DATA
// PROTECT, WRITE PROTECTED (EXTENDED COPY checks its destination itself,
// since its source may be the protected LUN).
func changesMedium(op byte) bool {
	switch op {
	case 0x0a, 0x2a, 0xaa, 0x8a, // WRITE(6/10/12/16)
		0x2e, 0xae, 0x8e, // WRITE AND VERIFY(10/12/16)
		0x41, 0x93, // WRITE SAME(10/16)
		0x42, // UNMAP
		0x89, // COMPARE AND WRITE
		0x8b, // ORWRITE(16)
		0x04: // FORMAT UNIT
		return true
	}
	return false
}

// modeSense serves MODE SENSE(6/10) from gotgt's mode pages and sets the
// WP bit of the DEVICE-SPECIFIC PARAMETER when the mapping is
// write-protected (SBC-3 6.5.1).
func (st *luState) modeSense(c *Cmd) samStatus {
	status := st.gt.modeSense(c)
	if status != statusGood || !c.readOnly {
		return status
	}
	i := 2 // MODE SENSE(6) header: byte 2
	if c.CDB[0] == 0x5a {
		i = 3 // MODE SENSE(10) header: byte 3
	}
	if c.InLen > i {
		c.In[i] |= 0x80
	}
	return status
}
