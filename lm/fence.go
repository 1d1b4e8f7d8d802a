package lm

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// Fencing the old path of an imported LUN (docs/design.md "Fencing").
//
// While an imported LUN (a data volume of kind iscsi) is the source of a
// pair, every write to the external LUN must pass through this lmtgt, or
// it escapes the DCL and is lost at the split. So lmtgt holds a WRITE
// EXCLUSIVE persistent reservation on the external LUN: a host write that
// still reaches the old array through its own path fails with RESERVATION
// CONFLICT instead. The fence belongs to the data volume, not to the LUN
// ID or the pair:
//
//   - taken at pair create, before the pair record exists (so before any
//     dual-write): REGISTER AND IGNORE EXISTING KEY with the volume's key,
//     then RESERVE, or re-take our own reservation, or, with Preempt,
//     PREEMPT whoever holds one (after carrying the hosts' reservations
//     over, see PR carry-over). Without Preempt a reservation held by
//     another key refuses the create, naming the holder, and nothing
//     changes. A target without persistent reservations refuses the
//     create unless AllowUnfenced (then the old warning is given);
//   - recorded in the volume record (metavol.Fence), so recovery knows it
//     must hold it: at every open of the volume (startup, reopen) it is
//     taken again without preempting anybody; held by another key it is
//     "lost" (logged, shown; our writes then fail loudly);
//   - kept across reconnects: the initiator uses a fixed ISID per volume
//     (isidFor) and re-takes its own reservation when a target ties it to
//     the old session (iscsivol.Client.SetFenceKey);
//   - released when the pair is cancelled, kept after the split (the
//     volume then belongs to the pair's target LUN ID) until that LUN is
//     deleted.
//
// Only the volume's own reservation is touched: lmtgt never clears other
// registrations.

// FenceState says whether the old path of a remote data volume is fenced.
type FenceState int32

// Fence states.
const (
	FenceNone     FenceState = iota // not fenced (a local volume, or no pair needed one)
	FenceHeld                       // lmtgt holds WRITE EXCLUSIVE on the external LUN
	FenceLost                       // it should, but another key holds a reservation or the check failed
	FenceUnfenced                   // the target has no PRs and the admin accepted that (AllowUnfenced)
)

func (s FenceState) String() string {
	switch s {
	case FenceNone:
		return "none"
	case FenceHeld:
		return "held"
	case FenceLost:
		return "lost"
	case FenceUnfenced:
		return "unfenced"
	}
	return fmt.Sprintf("fence-state-%d", int32(s))
}

