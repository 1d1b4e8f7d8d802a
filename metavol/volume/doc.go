// Package volume is lmtgt's data volume I/O: sparse files, existing files and
// raw block devices behind the one Volume interface (volume.go).
//
// A *File is opened with Create (a new sparse file; refuses an existing path
// and syncs the parent directory) or Open (an existing file, or a block
// device whose size is read from the device). I/O is positional
// (pread/pwrite), bounds-checked against Size (ErrOutOfRange) and safe for
// concurrent use. Unmap punches holes in files (FALLOC_FL_PUNCH_HOLE) and
// zeroes block device ranges (BLKZEROOUT), so unmapped ranges always read as
// zeros. Sync is fdatasync. NextData walks data extents (SEEK_DATA /
// SEEK_HOLE) so copiers can skip holes. With Options.Direct the volume uses
// O_DIRECT; unaligned requests are served through pooled aligned bounce
// buffers (unaligned writes become a serialised read-modify-write), so
// callers get correct results either way and full speed when they align.
//
// Verify (verify.go) checks that a File is still what was opened and
// whole: not unlinked, its path naming the same file or device, not
// smaller than Size (ErrVanished, ErrReplaced, ErrShrunk). A read that
// finds the file shorter than Size, NextData on such a file, a write
// reaching its last block and Resize fail with ErrShrunk rather than
// return zeros, report holes, or give a truncated file its size back;
// Open with Options.MinSize refuses a file smaller than its recorded size.
// ErrOffline is the sentinel the layers above use for a logical unit
// that must not be served (the SCSI front end answers NOT READY).
//
// ReadRef (a RefReader) hands out a FileRef, the descriptor, offset and
// length of bytes to send without a copy (sendfile); the File counts the
// references it handed out and Close leaves the real close to the last
// Release, so a descriptor being sent from is never closed (and its number
// never reused) under the sender.
//
// Faulty wraps any Volume to inject write/read failures and latency in tests
// of the packages above; it never fakes success. It can fail exactly the
// k-th write or sync (error-at-every-step loops).
//
// CrashSet and Crashable (crash.go) are for power-loss tests of the packages
// above: volumes of one CrashSet lose everything not covered by a Sync at one
// instant (CrashSet.Crash, or the k-th write/unmap/sync), leaving their real
// files holding exactly a durable image (all unsynced pages lost, or a
// seeded random subset), and fail every call afterwards.
//
// IsZero (volume.go) is lmtgt's one all-zero test of a block (the copier's
// hole detection, the crash volumes, the tests above).
//
// It must never know about LUNs, pairs or badger: it stores bytes. It never
// deletes a file or writes outside the range asked for, and never grows a
// volume implicitly (only Resize does). It imports the standard library and
// golang.org/x/sys/unix only.
package volume
