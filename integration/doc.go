// Package integration holds lmtgt's end-to-end tests: they build the real
// binary once, start `lmtgt serve` on a free loopback port with a
// temporary data dir, drive it with the CLI, and check what hosts see with
// real initiators nobody here wrote: libiscsi's tools (iscsi-ls, iscsi-inq,
// iscsi-readcapacity16) and QEMU (qemu-io, qemu-img). A test whose tool is
// missing is skipped with the reason (scripts/install-test-deps.sh
// installs them).
//
// The RBD tests (rbd*_test.go) are built only with the rbd tag (`go test
// -tags rbd,pacific`, what `make test` passes when librbd-dev is there);
// the binary under test is then built with the same tags
// (scripts/rbd-tags.sh), and each test starts its own one-node Ceph
// cluster with scripts/mini-ceph.sh through metavol/volume/rbd/miniceph (a
// script runner for tests, no daemon code; skipped when Ceph is not
// installed).
// Without the tag, TestRBDNotBuilt checks the binary refuses --rbd.
//
// Shared helpers, one for each job (write one, do not copy a test's
// setup): Daemon (daemon_test.go: start, kill, restart, CLI, Export and
// exportLUN), the old array (tgt_test.go: Linux tgt, importForMigration), the
// host write streams and image models (migration_helpers_test.go), and
// the kill -9 loops (crashloop_test.go: kill schedule, the model of
// acknowledged writes, kill/restart/check, a kill around a split and its
// verdict, the final sync), which TestMigrationCrashLoop,
// TestImportCrashLoop and TestRBDMigrationCrashLoop use with only their
// setup and phases of their own.
//
// The tests must never reach into the daemon's packages: everything goes
// through the binary, its admin API and iSCSI, as an administrator and a
// host would.
package integration