// MarshalText writes the state's name.
func (s FenceState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// FenceStatus is the fence of a LUN's data volume.
type FenceStatus struct {
	State  FenceState `json:"state"`
	Key    uint64     `json:"key,omitempty"`
	Remote string     `json:"remote,omitempty"` // URL of the external LUN (no credentials)
	Detail string     `json:"detail,omitempty"`
}

func (f FenceStatus) String() string {
	s := f.State.String()
	if f.Key != 0 {
		s += fmt.Sprintf(" (key 0x%x)", f.Key)
	}
	if f.Detail != "" {
		s += ": " + f.Detail
	}
	return s
}

// ErrFence is a pair create refused because the old path cannot be fenced.
var ErrFence = errors.New("old path cannot be fenced")

// PRCarrier installs persistent reservations read from an external LUN
// into a LUN's own reservation state (package target implements it; lm
// never imports target). skip is lmtgt's own fence key, left out.
type PRCarrier interface {
	CarryPRs(lunID string, st iscsivol.PRStatus, skip uint64) error
}

// fenceSet is the Manager's part for fencing and carry-over.
type fenceSet struct {
	mu      sync.Mutex
	carrier PRCarrier
}

// SetPRCarrier sets who installs carried-over reservations (the iSCSI
// server, created after the Manager). Without one nothing is carried.
func (m *Manager) SetPRCarrier(c PRCarrier) {
	m.fence.mu.Lock()
	defer m.fence.mu.Unlock()
	m.fence.carrier = c
}

func (m *Manager) prCarrier() PRCarrier {
	m.fence.mu.Lock()
	defer m.fence.mu.Unlock()
	return m.fence.carrier
}

// fenceKeyFor is the reservation key of a data volume: stable across
// restarts, distinct per volume, never 0.
func fenceKeyFor(volID string) uint64 {
	h := sha256.Sum256([]byte("lmtgt fence key " + volID))
	if k := binary.BigEndian.Uint64(h[:]); k != 0 {
		return k
	}
	return 1
}

// isidFor is the initiator session ID of a remote data volume: fixed, so
// lmtgt's I_T nexus to the external LUN is the same after a restart
// (type "random", RFC 7143 §11.12.5, derived from the volume ID).
func isidFor(volID string) [6]byte {
	h := sha256.Sum256([]byte("lmtgt isid " + volID))
	return [6]byte{0x80, h[0], h[1], h[2], h[3], h[4]}
}

// carryPRs reads the external LUN's reservations and installs them into
// LUN lunID (PR carry-over). Nothing happens without a carrier or when
// the external target has no persistent reservations.
func (m *Manager) carryPRs(lunID, lunName string, c *iscsivol.Client, skip uint64) error {
	car := m.prCarrier()
	if car == nil {
		return nil
	}
	st, err := c.ReadPRStatus()
	if iscsivol.IsInvalidOpcode(err) {
		m.log.Info().Str("lun", lunName).Msg("the external LUN has no persistent reservations: nothing to carry over")
		return nil
	}
	if err != nil {
		return fmt.Errorf("lun %s: read the external LUN's reservations: %w", lunName, err)
	}
	if !st.Full { // READ KEYS and READ RESERVATION only (Linux tgt)
		n := 0
		for _, r := range st.Registrations {
			if r.Key != skip {
				n++
			}
		}
		if n > 0 {
			m.log.Warn().Str("lun", lunName).Int("registrations", n).Str("type", st.Type.String()).
				Msg("the external LUN has registrations, but its target does not say whose (no READ FULL STATUS): none carried over; hosts must register again through lmtgt")
		}
		return nil
	}
	if err := car.CarryPRs(lunID, st, skip); err != nil {
		return fmt.Errorf("lun %s: carry reservations over: %w", lunName, err)
	}
	m.log.Info().Str("lun", lunName).Int("registrations", len(st.Registrations)).Str("type", st.Type.String()).
		Msg("persistent reservations carried over from the external LUN")
	return nil
}

// fenceSource fences the old path of a pair's source when it is imported:
// it carries the hosts' reservations over (the re-sync of a handover),
// takes the fence and records it. undo gives back what it took (for a
// create that fails after it). Called with admin held.
func (m *Manager) fenceSource(req PairRequest, se *lunEntry) (undo func(), err error) {
	nothing := func() {}
	d := se.vol
	if d == nil || d.rec.Kind != metavol.VolumeKindISCSI {
		return nothing, nil
	}
	o, err := d.get()
	if err != nil {
		return nil, fmt.Errorf("pair %s: fence the old path: %w", req.Source, err)
	}
	if f := d.fence.Load(); f != nil && f.State == FenceHeld && o.remote.Client().FenceLost() == "" {
		return nothing, nil // still ours (an earlier pair of this volume was split)
	}
	c := o.remote.Client()
	key := fenceKeyFor(d.rec.ID)
	url := d.rec.Remote.URL()
	if err := m.carryPRs(se.id, req.Source, c, key); err != nil {
		return nil, fmt.Errorf("pair %s: %w", req.Source, err)
	}
	st, err := c.TakeFence(key, req.Preempt)
	rec := metavol.Fence{Key: key, Taken: time.Now().UTC()}
	switch {
	case err == nil:
		if req.Preempt && st.Type != iscsivol.PRNone && st.HolderKey != key {
			rec.Preempted = st.HolderName()
		}
	case iscsivol.IsInvalidOpcode(err) && req.AllowUnfenced:
		rec.Unfenced = true
	case iscsivol.IsInvalidOpcode(err):
		return nil, fmt.Errorf("pair %s: source is imported from %s, which has no persistent reservations to fence its other paths with "+
			"(a host write through the old array would be lost at the split; remove every other path and use --allow-unfenced to accept that): %w",
			req.Source, url, ErrFence)
	case errors.Is(err, iscsivol.ErrFenceHeld):
		return nil, fmt.Errorf("pair %s: source is imported from %s: %w (use --preempt to take the reservation over once the hosts' reservations are carried to lmtgt): %w",
			req.Source, url, err, ErrFence)
	default:
		return nil, fmt.Errorf("pair %s: fence %s: %w: %w", req.Source, url, err, ErrUnavailable)
	}
	release := func() {
		if rec.Unfenced {
			return
		}
		if err := c.ReleaseFence(key, false); err != nil {
			m.log.Warn().Err(err).Str("lun", req.Source).Str("remote", url).Msg("fence: release after a failed pair create")
		}
	}
	if err := m.putFence(d.rec.ID, &rec); err != nil {
		release()
		return nil, fmt.Errorf("pair %s: record the fence: %w", req.Source, err)
	}
	st2 := FenceStatus{State: FenceHeld, Key: key, Remote: url, Detail: rec.Preempted}
	if rec.Preempted != "" {
		st2.Detail = "preempted " + rec.Preempted
	}
	if rec.Unfenced {
		st2 = FenceStatus{State: FenceUnfenced, Remote: url, Detail: "the external target has no persistent reservations"}
	} else {
		c.SetFenceKey(key)
		c.SetRegistrationKey(key)
	}
	d.fence.Store(&st2)
	m.log.Info().Str("lun", req.Source).Str("remote", url).Str("fence", st2.String()).Msg("old path fenced")
	return func() {
		release()
		d.fence.Store(nil)
		if err := m.putFence(d.rec.ID, nil); err != nil {
			m.log.Warn().Err(err).Str("lun", req.Source).Msg("fence: forget the record after a failed pair create")
		}
	}, nil
}

// putFence writes (or, with nil, removes) a volume's fence record.
func (m *Manager) putFence(volID string, f *metavol.Fence) error {
	return m.db.Update(func(tx *metavol.Tx) error {
		v, err := tx.GetVolume(volID)
		if err != nil {
			return err
		}
		v.Fence = f
		return tx.PutVolume(v)
	})
}

// releaseFence gives back the fence of a volume whose pair was
// cancelled. A failure (the array unreachable) keeps the record: the
// fence is released at the LUN's delete, or by hand on the old array.
func (m *Manager) releaseFence(d *dataVol, lun string) {
	if d == nil || d.rec.Kind != metavol.VolumeKindISCSI {
		return
	}
	var rec *metavol.Fence
	if err := m.db.View(func(tx *metavol.Tx) error {
		v, err := tx.GetVolume(d.rec.ID)
		rec = v.Fence
		return err
	}); err != nil || rec == nil {
		return
	}
	if !rec.Unfenced {
		o, err := d.get()
		if err == nil {
			err = o.remote.Client().ReleaseFence(rec.Key, false)
		}
		if err != nil {
			m.log.Warn().Err(err).Str("lun", lun).Str("remote", d.rec.Remote.URL()).
				Msg("fence: could not release the reservation on the external LUN (kept; released at lun delete)")
			return
		}
	}
	if err := m.putFence(d.rec.ID, nil); err != nil {
		m.log.Warn().Err(err).Str("lun", lun).Msg("fence: forget the record")
	}
	d.fence.Store(nil)
	m.log.Info().Str("lun", lun).Str("remote", d.rec.Remote.URL()).Msg("fence released")
}

// registerAccess registers the volume's key on the external LUN (when it
// has persistent reservations) and keeps it registered: under the
// "registrants only" reservation a cluster holds on the old array, lmtgt's
// pass-through writes are then allowed, before any fence (a handover:
// hosts write through lmtgt while the old array still holds the data).
// A registration fences nobody. Removed at lun delete.
func (m *Manager) registerAccess(volID, lun string, c *iscsivol.Client) {
	key := fenceKeyFor(volID)
	if err := c.PRRegister(key); err != nil {
		if !iscsivol.IsInvalidOpcode(err) {
			m.log.Warn().Err(err).Str("lun", lun).Msg("could not register on the external LUN (writes fail under a registrants-only reservation there)")
		}
		return
	}
	c.SetRegistrationKey(key)
}

// refence takes the fence again when a remote volume with a fence record
// opens (startup, reopen): without preempting anybody. Held by another
// key, it is lost: logged and shown, and our writes fail loudly. Without a
// record it registers for access (registerAccess).
func (m *Manager) refence(d *dataVol, r *iscsivol.Volume) {
	rec := d.rec.Fence
	if rec == nil {
		m.registerAccess(d.rec.ID, d.rec.ID, r.Client())
		return
	}
	url := d.rec.Remote.URL()
	if rec.Unfenced {
		d.fence.Store(&FenceStatus{State: FenceUnfenced, Remote: url, Detail: "the external target has no persistent reservations"})
		return
	}
	c := r.Client()
	c.SetFenceKey(rec.Key)
	c.SetRegistrationKey(rec.Key)
	if _, err := c.TakeFence(rec.Key, false); err != nil {
		d.fence.Store(&FenceStatus{State: FenceLost, Key: rec.Key, Remote: url, Detail: err.Error()})
		m.log.Error().Err(err).Str("volume", d.rec.ID).Str("remote", url).Msg("fence lost: the old path is NOT fenced")
		return
	}
	d.fence.Store(&FenceStatus{State: FenceHeld, Key: rec.Key, Remote: url})
	m.log.Info().Str("volume", d.rec.ID).Str("remote", url).Msg("fence held")
}

// releaseFenceRecord releases the fence of a deleted LUN's volume
// (best effort: an unreachable array keeps the reservation, logged).
func (m *Manager) releaseFenceRecord(d *dataVol, vrec metavol.Volume, lun string) {
	if vrec.Kind != metavol.VolumeKindISCSI || d == nil {
		return
	}
	o, err := d.get()
	switch {
	case err != nil:
	case vrec.Fence != nil && !vrec.Fence.Unfenced:
		err = o.remote.Client().ReleaseFence(vrec.Fence.Key, true)
	default: // registered for access only (registerAccess)
		if err = o.remote.Client().PRRegister(0); iscsivol.IsInvalidOpcode(err) {
			err = nil
		}
	}
	if err != nil {
		m.log.Warn().Err(err).Str("lun", lun).Str("remote", vrec.Remote.URL()).
			Msg("fence: our reservation/registration on the external LUN could not be removed; remove it on that array")
		return
	}
	m.log.Info().Str("lun", lun).Str("remote", vrec.Remote.URL()).Msg("fence and registration on the external LUN removed")
}

// Fence is the fence of a LUN's data volume (FenceNone for a local one).
func (m *Manager) Fence(lunID string) FenceStatus {
	m.mu.Lock()
	e := m.mu.luns[lunID]
	m.mu.Unlock()
	if e == nil {
		return FenceStatus{}
	}
	e.gate.enter()
	d := e.vol
	e.gate.exit()
	if d == nil {
		return FenceStatus{}
	}
	f := d.fence.Load()
	if f == nil {
		return FenceStatus{}
	}
	st := *f
	if o := d.cur.Load(); st.State == FenceHeld && o != nil && o.remote != nil {
		if why := o.remote.Client().FenceLost(); why != "" {
			st.State, st.Detail = FenceLost, why // another initiator took the reservation
		}
	}
	return st
}

// fencePlans fences the imported sources of planned pairs (fenceSource for
// each; all or nothing). Called with admin held.
func (m *Manager) fencePlans(plans []pairPlan, preempt, allowUnfenced bool) (undo func(), err error) {
	var undos []func()
	undo = func() {
		for i := len(undos) - 1; i >= 0; i-- {
			undos[i]()
		}
	}
	for _, pl := range plans {
		u, err := m.fenceSource(PairRequest{Source: pl.se.name, Preempt: preempt, AllowUnfenced: allowUnfenced}, pl.se)
		if err != nil {
			undo()
			return nil, err
		}
		undos = append(undos, u)
	}
	return undo, nil
}
