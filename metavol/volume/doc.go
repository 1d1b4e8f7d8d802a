// Package volume is lmtgt's data volume I/O: sparse files, existing files and
// raw block devices behind the one Volume interface (volume.go).
//
// It must never know about LUNs, pairs or badger: it stores bytes. It imports
// the standard library (and golang.org/x/sys/unix) only.
package volume
