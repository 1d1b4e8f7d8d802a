// Package crashfs is a crashable directory for tests: a FUSE file system
// (github.com/hanwen/go-fuse/v2) that loses, on command, everything not yet
// made durable, the way a power cut does. It is used by tests only and
// imports nothing from lmtgt.
//
// # Durability model (Linux, conservative)
//
// Each file has live content (what the mount shows) and durable content
// (what survives a power cut); each directory has live entries and durable
// entries. Only these make anything durable:
//
//   - fsync or fdatasync of a file (msync(MS_SYNC) of a mapping goes through
//     fsync): the file's data and size as they are now. Its directory entry
//     is not made durable by it.
//   - fsync of a directory: the directory's entries (names and which inode
//     each names) as they are now. So a new file, a rename, an unlink, a
//     mkdir are durable only after the parent (both parents for a rename
//     across directories) is fsynced; a created file whose data was synced
//     but whose directory was not is gone after a crash.
//
// That is the default, strict POSIX model. Options.OrderedMetadata models
// a file system with an ordered metadata journal (ext4 data=ordered, xfs):
// any fsync or fdatasync commits the journal, so every entry change and
// every truncate/fallocate size change made before it becomes durable
// (bytes cut off are gone, bytes added read as zeros), but not data
// written since the file's own last fsync (delayed allocation). With
// Options.BackgroundCommits the journal also commits before a seeded
// random eighth of the ops (the commit timer, another program's fsync).
//
// Data written with write(2) or through a mapping changes only the live
// content until the next fsync of that file (so do truncates and
// fallocates in the strict model). Nothing is ever written back in the
// background, except with Options.PartialWriteback: at the cut a seeded
// random half of the unsynced 4 KiB pages that lie within a file's durable
// size are kept (a partial writeback; size changes never are).
// Hard links, symlinks, device nodes and xattrs are not supported.
//
// # Crash points
//
// Every op that changes the file system is counted: write, fsync,
// fsyncdir, create, mkdir, unlink, rmdir, rename, truncate (setattr size,
// O_TRUNC) and fallocate. Options.CrashAtOp = k cuts the power just before
// op k: from then on the durable image is frozen. By default the mount
// keeps working after the cut, so the program under test can be closed
// normally (nothing it does reaches the image, so it cannot matter); an
// operation that returned before FS.IsCut said false must survive.
// Options.FailAfterCut makes every later op fail with EIO instead.
// FS.Crash cuts (if not yet), unmounts lazily and rewrites the backing
// directory to the durable image; FS.Unmount is a clean shutdown.
//
// # Kernel caches
//
// The mount has no writeback cache (every write(2) reaches the FS before
// it returns; pages dirtied through a shared mapping reach it on msync,
// fsync or background writeback), no direct_io (so mmap works, as badger
// needs), entry and attribute timeouts of zero, and no keep_cache. The
// kernel's page cache belongs to the mount: after Crash unmounts, none of
// it survives; mount the backing directory again (a new mount) to read the
// image through crashfs, or read the backing directory directly.
//
// # Processes
//
// The FUSE server runs in a child process (this test binary run again with
// LMTGT_CRASHFS_SERVER=1, caught by this package's init): a Go program
// that page-faults on a mapping served by FUSE from its own process can
// deadlock with the garbage collector's stop-the-world, and badger maps
// its files. StartServer starts one such process per test (a test may
// mount many times through it); Mount is the one-mount shorthand. Tests
// are skipped when /dev/fuse is missing or the kernel refuses the mount
// (the server mounts with mount(2), so it needs root). Every mount is
// lazily unmounted in t.Cleanup, and the server exits when the test's end
// closes its stdin, so a stuck mount never hangs a test run.
//
// The server orders all ops with one mutex: the op sequence is what crash
// points and the image are defined on (file reads run outside it).
package crashfs
