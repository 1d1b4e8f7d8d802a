package metavol

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Session keys: the record under "sess/id/ID", the name index under
// "sess/name/NAME" (value: the ID). Both under "sess/".
const (
	prefixSession     = "sess/id/"
	prefixSessionName = "sess/name/"
)

// Session is the persisted record of a migration session: a named group of
// pairs started, throttled, paused, resumed, cancelled and split together
// (EMC patent). Owned by package lm (it may add fields); metavol only
// stores it and keeps names unique.
type Session struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// PairIDs and Sources (source LUN names) are in the same order.
	PairIDs []string `json:"pair_ids"`
	Sources []string `json:"sources"`
	Targets []string `json:"targets"`
	Speed   string   `json:"speed"`
	MaxMBps int64    `json:"max_mbps"`
	// MaxHostLatencyNS: every pair's host-latency bound (metavol.Pair).
	MaxHostLatencyNS int64 `json:"max_host_latency_ns,omitempty"`
	// MaxActive is how many of the session's pairs copy at once (0: all).
	MaxActive int  `json:"max_active"`
	AutoSplit bool `json:"auto_split"`
	Verify    bool `json:"verify"`
	// Paused: the admin paused the session (its pairs stay paused until
	// the session is resumed).
	Paused bool `json:"paused,omitempty"`
	// Held lists the pairs the session keeps paused until one of its copy
	// slots (MaxActive) is free.
	Held []string `json:"held,omitempty"`
	// Final is "" while the session runs, else "split" or "cancelled".
	// Priority and StartAt are given to every pair (lm/queue.go,
	// lm/schedule.go); Forced records the lone operations on a member
	// pair that an admin forced (--force), one line each.
	Priority int       `json:"priority,omitempty"`
	StartAt  time.Time `json:"start_at,omitzero"`
	Forced   []string  `json:"forced,omitempty"`
	// Windows and MaxElapsedNS are given to every pair (see Pair).
	Windows      []string  `json:"windows,omitempty"`
	MaxElapsedNS int64     `json:"max_elapsed_ns,omitempty"`
	Final        string    `json:"final,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// GetSession returns the session with that ID.
func (tx *Tx) GetSession(id string) (Session, error) {
	var s Session
	err := tx.getJSON(prefixSession+id, "session", id, &s)
	return s, err
}

// SessionByName returns the session with that name.
func (tx *Tx) SessionByName(name string) (Session, error) {
	item, err := tx.txn.Get([]byte(prefixSessionName + name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Session{}, fmt.Errorf("session %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("session %q: read: %w", name, err)
	}
	id, err := item.ValueCopy(nil)
	if err != nil {
		return Session{}, fmt.Errorf("session %q: read: %w", name, err)
	}
	s, err := tx.GetSession(string(id))
	if err != nil {
		return Session{}, fmt.Errorf("session %q: name index points at missing id %s: %w", name, id, err)
	}
	return s, nil
}

// PutSession creates or replaces a session and keeps the name index:
// ErrExists if the name belongs to another session ID.
func (tx *Tx) PutSession(s Session) error {
	if err := need("session", "id", s.ID); err != nil {
		return err
	}
	if err := need("session "+s.ID, "name", s.Name); err != nil {
		return err
	}
	nameKey := prefixSessionName + s.Name
	item, err := tx.txn.Get([]byte(nameKey))
	switch {
	case err == nil:
		owner, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("session %q: read: %w", s.Name, err)
		}
		if string(owner) != s.ID {
			return fmt.Errorf("session %q: name used by session %s: %w", s.Name, owner, ErrExists)
		}
	case errors.Is(err, badger.ErrKeyNotFound):
	default:
		return fmt.Errorf("session %q: read: %w", s.Name, err)
	}
	old, err := tx.GetSession(s.ID)
	switch {
	case err == nil:
		if old.Name != s.Name {
			if err := tx.txn.Delete([]byte(prefixSessionName + old.Name)); err != nil {
				return fmt.Errorf("session %q: delete old name %q: %w", s.Name, old.Name, err)
			}
		}
	case errors.Is(err, ErrNotFound):
	default:
		return err
	}
	if err := tx.set(nameKey, "session", s.Name, []byte(s.ID)); err != nil {
		return err
	}
	return tx.putJSON(prefixSession+s.ID, "session", s.Name, s)
}

// DeleteSession deletes a session and its name (ErrNotFound if absent). It
// does not touch its pairs.
func (tx *Tx) DeleteSession(id string) error {
	s, err := tx.GetSession(id)
	if err != nil {
		return err
	}
	for _, k := range []string{prefixSessionName + s.Name, prefixSession + id} {
		if err := tx.txn.Delete([]byte(k)); err != nil {
			return fmt.Errorf("session %q: delete: %w", s.Name, err)
		}
	}
	return nil
}

// Sessions lists every session, by name.
func (tx *Tx) Sessions() ([]Session, error) {
	ss, err := list[Session](tx, prefixSession, "session")
	slices.SortFunc(ss, func(a, b Session) int { return strings.Compare(a.Name, b.Name) })
	return ss, err
}
