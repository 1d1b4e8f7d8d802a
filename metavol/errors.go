package metavol

import "errors"

// Sentinel errors, matched with errors.Is. Methods wrap them with the kind
// and name of the object, e.g. `lun "db1": not found`.
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
)
