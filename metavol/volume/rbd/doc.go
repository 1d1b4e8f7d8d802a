// Package rbd is lmtgt's Ceph RBD data volume: a volume.Volume backed by
// an RBD image through librbd (github.com/ceph/go-ceph), so a LUN's bytes
// can live in a Ceph cluster and migrations can have RBD legs.
//
// Build: the librbd part (ceph.go) needs cgo and librbd-dev/librados-dev
// and is built only with the tag rbd; without it (stub.go) the package has
// the same API and every entry point fails with ErrNotBuilt, so a machine
// with only Go builds and runs lmtgt. go-ceph also needs the tag of the
// Ceph release whose headers it compiles against: Debian 12 ships librbd
// 16.2, pacific, hence `-tags rbd,pacific` (the Makefile picks the release
// from the installed librbd-dev). go-ceph is pinned at v0.41.0, the newest
// release that builds with -tags pacific against librbd 16.2 here (v0.42
// and later are not reachable from this build's module proxy); its
// compatibility table lists pacific as deprecated up to v0.40 and drops it
// from v0.41, but the pacific tag still selects the pre-quincy APIs
// (encryption, squid locks) and v0.41 fixes LockGetOwners, which in v0.40
// retries ERANGE without growing its buffer. Our tests against a real
// 16.2 cluster (scripts/mini-ceph.sh) are what vouch for it.
//
// Cluster is a librados connection for admin calls (Config: ceph.conf, client id,
// keyring; every monitor and OSD operation times out after OpTimeout, so
// an unreachable OSD fails I/O, and a migration leg goes interrupted,
// rather than hanging). Create makes images with exclusive-lock,
// object-map and fast-diff; Remove deletes one.
//
// Volume: I/O is asynchronous librbd (image.go, our own small cgo layer:
// go-ceph v0.41 has no rbd_aio_* and does not export its rbd_image_t, so
// the image is opened with rbd_open on go-ceph's IOContext.Pointer and all
// image calls go through image.go; go-ceph keeps the librados connection,
// create and remove). ReadAt/WriteAt/Unmap/Sync start rbd_aio_read/
// write/writesame/flush (one cgo call) and park the calling goroutine;
// librbd signals completions on an eventfd (rbd_set_image_notification)
// and one poller goroutine per image collects them in batches
// (rbd_poll_io_events) and wakes the waiters. So as many commands are in
// flight per LUN as the front end issues, and none holds an OS thread
// while it waits (blocking rbd_read/rbd_write held one thread each: 64
// commands in flight, 64 threads; TestRBDManyInFlight). The exception is
// a read or write alone in flight on the image (queue depth 1): it runs
// direct, rbd_read/rbd_write blocking the caller's thread, which
// librbd's completing thread wakes itself; the eventfd, the poller and
// the hand-over to the waiter cost several thread wake-ups per I/O when
// nothing else is in flight (TestRBDDirectAndAsync, TestRBDCloseDuringIO;
// docs/benchmarks.md "Direct lone I/O"). Buffers are pinned
// (runtime.Pinner) while librbd owns them. librbd submits each operation
// in the calling thread (rbd_non_blocking_aio=false: no wake-up of its
// dispatch thread); writes are copied by librbd (zero-copy writes would
// leave a fenced client's write waiting forever; TestRBDClientOptions).
// Unmap is write-same of a zero
// block, which librbd turns into a discard without granularity (whole
// objects removed, partial ranges zeroed): rbd_discard would skip pieces
// below rbd_discard_granularity_bytes and leave old data, breaking the
// Volume contract that unmapped ranges read as zeros. Sync is rbd_aio_flush.
// NextData (the contract of volume.File the copier uses to skip holes)
// comes from rbd_diff_iterate2 over whole objects, which reads the object
// map when fast-diff is on. Resize is rbd_resize.
//
// Ownership: each open image has a librados client of its own, because
// Ceph fences the holder of a broken lock by blocklisting its client
// address: with one shared client, a takeover of one image would cut the
// server off all its images (seen in TestRBDLUNLifecycle). Open takes the
// image's exclusive lock in exclusive mode
// (rbd_lock_acquire: librbd never hands it over on request), and records
// the opener's Owner under the image metadata key OwnerKey. An image whose
// lock another client holds is refused with a *LockedError naming the
// holder (its address and lmtgt owner). OpenOptions.Takeover breaks the
// other client's lock (Ceph blocklists that client: its writes fail from
// then on) and takes it. A lock whose recorded owner is the opener's own
// Owner is the opener's process before a crash (kill -9 leaves the lock
// until its watch times out) and is broken without Takeover. Close waits
// for calls in flight, flushes, releases the lock and closes the image; it
// never deletes anything. Once another client took the image over, every
// call of the old holder fails with an error wrapping volume.ErrOffline
// (Ceph's EBLOCKLISTED), so its hosts get NOT READY, not a medium error.
//
// Clusters (clusters.go) keeps one admin connection per distinct Config,
// so one server serves images of several clusters (a LUN may name its
// own ceph.conf, client id and keyring): made on first use, handed out
// with a done function, retired by Retain when no LUN names that
// configuration any more and closed by its last user. It never closes an
// open image: each has its own client.
//
// miniceph starts and stops the test cluster of scripts/mini-ceph.sh for
// the tests of this and the packages above.
//
// It imports metavol/volume, go-ceph and the standard library; it never
// knows about LUNs, pairs or badger.
package rbd
