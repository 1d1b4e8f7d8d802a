// Package iscsi is lmtgt's iSCSI transport (RFC 7143): portals, login with
// CHAP, discovery, the full feature phase with many outstanding commands,
// R2T and Data-In within negotiated limits, NOP, task management, logout and
// digests. It hands SCSI commands to a Backend (backend.go) and knows nothing
// of gotgt, LUN storage or migration.
//
// The PDU codec (opcodes, header accessors, reading headers and data with
// digests and limits, AHS, text keys, CHAP helpers) is
// metavol/volume/iscsi/pdu, shared with lmtgt's initiator; this package
// imports it and the standard library only.
//
// Shape: one goroutine per connection reads PDUs (serve -> login ->
// fullFeature); a command whose data is complete runs on one of the
// connection's long-lived workers (worker.go; or, when it is the only one
// in flight, on the reader itself) and writes
// its Data-In and status with one writev; responses that complete while
// another is being written are queued and the next writer sends them all
// in one writev (flat combining, conn.send). The connection's reads (under
// its bufio.Reader) and writevs go through pdu.Sock: raw system calls on
// the non-blocking socket, waits through the netpoller.
// Data buffers come from a per-Server pool by size class, tasks and send
// requests from per-connection free lists: no heap allocation per READ or
// WRITE in steady state (alloc_test.go). Error recovery
// level 0, one connection per session.
//
// Files of the full feature phase, one job each: ffp.go (the PDU loop,
// CmdSN ordering and the command window, NOP, logout), task.go (the task
// and its states), command.go (SCSI Command PDUs: admission, immediate
// and unsolicited data, running a task on the Backend), dataout.go (R2T
// and Data-Out), respond.go (residuals, Data-In and SCSI Response),
// tmf.go (task management), worker.go (the connection's command workers),
// zerocopy.go (Data-In sent from a file with sendfile: Command.FileOK and
// DataInFile); conn.go holds the batched writer (send).
//
// Bounds: the CmdSN window is enforced for every non-immediate PDU and
// immediate SCSI commands are capped per session (ffp.go); write buffers
// are reserved from one server-wide budget before they are allocated
// (budget.go), so no set of sessions can make it buffer more than
// Options.MaxWriteBuffer of write data; failed CHAP logins are rate limited
// per address and initiator name (authlimit.go).
//
// It must never let one connection's bad input reach another: every
// connection goroutine recovers panics and closes only itself; no length
// field from the wire is trusted before it is checked against a negotiated
// or fixed limit; it never writes more than the expected data transfer
// length into a command's buffer; it never exits the process and never
// listens on an address it was not given.
package iscsi
