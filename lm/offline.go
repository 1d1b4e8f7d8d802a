package lm

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
)

// Offline LUNs (docs/design.md "Offline LUNs"). A LUN is offline, and
// every host command on it fails with ErrOffline (SCSI NOT READY, "logical
// unit not ready, manual intervention required"), when serving it could
// lose or fake data:
//
//   - it is the source or target of a pair record that could not be
//     loaded at startup (unknown state, a LUN of the pair missing, its DCL
//     unreadable): without the pair its writes would not be tracked, and
//     the pair, loaded again later, would split with stale data. The LUN
//     is fenced by the unloaded pair (lunEntry.fence) until the pair loads
//     at a later start or the admin cancels it (Cancel: the record and the
//     DCL are deleted; the source was never changed by the pair, so this
//     is always safe).
//   - its data volume is unavailable: it could not be opened, or it
//     shrank, vanished or was replaced underneath lmtgt (dataVol.lost,
//     sticky until a restart: the bytes behind it are not the ones written
//     through it). A pair with such a leg is interrupted and cannot split.
//
// The Manager alone decides both (unloadable, volumeLost); LUNStatus
// reports them; the host path checks them inside the LUN's I/O gate.

// unloadedPair is a pair record that could not be loaded at startup. It
// is kept (so that its LUNs stay fenced) until it is cancelled.
type unloadedPair struct {
	rec metavol.Pair
	why string
}

func (u *unloadedPair) reason() string {
	return fmt.Sprintf("offline: pair %s could not be loaded: %s", u.rec.ID, u.why)
}

// unloadable records a pair that cannot be loaded and fences the LUNs it
// names that exist. Called by recover, before any host I/O is served.
func (m *Manager) unloadable(rec metavol.Pair, why string) {
	u := &unloadedPair{rec: rec, why: why}
	var fenced []string
	m.mu.Lock()
	m.mu.unloaded[rec.ID] = u
	for _, id := range []string{rec.SourceLUN, rec.TargetLUN} {
		if e := m.mu.luns[id]; e != nil {
			m.refenceLocked(e)
			fenced = append(fenced, e.name)
		}
	}
	m.mu.Unlock()
	for _, n := range fenced {
		m.events.Record(Event{Type: EventOffline, Object: "lun " + n, LUN: n, Pair: rec.ID,
			Reason: fmt.Sprintf("pair %s could not be loaded: %s", rec.ID, why)})
	}
	m.log.Error().Str("pair", rec.ID).Str("state", rec.State).Str("reason", why).Strs("offline_luns", fenced).
		Msg("pair could not be loaded: its LUNs are OFFLINE (host I/O fails NOT READY) until it loads at a later start or is cancelled with `migration cancel`")
}

// refenceLocked sets e's fence to the first unloaded pair (by ID) naming
// it, or clears it. The caller holds m.mu.
func (m *Manager) refenceLocked(e *lunEntry) {
	var best *unloadedPair
	for _, u := range m.mu.unloaded {
		if (u.rec.SourceLUN == e.id || u.rec.TargetLUN == e.id) && (best == nil || u.rec.ID < best.rec.ID) {
			best = u
		}
	}
	e.fence.Store(best)
}

// unloadedLocked finds the unloaded pair named by source: its source LUN's
// name, its source LUN's ID (when that LUN is gone) or its pair ID. The
// caller holds m.mu.
func (m *Manager) unloadedLocked(source string) *unloadedPair {
	var ids []string
	for id := range m.mu.unloaded {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		u := m.mu.unloaded[id]
		if e := m.mu.luns[u.rec.SourceLUN]; e != nil && e.name == source {
			return u
		}
		if u.rec.SourceLUN == source || u.rec.ID == source {
			return u
		}
	}
	return nil
}

