// Package dcl keeps the data change log and write-intent marks of migration
// pairs: an in-memory dirty-region bitmap per pair whose clean->dirty
// transitions are made durable by one group-commit goroutine (a few bitmap
// pages per synced badger transaction), and cleared lazily.
//
// It must never clear a bit early: a clear that races a new write leaves the
// bit set.
package dcl
