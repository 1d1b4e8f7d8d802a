package metavol

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// splitJournalKey holds the split journal: at most one, written inside a
// split's pause and deleted by the transaction that writes the records it
// describes (lm/split.go, docs/design.md "Split journal").
const splitJournalKey = "splitjournal"

// SplitJournal says, compactly, what one (consistent) split, split
// --keep-source or rollback does to the records of its pairs and their
// LUNs. It is committed alone inside the split's pause (one key, whatever
// the pair count) and the records themselves right after the pause, in a
// transaction that also deletes it; a start that finds it rolls it forward
// (Tx.RollForwardSplit). Every field is a value to set, never a swap or a
// toggle: applying a journal twice gives the records of applying it once.
//
// The pair fields it sets are package lm's (metavol only stores them):
// State, Reason, Switched, AutoSplit (cleared by NoAutoSplit), Cursor and
// CopiedBytes (set to the pair's Size), Updated (Time).
type SplitJournal struct {
	State  string `json:"state"`
	Reason string `json:"reason"`
	// During is the state the split wrote to its pairs' records before
	// its pause (splitting, rolling back). A pair record in another state
	// was written after the swap, from the swapped pair in memory (its run
	// goroutine went on: interrupted, faulty; a commit): newer than the
	// journal, so the roll-forward keeps it. "" (an older journal): every
	// pair record is set.
	During      string `json:"during,omitempty"`
	Switched    bool   `json:"switched,omitempty"`
	NoAutoSplit bool   `json:"no_auto_split,omitempty"`
	// DropDCL: the pairs' DCL headers are deleted (a plain split: the
	// pairs end; their pages are garbage, swept like a stray DCL's).
	DropDCL bool               `json:"drop_dcl,omitempty"`
	Time    time.Time          `json:"time"`
	Pairs   []SplitJournalPair `json:"pairs"`
}

// SplitJournalPair is one pair of a SplitJournal: the data volume and size
// each of its LUNs holds after the swap. Short JSON names keep a 2048-pair
// journal near 300 KiB.
type SplitJournalPair struct {
	Pair         string `json:"p"`
	Size         int64  `json:"n"` // the pair's size: its cursor and copied bytes
	SourceLUN    string `json:"sl"`
	SourceVolume string `json:"sv"`
	SourceSize   int64  `json:"ss"`
	TargetLUN    string `json:"tl"`
	TargetVolume string `json:"tv"`
	TargetSize   int64  `json:"ts"`
}

// SetLUNs sets what the swap changes in the records of the pair's source
// and target LUNs: their data volume IDs and sizes.
func (e SplitJournalPair) SetLUNs(src, tgt *LUN) {
	src.VolumeID, src.Size = e.SourceVolume, e.SourceSize
	tgt.VolumeID, tgt.Size = e.TargetVolume, e.TargetSize
}

// SetPair sets what the split changes in the record of pair e.
func (j *SplitJournal) SetPair(e SplitJournalPair, p *Pair) {
	p.State, p.Reason = j.State, j.Reason
	p.Switched = j.Switched
	if j.NoAutoSplit {
		p.AutoSplit = false
	}
	p.Cursor, p.CopiedBytes = e.Size, e.Size
	p.Updated = j.Time
}

func (j *SplitJournal) check() error {
	if j.State == "" {
		return fmt.Errorf("split journal: empty state: %w", ErrInvalid)
	}
	for _, e := range j.Pairs {
		if err := needPairID(e.Pair); err != nil {
			return fmt.Errorf("split journal: %w", err)
		}
		for _, v := range []string{e.SourceLUN, e.SourceVolume, e.TargetLUN, e.TargetVolume} {
			if v == "" {
				return fmt.Errorf("split journal: pair %s: empty LUN or volume ID: %w", e.Pair, ErrInvalid)
			}
		}
	}
	return nil
}

// PutSplitJournal adds the write of the split journal (replacing any) to
// the batch, encoded now: the split encodes it before its pause.
func (b *Batch) PutSplitJournal(j *SplitJournal) error {
	if err := j.check(); err != nil {
		return err
	}
	return b.putJSON(splitJournalKey, "split journal", fmt.Sprintf("of %d pairs", len(j.Pairs)), j)
}

// SplitJournal returns the split journal, nil, nil if there is none.
func (tx *Tx) SplitJournal() (*SplitJournal, error) {
	b, err := tx.getRaw(splitJournalKey, "split journal", "")
	if err != nil || b == nil {
		return nil, err
	}
	var j SplitJournal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("split journal: decode: %w", err)
	}
	return &j, nil
}

// DeleteSplitJournal deletes the split journal; none is not an error.
func (tx *Tx) DeleteSplitJournal() error {
	if err := tx.txn.Delete([]byte(splitJournalKey)); err != nil {
		return fmt.Errorf("split journal: delete: %w", err)
	}
	return nil
}

// RollForwardSplit applies the split journal, if there is one, to the
// records it names (the LUNs' data volumes and sizes, the pairs' fields,
// the DCL headers when DropDCL) and deletes it, in this transaction. It
// returns the journal applied (nil if none) and what it names that no
// longer exists ("lun ID", "pair ID"): those are skipped (a LUN deleted
// since has no route to set), never recreated.
func (tx *Tx) RollForwardSplit() (j *SplitJournal, missing []string, err error) {
	j, err = tx.SplitJournal()
	if err != nil || j == nil {
		return nil, nil, err
	}
	ids := make([]string, 0, len(j.Pairs))
	for _, e := range j.Pairs {
		var src, tgt *LUN
		for _, l := range []struct {
			id  string
			dst **LUN
		}{{e.SourceLUN, &src}, {e.TargetLUN, &tgt}} {
			r, err := tx.GetLUN(l.id)
			switch {
			case err == nil:
				*l.dst = &r
			case errors.Is(err, ErrNotFound):
				missing = append(missing, "lun "+l.id)
			default:
				return nil, nil, fmt.Errorf("split journal: pair %s: %w", e.Pair, err)
			}
		}
		var gone LUN // what SetLUNs sets for a missing LUN is dropped
		s, t := src, tgt
		if s == nil {
			s = &gone
		}
		if t == nil {
			t = &gone
		}
		e.SetLUNs(s, t)
		// The names do not change: the name index stays as it is.
		for _, l := range []*LUN{src, tgt} {
			if l == nil {
				continue
			}
			if err := tx.putJSON(prefixLUN+l.ID, "lun", l.Name, *l); err != nil {
				return nil, nil, err
			}
		}
		p, err := tx.GetPair(e.Pair)
		switch {
		case err == nil && j.During != "" && p.State != j.During:
			// Written after the swap: newer than the journal.
		case err == nil:
			j.SetPair(e, &p)
			if err := tx.PutPair(p); err != nil {
				return nil, nil, err
			}
		case errors.Is(err, ErrNotFound):
			missing = append(missing, "pair "+e.Pair)
		default:
			return nil, nil, fmt.Errorf("split journal: %w", err)
		}
		ids = append(ids, e.Pair)
	}
	if j.DropDCL {
		if _, err := tx.DeleteDCLHeaders(ids); err != nil {
			return nil, nil, err
		}
	}
	if err := tx.DeleteSplitJournal(); err != nil {
		return nil, nil, err
	}
	return j, missing, nil
}
