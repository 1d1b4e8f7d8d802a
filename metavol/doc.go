// Package metavol is lmtgt's meta volume: one badger database in the data dir
// holding data volume, LUN, target, pair and reservation records, plus the
// keys package dcl keeps there. Every change is one synced transaction made
// durable before the caller returns. The LUN -> data volume mapping lives
// only here.
//
// It must never do data I/O or know about iSCSI; callers compose
// transactions from the typed record methods on Tx.
package metavol