// cancelUnloaded deletes an unloaded pair's record and DCL and brings its
// LUNs back online. The caller holds m.admin.
func (m *Manager) cancelUnloaded(source string) error {
	m.mu.Lock()
	u := m.unloadedLocked(source)
	m.mu.Unlock()
	if u == nil {
		return fmt.Errorf("migration of %s: %w", source, ErrNotFound)
	}
	id := u.rec.ID
	if err := m.db.Update(func(tx *metavol.Tx) error { return tx.DeletePair(id) }); err != nil && !errors.Is(err, metavol.ErrNotFound) {
		return fmt.Errorf("pair %s (source %s): cancel: delete the record: %w (the LUNs stay offline)", id, source, err)
	}
	if err := m.dcl.Drop(id); err != nil {
		// The record is gone: the next start drops the stray DCL.
		m.log.Warn().Err(err).Str("pair", id).Msg("cancel of an unloaded pair: DCL not dropped (dropped at the next start)")
	}
	var online []string
	m.mu.Lock()
	delete(m.mu.unloaded, id)
	for _, lid := range []string{u.rec.SourceLUN, u.rec.TargetLUN} {
		if e := m.mu.luns[lid]; e != nil {
			m.refenceLocked(e)
			if e.fence.Load() == nil {
				online = append(online, e.name)
			}
		}
	}
	m.mu.Unlock()
	m.log.Warn().Str("pair", id).Strs("online_luns", online).Msg("unloaded pair cancelled: record and DCL deleted; the source LUN's data is its own (the target LUN is left as it was)")
	return nil
}

// unloadedStatuses are the unloaded pairs as `migration list` shows them:
// state "offline", the reason saying why.
func (m *Manager) unloadedStatuses() []PairStatus {
	m.mu.Lock()
	us := slices.Collect(maps.Values(m.mu.unloaded))
	m.mu.Unlock()
	out := make([]PairStatus, 0, len(us))
	for _, u := range us {
		out = append(out, m.unloadedStatus(u))
	}
	return out
}

func (m *Manager) unloadedStatus(u *unloadedPair) PairStatus {
	s := m.recordStatus(u.rec)
	s.State = PairOffline
	s.Reason = u.reason() + fmt.Sprintf(" (record state %q); cancel it to bring its LUNs back online", u.rec.State)
	return s
}

// PairOffline is the State of a pair record that could not be loaded, in
// PairStatus (it is not a PairState: the pair does not run).
const PairOffline = "offline"

// refuseOffline refuses an admin operation on a LUN that is offline
// because a pair naming it could not be loaded.
func (m *Manager) refuseOffline(op string, l metavol.LUN) error {
	m.mu.Lock()
	e := m.mu.luns[l.ID]
	m.mu.Unlock()
	if e == nil {
		return nil
	}
	if u := e.fence.Load(); u != nil {
		return fmt.Errorf("lun %s: %s refused: %s; cancel that pair first (migration cancel %s): %w", l.Name, op, u.reason(), m.lunName(u.rec.SourceLUN), ErrOffline)
	}
	return nil
}

// fenced is the host path's check, made inside the LUN's I/O gate.
func (e *lunEntry) fenced(op string) error {
	if u := e.fence.Load(); u != nil {
		return fmt.Errorf("lun %s: %s: %s: %w", e.name, op, u.reason(), ErrOffline)
	}
	return nil
}

// LUNStatus says whether the LUN with this ID serves host I/O, and if not,
// why.
func (m *Manager) LUNStatus(id string) LUNStatus {
	m.mu.Lock()
	e := m.mu.luns[id]
	m.mu.Unlock()
	if e == nil {
		return LUNStatus{State: LUNOffline, Reason: "offline: not loaded"}
	}
	if u := e.fence.Load(); u != nil {
		return LUNStatus{State: LUNOffline, Reason: u.reason()}
	}
	// The route (e.vol) changes only inside the gate. The record follows
	// right after a split's pause (the split journal commits inside it,
	// the LUN records just after, under admin): for those few
	// milliseconds, or until a left journal is settled, this status names
	// the volume from before the swap. Host I/O follows the route, not
	// this record.
	var l metavol.LUN
	if err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		l, err = tx.GetLUN(id)
		return err
	}); err != nil {
		return LUNStatus{State: LUNOffline, Reason: "offline: " + err.Error()}
	}
	m.mu.Lock()
	d := m.mu.vols[l.VolumeID]
	m.mu.Unlock()
	if d == nil {
		return LUNStatus{State: LUNOffline, Reason: fmt.Sprintf("offline: data volume %s: no record", l.VolumeID)}
	}
	if _, err := d.get(); err != nil {
		return LUNStatus{State: LUNOffline, Reason: "offline: " + err.Error()}
	}
	return LUNStatus{State: LUNOnline}
}

// ---- data volumes changed underneath lmtgt ----

