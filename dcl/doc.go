// Package dcl keeps the data change log and write-intent marks of migration
// pairs: an in-memory dirty-region bitmap per pair whose clean->dirty
// transitions are made durable by one group-commit goroutine (a few bitmap
// pages per synced badger transaction), and cleared lazily.
//
// On disk a set bit means "the target may differ from the source in this
// region". In memory a Log keeps three things apart:
//
//   - marked: the bit is set (durable, or waiting in the next group commit);
//   - intent: a write is in flight here (a counter), or was recently;
//   - dcl:    the target is known to differ (a target write failed, the pair
//     was paused, or the bit was found on disk after a restart).
//
// A region is cleared (in memory, then on disk by the committer) only when
// it is marked, has no write in flight, is not in the DCL, and was not
// touched during a whole clear interval; the owner's Flush callback (sync of
// both data volumes) runs before the cleared pages are written.
//
// Keys live under "dcl/<pairID>/" in the meta volume's badger DB: one "meta"
// key with the region size and one key per bitmap page.
//
// It must never clear a bit early: a clear that races a new write leaves the
// bit set. It does no data I/O itself.
package dcl
