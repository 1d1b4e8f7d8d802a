package metavol

import (
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
func (tx *Tx) DeleteDCL(pairID string) error { return tx.DeleteDCLs([]string{pairID}) }

// DeleteDCLs deletes the DCL header and pages of every pair named, with
// one iterator for all of them (a consistent split deletes thousands in
// its one transaction); none is not an error.
func (tx *Tx) DeleteDCLs(pairIDs []string) error {
	pres := make([]string, 0, len(pairIDs))
	for _, id := range pairIDs {
		if err := needPairID(id); err != nil {
			return err
		}
		pres = append(pres, dclPrefix(id))
	}
	slices.Sort(pres)
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	o.Prefix = []byte(prefixDCL)
	it := tx.txn.NewIterator(o)
	var keys [][]byte
	for _, pre := range pres {
		p := []byte(pre)
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
	}
	it.Close()
	for _, k := range keys {
		if err := tx.txn.Delete(k); err != nil {
			id := strings.SplitN(strings.TrimPrefix(string(k), prefixDCL), "/", 2)[0]
			return fmt.Errorf("dcl %q: delete: %w", id, err)
		}
	}
	return nil
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
