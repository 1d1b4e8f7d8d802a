package lm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol"
	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// Imported LUNs (docs/design.md "Importing a LUN from another array"). A
// data volume of Kind "iscsi" is a LUN on another iSCSI target, reached
// through lmtgt's own initiator (metavol/volume/iscsi). Its record holds
// the portal, target, LUN and CHAP credentials; the credentials are used
// only here (remoteConfig) and never appear in a log line, an error or a
// status (Remote.URL has none; the initiator redacts its own names).
//
// A remote volume is never Verify'd (that is for files); its loss is the
// initiator's replacement timeout, after which I/O fails and the LUN's
// pair goes interrupted like any failing leg. Deleting the LUN logs out;
// nothing on the remote array is ever deleted or changed by lmtgt but the
// data hosts write.

// RemoteOpenTimeout bounds the login and probe of a remote data volume.
const RemoteOpenTimeout = 30 * time.Second

// Identity modes of ImportLUN.
const (
	IdentityAdopt = "adopt" // present the external LUN's identity
	IdentityOwn   = "own"   // present lmtgt's own generated identity
)

// ImportLUNRequest asks for a LUN whose data volume is a LUN on another
// iSCSI target.
type ImportLUNRequest struct {
	Name string
	// From is iscsi://HOST[:PORT]/IQN/LUN, without credentials.
	From string
	// CHAP credentials for the login to the other target: one-way, or
	// mutual with MutualUser and MutualSecret too.
	CHAPUser, CHAPSecret     string
	MutualUser, MutualSecret string
	// Identity is IdentityAdopt (default) or IdentityOwn.
	Identity string
	// ID, NAA and Serial give the LUN an identity it had before (config
	// apply restores them); empty: new ones. An adopted identity takes
	// the external LUN's serial whatever Serial says.
	ID, NAA, Serial string
}

// checkImport applies the rules of an import request that need no lock
// and returns the remote it names. The URL must not carry credentials
// (they would end up in shell history and process lists): they come in
// the CHAP fields. No error names a secret.
func checkImport(req ImportLUNRequest) (metavol.Remote, error) {
	obj := lunObject(req.Name)
	if req.Name == "" {
		return metavol.Remote{}, refuse(ErrInvalid, "lun", "a name is required")
	}
	if req.From == "" {
		return metavol.Remote{}, refuse(ErrInvalid, obj, "--from iscsi://HOST[:PORT]/IQN/LUN is required")
	}
	u, err := iscsivol.ParseURL(req.From)
	if err != nil {
		return metavol.Remote{}, refuse(ErrInvalid, obj, "%v", err)
	}
	if u.CHAPUser != "" {
		return metavol.Remote{}, refuse(ErrInvalid, obj, "%s: give CHAP credentials with --chap-user and --chap-secret-file, not in the URL", iscsivol.Redact(req.From))
	}
	if (req.CHAPUser == "") != (req.CHAPSecret == "") {
		return metavol.Remote{}, refuse(ErrInvalid, obj, "CHAP needs both a user and a secret")
	}
	if (req.MutualUser == "") != (req.MutualSecret == "") || (req.MutualUser != "" && req.CHAPUser == "") {
		return metavol.Remote{}, refuse(ErrInvalid, obj, "mutual CHAP needs a mutual user and secret, and one-way CHAP too")
	}
	switch req.Identity {
	case "", IdentityAdopt, IdentityOwn:
	default:
		return metavol.Remote{}, refuse(ErrInvalid, obj, "identity %q: want %s or %s", req.Identity, IdentityAdopt, IdentityOwn)
	}
	if err := ValidLUNName(req.Name); err != nil {
		return metavol.Remote{}, err
	}
	return metavol.Remote{
		Portal: u.Portal, Target: u.Target, LUN: u.LUN,
		CHAPUser: req.CHAPUser, CHAPSecret: req.CHAPSecret, MutualUser: req.MutualUser, MutualSecret: req.MutualSecret,
	}, nil
}

// remoteConfig is the initiator configuration of a remote volume record.
func (m *Manager) remoteConfig(r metavol.Remote) iscsivol.Config {
	return iscsivol.Config{
		Portal: r.Portal, Target: r.Target, LUN: r.LUN,
		CHAPUser: r.CHAPUser, CHAPSecret: r.CHAPSecret,
		MutualUser: r.MutualUser, MutualSecret: r.MutualSecret,
		ReplacementTimeout: m.opts.RemoteReplacementTimeout,
	}
}

