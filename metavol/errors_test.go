package metavol

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestNoBadgerErrorLeaves: badger's errors come out of the meta volume as
// metavol sentinels (or plain text), never as badger errors.
func TestNoBadgerErrorLeaves(t *testing.T) {
	db := &DB{dir: "/x/meta"}
	for _, c := range []struct {
		in   error
		want error
	}{
		{fmt.Errorf("commit: %w", badger.ErrConflict), ErrConflict},
		{badger.ErrDBClosed, ErrClosed},
		{badger.ErrBlockedWrites, ErrClosed},
		{badger.ErrTxnTooBig, ErrTooBig},
		{fmt.Errorf("write: %w", syscall.ENOSPC), ErrFull},
		{badger.ErrKeyNotFound, nil},
		{badger.ErrReadOnlyTxn, nil},
	} {
		got := db.mapErr(c.in)
		if c.want != nil && !errors.Is(got, c.want) {
			t.Errorf("%v: got %v, want %v", c.in, got, c.want)
		}
		for _, b := range append(badgerErrs, badger.ErrConflict, badger.ErrDBClosed, badger.ErrBlockedWrites, badger.ErrTxnTooBig) {
			if errors.Is(got, b) {
				t.Errorf("%v: the badger error %v leaves metavol", c.in, b)
			}
		}
	}
	own := fmt.Errorf("lun x: %w", ErrNotFound)
	if got := db.mapErr(own); got != own {
		t.Errorf("a callback's own error changed: %v", got)
	}
}
