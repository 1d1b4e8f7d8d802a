// Package lm is the migration module (Huawei's "LM module"): it routes every
// host I/O of a LUN to its current data volume, and for a LUN under migration
// performs dual-write with the write-intent log / DCL, runs the initial copy
// (throttled, sparse aware, with transfer vehicles), pauses, resumes,
// recovers after a crash and performs the (consistent) split.
//
// It must never import package target or gotgt: hosts reach it only through
// the volume.Volume handle returned by Manager.LUN.
package lm