// dialRemote logs in to a remote volume. Its errors name the URL without
// any secret.
func (m *Manager) dialRemote(volID string, r metavol.Remote) (*iscsivol.Volume, error) {
	return m.dialRemoteCfg(volID, r, m.remoteConfig(r))
}

// dialRemoteCfg is dialRemote with the initiator configuration cfg.
func (m *Manager) dialRemoteCfg(volID string, r metavol.Remote, cfg iscsivol.Config) (*iscsivol.Volume, error) {
	ctx, cancel := context.WithTimeout(m.ctx, RemoteOpenTimeout)
	defer cancel()
	log := slog.New(zerolog.NewSlogHandler(m.log.With().Str("volume", volID).Logger()))
	cfg.ISID = isidFor(volID) // the same I_T nexus after a restart (fence.go)
	v, err := iscsivol.OpenConfig(ctx, cfg, log)
	if err != nil {
		if errors.Is(err, iscsivol.ErrAuth) {
			return nil, fmt.Errorf("remote %s: login refused (check the CHAP user and secret): %w", r.URL(), err)
		}
		return nil, fmt.Errorf("remote %s: %w", r.URL(), err)
	}
	return v, nil
}

// openRemote opens a remote data volume (openVolume for Kind "iscsi").
func (m *Manager) openRemote(d *dataVol) error {
	if d.rec.Remote == nil {
		s := "remote volume record without a remote"
		d.why.Store(&s)
		return fmt.Errorf("data volume %s: %s: %w", d.rec.ID, s, ErrUnavailable)
	}
	r, err := m.dialRemote(d.rec.ID, *d.rec.Remote)
	if err == nil && r.Size() < d.rec.Size {
		r.Close()
		err = fmt.Errorf("remote %s: %d bytes, smaller than the %d recorded", d.rec.Remote.URL(), r.Size(), d.rec.Size)
	}
	if err != nil {
		s := err.Error()
		d.why.Store(&s)
		return fmt.Errorf("data volume %s: %w: %w", d.rec.ID, ErrUnavailable, err)
	}
	m.refence(d, r)
	if !d.cur.CompareAndSwap(nil, m.remoteVol(d.rec.ID, r)) {
		r.Close()
	}
	d.why.Store(nil)
	return nil
}

// reopenRemote keeps trying to open a remote volume that could not be
// opened at startup (its array down or unreachable), with backoff from
// RetryMin to RetryMax, until it opens or the Manager closes. Until then
// its LUN is offline and a pair with a leg on it is interrupted; both
// recover by themselves once it opens. The goroutine is the Manager's
// (m.wg, ended by Close through m.ctx).
func (m *Manager) reopenRemote(d *dataVol) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		delay := m.opts.RetryMin
		for {
			t := time.NewTimer(delay)
			select {
			case <-m.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if !m.known(d) {
				return // its LUN was deleted
			}
			err := m.openVolume(d) // an iSCSI LUN or an RBD image
			if err == nil && !m.known(d) {
				// Deleted while we logged in: DeleteLUN may have swapped
				// before our open; log out here.
				if o := d.cur.Swap(nil); o != nil {
					o.raw.Close()
				}
				return
			}
			if err == nil {
				m.log.Info().Str("volume", d.rec.ID).Str("remote", d.where()).Msg("remote data volume opened")
				return
			}
			if m.ctx.Err() != nil {
				return
			}
			m.log.Debug().Err(err).Str("volume", d.rec.ID).Msg("remote data volume still unavailable")
			delay = min(delay*2, m.opts.RetryMax)
		}
	}()
}

// known reports whether d is still one of the Manager's data volumes.
func (m *Manager) known(d *dataVol) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.vols[d.rec.ID] == d
}

