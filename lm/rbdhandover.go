package lm

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
	rbdvol "github.com/lmtgt/lmtgt/metavol/volume/rbd"
)

// Handover of an RBD LUN between two lmtgt servers on one Ceph cluster,
// without copying (docs/design.md "RBD handover"). Server A serves LUN X
// on image P/I; server B takes it over in two explicit steps:
//
//  1. B: CreateLUN with RBD P/I and AdoptFrom = a LUN URL of X on A. B
//     logs in to A through its own initiator once, adopts X's identity
//     (INQUIRY vendor/product/revision, VPD 0x80 serial, VPD 0x83
//     logical-unit designators), its size and block size, and carries
//     its persistent reservations over (READ FULL STATUS, as an import
//     does), then logs out. The image stays A's: B's LUN is offline
//     ("held by" A) until step 2, so B answers NOT READY and never
//     serves data A may still change. Nothing is copied, ever.
//  2. B: TakeoverLUNFrom with the same URL, once A's path is standby (the
//     administrator's ALUA step): B reads A's reservations again (PR IN
//     works on a standby path) and replaces what it carried before,
//     checks that A's LUN still has the identity B adopted, then breaks
//     A's exclusive lock (Ceph blocklists A's client: A's I/O on the
//     image fails, and A answers NOT READY) and opens the image.
//
// The ALUA states (A standby/unavailable, B active) are the
// administrator's, set with `lmtgt alua state` on each server: lm does
// not own them. Until step 2 B's LUN retries the open with backoff like
// any offline RBD volume, so if A lets go of the image (A deleted X, or
// A died and its lock expired) B picks the image up by itself.

// adoptFromISIDKey derives the initiator session ID B uses to read A's
// LUN (one per LUN: distinct from the ISIDs of remote data volumes).
func adoptFromISIDKey(lunID string) string { return "rbd handover " + lunID }

// dialAdoptSource logs in to the LUN a handover adopts from.
func (m *Manager) dialAdoptSource(lunName, lunID string, r metavol.Remote) (*iscsivol.Volume, error) {
	if r.Portal == "" || r.Target == "" {
		return nil, invalidf("lun %s: adopt-from needs a portal and a target name", lunName)
	}
	cfg := m.remoteConfig(r)
	cfg.AllowStandby = true // A's path may be standby at the takeover
	v, err := m.dialRemoteCfg(adoptFromISIDKey(lunID), r, cfg)
	if err != nil {
		return nil, fmt.Errorf("lun %s: adopt from %s: %w: %w", lunName, r.URL(), err, ErrUnavailable)
	}
	return v, nil
}

// adoptedIdentity reads the identity a handover adopts from src.
func adoptedIdentity(lunName string, r metavol.Remote, src *iscsivol.Volume) (*metavol.Identity, string, error) {
	id, err := src.Identity()
	if err != nil {
		return nil, "", fmt.Errorf("lun %s: adopt from %s: %w: %w", lunName, r.URL(), err, ErrUnavailable)
	}
	if len(id.Designators) == 0 {
		return nil, "", invalidf("lun %s: adopt from %s: no logical-unit designator in VPD 0x83 to adopt", lunName, r.URL())
	}
	return &metavol.Identity{Vendor: id.Vendor, Product: id.Product, Revision: id.Revision, Designators: id.Designators}, id.Serial, nil
}

