package target

import (
	"fmt"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// Cmd is one SCSI command as lmtgt's SCSI layer sees it, from dispatch to
// completion. Execute fills it from the transport's iscsi.Command, a
// handler (dispatch.go) answers through its methods, and Execute copies
// the results back. Every field means one thing; nothing is borrowed from
// another library's type.
type Cmd struct {
	// Set by Execute.
	CDB []byte // at least 16 bytes: shorter CDBs are zero-padded
	LUN uint64 // LUN number (already decoded from SAM addressing)
	// Out is the Data-Out exactly as received: never more than the
	// expected write length, possibly less than the CDB asks for.
	Out []byte
	// In is the Data-In buffer; len(In) is the expected read length. A
	// handler writes In[:n] and reports n through produced or respond.
	In    []byte
	nexus *nexus      // the I_T nexus the command came in on
	tv    *targetView // the target it addresses
	// readOnly: the mapping the command came through is write-protected
	// (dispatch.go answers medium changes with DATA PROTECT).
	readOnly bool
	// fileOK: the transport can send this command's Data-In from a file
	// (iscsi.Command.FileOK); file, when its Owner is set, is that
	// Data-In (read answers so; nexus.finish hands it over).
	fileOK bool
	file   volume.FileRef

	// Set by the handler (through the methods below).
	Sense []byte // fixed-format sense data with CHECK CONDITION
	InLen int    // Data-In bytes produced, at most len(In)
	// TransferLength is the number of bytes the CDB itself asks to move in
	// its data direction (READ/WRITE: blocks x block size; data-in
	// commands: the data they return, at most the allocation length);
	// valid when HasTransferLength. The transport derives residuals
	// from it.
	TransferLength    uint32
	HasTransferLength bool

	cdb [16]byte // backing for short CDBs
}

// samStatus is a SAM-5 status code (the constants in sense.go).
type samStatus byte

func (s samStatus) String() string {
	switch s {
	case statusGood:
		return "GOOD"
	case statusCheckCondition:
		return "CHECK CONDITION"
	case 0x04:
		return "CONDITION MET"
	case statusBusy:
		return "BUSY"
	case statusReservationConflict:
		return "RESERVATION CONFLICT"
	case statusTaskSetFull:
		return "TASK SET FULL"
	}
	return fmt.Sprintf("status 0x%02x", byte(s))
}

// fail answers CHECK CONDITION with fixed-format sense.
func (c *Cmd) fail(key byte, code asc) samStatus {
	return c.failInfo(key, code, 0, false)
}

// failInfo is fail with the INFORMATION field (e.g. a miscompare offset).
func (c *Cmd) failInfo(key byte, code asc, info uint32, valid bool) samStatus {
	c.Sense = buildSense(key, code, info, valid)
	c.InLen = 0
	return statusCheckCondition
}

// failField answers INVALID FIELD IN CDB pointing at CDB byte field.
func (c *Cmd) failField(field uint16) samStatus {
	c.Sense = withFieldPointer(buildSense(keyIllegalRequest, ascInvalidFieldInCDB, 0, false), field)
	c.InLen = 0
	return statusCheckCondition
}

// setTransferLength records the CDB's transfer length in bytes.
func (c *Cmd) setTransferLength(n uint64) {
	if n > 0xffffffff {
		n = 0xffffffff
	}
	c.TransferLength, c.HasTransferLength = uint32(n), true
}

// produced answers GOOD with n bytes of Data-In (clamped to In).
func (c *Cmd) produced(n int) samStatus {
	c.InLen = max(0, min(n, len(c.In)))
	return statusGood
}

// respond answers GOOD with data truncated to the allocation length alloc
// (which is also the command's transfer length).
func (c *Cmd) respond(data []byte, alloc int) samStatus {
	if len(data) > alloc {
		data = data[:alloc]
	}
	c.setTransferLength(uint64(len(data)))
	return c.produced(copy(c.In, data))
}
