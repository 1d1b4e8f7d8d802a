package metavol

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// badger's sizes (db.go's Open). See docs/design.md "A full meta
// filesystem" for why they are not smaller: the largest transaction
// badger takes is 15% of the memtable, and a 2048-pair consistent split
// is one transaction.
const (
	memTableSize     = 16 << 20
	baseTableSize    = 4 << 20
	baseLevelSize    = 16 << 20
	valueLogFileSize = 64 << 20
)

// Why a guard at all: badger writes its memtable log (.mem), value log
// (.vlog) and tables (.sst) through mmapped files that it creates sparse.
// On a full filesystem the page fault of the first store into a hole
// cannot allocate a block and the kernel sends SIGBUS: the whole daemon
// dies (measured: tmpfs of 40 MiB filled with a file, one commit). There
// is no error to catch, so the guard makes sure badger never starts work
// that could need more space than the filesystem has.
//
// What one commit can make badger write before the next commit is
// checked: the transaction itself (at most maxBatch bytes into the
// memtable log), the flush of a full memtable into a level-0 table (at
// most memTableSize), and the compaction that flush may start (rewriting
// the level-0 tables and the overlapping level-1 tables: at most
// 2*memTableSize plus the current size of the tree). Old files are
// deleted only after the new ones are written. fixedSlack covers the
// MANIFEST, the headers of a new memtable log and the DISCARD file.
const (
	maxBatch   = memTableSize * 15 / 100
	fixedSlack = 4 << 20
	// reserveSize is the reserve file: room for the memtable flush badger
	// does on Close, and for background work already started when
	// something else filled the filesystem between two commits.
	reserveSize = memTableSize + fixedSlack
)

// reserveName is the reserve file in the meta volume's directory (badger
// ignores files it does not know).
const reserveName = "lmtgt-space.reserve"

// spaceGuard refuses commits when the filesystem of the meta volume has
// less free space than a commit may need, and keeps a reserve file that it
// gives back to badger in an emergency (a refused commit, Close). The
// reserve is made again once there is room for it and the margin.
type spaceGuard struct {
	path string
	mu   struct {
		sync.Mutex
		held bool
	}
}

func (g *spaceGuard) init(db *DB) error {
	g.path = filepath.Join(db.dir, reserveName)
	fi, err := os.Stat(g.path)
	switch {
	case err == nil:
		// A reserve from an earlier run: keep it if it is whole
		// (allocated, not just sized); otherwise make it again below.
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 >= reserveSize {
			g.mu.held = true
			return nil
		}
		if err := os.Remove(g.path); err != nil {
			return fmt.Errorf("meta volume %s: remove partial space reserve: %w", db.dir, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("meta volume %s: space reserve: %w", db.dir, err)
	}
	return nil
}

// margin is the free space a commit needs (see above).
func (db *DB) margin() uint64 {
	var lsm int64
	if db.bdb != nil {
		lsm, _ = db.bdb.Size()
	}
	return uint64(maxBatch + 3*memTableSize + fixedSlack + max(lsm, 0))
}

// freeBytes is the space available to lmtgt on the meta volume's
// filesystem.
func (db *DB) freeBytes() (uint64, error) {
	if db.opts.FreeSpace != nil {
		return db.opts.FreeSpace()
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(db.dir, &st); err != nil {
		return 0, fmt.Errorf("meta volume %s: statfs: %w", db.dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// checkSpace is called before every commit (and before badger is opened):
// ErrFull if the filesystem has less free space than margin. A refusal
// releases the reserve; room for the reserve and the margin makes it again
// (unless closing: Close only releases).
func (db *DB) checkSpace() error { return db.guardSpace(false) }

func (db *DB) guardSpace(closing bool) error {
	free, err := db.freeBytes()
	if err != nil {
		return err
	}
	need := db.margin()
	g := &db.space
	g.mu.Lock()
	defer g.mu.Unlock()
	if free < need {
		if g.mu.held {
			if err := os.Remove(g.path); err != nil {
				db.log.Error().Err(err).Msg("filesystem full: cannot release the space reserve")
			} else {
				g.mu.held = false
				db.log.Warn().Uint64("free", free).Uint64("needed", need).
					Msg("filesystem full: space reserve released for badger's background work")
			}
		}
		return fmt.Errorf("meta volume %s: %w (%d bytes free, %d needed)", db.dir, ErrFull, free, need)
	}
	if !closing && !g.mu.held && free >= need+reserveSize {
		if err := g.make(); err != nil {
			db.log.Warn().Err(err).Msg("cannot make the space reserve")
		} else {
			g.mu.held = true
		}
	}
	return nil
}

// make creates the reserve file with its blocks allocated.
func (g *spaceGuard) make() error {
	f, err := os.OpenFile(g.path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, reserveSize)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(g.path)
		return fmt.Errorf("space reserve %s: %w", g.path, err)
	}
	return nil
}
