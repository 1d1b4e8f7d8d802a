// Package lm is the migration module (Huawei's "LM module"): it routes every
// host I/O of a LUN to its current data volume, and for a LUN under migration
// performs dual-write with the write-intent log / DCL, runs the initial copy
// (throttled, sparse aware, with transfer vehicles), pauses, resumes,
// recovers after a crash and performs the (consistent) split.
//
// It must never import package target or gotgt: hosts reach it only through
// the volume.Volume handle returned by Manager.LUN.
//
// Where the files are: manager.go (Open, Close, the per-LUN router handle
// and I/O gate use), lun.go (LUN create/resize/delete and their rules),
// pair.go (pair runtime, checkpoint), pairstate.go (the pair's state owner:
// its state, write mode and fault as one value, the named transitions,
// faults), pairadmin.go (create, pause, resume, cancel, set), pairstatus.go
// (status and lists), ratesampler.go (copy rate and ETA), pairref.go (a pair
// named by source LUN or by ID; the public by-name operations), pairrules.go
// (the rules of pair, throttle and split requests), states.go (the state
// machine, the only place transitions are decided), lockrank*.go (the lock
// order as ranks, checked with -tags lockrank), write.go (the host write
// path, DESIGN §3), copier.go (the run loop, initial copy, DCL re-copy,
// retry, vehicles), split.go (split, verify, auto-split; also the swaps of
// split --keep-source and rollback), rollback.go (rollback after the
// switch: the state switched, its modes of the split, commit, for pairs
// and sessions; its state machine and crash rules), rollback_retire.go
// (retire of the old LUN, scrub, delete of ended records), splitstats.go
// (split pauses and deferrals, live pairs: what metrics read), recover.go
// (startup), sessionstate.go, sessionrun.go, sessionadmin.go (migration
// sessions: their aggregated state; their registry and runner (MaxActive,
// auto-split); their admin operations, which drive the pairs by ID),
// import.go (data volumes on another iSCSI target: lun import, their
// credentials, adopted identity, reopen after a failed start), rbd.go (Ceph
// RBD data volumes: the cluster connection, lun create --rbd, takeover),
// fence.go (the fence on an imported source's old path: a WRITE EXCLUSIVE
// reservation from pair or session create to cancel or LUN delete, re-taken
// at open; registration for access; PR carry-over through PRCarrier),
// targets.go (targets, mappings, ACLs, CHAP, discovery CHAP; the Exporter
// hook), alua.go (ALUA target port groups, relative port IDs and LUN access
// states: persisted and applied like every target change; their values are
// checked by package target, through the API), views.go (what lun/target
// show report), iscsiname.go (iSCSI names, CHAP limits), errors.go
// (sentinels, Refusal), config.go and configplan.go (the configuration
// as a file: export in one snapshot; the plan of an apply, checked as a
// whole before its first step and carried out through the operations
// above, each step with its undo), configpairopts.go (the pair options
// the file carries for a pair or a session, in one table: the extension
// point where a new `migration create` option is added to the file, with
// how it compares, is created and changes live),
// queue.go (the copy queue: slots by priority,
// run-time max active, the server limits), schedule.go (start time, state
// scheduled), schedule_window.go (daily windows, max elapsed, the
// schedule goroutine), sessionref.go (pairs named by source, target or
// ID; a session's pairs refuse lone split/cancel/resume),
// events.go (the bounded persistent event log and
// the pair and session histories: one owner, an asynchronous writer that
// never blocks a producer), history.go (reading the histories),
// progress.go (the periodic progress line of copying pairs).
//
// The control plane: lm owns every admin rule (LUNs, targets, mappings,
// ACLs, CHAP, ALUA records, pairs, sessions, fencing), each in one place,
// checked under Manager.admin and, where records are read, in one meta
// volume transaction. A refused request changes nothing and returns a
// Refusal (object, reason, sentinel class) that the admin API passes on
// as is. Target changes reach the iSCSI side only through the Exporter
// hook, after they are committed (undone if it fails); lm never imports
// target (what an ALUA ID or state name means is target's rule: the API
// checks it there and passes the checked values in). The status types
// (PairStatus, SessionStatus, LUNInfo, TargetInfo, FenceStatus, ...)
// have no JSON tags: target/api converts each once to its wire type.
//
// Invariants:
//   - The route of a LUN (data volume, pair) changes only while its I/O
//     gate is closed and drained: pair attach/detach, split, delete.
//   - Host writes take the pair's range lock shared; the copier takes it
//     exclusive per chunk (or region) and raises the in-memory cursor
//     while holding it. A write below that cursor is durably marked in the
//     DCL (dcl.Log.BeginWrite) before it is issued to either leg.
//   - Every copy path (initial copy, DCL re-copy, probe, verify) reads the
//     source and changes the target under the exclusive range lock, and
//     looks up the source's holes there too: a hole seen before the lock
//     may hold a host write by now.
//   - The persisted checkpoint only moves after both legs were synced, and
//     never past a chunk that is neither copied nor in the DCL. The split
//     syncs each target before the transaction that makes it the source
//     LUN's data.
//   - A LUN is served only while lmtgt can track and trust it (offline.go):
//     a LUN named by a pair record that could not be loaded, or whose data
//     volume is unavailable or shrank, vanished or was replaced underneath
//     lmtgt, fails every host command with ErrOffline (= volume.ErrOffline,
//     SCSI NOT READY). Never skip a pair record and serve its source
//     plainly: its writes would go untracked. Only the Manager decides it
//     (unloadable, volumeLost); the host path checks it inside the gate.
//   - A remote (iscsi) data volume's CHAP secret leaves its record only
//     into the initiator's Config (import.go remoteConfig); logs, errors
//     and status name it by Remote.URL, which has none.
//   - The split verifies both data volumes of every pair (identity and
//     size; files only: a remote volume's loss is its replacement timeout)
//     before it starts, again after its syncs just before the pause,
//     and inside the pause after the drain, while the split journal
//     commits (there one fstat per leg: truncated or deleted; a failure
//     deletes the journal again and refuses the split); a checkpoint is
//     persisted only
//     after both legs verified too.
//   - The DCL of a pair is deleted in the meta volume transaction that
//     ends the pair: the one that writes the split's records right after
//     its pause (or the roll-forward of its journal at the next start),
//     the cancel's record delete (dcl.Store.Forget runs that transaction
//     with no DCL group commit in flight and then forgets the logs). The
//     split journal says whether the headers go, so "swapped but DCL
//     still there" is rolled forward, never loaded. The split's
//     transaction deletes only the headers (metavol.Tx.DeleteDCLHeaders,
//     one delete per pair): pages without a header are garbage that is
//     never loaded, purged right after the pause (dcl.Store.Purge) or by
//     the sweep at the next start, so the pause does no work per page.
//   - What the split does with host I/O held (the pause) is only: the
//     drain, a re-check of each pair's fault and DCL count, the commit of
//     the split journal (metavol.SplitJournal: one key whatever the pair
//     count, encoded before the pause) with the fstat of every open leg
//     meanwhile, and the route swap. Target syncs, record reads, path
//     checks and allocations come before it; after it, still holding
//     admin and every persist lock, one transaction writes the records
//     the journal describes (with the measured pause), deletes the DCL
//     headers of ended pairs and the journal; then the in-memory state
//     changes (applyLocked: events, wake-ups; no host write depends on
//     them) and stopping the run goroutines (all signalled at once). The
//     journal's commit is the decision: Open rolls a journal left by a
//     crash forward before it loads anything (rollForwardSplit), and so
//     does every split before it writes its own (one key). No sync is
//     needed inside: the
//     copier is idle from the splitting transition, so the sync before the
//     pause covers every copy write; a host write after it reaches both
//     legs' page caches and is durable once the host syncs (a host sync
//     syncs both legs before the swap, the new source after it; a
//     writeback error is reported by the next fsync of the file).
//   - A pair's legs (pair.legs: primary and secondary data volume) change
//     only at a split --keep-source and a rollback, in the step that swaps
//     the LUNs' routes (gates closed and drained, persist held, copier
//     idle): a switched pair is the same pair with its legs reversed.
//   - A pair's state, write mode (dual / source-only) and fault are one
//     immutable value (pairView, pairstate.go) with one owner: it is
//     replaced only under pair.mu, by the named transitions (which persist
//     first) and by recordFault; the host path, the run goroutine and
//     status each read one snapshot (pair.view), never two values that
//     could disagree.
//   - Every state change is persisted before it takes effect, except that
//     writes switch to source-only (+DCL) at the first target (or copy
//     source) failure, before the "interrupted" record is written (that
//     is always safe).
//   - A pair is created (alone or with its session) by one meta volume
//     transaction written while the gates of its LUNs are closed, together
//     with its routes; the meta volume and the attached pairs never differ
//     (createPairs).
//   - A new data volume is never a file inside the data dir that lmtgt
//     does not create there as a volume, nor a file another LUN, the meta
//     volume or the admin socket uses (lun.go checkLUNPath); no volume
//     record naming a file of the meta volume or the admin socket is ever
//     opened (volumeAllowed).
//
// Locks, in the order they are taken (never the other way round). The
// ranks are in lockrank.go; built with -tags lockrank every one of them
// panics when taken against this order, and TestLockOrder drives create,
// copy, host writes and syncs, a target failure, pause, resume, set,
// split and cancel at once under -race with it on; make test-go runs it,
// and every other lm test, with the tag. Without the tag the checks
// compile to nothing.
//
//	Manager.admin → pair.persist → gate → pair.syncMu → range lock → pair.mu → Manager.mu
//	Manager.admin → Exporter.ApplyTargets (target changes; it may call Manager.LUN, which takes Manager.mu)
//
// Locks of equal rank are taken in a fixed order of their own: the split
// takes the persist locks of its pairs by pair ID and closes their gates
// in one list; range lock stripes go in ascending order. Then, taken last
// and owned elsewhere: sessionSet.mu (pair.mu → it: applyLocked wakes the
// session runners; a session's ops lock comes before Manager.admin), the
// DCL's locks (Log.mu, Store.mu, commitMu; dcl/doc.go), the throttle's
// buckets (a pair's and the Manager's budget), the copy queue's mu
// (queue.go: a leaf, taken with no pair lock held), gate.mu, the
// volumes' own.
//
// Who takes what: admin operations admin → persist (→ gates closed, for
// attach, detach and the split's pause); the run goroutine range lock (a
// chunk) or persist (its transitions, the checkpoint, → syncMu
// exclusive); host writes gate (entered) → range lock (shared) → the DCL;
// host syncs gate → syncMu (shared); a failure anywhere → pair.mu
// (recordFault). Manager.mu guards the maps of LUNs, volumes and pairs and
// nothing is taken under it.
//
// pair.persist serialises the writers of a pair's record (transition,
// checkpoint, Set, Split) and is, with syncMu (which orders the syncs of
// the legs) and the range lock (a region being copied), the only pair lock
// held across I/O: the meta volume commit that persists a change, the
// split's target syncs and its pause. Pause waits for the copy to stop on a
// channel (pair.copying), not on a lock the copier holds. pair.mu guards
// the record and state in memory and is never held across I/O, so status
// reads (`migration show/list`, metrics) answer at once, also during a
// split. The split holds persist of every pair it splits until the pause is
// over and releases it before it waits for the run goroutines (which may
// wait for persist). The host path takes the gate, the range lock and the
// DCL (BeginWrite), never a pair's persist, and pair.mu only to record a
// fault.
//
// Decisions not spelled out in DESIGN.md:
//   - synced → copying is allowed: after a restart (or a source write error
//     in dual-write) the DCL is not empty and must be re-copied; splitting
//     → synced/interrupted undoes a deferred or refused split.
//   - A faulty pair stays attached (writes source-only + DCL) until Cancel,
//     which removes it without a transition (faulty is final).
//   - A pair record that cannot be loaded (unknown state, a missing LUN, an
//     unreadable DCL) fences both its LUNs rather than loading it with a
//     full DCL: nothing is written, one rule for every cause, a restart
//     retries; Cancel (by source name, source LUN ID or pair ID) deletes
//     the record and DCL and brings the LUNs online. A lost data volume is
//     sticky until a restart (openVolume refuses it), so a probe that
//     rewrites one region cannot make a pair "sync" over lost data.
//     Volumes are checked every Options.VerifyInterval (2s), on I/O errors,
//     at open (against the recorded size) and at the split.
//   - Cancel deletes the pair record (with its DCL, in one transaction); a
//     split pair's record is kept (state "split", with the measured pause)
//     so `migration show` can report it. The transaction right after the
//     pause writes the record with the measured pause (a journal rolled
//     forward after a crash leaves the previous value).
//   - copy_file_range does not read the data, so it skips holes but copies
//     allocated all-zero extents; the generic vehicle writes zero chunks as
//     holes (Unmap). The status's Vehicle says which ran.
//   - After a split the target LUN points at the old source volume; if that
//     volume is smaller than the target LUN was, the target LUN's size
//     becomes the source LUN's size.
//   - The DCL region size is 1 MiB and the copy chunk a multiple of it.
//   - A dual write smaller than 64 KiB runs its two legs one after the
//     other on the caller's goroutine (DESIGN §3c says in parallel): a
//     page-cache write of 4 KiB costs a few microseconds, less than
//     handing a leg to another goroutine and waking back (dual-write at
//     4 KiB QD1 went from ~21 to ~13 µs against ~6 µs without a pair,
//     BenchmarkDualWrite/BenchmarkPlainWrite). Larger writes, unmaps of
//     64 KiB or more and syncs run both legs in parallel.
//   - Syncs whose success lets metadata claim the target holds the
//     source's data (checkpoint, lazy clear, split) exclude host syncs; a
//     failed sync of either leg puts every marked region and the copy
//     above the persisted checkpoint in the DCL before any later sync can
//     succeed (after a failed writeback the kernel may report success on
//     the next fsync with the pages gone). A failed sync of the source that
//     no host issued (the checkpoint's, the lazy clear's) fails the next
//     host sync of the LUN with that error, once: the host must hear that writes
//     it completed may be gone (they cannot be re-copied from anywhere).
//     The error waits on the LUN (lunEntry.syncErr), not on the pair, so a
//     split or cancel before that host sync does not swallow it.
//   - A pair recovered already interrupted gets its full RetryBudget from
//     the restart.
//
// How durability is tested: docs/design.md §9 (crash points on crashable
// data volumes, error at every step of the volume writes and syncs).
package lm
