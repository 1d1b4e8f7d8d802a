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
// the reader goroutine until the task runs; state, aborted and gen are
// guarded by conn.mu. Tasks are reused (conn.newTask, conn.freeTask): gen
// tells a task from its later uses, so a waiter (task management) that
// holds a pointer waits for "this use is done" (taskDoneLocked).
type task struct {
	itt uint32
	// expStatSN is the ExpStatSN of the command's PDU: the host had seen
	// every status before it when it equals conn.statNext (idlepoll.go).
	expStatSN uint32
	lunField  [8]byte
	lun       uint64
	cdb       [16]byte
	edtl      uint32
	readLen   uint32
	writeLen  uint32
	wbuf      *[]byte
	reserved  int64 // write budget bytes held (budget.go); set under conn.mu
	imm       bool  // immediate command: counts against maxImmediate
	received  uint32
	unsol     dataSeq
	nextR2T   uint32
	r2ts      []dataSeq
	r2tSN     uint32
	cmd       Command

	state   taskState
	aborted bool
	exec    bool   // run by a worker: execute it (false: only respond)
	hold    bool   // run on the reader, response held for a batch (rtc.go)
	gen     uint64 // use count of this task struct
}

// newTask returns a zeroed task, reused when one is free. c.mu held.
func (c *conn) newTaskLocked() *task {
	n := len(c.mu.freeTasks)
	if n == 0 {
		return &task{}
	}
	t := c.mu.freeTasks[n-1]
	c.mu.freeTasks = c.mu.freeTasks[:n-1]
	return t
}

// freeTaskLocked ends this use of t (waking task management waiting for
// it) and keeps it for reuse. c.mu held; nothing may use t afterwards.
func (c *conn) freeTaskLocked(t *task) {
	r2ts := t.r2ts[:0]
	gen := t.gen + 1
	*t = task{r2ts: r2ts, gen: gen, state: taskDone}
	c.mu.taskDone.Broadcast()
	if len(c.mu.freeTasks) < c.srv.opts.QueueDepth+maxImmediate {
		c.mu.freeTasks = append(c.mu.freeTasks, t)
	}
}

// taskUse names one use of a task: the task and its gen then.
type taskUse struct {
	t   *task
	gen uint64
}

// doneLocked reports whether that use of the task is over. c.mu held.
func (u taskUse) doneLocked() bool {
	return u.t.gen != u.gen || u.t.state == taskDone
}
