// Package target is lmtgt's SCSI front end: it runs the iSCSI transport of
// package target/iscsi and serves its commands through gotgt's SCSI device
// layer (INQUIRY, MODE SENSE, READ CAPACITY, REPORT LUNS, ...) with the
// project's own handlers for READ/WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE,
// ORWRITE, SYNCHRONIZE CACHE, GET LBA STATUS, identity VPD pages and persistent
// reservations. LUN bytes come from a volume.Volume per LUN (lm's router).
//
// How a command flows: the transport calls Nexus.Execute; the nexus looks
// the LUN up in the Server's copy-on-write snapshot (an atomic pointer
// replaced by Apply), reports a pending unit attention or a reservation
// conflict, then calls the LU's PerformCommand, which indexes the LU's gotgt
// op table. That table holds our handlers (lun.go install) and, for the
// few commands gotgt gets right, gotgt's own functions wrapped so results
// are exact (data-in length, transfer length for residuals, fixed sense).
//
// State: per LUN ID a lunDev (reservations, the COMPARE AND WRITE lock) and
// an immutable luState (size, block size, gotgt LU) rebuilt on a capacity
// or configuration change; per session a nexus (unit attentions).
// ALUA (alua.go, implicit only): each target is one target port with a
// relative port ID in one target port group; a LUN has an access state per
// group, precomputed per target in the snapshot (targetView.accessState is
// the one rule), checked in Execute before the LU runs a command; REPORT
// TARGET PORT GROUPS is answered from the snapshot; Apply queues the unit
// attentions of a change.
// Persistent reservations are keyed by I_T nexus (initiator port name with
// ISID, plus target name) and saved through Options.Reservations on every
// change, so they survive a restart.
//
// Never: touch gotgt's package-level state outside gotgt.go; use gotgt's
// target service, LUN maps, AddCommandQueue or reservation code (racy or
// wrong, see docs in ../shared/GOTGT.md); hold Server.mu during I/O; let a
// panic in a handler escape Execute (it becomes HARDWARE ERROR).
package target
