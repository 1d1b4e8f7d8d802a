package metavol

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// Sentinel errors, matched with errors.Is. Methods wrap them with the kind
// and name of the object, e.g. `lun "db1": not found`. No badger error
// leaves this package: storage errors are mapped to ErrConflict, ErrClosed,
// ErrFull or ErrTooBig (wrapped with the meta volume's directory), or kept
// as an unmatched internal error.
var (
	// ErrNotFound: no record with that ID or name.
	ErrNotFound = errors.New("not found")
	// ErrExists: a record with that name already exists (for LUNs: the
	// name belongs to another LUN ID).
	ErrExists = errors.New("already exists")
	// ErrSchemaTooNew: the database was written by a newer lmtgt.
	ErrSchemaTooNew = errors.New("meta volume schema is newer than this lmtgt supports")
	// ErrInvalid: a record is missing a required field (ID, name, IQN).
	ErrInvalid = errors.New("invalid record")
	// ErrConflict: a transaction kept conflicting with concurrent ones.
	ErrConflict = errors.New("transaction conflict")
	// ErrClosed: the meta volume was closed.
	ErrClosed = errors.New("meta volume closed")
	// ErrFull: the filesystem holding the meta volume has less free space
	// than a commit may need; nothing was committed. Reads still work, and
	// commits succeed again once space is freed.
	ErrFull = errors.New("filesystem full")
	// ErrTooBig: one transaction holds more than the meta volume takes in
	// one commit.
	ErrTooBig = errors.New("transaction too big")
)

// mapErr turns a badger error returned by a transaction into one of the
// sentinels above (keeping badger's text), and leaves other errors (the
// callback's own, already wrapped) alone.
func (db *DB) mapErr(err error) error {
	var sentinel error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrConflict):
		sentinel = ErrConflict
	case errors.Is(err, badger.ErrDBClosed), errors.Is(err, badger.ErrBlockedWrites):
		sentinel = ErrClosed
	case errors.Is(err, badger.ErrTxnTooBig):
		sentinel = ErrTooBig
	case errors.Is(err, syscall.ENOSPC):
		sentinel = ErrFull
	case isBadgerErr(err):
		// Any other badger error: keep the text, drop the chain.
		return fmt.Errorf("meta volume %s: %s", db.dir, err.Error())
	default:
		return err
	}
	return fmt.Errorf("meta volume %s: %w (%s)", db.dir, sentinel, err.Error())
}

// badgerErrs are badger's exported errors (none may leave this package).
var badgerErrs = []error{
	badger.ErrValueLogSize, badger.ErrKeyNotFound, badger.ErrReadOnlyTxn, badger.ErrDiscardedTxn,
	badger.ErrEmptyKey, badger.ErrInvalidKey, badger.ErrBannedKey, badger.ErrThresholdZero,
	badger.ErrNoRewrite, badger.ErrRejected, badger.ErrInvalidRequest, badger.ErrManagedTxn,
	badger.ErrNamespaceMode, badger.ErrInvalidDump, badger.ErrZeroBandwidth, badger.ErrWindowsNotSupported,
	badger.ErrTruncateNeeded, badger.ErrNilCallback, badger.ErrEncryptionKeyMismatch,
	badger.ErrInvalidDataKeyID, badger.ErrInvalidEncryptionKey, badger.ErrGCInMemoryMode,
	badger.ErrGCInReadOnlyMode,
}

func isBadgerErr(err error) bool {
	for _, b := range badgerErrs {
		if errors.Is(err, b) {
			return true
		}
	}
	return false
}
