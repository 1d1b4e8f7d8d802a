// Package iscsi is lmtgt's iSCSI transport (RFC 7143): portals, login with
// CHAP, discovery, the full feature phase with many outstanding commands,
// R2T and Data-In within negotiated limits, NOP, task management, logout and
// digests. It hands SCSI commands to a Backend (backend.go) and knows nothing
// of gotgt, LUN storage or migration.
//
// It must never let one connection's bad input reach another: every
// connection goroutine recovers panics and closes only itself.
package iscsi
