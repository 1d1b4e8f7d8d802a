package metavol

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/rs/zerolog"
)

// SchemaVersion is the version of the key layout and record encoding this
// code writes. Open refuses a database with a higher version.
const SchemaVersion = 1

// schemaKey holds the schema version as a decimal string.
var schemaKey = []byte("meta/schema")

// Key prefixes. Package dcl keeps its keys under "dcl/" in the same DB.
const (
	prefixVolume  = "vol/"
	prefixLUN     = "lun/"
	prefixLUNName = "lunname/"
	prefixTarget  = "tgt/"
	prefixPair    = "pair/"
	prefixResv    = "resv/"
	prefixMeta    = "meta/"
)

// conflictRetries is how often Update re-runs fn after badger.ErrConflict.
const conflictRetries = 8

// Options for Open.
type Options struct {
	// Log receives badger's log lines (its info lines at debug level).
	Log zerolog.Logger

	// BeforeCommit is a test seam: if set, it is called before every
	// commit (Update, UpdateDCL and the DCL group commits that go through
	// it), after the free-space check; an error fails that commit with
	// nothing written, exactly as a failed badger commit would. Production
	// code leaves it nil.
	BeforeCommit func() error

	// FreeSpace is a test seam: if set, it replaces statfs as the source
	// of the free bytes of the meta volume's filesystem.
	FreeSpace func() (uint64, error)
}

// DB is the meta volume: one badger database. Safe for concurrent use.
type DB struct {
	dir  string
	bdb  *badger.DB
	log  zerolog.Logger
	opts Options
	// space guards commits against a full filesystem (space.go).
	space spaceGuard

	// updateMu serialises Update. Metadata changes are rare and tiny, and
	// badger syncs once per commit anyway, so running them one at a time
	// costs little and means Updates never conflict with each other
	// (package dcl writes its own keys through UpdateDCL and never touches
	// ours). Never held during a View.
	updateMu sync.Mutex
}

// Open opens (creating if needed) the meta volume in dir. Writes are synced
// (SyncWrites); memory use is kept small so several DBs fit on one box.
func Open(dir string, opts Options) (*DB, error) {
	if dir == "" {
		return nil, fmt.Errorf("meta volume: empty directory")
	}
	if err := makeDirDurable(dir); err != nil {
		return nil, fmt.Errorf("meta volume %s: %w", dir, err)
	}
	log := opts.Log.With().Str("component", "metavol").Logger()
	if removed, err := removeEmptyLogs(dir); err != nil {
		return nil, fmt.Errorf("meta volume %s: %w", dir, err)
	} else if len(removed) > 0 {
		log.Warn().Strs("files", removed).Msg("removed empty log files a power cut left behind")
	}
	db := &DB{dir: dir, log: log, opts: opts}
	// badger creates and writes its files on open (a new memtable log, a
	// value log header, the MANIFEST): refuse before it can fault.
	if err := db.space.init(db); err != nil {
		return nil, err
	}
	if err := db.checkSpace(); err != nil {
		return nil, err
	}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{log: log.With().Str("sub", "badger").Logger()}).
		WithNumVersionsToKeep(1).
		WithCompression(options.None).
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(baseTableSize).
		WithBaseLevelSize(baseLevelSize).
		WithValueLogFileSize(valueLogFileSize).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithMetricsEnabled(false)
	bdb, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("meta volume %s: open badger: %w", dir, db.mapErr(err))
	}
	db.bdb = bdb
	if err := db.checkSchema(); err != nil {
		bdb.Close()
		return nil, err
	}
	if err := db.fillTargetPorts(); err != nil {
		bdb.Close()
		return nil, err
	}
	return db, nil
}

