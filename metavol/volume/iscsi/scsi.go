package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// SCSI status codes (SAM-5).
const (
	statusGood           = 0x00
	statusCheckCondition = 0x02
	statusBusy           = 0x08
	statusResConflict    = 0x18
	statusTaskSetFull    = 0x28
)

// Sense keys.
const (
	senseNotReady       = 0x2
	senseMediumError    = 0x3
	senseIllegalRequest = 0x5
	senseUnitAttention  = 0x6
	senseDataProtect    = 0x7
	senseAbortedCommand = 0xb
)

// SCSIError is a command that ended with a status other than GOOD.
type SCSIError struct {
	Op             byte
	Status         byte
	Key, ASC, ASCQ byte
}

func (e *SCSIError) Error() string {
	if e.Status == statusCheckCondition {
		return fmt.Sprintf("scsi op 0x%02x: CHECK CONDITION, sense key 0x%x (%s) asc/ascq 0x%02x/0x%02x",
			e.Op, e.Key, senseKeyName(e.Key), e.ASC, e.ASCQ)
	}
	return fmt.Sprintf("scsi op 0x%02x: status 0x%02x (%s)", e.Op, e.Status, statusName(e.Status))
}

// IsInvalidOpcode reports whether err says the target does not support the
// command (ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE or INVALID FIELD
// IN CDB).
func IsInvalidOpcode(err error) bool {
	var se *SCSIError
	return errors.As(err, &se) && se.Key == senseIllegalRequest && (se.ASC == 0x20 || se.ASC == 0x24)
}

func senseKeyName(k byte) string {
	names := [...]string{"NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR", "HARDWARE ERROR",
		"ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK", "VENDOR SPECIFIC",
		"COPY ABORTED", "ABORTED COMMAND", "RESERVED", "VOLUME OVERFLOW", "MISCOMPARE", "COMPLETED"}
	return names[k&0xf]
}

func statusName(s byte) string {
	switch s {
	case statusGood:
		return "GOOD"
	case statusCheckCondition:
		return "CHECK CONDITION"
	case statusBusy:
		return "BUSY"
	case statusResConflict:
		return "RESERVATION CONFLICT"
	case statusTaskSetFull:
		return "TASK SET FULL"
	}
	return "unknown"
}

// parseSense reads key/ASC/ASCQ from fixed (0x70/0x71) or descriptor
// (0x72/0x73) sense data.
func parseSense(b []byte) (key, asc, ascq byte, ok bool) {
	if len(b) < 1 {
		return 0, 0, 0, false
	}
	switch b[0] & 0x7f {
	case 0x70, 0x71:
		if len(b) < 14 {
			if len(b) >= 3 {
				return b[2] & 0xf, 0, 0, true
			}
			return 0, 0, 0, false
		}
		return b[2] & 0xf, b[12], b[13], true
	case 0x72, 0x73:
		if len(b) < 4 {
			return 0, 0, 0, false
		}
		return b[1] & 0xf, b[2], b[3], true
	}
	return 0, 0, 0, false
}

// exec runs a command and turns a non-GOOD status into *SCSIError. A
// RESERVATION CONFLICT while we hold a fence (SetFenceKey) re-takes the
// fence once and sends the command again (pr.go). UNIT
// ATTENTION, BUSY, TASK SET FULL, NOT READY (becoming ready) and ABORTED
// COMMAND are retried a few times: they say "try again", not "failed".
func (c *Client) exec(cmd Command) (Response, error) {
	r, err := cmd.request()
	if err != nil {
		return Response{}, fmt.Errorf("iscsi %s: %w", c.cfg, err)
	}
	return c.execReq(r)
}

// execReq is exec of a request (the CDB held by value: the hot path
// builds it without allocating).
func (c *Client) execReq(req request) (Response, error) {
	op := req.cdb[0]
	if c.fence.key.Load() != 0 || c.fence.reg.Load() != 0 {
		c.renewAfterLogin(op)
	}
	delay := 10 * time.Millisecond
	refenced := false
	for attempt := 0; ; attempt++ {
		r, err := c.do(req)
		if err != nil {
			return r, err
		}
		if r.Status == statusGood {
			return r, nil
		}
		se := &SCSIError{Op: op, Status: r.Status}
		if r.Status == statusCheckCondition {
			se.Key, se.ASC, se.ASCQ, _ = parseSense(r.Sense)
		}
		retry := false
		switch {
		case r.Status == statusBusy, r.Status == statusTaskSetFull:
			retry = true
		case r.Status == statusCheckCondition:
			switch se.Key {
			case senseUnitAttention, senseAbortedCommand:
				retry = true
			case senseNotReady:
				retry = se.ASC == 0x04 && (se.ASCQ == 0x01 || se.ASCQ == 0x0a)
			}
		}
		if r.Status == statusResConflict && !refenced && c.refence(op) {
			refenced = true // our fence was re-taken: once more
			continue
		}
		if !retry || attempt >= 20 {
			return r, fmt.Errorf("iscsi %s: %w", c.cfg, se)
		}
		if r.Status != statusCheckCondition || se.Key == senseNotReady {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return r, fmt.Errorf("iscsi %s: %w", c.cfg, ErrClosed)
			}
			delay = min(delay*2, time.Second)
		}
	}
}

// CDB builders (SBC-4).

func cdbRW16(op byte, lba uint64, blocks uint32) [16]byte {
	var b [16]byte
	b[0] = op
	binary.BigEndian.PutUint64(b[2:], lba)
	binary.BigEndian.PutUint32(b[10:], blocks)
	return b
}

func cdbInquiry(page byte, evpd bool, alloc uint16) []byte {
	b := []byte{0x12, 0, page, 0, 0, 0}
	if evpd {
		b[1] = 1
	}
	binary.BigEndian.PutUint16(b[3:], alloc)
	return b
}

func cdbReadCapacity16(alloc uint32) []byte {
	b := make([]byte, 16)
	b[0] = 0x9e
	b[1] = 0x10
	binary.BigEndian.PutUint32(b[10:], alloc)
	return b
}

const (
	opTestUnitReady = 0x00
	opRead16        = 0x88
	opWrite16       = 0x8a
	opSync10        = 0x35
	opSync16        = 0x91
	opUnmap         = 0x42
	opWriteSame16   = 0x93
	opReadCapacity  = 0x25
)
