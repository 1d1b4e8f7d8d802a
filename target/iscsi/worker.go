package iscsi

// Command workers: a connection runs the commands it does not run inline
// (command.go, run) on long-lived worker goroutines of its own instead of
// one new goroutine per command. A new goroutine per command cost its
// creation, and its stack grew again for every command (the SCSI layer's
// call chain is deep); a worker's stack grows once.
//
// Workers are started on demand, one whenever a task finds none idle, up
// to QueueDepth+maxImmediate: as many as commands can be in flight, so a
// task never waits behind another one (a command held in the backend
// never delays the others, as with a goroutine per command). They stay
// until the connection ends (stopWorkers, from teardown after every
// command is done); an idle worker is parked on the channel and costs no
// CPU.

// toWorker hands t (its data complete, cmdWG already counted) to a worker:
// an idle one, or a new one. exec false: only answer it (its status is
// set already).
func (c *conn) toWorker(t *task, exec bool) {
	t.exec = exec
	c.mu.Lock()
	start := false
	if c.mu.idle > 0 {
		c.mu.idle-- // that worker takes the next task on the channel
	} else if c.mu.workers < cap(c.work) {
		c.mu.workers++
		start = true
	}
	c.mu.Unlock()
	if start {
		c.workerWG.Add(1)
		go c.worker(t)
		return
	}
	// Never blocks: the channel holds as many tasks as can be in flight.
	c.work <- t
}

// worker runs t, then every task the channel hands it, until stopWorkers.
func (c *conn) worker(t *task) {
	defer c.workerWG.Done()
	for {
		c.complete(t, t.exec)
		c.mu.Lock()
		c.mu.idle++
		c.mu.Unlock()
		var ok bool
		if t, ok = <-c.work; !ok {
			return
		}
	}
}

// stopWorkers ends the workers once no command is running (cmdWG waited).
func (c *conn) stopWorkers() {
	close(c.work)
	c.workerWG.Wait()
}