// checkSchema writes the schema version into a new DB and refuses a newer one.
func (db *DB) checkSchema() error {
	var v []byte
	err := db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(schemaKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("meta volume %s: read schema version: %w", db.dir, db.mapErr(err))
	}
	if v == nil {
		return db.commit(func(txn *badger.Txn) error {
			return txn.Set(schemaKey, []byte(strconv.Itoa(SchemaVersion)))
		})
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return fmt.Errorf("meta volume %s: bad schema version %q", db.dir, v)
	}
	if n > SchemaVersion {
		return fmt.Errorf("meta volume %s: schema version %d, this lmtgt supports up to %d (upgrade lmtgt): %w",
			db.dir, n, SchemaVersion, ErrSchemaTooNew)
	}
	// n < SchemaVersion: migrations go here when there are any.
	return nil
}

// Dir is the directory the DB lives in.
func (db *DB) Dir() string { return db.dir }

// Close flushes and closes the DB. badger writes its memtable out on
// close: on a full filesystem the space reserve is released first
// (space.go).
func (db *DB) Close() error {
	_ = db.guardSpace(true)
	if err := db.bdb.Close(); err != nil {
		return fmt.Errorf("meta volume %s: close: %w", db.dir, db.mapErr(err))
	}
	return nil
}

// commit runs fn in one badger read-write transaction and commits it
// synced, after the free-space check and the BeforeCommit seam; badger's
// errors come back as metavol sentinels (mapErr).
func (db *DB) commit(fn func(txn *badger.Txn) error) error {
	if err := db.checkSpace(); err != nil {
		return err
	}
	return db.mapErr(db.bdb.Update(func(txn *badger.Txn) error {
		if err := fn(txn); err != nil {
			return err
		}
		if db.opts.BeforeCommit != nil {
			return db.opts.BeforeCommit()
		}
		return nil
	}))
}

// Update runs fn in one read-write transaction and commits it synced: when
// Update returns nil the change is durable. If fn returns an error nothing
// is changed. Updates run one at a time; should a commit still conflict
// (with a DCL transaction on the same keys), fn runs again, so fn must have
// no effects outside tx. fn must not call Update (it would deadlock). A
// full filesystem fails it with ErrFull before anything is written.
func (db *DB) Update(fn func(tx *Tx) error) error {
	db.updateMu.Lock()
	defer db.updateMu.Unlock()
	return db.retry(fn)
}

// UpdateDCL is Update for package dcl's own keys (tx.PutDCLPage,
// tx.PutDCLInfo, tx.DeleteDCL): the same commit, free-space check and
// BeforeCommit seam, but not serialised with Update, so a DCL group commit
// never waits behind an admin transaction (which may itself wait for DCL
// marks). fn must touch only DCL keys.
func (db *DB) UpdateDCL(fn func(tx *Tx) error) error { return db.retry(fn) }

func (db *DB) retry(fn func(tx *Tx) error) error {
	var err error
	for range conflictRetries {
		err = db.commit(func(txn *badger.Txn) error { return fn(&Tx{txn: txn}) })
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("meta volume %s: transaction kept conflicting after %d tries: %w", db.dir, conflictRetries, err)
}

// View runs fn in a read-only transaction (a consistent snapshot). It works
// on a full filesystem.
func (db *DB) View(fn func(tx *Tx) error) error {
	return db.mapErr(db.bdb.View(func(txn *badger.Txn) error { return fn(&Tx{txn: txn}) }))
}

// LoadReservations returns the persistent reservation state saved for a
// LUN ID, or nil, nil when there is none (target.ReservationStore).
func (db *DB) LoadReservations(lunID string) ([]byte, error) {
	var b []byte
	err := db.View(func(tx *Tx) error {
		var err error
		b, err = tx.GetReservation(lunID)
		return err
	})
	return b, err
}

// SaveReservations stores a LUN's persistent reservation state durably; an
// empty state deletes it (target.ReservationStore).
func (db *DB) SaveReservations(lunID string, state []byte) error {
	return db.Update(func(tx *Tx) error {
		if len(state) == 0 {
			return tx.DeleteReservation(lunID)
		}
		return tx.PutReservation(lunID, state)
	})
}
