package metavol

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// The keys of package dcl: "dcl/<pairID>/meta" holds DCLInfo as JSON and
// "dcl/<pairID>/p/<page as %08x>" the bytes of one bitmap page. dcl writes
// them through DB.UpdateDCL (its group commits) and reads them in View.
const prefixDCL = "dcl/"

// DCLInfo is the header of a pair's data change log.
type DCLInfo struct {
	RegionSize int64 `json:"region_size"`
	Size       int64 `json:"size"`
}

func dclPrefix(pairID string) string { return prefixDCL + pairID + "/" }

func dclPageKey(pairID string, page int) string {
	return fmt.Sprintf("%sp/%08x", dclPrefix(pairID), page)
}

func needPairID(pairID string) error {
	if pairID == "" || strings.Contains(pairID, "/") {
		return fmt.Errorf("dcl: bad pair id %q: %w", pairID, ErrInvalid)
	}
	return nil
}

// GetDCLInfo returns a pair's DCL header (ErrNotFound if it has none).
func (tx *Tx) GetDCLInfo(pairID string) (DCLInfo, error) {
	var in DCLInfo
	if err := needPairID(pairID); err != nil {
		return in, err
	}
	err := tx.getJSON(dclPrefix(pairID)+"meta", "dcl", pairID, &in)
	return in, err
}

// PutDCLInfo creates or replaces a pair's DCL header.
func (tx *Tx) PutDCLInfo(pairID string, in DCLInfo) error {
	if err := needPairID(pairID); err != nil {
		return err
	}
	return tx.putJSON(dclPrefix(pairID)+"meta", "dcl", pairID, in)
}

// PutDCLPage stores one bitmap page of a pair's DCL.
func (tx *Tx) PutDCLPage(pairID string, page int, b []byte) error {
	if err := needPairID(pairID); err != nil {
		return err
	}
	if page < 0 {
		return fmt.Errorf("dcl %q: page %d: %w", pairID, page, ErrInvalid)
	}
	return tx.set(dclPageKey(pairID, page), "dcl", pairID, slices.Clone(b))
}

// DCLPages returns every stored bitmap page of a pair's DCL by page
// number. A page key that does not parse is an error (the DCL cannot be
// trusted).
func (tx *Tx) DCLPages(pairID string) (map[int][]byte, error) {
	if err := needPairID(pairID); err != nil {
		return nil, err
	}
	pre := dclPrefix(pairID) + "p/"
	o := badger.DefaultIteratorOptions
	o.Prefix = []byte(pre)
	it := tx.txn.NewIterator(o)
	defer it.Close()
	pages := map[int][]byte{}
	for it.Rewind(); it.Valid(); it.Next() {
		k := string(it.Item().Key())
		n, err := strconv.ParseInt(strings.TrimPrefix(k, pre), 16, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("dcl %q: bad page key %q", pairID, k)
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, fmt.Errorf("dcl %q: read page %d: %w", pairID, n, err)
		}
		pages[int(n)] = v
	}
	return pages, nil
}

// DeleteDCL deletes a pair's DCL header and pages; none is not an error.
// A DCL too big for one transaction fails with ErrTooBig (see DeleteDCLs).
func (tx *Tx) DeleteDCL(pairID string) error {
	rest, err := tx.DeleteDCLs([]string{pairID})
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("dcl %q: delete: more pages than one transaction takes: %w", pairID, ErrTooBig)
	}
	return err
}

// DeleteDCLHeaders deletes only the header of every pair's DCL, which is
// what makes a DCL exist, and returns every pair named as rest: their
// pages are garbage for DeleteDCLs in later transactions (dcl.Store.Purge)
// or for the stray-DCL sweep at the next start. A consistent split calls
// it inside its pause: no iterator and one delete per pair, so the work
// inside the pause does not grow with the pages (lm/split.go).
func (tx *Tx) DeleteDCLHeaders(pairIDs []string) (rest []string, err error) {
	ids := slices.Clone(pairIDs)
	for _, id := range ids {
		if err := needPairID(id); err != nil {
			return nil, err
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if err := tx.txn.Delete([]byte(dclPrefix(id) + "meta")); err != nil {
			return nil, fmt.Errorf("dcl %q: delete: %w", id, err)
		}
	}
	return ids, nil
}

// DeleteDCLs deletes the DCL of every pair named, with one iterator for
// all of them (a consistent split deletes thousands in its one
// transaction): first every header, which is what makes a DCL exist (a
// page without its header is never loaded, and dcl.Store.Open deletes
// such pages before it writes a new header), then the pages, as many as
// the transaction takes (badger limits one transaction to 15% of the
// memtable). rest names the pairs whose pages were not all deleted: their
// DCLs are gone, their pages are garbage for DeleteDCLs in later
// transactions (or for the stray-DCL sweep at the next start). A header
// that does not fit fails the transaction with ErrTooBig.
func (tx *Tx) DeleteDCLs(pairIDs []string) (rest []string, err error) {
	ids := slices.Clone(pairIDs)
	for _, id := range ids {
		if err := needPairID(id); err != nil {
			return nil, err
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	// The page keys are collected before anything is deleted.
	type page struct {
		pair int
		key  []byte
	}
	var keys []page
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	o.Prefix = []byte(prefixDCL)
	it := tx.txn.NewIterator(o)
	for i, id := range ids {
		p := []byte(dclPrefix(id) + "p/")
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			keys = append(keys, page{i, it.Item().KeyCopy(nil)})
		}
	}
	it.Close()
	for _, id := range ids {
		if err := tx.txn.Delete([]byte(dclPrefix(id) + "meta")); err != nil {
			return nil, fmt.Errorf("dcl %q: delete: %w", id, err)
		}
	}
	for _, k := range keys {
		err := tx.txn.Delete(k.key)
		if errors.Is(err, badger.ErrTxnTooBig) {
			return ids[k.pair:], nil
		}
		if err != nil {
			return nil, fmt.Errorf("dcl %q: delete: %w", ids[k.pair], err)
		}
	}
	return nil, nil
}

// DCLPairIDs lists the pairs that have DCL keys, sorted.
func (tx *Tx) DCLPairIDs() ([]string, error) {
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	o.Prefix = []byte(prefixDCL)
	it := tx.txn.NewIterator(o)
	defer it.Close()
	var ids []string
	for it.Rewind(); it.Valid(); it.Next() {
		rest := strings.TrimPrefix(string(it.Item().Key()), prefixDCL)
		if i := strings.IndexByte(rest, '/'); i > 0 {
			if id := rest[:i]; len(ids) == 0 || ids[len(ids)-1] != id {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}
