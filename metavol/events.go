package metavol

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Event log and history keys (owned by package lm, lm/events.go):
//   - "ev/" + 8-byte big-endian sequence number: one Event each, so that
//     key order is the order of the events;
//   - "hist/pair/ID": the PairHistory of one pair (kept after the pair
//     ended, and after its record is deleted);
//   - "hist/sess/ID": the SessionHistory of one session.
const (
	prefixEvent       = "ev/"
	prefixPairHist    = "hist/pair/"
	prefixSessionHist = "hist/sess/"
)

// Event is one entry of the persistent event log. Owned by package lm (it
// may add fields); metavol only stores it. Empty fields are left out.
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Action string    `json:"action,omitempty"`
	Object string    `json:"object,omitempty"`
	// Who caused it: the admin API caller, an initiator, or "system".
	Who     string `json:"who,omitempty"`
	OK      bool   `json:"ok"`
	Reason  string `json:"reason,omitempty"`
	LUN     string `json:"lun,omitempty"`
	Pair    string `json:"pair,omitempty"`
	Session string `json:"session,omitempty"`
	Target  string `json:"target,omitempty"`
	// Initiator and Address of an iSCSI login.
	Initiator string `json:"initiator,omitempty"`
	Address   string `json:"address,omitempty"`
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
	// Duration of what the event measured (a split pause), in ns.
	DurationNS int64 `json:"duration_ns,omitempty"`
}

func eventKey(seq uint64) []byte {
	k := make([]byte, len(prefixEvent)+8)
	copy(k, prefixEvent)
	binary.BigEndian.PutUint64(k[len(prefixEvent):], seq)
	return k
}

// PutEvent stores an event under its sequence number.
func (tx *Tx) PutEvent(e Event) error {
	if e.Seq == 0 {
		return fmt.Errorf("event: sequence 0: %w", ErrInvalid)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("event %d: encode: %w", e.Seq, err)
	}
	return tx.set(string(eventKey(e.Seq)), "event", fmt.Sprint(e.Seq), b)
}

// DeleteOldestEvents deletes the n events with the lowest sequence numbers
// (fewer if there are fewer) and returns how many it deleted.
func (tx *Tx) DeleteOldestEvents(n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	it := tx.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixEvent)})
	var keys [][]byte
	for it.Rewind(); it.Valid() && len(keys) < n; it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := tx.txn.Delete(k); err != nil {
			return 0, fmt.Errorf("event log: delete: %w", err)
		}
	}
	return len(keys), nil
}

// EventStats are the number of stored events and the highest sequence
// number (0 when the log is empty).
func (tx *Tx) EventStats() (count int, last uint64, err error) {
	it := tx.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixEvent)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		count++
		k := it.Item().Key()
		if len(k) == len(prefixEvent)+8 {
			last = binary.BigEndian.Uint64(k[len(prefixEvent):])
		}
	}
	return count, last, nil
}

// Events returns up to limit events with a sequence number above after,
// in order (limit <= 0: all).
func (tx *Tx) Events(after uint64, limit int) ([]Event, error) {
	it := tx.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte(prefixEvent)})
	defer it.Close()
	var out []Event
	for it.Seek(eventKey(after + 1)); it.Valid(); it.Next() {
		var e Event
		if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &e) }); err != nil {
			return nil, fmt.Errorf("event %x: decode: %w", it.Item().Key(), err)
		}
		out = append(out, e)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, nil
}

// HistoryEntry is one step of a pair's or a session's timeline.
type HistoryEntry struct {
	Time time.Time `json:"time"`
	// Event is "created", "state" (From → To), "summary" or an admin
	// action of a session ("pause", "resume", "split", ...).
	Event  string `json:"event"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
	Who    string `json:"who,omitempty"`
}

// PairFigures are a pair's final figures, written when it ends.
type PairFigures struct {
	State         string    `json:"state"`
	Ended         time.Time `json:"ended"`
	DataBytes     int64     `json:"data_bytes"`
	RecopiedBytes int64     `json:"recopied_bytes"`
	// DurationNS runs from the first copy start (or the creation) to the
	// end.
	DurationNS int64 `json:"duration_ns"`
	// CopyNS is the time the pair was copying (the sum of its copy runs;
	// not its waits: queued, paused, synced); AvgBytesPerS is the bytes
	// moved over it (over DurationNS when it is not known).
	CopyNS       int64   `json:"copy_ns,omitempty"`
	AvgBytesPerS float64 `json:"avg_bytes_per_s"`
	SplitPauseNS int64   `json:"split_pause_ns,omitempty"`
	Vehicle      string  `json:"vehicle,omitempty"`
	// EstimateSeconds is the estimated duration the pair was created with
	// (lm/estimate.go), if any, and ActualSeconds the time its copy took
	// from its start to the first synced (0: it never got there).
	EstimateSeconds *float64 `json:"estimate_seconds,omitempty"`
	ActualSeconds   float64  `json:"actual_seconds,omitempty"`
}

// PairHistory is the timeline of one pair. Owned by package lm.
type PairHistory struct {
	ID         string `json:"id"`
	SourceLUN  string `json:"source_lun"` // LUN ID
	TargetLUN  string `json:"target_lun"`
	SourceName string `json:"source_name"`
	TargetName string `json:"target_name"`
	Session    string `json:"session,omitempty"`
	// Dropped counts the oldest entries dropped to keep the record
	// bounded (lm keeps the first and the latest ones).
	Dropped int            `json:"dropped,omitempty"`
	Entries []HistoryEntry `json:"entries"`
	Final   *PairFigures   `json:"final,omitempty"`
	Created time.Time      `json:"created"`
}

// GetPairHistory returns the history of a pair.
func (tx *Tx) GetPairHistory(id string) (PairHistory, error) {
	var h PairHistory
	err := tx.getJSON(prefixPairHist+id, "pair history", id, &h)
	return h, err
}

// PutPairHistory stores the history of a pair.
func (tx *Tx) PutPairHistory(h PairHistory) error {
	if err := need("pair history", "id", h.ID); err != nil {
		return err
	}
	return tx.putJSON(prefixPairHist+h.ID, "pair history", h.ID, h)
}

// PairHistories lists every pair history, in key order.
func (tx *Tx) PairHistories() ([]PairHistory, error) {
	return list[PairHistory](tx, prefixPairHist, "pair history")
}

// SessionHistory is the timeline of one session. Owned by package lm.
type SessionHistory struct {
	ID      string         `json:"id"`
	Name    string         `json:"name"`
	PairIDs []string       `json:"pair_ids"`
	Dropped int            `json:"dropped,omitempty"`
	Entries []HistoryEntry `json:"entries"`
	Created time.Time      `json:"created"`
}

// GetSessionHistory returns the history of a session.
func (tx *Tx) GetSessionHistory(id string) (SessionHistory, error) {
	var h SessionHistory
	err := tx.getJSON(prefixSessionHist+id, "session history", id, &h)
	return h, err
}

// PutSessionHistory stores the history of a session.
func (tx *Tx) PutSessionHistory(h SessionHistory) error {
	if err := need("session history", "id", h.ID); err != nil {
		return err
	}
	return tx.putJSON(prefixSessionHist+h.ID, "session history", h.ID, h)
}

// SessionHistories lists every session history, in key order.
func (tx *Tx) SessionHistories() ([]SessionHistory, error) {
	return list[SessionHistory](tx, prefixSessionHist, "session history")
}
