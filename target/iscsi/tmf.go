package iscsi

import "github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"

// abortWaitingTasks drops every task still waiting for Data-Out. Reader
// goroutine only (it owns those tasks' buffers).
func (c *conn) abortWaitingTasks() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for itt, t := range c.mu.tasks {
		if t.state == taskReceiving {
			c.dropTaskLocked(itt, t)
		}
	}
}

func (c *conn) dropTaskLocked(itt uint32, t *task) {
	t.aborted = true
	delete(c.mu.tasks, itt)
	c.slotDoneLocked(t.imm)
	t.state = taskDone
	if !c.freeWrite(t) {
		c.srv.budget.cancel(t)
	}
	// Not reused: the budget's grant goroutine may still look at it.
	c.mu.taskDone.Broadcast()
}

// freeWrite gives a task's write buffer back to the pool and its reserved
// buffer budget back; it reports whether the task had budget reserved.
func (c *conn) freeWrite(t *task) bool {
	if t.wbuf != nil {
		c.srv.pool.put(t.wbuf)
		t.wbuf = nil
	}
	if t.reserved == 0 {
		return false
	}
	c.srv.budget.release(c, t.reserved)
	t.reserved = 0
	return true
}

// taskMgmt handles a Task Management Function request. Affected tasks are
// aborted (their responses suppressed); the answer goes out once running
// ones have stopped.
func (c *conn) taskMgmt(h *header, queued bool) error {
	if err := c.skip(h, queued); err != nil {
		return err
	}
	if c.nexus == nil {
		return c.reject(h, pdu.RejectProtocolError)
	}
	fn := TMFunction(h.Flags() & 0x7f)
	lun := DecodeLUN(h.LUNField())
	itt := h.ITT()
	var victims []taskUse
	resp := TMFComplete
	c.mu.Lock()
	switch fn {
	case TMFAbortTask:
		t := c.mu.tasks[h.U32(20)]
		if t == nil || t.state >= taskResponding {
			resp = TMFTaskNotExist
		}
		if t != nil {
			victims = append(victims, taskUse{t, t.gen})
		}
	case TMFAbortTaskSet, TMFClearTaskSet, TMFLogicalUnitReset:
		for _, t := range c.mu.tasks {
			if t.lun == lun {
				victims = append(victims, taskUse{t, t.gen})
			}
		}
	case TMFTargetWarmReset, TMFTargetColdReset:
		for _, t := range c.mu.tasks {
			victims = append(victims, taskUse{t, t.gen})
		}
	case TMFTaskReassign:
		resp = TMFReassignUnsupported
	default:
		resp = TMFNotSupported
	}
	for _, v := range victims {
		t := v.t
		if t.state == taskReceiving {
			c.dropTaskLocked(t.itt, t)
		} else if t.state == taskRunning {
			t.aborted = true
		}
	}
	c.mu.Unlock()
	c.log.Info().Uint8("function", uint8(fn)).Uint64("lun", lun).Int("tasks", len(victims)).Msg("task management")
	if resp == TMFReassignUnsupported || resp == TMFNotSupported {
		return c.sendTMFResp(itt, resp)
	}
	c.cmdWG.Add(1)
	go func() {
		defer c.cmdWG.Done()
		defer func() {
			if r := recover(); r != nil {
				c.log.Error().Interface("panic", r).Msg("task management panic")
				c.closeNow()
			}
		}()
		c.mu.Lock()
		for _, v := range victims {
			for !v.doneLocked() {
				c.mu.taskDone.Wait()
			}
		}
		c.mu.Unlock()
		if resp == TMFComplete {
			r := c.nexus.TaskManagement(fn, lun)
			switch fn {
			case TMFLogicalUnitReset, TMFTargetWarmReset, TMFTargetColdReset:
				resp = r
			}
		}
		c.sendTMFResp(itt, resp)
		if fn == TMFTargetColdReset {
			c.closeNow()
		}
	}()
	return nil
}

func (c *conn) sendTMFResp(itt uint32, r TMFResponse) error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpTMFResp
	b[1] = pdu.FlagFinal
	b[2] = byte(r)
	pdu.Put32(b[16:], itt)
	return c.send(outPDU{hdr: b, stat: statTake})
}
