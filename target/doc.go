// Package target is lmtgt's SCSI front end: it runs the iSCSI transport of
// package target/iscsi and serves its commands through gotgt's SCSI device
// layer (INQUIRY, MODE SENSE, READ CAPACITY, REPORT LUNS, ...) with the
// project's own handlers for READ/WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE,
// SYNCHRONIZE CACHE, GET LBA STATUS, identity VPD pages and persistent
// reservations. LUN bytes come from a volume.Volume per LUN (lm's router).
//
// Only this package touches gotgt's package-level state; keep it that way.
package target
