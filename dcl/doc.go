// Package dcl keeps the data change log and write-intent marks of migration
// pairs: an in-memory dirty-region bitmap per pair whose clean->dirty
// transitions are made durable by one group-commit goroutine (a few bitmap
// pages per synced meta volume transaction, metavol.DB.UpdateDCL), and
// cleared lazily.
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
// The pages are stored through metavol's typed DCL methods (Tx.PutDCLPage,
// Tx.DCLPages, Tx.GetDCLInfo/PutDCLInfo, Tx.DeleteDCL): keys under
// "dcl/<pairID>/", one "meta" key with the region size and one key per
// bitmap page. dcl never touches the database itself. The "meta" key is
// what makes a DCL exist: pages without it are garbage, never loaded, and
// deleted before a new header is written under that ID.
//
// A pair's DCL ends in the meta volume transaction that ends the pair (the
// split's swap, the cancel's record delete): Store.Forget runs the
// caller's transaction, which deletes the keys (Tx.DeleteDCLs), with no
// group commit in flight, and then closes and forgets the logs without a
// second delete; Store.Purge deletes the pages that transaction had no
// room for. Store.Drop (its own transaction) is for DCLs that end alone
// (a pair creation undone, a stray DCL at startup).
//
// A failed group commit (metavol.ErrFull on a full meta filesystem, an I/O
// error) fails every mark waiting on it; the pages stay queued and the
// committer retries them with a backoff (50 ms to 2 s) or when the next
// writer needs them, so marks work again once the cause is gone.
//
// After Store.Close every mark (BeginWrite, MarkDCL), even on a region that
// is already durably marked, fails at once with ErrClosed wrapped with the
// pair's ID: the committer is gone, and a mark queued then would wait
// forever.
//
// Where the files are: store.go (Store: the group committer and the
// clearer goroutines, loading a Log from its pages, Drop, Forget, Purge),
// log.go (Log: the bitmaps of one pair, marks, waits on a group commit,
// re-copy bookkeeping, lazy clears).
//
// Locks: Store.commitMu (held across a commit, serialises them) →
// Log.mu → Store.mu. Log.mu and Store.mu are never held across I/O; a
// Log's Flush callback runs with none of them held.
//
// It must never clear a bit early: a clear that races a new write leaves the
// bit set. It does no data I/O itself.
package dcl
