package lm

import (
	"fmt"
	"time"
)

// The admin operations on pairs address a pair either by its source LUN's
// name (the admin API: `migration pause SRC`) or by its ID (sessions,
// which must act on exactly the pairs they created, never on a newer pair
// of the same source). pairadmin.go and split.go implement each operation
// once, on a pairRef.

// pairRef names a pair: by pair ID when id is set, else by the name of its
// source LUN.
type pairRef struct{ source, id string }

func bySource(source string) pairRef { return pairRef{source: source} }
func byID(id string) pairRef         { return pairRef{id: id} }

func (r pairRef) String() string {
	if r.id != "" {
		return "pair " + r.id
	}
	return r.source
}

// key is the ID or the source name (what unloadedLocked takes).
func (r pairRef) key() string {
	if r.id != "" {
		return r.id
	}
	return r.source
}

// findPair returns the active pair r names. A pair that could not be
// loaded is ErrOffline; no pair is ErrNotFound (or, by source name, the
// refusal that says its last pair has ended: noActivePair).
func (m *Manager) findPair(r pairRef) (*pair, error) {
	if r.id == "" {
		return m.activePair(r.source)
	}
	m.mu.Lock()
	p, u := m.mu.pairs[r.id], m.mu.unloaded[r.id]
	m.mu.Unlock()
	switch {
	case p != nil:
		return p, nil
	case u != nil:
		return nil, fmt.Errorf("pair %s: %s: %w", r.id, u.reason(), ErrOffline)
	}
	return nil, fmt.Errorf("pair %s: %w", r.id, ErrNotFound)
}

// Pause stops the copy of the pair of the LUN named source; host writes
// then go to the source only and are recorded in the DCL. It returns once
// the copier has stopped.
func (m *Manager) Pause(source string) error { return m.pause(bySource(source)) }

// Resume continues the paused pair of the LUN named source: the copy goes
// on from the cursor and the DCL (what changed while paused) is re-copied.
func (m *Manager) Resume(source string) error { return m.resume(bySource(source)) }

// Cancel ends the pair of the LUN named source (see cancelPair).
func (m *Manager) Cancel(source string) error { return m.cancelPair(bySource(source)) }

// Set changes the throttle of the pair of the LUN named source.
func (m *Manager) Set(source string, req SetRequest) (PairStatus, error) {
	return m.set(bySource(source), req)
}

// Split performs the (consistent) split of the pairs whose source LUNs are
// named (see split); naming none, or one twice, is refused.
func (m *Manager) Split(sources []string, maxPause time.Duration) (SplitResult, error) {
	if err := checkSplitSources(sources); err != nil {
		return SplitResult{}, err
	}
	refs := make([]pairRef, len(sources))
	for i, s := range sources {
		refs[i] = bySource(s)
	}
	return m.split(refs, maxPause, splitPlain)
}
