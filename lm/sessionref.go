package lm

import (
	"fmt"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// Names and integrity of the pairs of sessions.
//
// A pair is named, in every migration command, by its source LUN's name,
// its target LUN's name or its pair ID (activePair tries them in that
// order; a LUN is in at most one active pair, so a LUN name is never
// ambiguous, and IDs do not look like LUN names an admin would pick).
//
// A pair that belongs to a session is split, cancelled and resumed through
// its session: the lone operation (migration split/cancel/resume) is
// refused with a message that names the session, unless it is forced
// (--force); a forced one is recorded on the session (Session.Forced, shown
// by `session show`) before it runs. Pause and set stay allowed: they do
// not break the session's all-together promise (a paused member holds the
// session's split back, as the session's own pause does).

// sessionName is the name of the session with that ID ("" for none, or
// the ID when the session record is gone).
func (m *Manager) sessionName(id string) string {
	if id == "" {
		return ""
	}
	if s := m.sessionByID(id); s != nil {
		return s.record().Name
	}
	return id
}

// sessionByID finds a live session by its ID, or nil.
func (m *Manager) sessionByID(id string) *session {
	m.sess.mu.Lock()
	ss := make([]*session, 0, len(m.sess.byName))
	for _, s := range m.sess.byName {
		ss = append(ss, s)
	}
	m.sess.mu.Unlock()
	for _, s := range ss {
		if s.record().ID == id {
			return s
		}
	}
	return nil
}

// memberCheck refuses op on the pair named name when it belongs to a
// session that is not over, unless force; a forced op is recorded on the
// session. It returns the pair's reference by ID (so the operation acts on
// exactly the pair checked).
func (m *Manager) memberCheck(op, name string, force bool) (pairRef, error) {
	p, err := m.findPair(bySource(name))
	if err != nil {
		return bySource(name), nil // the operation reports it
	}
	p.mu.Lock()
	sid := p.mu.rec.Session
	p.mu.Unlock()
	if sid == "" {
		return byID(p.id), nil
	}
	s := m.sessionByID(sid)
	if s == nil || s.record().Final != "" {
		return byID(p.id), nil
	}
	sname := s.record().Name
	if !force {
		hint := fmt.Sprintf(" (or force a lone %s with --force, recorded on the session)", op)
		if op == "rollback" || op == "commit" {
			hint = "" // a session switches back or commits as a whole
		}
		verb, flags, _ := strings.Cut(op, " ") // "split --keep-source": the flag after the name
		if flags != "" {
			flags = " " + flags
		}
		do := verb + " it"
		if verb == "rollback" {
			do = "roll it back"
		}
		return pairRef{}, refuse(ErrState, pairObject(name),
			"pair %s → %s belongs to session %s: %s with `lmtgt session %s %s%s`%s",
			p.src.name, p.tgt.name, sname, do, verb, sname, flags, hint)
	}
	s.ops.Lock()
	defer s.ops.Unlock()
	rec := s.record()
	rec.Forced = append(rec.Forced, fmt.Sprintf("%s: lone %s of pair %s (%s → %s) forced by admin", // events.go: an entry of the session's history
		time.Now().UTC().Format(time.RFC3339), op, p.id, p.src.name, p.tgt.name))
	if err := s.save(rec); err != nil {
		return pairRef{}, err
	}
	m.log.Warn().Str("session", sname).Str("pair", p.id).Str("op", op).Msg("lone operation on a session's pair forced")
	return byID(p.id), nil
}

// ResumeNamed resumes the paused pair named name (source, target or ID);
// a session's member is refused unless force (see above).
func (m *Manager) ResumeNamed(name string, force bool) error {
	ref, err := m.memberCheck("resume", name, force)
	if err != nil {
		return err
	}
	return m.resume(ref)
}

// CancelNamed cancels the pair named name; a session's member is refused
// unless force.
func (m *Manager) CancelNamed(name string, force bool) error {
	ref, err := m.memberCheck("cancel", name, force)
	if err != nil {
		return err
	}
	return m.cancelPair(ref)
}

// SplitNamed is Split of the pairs named (source, target or ID); a
// session's member is refused unless force.
func (m *Manager) SplitNamed(names []string, maxPause time.Duration, force bool) (SplitResult, error) {
	return m.splitNamed(names, maxPause, force, splitByAdmin)
}

// splitNamed is SplitNamed asked for by by (split.go).
func (m *Manager) splitNamed(names []string, maxPause time.Duration, force bool, by string) (SplitResult, error) {
	if err := checkSplitSources(names); err != nil {
		return SplitResult{}, err
	}
	refs := make([]pairRef, len(names))
	for i, n := range names {
		ref, err := m.memberCheck("split", n, force)
		if err != nil {
			return SplitResult{}, err
		}
		refs[i] = ref
	}
	return m.split(refs, maxPause, splitPlain, by)
}

// endedNamed picks the ended pair records named name, as activePair names
// a pair: those of the source LUN name; else the one whose ID is name;
// else those of the target LUN name (so that `migration show`, `retire`
// and `delete` take the three names as every other migration command).
func (m *Manager) endedNamed(recs []metavol.Pair, name string) []metavol.Pair {
	var out []metavol.Pair
	for _, match := range []func(r metavol.Pair) bool{
		func(r metavol.Pair) bool { return m.lunName(r.SourceLUN) == name },
		func(r metavol.Pair) bool { return r.ID == name },
		func(r metavol.Pair) bool { return m.lunName(r.TargetLUN) == name },
	} {
		for _, r := range recs {
			if match(r) {
				out = append(out, r)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}
