package metavol

import (
	"encoding/json"
	"fmt"
)

// Batch holds record writes checked and encoded before a transaction and
// written by Tx.Apply: a consistent split prepares the records of
// thousands of pairs and LUNs before its pause and writes them inside it
// without encoding or reading anything.
type Batch struct {
	kvs []batchKV
}

type batchKV struct {
	key, kind, name string
	val             []byte
}

func (b *Batch) putJSON(key, kind, name string, v any) error {
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s %q: encode: %w", kind, name, err)
	}
	b.kvs = append(b.kvs, batchKV{key, kind, name, val})
	return nil
}

// Len is the number of writes in the batch.
func (b *Batch) Len() int { return len(b.kvs) }

// PutPair adds the write of a pair record (as Tx.PutPair).
func (b *Batch) PutPair(p Pair) error {
	if err := need("pair", "id", p.ID); err != nil {
		return err
	}
	return b.putJSON(prefixPair+p.ID, "pair", p.ID, p)
}

// ReplaceLUN adds the write of an existing LUN record whose name does not
// change (its data volume or size does): the name index is left as it
// is. The caller read the record and keeps anyone else from changing it
// until Apply; anything else goes through Tx.PutLUN.
func (b *Batch) ReplaceLUN(l LUN) error {
	if err := need("lun", "id", l.ID); err != nil {
		return err
	}
	if err := need("lun "+l.ID, "name", l.Name); err != nil {
		return err
	}
	return b.putJSON(prefixLUN+l.ID, "lun", l.Name, l)
}

// Apply writes every record of b in the transaction.
func (tx *Tx) Apply(b *Batch) error {
	for _, e := range b.kvs {
		if err := tx.set(e.key, e.kind, e.name, e.val); err != nil {
			return err
		}
	}
	return nil
}
