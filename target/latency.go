package target

import "time"

// HostLatencyObserver is what a LUN's volume implements to learn the
// service time of the host's data commands (lm's LUN handle does: its
// host-latency guard holds a copy back when the hosts suffer). The SCSI
// layer times READ and WRITE commands from the moment the transport read
// their PDU (iscsi.Command.Arrived: waits for a goroutine, a CPU, the
// data are in) to their status, with time.Now only (no allocation per
// command). Sending the response is not in it.
type HostLatencyObserver interface {
	ObserveHostLatency(d time.Duration)
}

// timedOp says whether the host-latency guard looks at opcode op: the
// reads and writes of the data path (SBC), where a copy competes with the
// host; not SYNCHRONIZE CACHE, whose cost is the host's own choice.
func timedOp(op byte) bool {
	switch op {
	case 0x08, 0x28, 0xa8, 0x88, // READ(6/10/12/16)
		0x0a, 0x2a, 0xaa, 0x8a, // WRITE(6/10/12/16)
		0x2e, 0xae, 0x8e, // WRITE AND VERIFY(10/12/16)
		0x89, 0x8b: // COMPARE AND WRITE, ORWRITE
		return true
	}
	return false
}
