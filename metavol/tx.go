package metavol

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Tx is one transaction, valid only inside the Update or View callback that
// received it. Put/Delete methods fail in a View (badger.ErrReadOnlyTxn).
type Tx struct {
	txn *badger.Txn
}

// getJSON decodes key into v; kind and name are for the error message.
func (tx *Tx) getJSON(key, kind, name string, v any) error {
	item, err := tx.txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("%s %q: %w", kind, name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s %q: read: %w", kind, name, err)
	}
	err = item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	if err != nil {
		return fmt.Errorf("%s %q: decode: %w", kind, name, err)
	}
	return nil
}

func (tx *Tx) putJSON(key, kind, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s %q: encode: %w", kind, name, err)
	}
	return tx.set(key, kind, name, b)
}

func (tx *Tx) set(key, kind, name string, b []byte) error {
	if err := tx.txn.Set([]byte(key), b); err != nil {
		return fmt.Errorf("%s %q: write: %w", kind, name, err)
	}
	return nil
}

func (tx *Tx) exists(key string) (bool, error) {
	_, err := tx.txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// del deletes key, which must exist.
func (tx *Tx) del(key, kind, name string) error {
	ok, err := tx.exists(key)
	if err != nil {
		return fmt.Errorf("%s %q: read: %w", kind, name, err)
	}
	if !ok {
		return fmt.Errorf("%s %q: %w", kind, name, ErrNotFound)
	}
	if err := tx.txn.Delete([]byte(key)); err != nil {
		return fmt.Errorf("%s %q: delete: %w", kind, name, err)
	}
	return nil
}

// list decodes every value under prefix, in key order.
func list[T any](tx *Tx, prefix, kind string) ([]T, error) {
	it := tx.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte(prefix)})
	defer it.Close()
	var out []T
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var v T
		if err := item.Value(func(b []byte) error { return json.Unmarshal(b, &v) }); err != nil {
			name := strings.TrimPrefix(string(item.Key()), prefix)
			return nil, fmt.Errorf("%s %q: decode: %w", kind, name, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func need(kind, field, value string) error {
	if value == "" {
		return fmt.Errorf("%s: empty %s: %w", kind, field, ErrInvalid)
	}
	return nil
}

// --- data volumes ---

// GetVolume returns the data volume record with that ID.
func (tx *Tx) GetVolume(id string) (Volume, error) {
	var v Volume
	err := tx.getJSON(prefixVolume+id, "volume", id, &v)
	return v, err
}

// PutVolume creates or replaces a data volume record.
func (tx *Tx) PutVolume(v Volume) error {
	if err := need("volume", "id", v.ID); err != nil {
		return err
	}
	return tx.putJSON(prefixVolume+v.ID, "volume", v.ID, v)
}

// DeleteVolume deletes a data volume record (ErrNotFound if absent). It does
// not touch the bytes.
func (tx *Tx) DeleteVolume(id string) error {
	return tx.del(prefixVolume+id, "volume", id)
}

// Volumes lists every data volume record, by ID.
func (tx *Tx) Volumes() ([]Volume, error) { return list[Volume](tx, prefixVolume, "volume") }

// --- LUNs ---

// GetLUN returns the LUN with that ID.
func (tx *Tx) GetLUN(id string) (LUN, error) {
	var l LUN
	err := tx.getJSON(prefixLUN+id, "lun", id, &l)
	return l, err
}

// LUNByName returns the LUN with that name.
func (tx *Tx) LUNByName(name string) (LUN, error) {
	item, err := tx.txn.Get([]byte(prefixLUNName + name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return LUN{}, fmt.Errorf("lun %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return LUN{}, fmt.Errorf("lun %q: read: %w", name, err)
	}
	id, err := item.ValueCopy(nil)
	if err != nil {
		return LUN{}, fmt.Errorf("lun %q: read: %w", name, err)
	}
	l, err := tx.GetLUN(string(id))
	if err != nil {
		return LUN{}, fmt.Errorf("lun %q: name index points at missing id %s: %w", name, id, err)
	}
	return l, nil
}

// PutLUN creates or replaces a LUN and keeps the name index: ErrExists if
// the name belongs to another LUN ID; a renamed LUN frees its old name.
func (tx *Tx) PutLUN(l LUN) error {
	if err := need("lun", "id", l.ID); err != nil {
		return err
	}
	if err := need("lun "+l.ID, "name", l.Name); err != nil {
		return err
	}
	nameKey := []byte(prefixLUNName + l.Name)
	item, err := tx.txn.Get(nameKey)
	switch {
	case err == nil:
		owner, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("lun %q: read: %w", l.Name, err)
		}
		if string(owner) != l.ID {
			return fmt.Errorf("lun %q: name used by lun %s: %w", l.Name, owner, ErrExists)
		}
	case errors.Is(err, badger.ErrKeyNotFound):
	default:
		return fmt.Errorf("lun %q: read: %w", l.Name, err)
	}
	old, err := tx.GetLUN(l.ID)
	switch {
	case err == nil:
		if old.Name != l.Name {
			if err := tx.txn.Delete([]byte(prefixLUNName + old.Name)); err != nil {
				return fmt.Errorf("lun %q: delete old name %q: %w", l.Name, old.Name, err)
			}
		}
	case errors.Is(err, ErrNotFound):
	default:
		return err
	}
	if err := tx.set(string(nameKey), "lun", l.Name, []byte(l.ID)); err != nil {
		return err
	}
	return tx.putJSON(prefixLUN+l.ID, "lun", l.Name, l)
}

// DeleteLUN deletes a LUN, its name, its saved reservations and ALUA states
// (ErrNotFound if absent). It does not touch its data volume.
func (tx *Tx) DeleteLUN(id string) error {
	l, err := tx.GetLUN(id)
	if err != nil {
		return err
	}
	for _, k := range []string{prefixLUNName + l.Name, prefixLUN + id, prefixResv + id, prefixALUA + id} {
		if err := tx.txn.Delete([]byte(k)); err != nil {
			return fmt.Errorf("lun %q: delete: %w", l.Name, err)
		}
	}
	return nil
}

// LUNs lists every LUN, by name.
func (tx *Tx) LUNs() ([]LUN, error) {
	ls, err := list[LUN](tx, prefixLUN, "lun")
	slices.SortFunc(ls, func(a, b LUN) int { return strings.Compare(a.Name, b.Name) })
	return ls, err
}

// --- targets ---

// GetTarget returns the target with that IQN.
func (tx *Tx) GetTarget(iqn string) (Target, error) {
	var t Target
	err := tx.getJSON(prefixTarget+iqn, "target", iqn, &t)
	return t, err
}

// PutTarget creates or replaces a target. A Group of 0 becomes
// DefaultGroup and a Port of 0 the lowest relative target port ID no
// other target holds; a Port another target holds is ErrExists.
func (tx *Tx) PutTarget(t Target) error {
	if err := need("target", "iqn", t.IQN); err != nil {
		return err
	}
	if err := tx.fillTargetPort(&t); err != nil {
		return err
	}
	return tx.putJSON(prefixTarget+t.IQN, "target", t.IQN, t)
}

// DeleteTarget deletes a target (ErrNotFound if absent).
func (tx *Tx) DeleteTarget(iqn string) error {
	return tx.del(prefixTarget+iqn, "target", iqn)
}

// Targets lists every target, by IQN.
func (tx *Tx) Targets() ([]Target, error) { return list[Target](tx, prefixTarget, "target") }

// --- pairs ---

// GetPair returns the pair with that ID.
func (tx *Tx) GetPair(id string) (Pair, error) {
	var p Pair
	err := tx.getJSON(prefixPair+id, "pair", id, &p)
	return p, err
}

// PutPair creates or replaces a pair.
func (tx *Tx) PutPair(p Pair) error {
	if err := need("pair", "id", p.ID); err != nil {
		return err
	}
	return tx.putJSON(prefixPair+p.ID, "pair", p.ID, p)
}

// DeletePair deletes a pair (ErrNotFound if absent).
func (tx *Tx) DeletePair(id string) error {
	return tx.del(prefixPair+id, "pair", id)
}

// Pairs lists every pair, by ID.
func (tx *Tx) Pairs() ([]Pair, error) { return list[Pair](tx, prefixPair, "pair") }

// --- reservations (opaque bytes owned by package target) ---

// GetReservation returns a LUN's saved reservation state, nil, nil if none.
func (tx *Tx) GetReservation(lunID string) ([]byte, error) {
	return tx.getRaw(prefixResv+lunID, "reservations of lun", lunID)
}

// PutReservation saves a LUN's reservation state.
func (tx *Tx) PutReservation(lunID string, b []byte) error {
	if err := need("reservations", "lun id", lunID); err != nil {
		return err
	}
	return tx.set(prefixResv+lunID, "reservations of lun", lunID, slices.Clone(b))
}

// DeleteReservation removes a LUN's reservation state; none is not an error.
func (tx *Tx) DeleteReservation(lunID string) error {
	if err := tx.txn.Delete([]byte(prefixResv + lunID)); err != nil {
		return fmt.Errorf("reservations of lun %q: delete: %w", lunID, err)
	}
	return nil
}

// --- small named values ---

// GetMeta returns a small named value, nil, nil if none. Names are free
// form ("schema" is taken).
func (tx *Tx) GetMeta(name string) ([]byte, error) {
	return tx.getRaw(prefixMeta+name, "meta", name)
}

// PutMeta stores a small named value.
func (tx *Tx) PutMeta(name string, b []byte) error {
	if err := need("meta", "name", name); err != nil {
		return err
	}
	if prefixMeta+name == string(schemaKey) {
		return fmt.Errorf("meta %q: reserved name: %w", name, ErrInvalid)
	}
	return tx.set(prefixMeta+name, "meta", name, slices.Clone(b))
}

// DeleteMeta removes a named value; none is not an error.
func (tx *Tx) DeleteMeta(name string) error {
	if prefixMeta+name == string(schemaKey) {
		return fmt.Errorf("meta %q: reserved name: %w", name, ErrInvalid)
	}
	if err := tx.txn.Delete([]byte(prefixMeta + name)); err != nil {
		return fmt.Errorf("meta %q: delete: %w", name, err)
	}
	return nil
}

func (tx *Tx) getRaw(key, kind, name string) ([]byte, error) {
	item, err := tx.txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s %q: read: %w", kind, name, err)
	}
	b, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("%s %q: read: %w", kind, name, err)
	}
	return b, nil
}
