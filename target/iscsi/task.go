package iscsi

import "fmt"

// taskState is where a SCSI task is. Transitions: receiving -> running ->
// responding -> done; receiving -> done (aborted or connection gone).
type taskState uint8

const (
	taskReceiving  taskState = iota // waiting for Data-Out
	taskRunning                     // in Nexus.Execute
	taskResponding                  // response being written
	taskDone
)

func (s taskState) String() string {
	switch s {
	case taskReceiving:
		return "receiving"
	case taskRunning:
		return "running"
	case taskResponding:
		return "responding"
	case taskDone:
		return "done"
	}
	return fmt.Sprintf("taskState(%d)", uint8(s))
}

// dataSeq is one output data sequence: the unsolicited burst or one R2T.
type dataSeq struct {
	ttt       uint32
	next, end uint32 // next expected offset, end offset
	sn        uint32 // next expected DataSN
}

// task is one SCSI command of a connection. Fields up to state are owned by
// the reader goroutine until the task runs; state and aborted are guarded
// by conn.mu.
type task struct {
	itt      uint32
	lunField [8]byte
	lun      uint64
	cdb      [16]byte
	edtl     uint32
	readLen  uint32
	writeLen uint32
	wbuf     *[]byte
	reserved int64 // write budget bytes held (budget.go); set under conn.mu
	imm      bool  // immediate command: counts against maxImmediate
	received uint32
	unsol    dataSeq
	nextR2T  uint32
	r2ts     []dataSeq
	r2tSN    uint32
	cmd      Command

	state   taskState
	aborted bool
	done    chan struct{}
}
