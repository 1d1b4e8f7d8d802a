// Package iscsi is lmtgt's own iSCSI initiator (RFC 7143) and the remote
// data volume built on it: a volume.Volume backed by a LUN on another
// iSCSI target (Linux tgt, LIO, an array, another lmtgt). It is the
// foundation of importing a LUN from another storage system (issue 9).
//
// Placement: the remote volume must be openable by package lm, which may
// import metavol/volume but never target; the target transport
// (target/iscsi) must share the PDU codec with the initiator. So the codec
// lives in metavol/volume/iscsi/pdu (standard library only), imported by
// both this package and target/iscsi; this package imports pdu,
// metavol/volume and the standard library, never target, lm or dcl.
//
// Client (session.go) is one session, error recovery level 0, one
// connection. Login (login.go): AuthMethod None or CHAP (MD5, one-way or
// mutual: we check the target's CHAP_N and response), HeaderDigest and
// DataDigest CRC32C (offered as "CRC32C,None"; RequireDigests refuses
// None), MaxRecvDataSegmentLength, MaxBurstLength, FirstBurstLength,
// ImmediateData, InitialR2T, MaxOutstandingR2T=1. The same ISID is used for
// every re-login, so the target reinstates the session and drops the old
// one's tasks. Full feature phase: many commands in flight within the
// target's CmdSN window (MaxCmdSN) and QueueDepth; writes send immediate
// data and unsolicited Data-Out up to FirstBurstLength when negotiated,
// then answer each R2T with a Data-Out sequence in segments of at most the
// target's MaxRecvDataSegmentLength; Data-In is placed by buffer offset
// (never past the command's buffer), status may come with the last
// Data-In (phase collapse); residuals and sense data are returned.
//
// Ownership and the per-command path (the pass-through speed of an
// imported LUN depends on it): the session state (sequence numbers, the
// ITT table, the pending queue, the ping and logout in flight) is guarded
// by Client.mu, never held across I/O. A caller issues its own command:
// under mu it takes a pooled task, an ITT and a CmdSN and queues the PDUs
// (headers into a reused arena, data segments by reference to its
// buffer), then writes the queue itself with one writev unless a write is
// already under way, in which case that writer sends it with what it
// queued (PDUs queued together go out together). The connection's reader
// goroutine handles every PDU in place: Data-In is read straight into the
// caller's buffer (a command in flight is only completed or requeued by
// that reader, or by the owner after it stopped the reader), R2T queues
// Data-Out from the caller's buffer, and a response completes the waiter
// directly (one send on the task's reused channel). So a command costs
// one wake-up of the reader (the socket) and one of the caller, and in
// steady state no allocation (TestTgtZeroAllocsPerCommand). The reader
// and the owner never write to the socket themselves (the reader must
// keep reading while the target waits for us to): they kick the
// connection's writer goroutine. The owner goroutine (owner.run) owns the
// connection's life (login, drop, re-login with backoff, logout) and the
// timers: one ticker scans the commands in flight, counting their age in
// ticks (a command times out after CommandTimeout plus at most one tick;
// no timer per command). Before it re-issues or fails anything it stops
// the connection (closes the socket and waits for the reader, the writer
// and a caller's write in progress), so a caller's buffer is never touched
// after its call returns. A login attempt runs on its own goroutine that
// the owner waits for (and cancels on Close). TCP_NODELAY is set on every
// connection. The connection's reads and writevs go through pdu.Sock (raw
// system calls on the non-blocking socket, waits through the netpoller:
// no sysmon wake-up per command at queue depth 1). A read larger than
// 512 KiB goes to the target as 512 KiB READs in flight together, issued
// by the caller itself (Volume.readPieces: Client.issue for each piece,
// then Client.await for each), because Linux tgt serves them faster than
// one large READ.
//
// Failure rules:
//   - Target pings (NOP-In with a TTT) are answered; after NopInterval
//     without any PDU from the target we send a NOP-Out and drop the
//     connection if it is not answered within NopTimeout.
//   - A command without an answer for CommandTimeout is aborted with ABORT
//     TASK (referencing its ITT and CmdSN). When the TMF answers "function
//     complete" or "task does not exist" the command is sent again; when it
//     answers anything else, or nothing within AbortTimeout, the connection
//     is dropped and the session re-established.
//   - A dropped connection (reset, digest error, protocol error, Reject,
//     async logout request) puts every command in flight back at the head
//     of the queue in submission order; the owner logs in again with
//     backoff (ReconnectMin doubling to ReconnectMax, forever until Close)
//     and re-issues them with new ITTs and CmdSNs. This is safe because the
//     remote volume only sends idempotent commands (READ, WRITE, UNMAP,
//     WRITE SAME, SYNCHRONIZE CACHE, INQUIRY, READ CAPACITY).
//   - I/O fails to its caller only when the session has been down for
//     ReplacementTimeout (default 30 s, like open-iscsi's
//     replacement_timeout): then every queued command fails with
//     ErrSessionDown and new ones fail at once until a login succeeds again.
//     A command sent MaxAttempts times fails with ErrTimeout.
//   - UNIT ATTENTION, BUSY, TASK SET FULL, ABORTED COMMAND and NOT READY
//     (becoming ready) are retried (with a short backoff for the busy ones);
//     other CHECK CONDITIONs come back as *SCSIError with key/ASC/ASCQ.
//
// Bounds: at most QueueDepth commands in flight and MaxQueued accepted
// (callers beyond that block on a condition of mu); the reader holds one
// PDU header and reads Data-In into the command's own buffer (other data
// segments, rare and at most our MaxRecvDataSegmentLength, get their own
// buffer); the write queue holds only headers and references to callers'
// buffers of commands in flight.
//
// Persistent reservations (pr.go): PERSISTENT RESERVE IN (READ FULL
// STATUS, or READ KEYS and READ RESERVATION when the target has no full
// status) and OUT (REGISTER AND IGNORE EXISTING KEY, RESERVE, RELEASE,
// PREEMPT, CLEAR), and the fence lmtgt keeps on an imported LUN: TakeFence
// and ReleaseFence, and SetFenceKey/SetRegistrationKey, with which exec
// re-takes our own reservation or registration once after a RESERVATION
// CONFLICT (a target such as Linux tgt ties them to the session, so a
// reconnect loses them; our ISID, fixed by Config.ISID, keeps the
// initiator port the same). PREEMPT is the one command here that is not
// idempotent on re-issue.
//
// Volume (volume.go) implements volume.Volume: ReadAt/WriteAt as READ(16)/
// WRITE(16) split at the LUN's maximum transfer length (VPD B0, at most 8
// MiB per command, the pieces in flight together); unaligned requests go
// through a block-aligned bounce buffer (unaligned writes are a serialised
// read-modify-write, as for volume.File with O_DIRECT). Unmap must leave
// zeros (the volume.Volume contract): it sends UNMAP only when the LUN is
// thin provisioned and says unmapped blocks read as zeros (READ CAPACITY 16
// LBPME and LBPRZ, VPD B2 LBPU, VPD B0 limits), else WRITE SAME(16) of a
// zero block, and falls back to plain writes of zeros when the target
// refuses that. Sync is SYNCHRONIZE CACHE(16) (10 when 16 is refused).
// Size comes from READ CAPACITY(16) at open. Close logs out. NextData
// (the volume.File contract) asks GET LBA STATUS on thin-provisioned LUNs so
// a copier can skip deallocated ranges; elsewhere everything is data. The
// last data extent reported is kept as a hint and answers NextData inside
// it without a round trip (an old "data" answer is never wrong: a hole
// read as data reads zeros); Unmap drops it.
//
// Identity (identity.go) reads the LUN's standard INQUIRY vendor/product/
// revision, VPD 0x80 serial and the logical-unit designators of VPD 0x83,
// for `lun import --identity adopt`.
//
// URLs: iscsi://[USER[%SECRET]@]HOST[:PORT]/IQN/LUN (the libiscsi form) is
// parsed by ParseURL only; Config.String and Redact never show the secret.
//
// It must never send a command that is not idempotent through the re-issue
// path, never write into a caller's buffer outside the command's range or
// after the call returned, and never print a CHAP secret.
package iscsi