// ImportLUN creates a LUN whose data volume is a LUN on another iSCSI
// target. Its size and block size are the external LUN's. With
// IdentityAdopt the LUN presents the external LUN's standard INQUIRY
// vendor/product/revision, VPD 0x80 serial and VPD 0x83 logical-unit
// designators, read once now and kept on the LUN record.
func (m *Manager) ImportLUN(req ImportLUNRequest) (metavol.LUN, error) {
	r, err := checkImport(req)
	if err != nil {
		return metavol.LUN{}, err
	}
	if err := checkIdentity(lunObject(req.Name), req.ID, req.NAA, req.Serial); err != nil {
		return metavol.LUN{}, err
	}
	mode := req.Identity
	if mode == "" {
		mode = IdentityAdopt
	}
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return metavol.LUN{}, fmt.Errorf("lun %s: manager closed: %w", req.Name, ErrState)
	}
	err = m.checkNewDataVolume(req.Name, r.URL(), func(v metavol.Volume) bool { return v.Remote != nil && v.Remote.URL() == r.URL() })
	if err != nil {
		return metavol.LUN{}, err
	}
	if err := m.refuseTakenID(req.Name, req.ID); err != nil {
		return metavol.LUN{}, err
	}
	now := time.Now().UTC()
	vrec := metavol.Volume{ID: metavol.NewID(), Kind: metavol.VolumeKindISCSI, Remote: &r, Created: now}
	rv, err := m.dialRemote(vrec.ID, r)
	if err != nil {
		why := ErrUnavailable
		if errors.Is(err, iscsivol.ErrAuth) {
			why = ErrInvalid // the credentials given are wrong
		}
		return metavol.LUN{}, fmt.Errorf("lun %s: %w: %w", req.Name, err, why)
	}
	fail := func(err error) (metavol.LUN, error) {
		rv.Close()
		return metavol.LUN{}, err
	}
	bs := rv.BlockSize()
	if !servedBlockSize(int64(bs)) {
		return fail(invalidf("lun %s: remote %s has %d-byte blocks (lmtgt serves 512 or 4096)", req.Name, r.URL(), bs))
	}
	vrec.Size = rv.Size()
	lrec := newLUNRecord(req.Name, rv.Size(), uint32(bs), vrec.ID, now)
	lrec.ID = orDefault(req.ID, lrec.ID)
	lrec.NAA = orDefault(req.NAA, lrec.NAA)
	lrec.Serial = orDefault(req.Serial, lrec.Serial)
	if mode == IdentityAdopt {
		id, err := rv.Identity()
		if err != nil {
			return fail(fmt.Errorf("lun %s: %w", req.Name, err))
		}
		if len(id.Designators) == 0 {
			return fail(invalidf("lun %s: remote %s has no logical-unit designator in VPD 0x83 to adopt (use --identity own)", req.Name, r.URL()))
		}
		if id.Serial != "" {
			lrec.Serial = id.Serial
		}
		lrec.Adopted = &metavol.Identity{Vendor: id.Vendor, Product: id.Product, Revision: id.Revision, Designators: id.Designators}
	}
	if err := m.addLUN(vrec, lrec, m.remoteVol(vrec.ID, rv)); err != nil {
		return fail(err)
	}
	if mode == IdentityAdopt { // PR carry-over, before any target maps it (fence.go)
		if err := m.carryPRs(lrec.ID, lrec.Name, rv.Client(), fenceKeyFor(vrec.ID)); err != nil {
			m.log.Warn().Err(err).Str("lun", lrec.Name).Msg("persistent reservations not carried over at import (migration create tries again)")
		}
	}
	m.registerAccess(vrec.ID, lrec.Name, rv.Client())
	m.log.Info().Str("lun", lrec.Name).Str("lun_id", lrec.ID).Int64("size", lrec.Size).Str("remote", r.URL()).
		Str("identity", mode).Msg("LUN imported")
	return lrec, nil
}

// RemoteState is the initiator session state of a LUN's data volume when
// it is remote: "up", "connecting", "down", "closed" or "not open"; ""
// for a local volume.
func (m *Manager) RemoteState(lunID string) string {
	m.mu.Lock()
	e := m.mu.luns[lunID]
	m.mu.Unlock()
	if e == nil {
		return ""
	}
	e.gate.enter()
	d := e.vol
	e.gate.exit()
	if d == nil || d.rec.Kind != metavol.VolumeKindISCSI {
		return ""
	}
	o := d.cur.Load()
	if o == nil || o.remote == nil {
		return "not open"
	}
	return o.remote.Client().State().String()
}

// BypassWarning is the warning of a new pair whose source is imported
// from an array without persistent reservations, accepted with
// AllowUnfenced (FenceUnfenced), "" for any other pair: lmtgt cannot fence
// the old path, so a host write that reaches the old array directly
// escapes the DCL and is lost at the split (fence.go, docs/design.md
// "Fencing").
func (m *Manager) BypassWarning(p PairStatus) string {
	f := m.Fence(p.SourceID)
	if f.State != FenceUnfenced {
		return ""
	}
	return fmt.Sprintf("WARNING: source LUN %s is imported from %s, which has no persistent reservations: lmtgt cannot fence its other paths. "+
		"Until the split, no host may use any path to %s other than through lmtgt. "+
		"A write that reaches the old array directly is NOT tracked and is LOST at the split.", p.Source, f.Remote, f.Remote)
}
