// Package metavol is lmtgt's meta volume: one badger database in the data dir
// holding data volume, LUN, target, pair and reservation records, plus the
// keys package dcl keeps there (under "dcl/", written through Badger()). The
// LUN -> data volume mapping lives only here.
//
// Every change is one DB.Update: a badger transaction committed with
// SyncWrites, so it is durable when Update returns, and all or nothing if fn
// fails. Updates run one at a time; View gives a consistent snapshot. Tx has
// typed methods per record kind (Get/Put/Delete and a list); records are
// JSON under the key prefixes "vol/", "lun/", "tgt/", "pair/", "resv/" and
// "meta/", and "lunname/" is the LUN name index kept by PutLUN/DeleteLUN, so
// LUN names are unique (ErrExists). Migration sessions live under "sess/"
// (session.go: records under "sess/id/", the name index under "sess/name/"). Missing records give ErrNotFound wrapped
// with the object's kind and name. "meta/schema" holds SchemaVersion; Open
// refuses a newer one (ErrSchemaTooNew). badger's log goes to zerolog.
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