// volumeLost marks a data volume lost (sticky until a restart: the bytes
// behind it are no longer the ones written through it), which takes the
// LUN routed to it offline, and interrupts every pair with a leg on it.
func (m *Manager) volumeLost(d *dataVol, err error) {
	s := err.Error()
	if !d.lost.CompareAndSwap(nil, &s) {
		return
	}
	m.events.Record(Event{Type: EventVolume, Action: "lost", Object: "volume " + d.rec.ID, Reason: s + " (" + d.where() + ")"})
	m.log.Error().Err(err).Str("volume", d.rec.ID).Str("path", d.rec.Path).
		Msg("data volume changed underneath lmtgt: its LUN is OFFLINE (host I/O fails NOT READY); restore the file and restart, or delete the LUN")
	pairs := m.activePairs()
	for _, p := range pairs {
		if p.legs().tgt == d {
			p.setFault("target data volume lost: " + s)
		}
		if p.legs().src == d {
			p.recordFault("source data volume lost: " + s) // not "target failed"
		}
	}
}

// verifyVolume checks an open data volume's identity and size
// (volume.File.Verify); a lost volume is marked so. It returns why the
// volume cannot be trusted, or nil.
func (m *Manager) verifyVolume(d *dataVol) error {
	o, err := d.get()
	if err != nil {
		return err
	}
	if o.local == nil {
		return nil // remote: its loss is the initiator's replacement timeout error
	}
	if err := o.local.Verify(); err != nil {
		if volume.Lost(err) {
			m.volumeLost(d, err)
			_, gerr := d.get()
			return gerr
		}
		return fmt.Errorf("data volume %s: %w", d.rec.ID, err)
	}
	return nil
}

// ioFailed runs after a failed I/O on d: an error that may come from the
// volume having changed underneath lmtgt is checked at once.
func (m *Manager) ioFailed(d *dataVol, err error) {
	if err == nil || errors.Is(err, volume.ErrOutOfRange) || errors.Is(err, volume.ErrClosed) || errors.Is(err, ErrOffline) {
		return
	}
	if volume.Lost(err) {
		m.volumeLost(d, err)
		return
	}
	if verr := m.verifyVolume(d); verr != nil {
		m.log.Warn().Err(verr).Str("volume", d.rec.ID).Msg("data volume check after an I/O error")
	}
}

// VerifyVolumes checks every open data volume now (the periodic check
// does the same every Options.VerifyInterval) and takes the LUNs of those
// that shrank, vanished or were replaced offline.
func (m *Manager) VerifyVolumes() {
	m.mu.Lock()
	vols := slices.Collect(maps.Values(m.mu.vols))
	m.mu.Unlock()
	for _, d := range vols {
		if d.cur.Load() == nil || d.lost.Load() != nil {
			continue
		}
		if err := m.verifyVolume(d); err != nil && d.lost.Load() == nil && d.cur.Load() != nil {
			m.log.Warn().Err(err).Str("volume", d.rec.ID).Msg("data volume check failed")
		}
	}
}

// verifyLegs checks both data volumes of a pair (before and inside the
// split's pause, before a checkpoint): a leg that shrank, vanished or was
// replaced refuses the operation, naming why.
func (p *pair) verifyLegs(op string) error {
	for _, leg := range []struct {
		role string
		d    *dataVol
	}{{"source", p.legs().src}, {"target", p.legs().tgt}} {
		if err := p.m.verifyVolume(leg.d); err != nil {
			return fmt.Errorf("%s: pair %s: %s data volume: %w: %w", op, p.name(), leg.role, err, ErrNotSynced)
		}
	}
	return nil
}

// recheckLegs is the check of both legs made inside the split's pause,
// right after verifyLegs before it: one fstat per leg
// (volume.File.VerifyOpen) sees a leg truncated or deleted since; a path
// renamed over in between is left to the next periodic check (the open
// file, which lmtgt keeps using, still holds the data).
func (p *pair) recheckLegs(op string) error {
	for _, leg := range []struct {
		role string
		d    *dataVol
	}{{"source", p.legs().src}, {"target", p.legs().tgt}} {
		err := func() error {
			o, err := leg.d.get()
			if err != nil {
				return err
			}
			if o.local == nil {
				return nil // remote: its loss is its replacement timeout
			}
			if err := o.local.VerifyOpen(); err != nil {
				if volume.Lost(err) {
					p.m.volumeLost(leg.d, err)
					_, gerr := leg.d.get()
					return gerr
				}
				return fmt.Errorf("data volume %s: %w", leg.d.rec.ID, err)
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("%s: pair %s: %s data volume: %w: %w", op, p.name(), leg.role, err, ErrNotSynced)
		}
	}
	return nil
}
