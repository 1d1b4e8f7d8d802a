package target

import "encoding/binary"

// SAM status codes.
const (
	statusGood                = 0x00
	statusCheckCondition      = 0x02
	statusBusy                = 0x08
	statusReservationConflict = 0x18
	statusTaskSetFull         = 0x28
)

// Sense keys.
const (
	keyNoSense        = 0x00
	keyNotReady       = 0x02
	keyMediumError    = 0x03
	keyHardwareError  = 0x04
	keyIllegalRequest = 0x05
	keyUnitAttention  = 0x06
	keyDataProtect    = 0x07
	keyAbortedCommand = 0x0b
	keyCopyAborted    = 0x0a
	keyMiscompare     = 0x0e
)

// asc is an additional sense code (high byte) and qualifier (low byte).
type asc uint16

const (
	ascNone                     asc = 0x0000
	ascNotReadyManual           asc = 0x0403 // logical unit not ready, manual intervention required
	ascALUATransition           asc = 0x040a // not accessible, asymmetric access state transition
	ascALUAStandby              asc = 0x040b // not accessible, target port in standby state
	ascALUAUnavailable          asc = 0x040c // not accessible, target port in unavailable state
	ascWriteError               asc = 0x0c00
	ascReadError                asc = 0x1100
	ascMiscompareDuringVerify   asc = 0x1d00
	ascParameterListLength      asc = 0x1a00
	ascInvalidOpcode            asc = 0x2000
	ascLBAOutOfRange            asc = 0x2100
	ascInvalidFieldInCDB        asc = 0x2400
	ascLUNNotSupported          asc = 0x2500
	ascInvalidFieldInParams     asc = 0x2600
	ascTooManyTargetDescs       asc = 0x2606
	ascUnsupportedTargetDesc    asc = 0x2607
	ascTooManySegmentDescs      asc = 0x2608
	ascUnsupportedSegmentDesc   asc = 0x2609
	ascWriteProtected           asc = 0x2700
	ascCopyTargetNotReachable   asc = 0x0d02
	ascInvalidReleaseOfPR       asc = 0x2604
	ascBusDeviceReset           asc = 0x2903
	ascNexusLoss                asc = 0x2907
	ascModeParametersChanged    asc = 0x2a01
	ascReservationsPreempted    asc = 0x2a03
	ascReservationsReleased     asc = 0x2a04
	ascRegistrationsPreempted   asc = 0x2a05
	ascAsymmetricAccessChanged  asc = 0x2a06
	ascCapacityDataChanged      asc = 0x2a09
	ascSavingParamsUnsupported  asc = 0x3900
	ascInquiryDataChanged       asc = 0x3f03
	ascReportedLUNsDataChanged  asc = 0x3f0e
	ascInternalTargetFailure    asc = 0x4400
	ascInvalidFieldInIU         asc = 0x0e03
	ascInsufficientRegResources asc = 0x5504
	ascMediumRemovalPrevented   asc = 0x5302
)

// senseLen is the length of the fixed-format sense data we build.
const senseLen = 18

// buildSense returns fixed-format sense data (SPC-4 4.5.3). info, when
// valid, fills the INFORMATION field (e.g. the miscompare offset).
func buildSense(key byte, code asc, info uint32, infoValid bool) []byte {
	b := make([]byte, senseLen)
	b[0] = 0x70 // current error, fixed format
	if infoValid {
		b[0] |= 0x80
		binary.BigEndian.PutUint32(b[3:7], info)
	}
	b[2] = key & 0x0f
	b[7] = senseLen - 8
	b[12] = byte(code >> 8)
	b[13] = byte(code)
	return b
}

// withFieldPointer adds sense-key-specific field pointer bytes (SPC-4
// 4.5.2.4.2) to fixed-format sense: the CDB byte that is in error.
func withFieldPointer(s []byte, cdbByte uint16) []byte {
	s[15] = 0x80 | 0x40 // SKSV, C/D = CDB
	s[16] = byte(cdbByte >> 8)
	s[17] = byte(cdbByte)
	return s
}

// senseKeyASC extracts the key and ASC/ASCQ from fixed or descriptor
// format sense data; ok is false when the data is too short to tell.
func senseKeyASC(s []byte) (key byte, code asc, ok bool) {
	if len(s) < 4 {
		return 0, 0, false
	}
	switch s[0] & 0x7f {
	case 0x70, 0x71:
		if len(s) < 14 {
			return s[2] & 0x0f, 0, len(s) >= 3
		}
		return s[2] & 0x0f, asc(s[12])<<8 | asc(s[13]), true
	case 0x72, 0x73:
		return s[1] & 0x0f, asc(s[2])<<8 | asc(s[3]), true
	}
	return 0, 0, false
}
