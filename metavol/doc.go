// Package metavol is lmtgt's meta volume: one badger database in the data dir
// holding data volume, LUN, target, pair and reservation records, plus the
// data change logs of package dcl (dcl.go: typed DCL page methods under
// "dcl/", committed through UpdateDCL). The LUN -> data volume mapping lives
// only here. It is the only package that imports badger: badger's errors are
// mapped to ErrConflict, ErrClosed, ErrFull and ErrTooBig (errors.go).
//
// Every change is one DB.Update: a badger transaction committed with
// SyncWrites, so it is durable when Update returns, and all or nothing if fn
// fails. Updates run one at a time; View gives a consistent snapshot. Tx has
// typed methods per record kind (Get/Put/Delete and a list); records are
// JSON under the key prefixes "vol/", "lun/", "tgt/", "pair/", "resv/" and
// "meta/", and "lunname/" is the LUN name index kept by PutLUN/DeleteLUN, so
// LUN names are unique (ErrExists). Migration sessions live under "sess/"
// (session.go: records under "sess/id/", the name index under "sess/name/").
// ALUA (alua.go): a target record carries its target port group and its
// relative target port ID (PutTarget gives a new target the lowest free
// one and refuses one another target holds; Open fills them into records
// written before they existed); a LUN's access states by group live under
// "alua/LUNID" and are deleted with the LUN. The event log and the
// histories (events.go, owned by lm) live under "ev/" (one key per event,
// big-endian sequence numbers) and "hist/pair/", "hist/sess/". The key
// "splitjournal" holds at most one split journal (splitjournal.go: what a
// split sets, committed inside its pause, deleted with the records it
// describes; Tx.RollForwardSplit applies one left by a crash). Missing records give ErrNotFound wrapped
// with the object's kind and name. "meta/schema" holds SchemaVersion; Open
// refuses a newer one (ErrSchemaTooNew). badger's log goes to zerolog.
//
// Every commit first checks the free space of the filesystem (space.go):
// badger writes through mmapped sparse files and dies of SIGBUS when a page
// cannot be allocated, so below a margin that covers what one commit can
// make badger write (its batch, a memtable flush, the compaction that may
// follow) commits fail with ErrFull ("meta volume DIR: filesystem full (N
// bytes free, M needed)") and nothing is written. A reserve file is released
// on the first refusal and before Close. Reads work on a full filesystem;
// commits work again once space is freed. Options.BeforeCommit is a test
// seam called before every commit (an error fails it).
//
// NewID, NewNAA and NewSerial make record IDs and SCSI identities; DB
// implements target.ReservationStore (LoadReservations/SaveReservations)
// without importing package target.
//
// It must never do data I/O or know about iSCSI, and never decide policy
// (whether a LUN may be deleted, whether a pair may split): callers compose
// transactions from the typed record methods on Tx and check their own rules
// inside them.
package metavol