// createRBDHandover is createRBDLUN with req.AdoptFrom (step 1 above).
// Called with admin held, after the name and image checks; c is the
// cluster, ref and img the image.
func (m *Manager) createRBDHandover(req CreateLUNRequest, c *rbdvol.Cluster, ref rbdvol.Ref, img metavol.RBDImage) (metavol.LUN, error) {
	if req.Size != 0 || req.Takeover {
		return metavol.LUN{}, invalidf("lun %s: --adopt-from attaches the image A serves: no --size, no --takeover (lun takeover --adopt-from takes it)", req.Name)
	}
	lrec := metavol.LUN{ID: metavol.NewID(), Name: req.Name, Serial: metavol.NewSerial(), NAA: metavol.NewNAA()}
	src, err := m.dialAdoptSource(req.Name, lrec.ID, *req.AdoptFrom)
	if err != nil {
		return metavol.LUN{}, err
	}
	defer src.Close()
	bs := src.BlockSize()
	if bs != 512 && bs != 4096 {
		return metavol.LUN{}, invalidf("lun %s: %s has %d-byte blocks (lmtgt serves 512 or 4096)", req.Name, req.AdoptFrom.URL(), bs)
	}
	if req.BlockSize != 0 && req.BlockSize != 512 && int64(req.BlockSize) != bs {
		return metavol.LUN{}, invalidf("lun %s: block size %d, but %s has %d-byte blocks", req.Name, req.BlockSize, req.AdoptFrom.URL(), bs)
	}
	adopted, serial, err := adoptedIdentity(req.Name, *req.AdoptFrom, src)
	if err != nil {
		return metavol.LUN{}, err
	}
	now := time.Now().UTC()
	vrec := metavol.Volume{ID: metavol.NewID(), Kind: metavol.VolumeKindRBD, RBD: &img, Created: now, Size: src.Size()}
	lrec.Size, lrec.BlockSize, lrec.VolumeID, lrec.Created = src.Size(), uint32(bs), vrec.ID, now
	lrec.Adopted = adopted
	if serial != "" {
		lrec.Serial = serial
	}
	// The image is A's: open it only if nobody holds it.
	var ov *openVol
	why := ""
	v, err := c.Open(ref, rbdvol.OpenOptions{Owner: m.rbdOwner(vrec.ID)})
	switch {
	case err == nil && v.Size() < src.Size():
		v.Close()
		return metavol.LUN{}, invalidf("lun %s: rbd %s has %d bytes, less than the %d of %s", req.Name, ref, v.Size(), src.Size(), req.AdoptFrom.URL())
	case err == nil:
		ov = m.rbdVol(vrec.ID, v)
	case errors.Is(err, rbdvol.ErrLocked):
		why = fmt.Sprintf("%v (lun takeover %s --adopt-from %s completes the handover)", err, req.Name, req.AdoptFrom.URL())
	default:
		return metavol.LUN{}, fmt.Errorf("lun %s: %w", req.Name, rbdErr(err))
	}
	if err := m.addLUN(vrec, lrec, ov); err != nil {
		if v != nil && ov != nil {
			v.Close()
		}
		return metavol.LUN{}, err
	}
	// Reservations before any target maps the LUN (fence.go).
	if err := m.carryPRs(lrec.ID, lrec.Name, src.Client(), 0); err != nil {
		m.log.Warn().Err(err).Str("lun", lrec.Name).Msg("persistent reservations not carried over at create (lun takeover --adopt-from tries again)")
	}
	if ov == nil {
		m.mu.Lock()
		d := m.mu.vols[vrec.ID]
		m.mu.Unlock()
		d.why.Store(&why)
		m.reopenRemote(d) // picks the image up if A lets go of it
	}
	m.log.Info().Str("lun", lrec.Name).Str("lun_id", lrec.ID).Int64("size", lrec.Size).Str("rbd", ref.String()).
		Str("adopt_from", req.AdoptFrom.URL()).Bool("open", ov != nil).Msg("LUN created on RBD for a handover")
	return lrec, nil
}

// TakeoverLUNFrom is TakeoverLUN, first re-reading the reservations of
// the LUN the handover adopted from (from, nil for none) and checking it
// still presents the identity this LUN adopted (step 2 above). A refusal
// changes nothing: the lock stays where it was.
func (m *Manager) TakeoverLUNFrom(name, fromURL string) (metavol.LUN, error) {
	if fromURL == "" {
		m.admin.Lock()
		defer m.admin.Unlock()
		return m.takeoverLocked(name)
	}
	from, err := parseAdoptFrom(fromURL)
	if err != nil {
		return metavol.LUN{}, refuse(ErrInvalid, lunObject(name), "%v", err)
	}
	m.admin.Lock()
	defer m.admin.Unlock()
	_, l, err := m.entryByName(name)
	if err != nil {
		return l, err
	}
	if l.Adopted == nil {
		return l, invalidf("lun %s: takeover --adopt-from refused: the LUN has no adopted identity (it was not created with --adopt-from)", name)
	}
	src, err := m.dialAdoptSource(name, l.ID, *from)
	if err != nil {
		return l, err
	}
	defer src.Close()
	id, serial, err := adoptedIdentity(name, *from, src)
	if err != nil {
		return l, err
	}
	if !bytes.Equal(id.Designators, l.Adopted.Designators) || (serial != "" && serial != l.Serial) {
		return l, invalidf("lun %s: takeover --adopt-from refused: %s presents another logical unit than the one this LUN adopted", name, from.URL())
	}
	if err := m.carryPRs(l.ID, name, src.Client(), 0); err != nil {
		return l, fmt.Errorf("takeover refused (the lock is still the other server's): %w", err)
	}
	return m.takeoverLocked(name)
}

// parseAdoptFrom parses the --adopt-from URL of an RBD handover (no CHAP:
// the other server's target must let this server's initiator in).
func parseAdoptFrom(u string) (*metavol.Remote, error) {
	c, err := iscsivol.ParseURL(u)
	if err != nil {
		return nil, fmt.Errorf("--adopt-from: %w", err)
	}
	if c.CHAPUser != "" {
		return nil, fmt.Errorf("--adopt-from %s: no credentials in the URL (CHAP is not supported for a handover)", iscsivol.Redact(u))
	}
	return &metavol.Remote{Portal: c.Portal, Target: c.Target, LUN: c.LUN}, nil
}
