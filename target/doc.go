// Package target is lmtgt's SCSI front end: it runs the iSCSI transport of
// package target/iscsi and answers its commands with lmtgt's own SCSI
// layer (SPC/SBC: READ/WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE,
// ORWRITE, VERIFY, SYNCHRONIZE CACHE, capacity, GET LBA STATUS, INQUIRY
// and VPD pages, REPORT LUNS, unit attentions, SPC-2 and persistent
// reservations). LUN bytes come from a volume.Volume per LUN (lm's router).
//
// How a command flows: the transport calls Nexus.Execute with an
// iscsi.Command. Execute looks the LUN up in the Server's copy-on-write
// snapshot (an atomic pointer replaced by Apply), reports a pending unit
// attention or a reservation conflict, then fills a Cmd (cmd.go: CDB, LUN,
// Data-Out, Data-In buffer; results: status, sense, bytes produced,
// transfer length for residuals) and calls luState.serve (dispatch.go),
// the one table from opcode to handler. Handlers answer through Cmd's
// methods and return the status; Execute copies the results back.
//
// gotgt is a provider, not the frame: gotgt.go is the only file that
// imports it, and serve calls it for three commands only, MODE
// SENSE(6/10), MODE SELECT(6/10) and SEND DIAGNOSTIC (its mode pages and
// block descriptor). gotgt.go builds gotgt's command from a Cmd for those
// and turns the answer back; no other command ever meets a gotgt type.
//
// Mappings (config.go LUN): a mapping may be write-protected (dispatch.go
// changesMedium answers DATA PROTECT; MODE SENSE sets WP) and masked to
// some initiators (targetView.lun is the one masking rule: Execute, REPORT
// LUNS, task management and EXTENDED COPY use it). A target may be limited
// to some portals (Server.OnPortal, the transport's iscsi.PortalFilter).
// EXTENDED COPY (LID1) and RECEIVE COPY RESULTS are in xcopy.go: a CSCD
// descriptor resolves only to a LUN the nexus reaches, and the copy writes
// through the destination's volume like a host WRITE.
//
// ALUA (alua.go, implicit only): each target is one target port with a
// relative port ID in one target port group; a LUN has an access state per
// group, precomputed per target in the snapshot (targetView.accessState is
// the one rule), checked in Execute (aluaGate) before dispatch; REPORT
// TARGET PORT GROUPS is answered from the snapshot; Apply queues the unit
// attentions of a change.
//
// State: per LUN ID a lunDev (reservations, the write lock, counters and
// command latency histograms, stats.go) and
// an immutable luState (size, block size, identity, gotgt LU) rebuilt on a
// capacity or configuration change; per session a nexus (unit
// attentions). Persistent reservations are keyed by I_T nexus (initiator
// port name with ISID, plus target name) and saved through
// Options.Reservations on every change, so they survive a restart.
//
// The admission and lock points of one WRITE, from socket to disk, and
// why each remains:
//  1. lunDev.io, shared (target, sbc.go): makes COMPARE AND WRITE and
//     ORWRITE, which hold it exclusively, atomic against every other
//     change of the LUN's blocks. An uncontended RWMutex read lock (one
//     atomic add each way). READ and VERIFY no longer take it: they
//     modify nothing.
//  2. lm's LUN gate (lm/gate.go): split, pair attach/detach and delete
//     change the LUN's route only with the gate closed and drained.
//  3. a range-lock stripe (lm/rangelock.go), only while the LUN is the
//     source of a pair: orders the host write against the copier's chunk.
//  4. the DCL's mutex (dcl), only for a dual write whose regions need an
//     intent mark: the mark must be durable before either leg is written.
//  5. volume.File.mu, shared: keeps the file descriptor open under a
//     running call (Close takes it exclusively).
//
// None is redundant with another: each orders a different pair of
// actors (host write vs atomic write; host I/O vs route change; host
// write vs copier; write vs its intent mark; I/O vs close). The only two
// of the same kind are 1 and 2 (per-LUN in-flight accounting); folding 1
// into lm's gate would need an exclusive admission in lm, which belongs
// to lm. The reservation and unit attention checks cost one atomic load
// each while no reservation or attention exists.
//
// Never: import gotgt or touch its package-level state outside gotgt.go;
// hand gotgt a data command or use its target service, LUN maps,
// AddCommandQueue or reservation code (racy or wrong); hold Server.mu during I/O; allocate per READ or
// WRITE (alloc_test.go); let a panic in a handler escape Execute (it
// becomes HARDWARE ERROR).
package target
