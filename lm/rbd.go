package lm

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	rbdvol "github.com/lmtgt/lmtgt/metavol/volume/rbd"
)

// RBD data volumes (docs/design.md "RBD"). A data volume of Kind "rbd" is
// a Ceph RBD image in the cluster of Options.Ceph, opened through
// metavol/volume/rbd, which holds the image's exclusive lock while it is
// open. Everything above the volume (dual-write, DCL, copier, split,
// recovery) treats it as any other volume.Volume, so migrations file ->
// RBD, RBD -> file and RBD -> RBD use the generic vehicle unchanged.
//
// The owner recorded on the image (rbdvol.OwnerKey) is this server's data
// dir and the volume ID: a lock left by our own process before a crash
// carries it and is taken back at startup without a takeover; a lock
// held by anyone else refuses the open (the LUN is offline, its reason
// naming the holder) until `lun create --takeover` on a new LUN, or the
// holder lets go. An image lmtgt created (Owned) is deleted with its LUN;
// an attached one only with DeleteLUNOptions.DeleteImage.

// Clusters: a LUN's image is in the server's default cluster (Options.Ceph)
// unless its volume record names its own ceph.conf, client id or keyring
// (lun create --ceph-conf/--ceph-id/--ceph-keyring), each overriding the
// default. m.ceph (rbdvol.Clusters) keeps one admin connection per
// distinct configuration, made on first use; pruneClusters closes those no
// data volume names any more (after a LUN delete), Manager.Close the rest.
// Each open image has a librados client of its own, so a migration from
// an image of cluster A to one of cluster B is the generic vehicle
// between two volumes, as within one cluster.

// rbdConfig is the cluster configuration of an image record.
func (m *Manager) rbdConfig(img *metavol.RBDImage) rbdvol.Config {
	return m.opts.Ceph.Override(img.Conf, img.ID, img.Keyring)
}

// cluster returns the connection to the cluster of img, connecting on
// first use, and done, to call once the caller no longer uses it (a
// pruned connection is closed after its last user).
func (m *Manager) cluster(img *metavol.RBDImage) (*rbdvol.Cluster, func(), error) {
	if m.isClosed() {
		return nil, nil, fmt.Errorf("ceph: manager closed: %w", ErrState)
	}
	return m.ceph.Use(m.rbdConfig(img))
}

// pruneClusters closes the connections of clusters no data volume names
// any more (the last LUN on that cluster went); one still in use (a
// `lun show` asking its monitors) is closed by its last user. Called with
// admin held, so no LUN creation is between its connect and its addLUN.
func (m *Manager) pruneClusters() {
	keep := make(map[rbdvol.Config]bool)
	m.mu.Lock()
	for _, d := range m.mu.vols {
		if d.rec.RBD != nil {
			keep[m.rbdConfig(d.rec.RBD)] = true
		}
	}
	m.mu.Unlock()
	if n := m.ceph.Retain(keep); n > 0 {
		m.log.Info().Int("closed", n).Msg("ceph connections closed: no LUN uses their cluster any more")
	}
}

// closeCluster ends every connection (Manager.Close, after the volumes).
func (m *Manager) closeCluster() {
	m.ceph.Close()
}

// rbdOwner is what this server records on an image it holds.
func (m *Manager) rbdOwner(volID string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%s volume %s", host, m.opts.DataDir, volID)
}

func rbdRef(r *metavol.RBDImage) rbdvol.Ref { return rbdvol.Ref{Pool: r.Pool, Image: r.Image} }

// rbdErr classifies an rbd error for the API: a held lock or a missing
// image is a refusal of the request, anything else the cluster failing.
func rbdErr(err error) error {
	switch {
	case errors.Is(err, rbdvol.ErrLocked):
		return fmt.Errorf("%w: %w", err, ErrHeld)
	case errors.Is(err, rbdvol.ErrNotFound):
		return fmt.Errorf("%w: %w", err, ErrNotFound)
	case errors.Is(err, rbdvol.ErrExists):
		return fmt.Errorf("%w: %w", err, ErrExists)
	case errors.Is(err, rbdvol.ErrInvalid), errors.Is(err, rbdvol.ErrNoLockFeature), errors.Is(err, rbdvol.ErrNotBuilt):
		return fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	return fmt.Errorf("%w: %w", err, ErrUnavailable)
}

// rbdVol wraps an open image (maybe in WrapVolume) as an openVol.
func (m *Manager) rbdVol(id string, v *rbdvol.Volume) *openVol {
	ov := &openVol{v: v, raw: v, rbd: v}
	if m.opts.WrapVolume != nil {
		if w := m.opts.WrapVolume(id, v); w != nil {
			ov.v = w
		}
	}
	return ov
}

var _ backing = (*rbdvol.Volume)(nil)

// rbdHeld reports whether d is an open RBD image whose lock this server
// holds.
func rbdHeld(d *dataVol) bool {
	if d == nil {
		return false
	}
	o := d.cur.Load()
	return o != nil && o.rbd != nil && o.rbd.LockState() == "held"
}

// openRBD opens an RBD data volume (openVolume for Kind "rbd").
func (m *Manager) openRBD(d *dataVol) error {
	fail := func(err error) error {
		s := err.Error()
		d.why.Store(&s)
		return fmt.Errorf("data volume %s: %w: %w", d.rec.ID, ErrUnavailable, err)
	}
	if d.rec.RBD == nil {
		return fail(errors.New("rbd volume record without an image"))
	}
	c, done, err := m.cluster(d.rec.RBD)
	if err != nil {
		return fail(err)
	}
	defer done()
	v, err := c.Open(rbdRef(d.rec.RBD), rbdvol.OpenOptions{Owner: m.rbdOwner(d.rec.ID)})
	if err == nil && v.Size() < d.rec.Size {
		v.Close()
		err = fmt.Errorf("rbd %s: %d bytes, smaller than the %d recorded", d.rec.RBD, v.Size(), d.rec.Size)
	}
	if err != nil {
		return fail(err)
	}
	if !d.cur.CompareAndSwap(nil, m.rbdVol(d.rec.ID, v)) {
		v.Close()
	}
	d.why.Store(nil)
	return nil
}

// createRBDLUN is CreateLUN with req.RBD set: it creates the image when
// req.Size is given (refused if it exists), else attaches the existing
// image (the LUN's size is the image's, rounded down to the block size).
func (m *Manager) createRBDLUN(req CreateLUNRequest) (metavol.LUN, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return metavol.LUN{}, fmt.Errorf("lun %s: manager closed: %w", req.Name, ErrState)
	}
	if err := ValidLUNName(req.Name); err != nil {
		return metavol.LUN{}, err
	}
	obj := lunObject(req.Name)
	if req.Path != "" || req.Direct || req.Force {
		return metavol.LUN{}, refuse(ErrInvalid, obj, "--rbd excludes --path, --direct and --force")
	}
	bs := req.BlockSize
	if bs == 0 {
		bs = 512
	}
	if !servedBlockSize(int64(bs)) {
		return metavol.LUN{}, refuse(ErrInvalid, obj, "block size %d: must be 512 or 4096", req.BlockSize)
	}
	if req.Size < 0 {
		return metavol.LUN{}, refuse(ErrInvalid, obj, "size %s is negative", sizeText(req.Size))
	}
	if err := checkBlocks(obj, req.Size, bs); err != nil {
		return metavol.LUN{}, err
	}
	ref, err := rbdvol.ParseRef(req.RBD)
	if err != nil {
		return metavol.LUN{}, fmt.Errorf("lun %s: %w: %w", req.Name, err, ErrInvalid)
	}
	img := metavol.RBDImage{Pool: ref.Pool, Image: ref.Image, Conf: req.CephConf, ID: req.CephID, Keyring: req.CephKeyring}
	cfg := m.rbdConfig(&img)
	err = m.checkNewDataVolume(req.Name, "rbd "+ref.String()+" of "+cfg.String(), func(v metavol.Volume) bool {
		return v.RBD != nil && v.RBD.Pool == img.Pool && v.RBD.Image == img.Image && m.rbdConfig(v.RBD) == cfg
	})
	if err != nil {
		return metavol.LUN{}, err
	}
	c, done, err := m.cluster(&img)
	if err != nil {
		return metavol.LUN{}, fmt.Errorf("lun %s: %w", req.Name, rbdErr(err))
	}
	defer done()
	if req.AdoptFrom != nil {
		return m.createRBDHandover(req, c, ref, img) // rbdhandover.go
	}
	now := time.Now().UTC()
	vrec := metavol.Volume{ID: metavol.NewID(), Kind: metavol.VolumeKindRBD, RBD: &img, Created: now}
	created := false
	if req.Size > 0 {
		if err := c.Create(ref, req.Size); err != nil {
			return metavol.LUN{}, fmt.Errorf("lun %s: %w", req.Name, rbdErr(err))
		}
		created, vrec.Owned = true, true
	}
	v, err := c.Open(ref, rbdvol.OpenOptions{Owner: m.rbdOwner(vrec.ID), Takeover: req.Takeover})
	if err != nil {
		if created {
			c.Remove(ref)
		}
		return metavol.LUN{}, fmt.Errorf("lun %s: %w", req.Name, rbdErr(err))
	}
	fail := func(err error) (metavol.LUN, error) {
		v.Close()
		if created {
			if rerr := c.Remove(ref); rerr != nil {
				m.log.Warn().Err(rerr).Str("lun", req.Name).Str("rbd", ref.String()).Msg("could not remove the image just created")
			}
		}
		return metavol.LUN{}, err
	}
	size, err := lunSize(req.Name, "rbd "+ref.String(), req.Size, v.Size(), bs)
	if err != nil {
		return fail(err)
	}
	vrec.Size = v.Size()
	lrec := newLUNRecord(req.Name, size, bs, vrec.ID, now)
	if err := m.addLUN(vrec, lrec, m.rbdVol(vrec.ID, v)); err != nil {
		return fail(err)
	}
	m.log.Info().Str("lun", lrec.Name).Str("lun_id", lrec.ID).Int64("size", size).Str("rbd", ref.String()).
		Bool("created", created).Bool("takeover", req.Takeover).Msg("LUN created on RBD")
	return lrec, nil
}

// removeRBDImage deletes the image of a deleted LUN's volume record when
// lmtgt created it or deleteImage asks; the image is closed by then. held
// says whether this server held the image's lock when the delete began:
// an image lmtgt created but another client took over (a handover to
// another server, docs/design.md "RBD handover") is that client's now
// and goes only with deleteImage.
func (m *Manager) removeRBDImage(lun string, vrec metavol.Volume, deleteImage, held bool) error {
	if vrec.RBD == nil || (!vrec.Owned && !deleteImage) {
		return nil
	}
	if !deleteImage && !held {
		m.log.Info().Str("lun", lun).Str("rbd", vrec.RBD.String()).
			Msg("RBD image left in place: this server no longer held its lock (taken over); lun delete --delete-image removes it")
		return nil
	}
	c, done, err := m.cluster(vrec.RBD)
	if err != nil {
		return fmt.Errorf("lun %s: delete image %s: %w", lun, vrec.RBD, err)
	}
	defer done()
	if err := c.Remove(rbdRef(vrec.RBD)); err != nil {
		return fmt.Errorf("lun %s: delete image %s: %w", lun, vrec.RBD, err)
	}
	return nil
}

// RBDStatus is what `lun show` says about an RBD data volume.
type RBDStatus struct {
	Image   string // POOL/IMAGE
	Lock    string // "held", "lost", "not open: why"
	Cluster string // the monitors' answer (with the fsid), or why not
	Ceph    string // which cluster: its ceph.conf and client id
}

// RBDState returns the RBD status of a LUN's current data volume, ok=false
// when it is not an RBD image.
func (m *Manager) RBDState(lunID string) (st RBDStatus, ok bool) {
	m.mu.Lock()
	e := m.mu.luns[lunID]
	m.mu.Unlock()
	if e == nil {
		return st, false
	}
	e.gate.enter()
	d := e.vol
	e.gate.exit()
	if d == nil || d.rec.RBD == nil {
		return st, false
	}
	st.Image = d.rec.RBD.String()
	if o := d.cur.Load(); o != nil && o.rbd != nil {
		st.Lock = o.rbd.LockState()
	} else {
		why := "not opened"
		if w := d.why.Load(); w != nil {
			why = *w
		}
		st.Lock = "not open: " + why
	}
	st.Ceph = m.rbdConfig(d.rec.RBD).String()
	if c, done, err := m.cluster(d.rec.RBD); err != nil {
		st.Cluster = "not connected: " + err.Error()
	} else {
		st.Cluster = c.State()
		done()
	}
	return st, true
}

// TakeoverLUN takes a LUN's RBD image back from another client: it
// breaks that client's exclusive lock (Ceph blocklists it: its writes
// fail from then on) and opens the image here. It is for a LUN whose
// image could not be opened because another client held it (the LUN is
// offline, its reason naming the holder), or whose lock another server
// took over (lock "lost"). A LUN whose image is open with the lock held
// is left as it is; a LUN not on RBD is refused.
func (m *Manager) TakeoverLUN(name string) (metavol.LUN, error) {
	return m.TakeoverLUNFrom(name, "") // rbdhandover.go
}

// takeoverLocked is TakeoverLUN with admin held.
func (m *Manager) takeoverLocked(name string) (metavol.LUN, error) {
	e, l, err := m.entryByName(name)
	if err != nil {
		return l, err
	}
	e.gate.enter()
	d := e.vol
	e.gate.exit()
	if d == nil || d.rec.RBD == nil {
		return l, invalidf("lun %s: takeover refused: its data volume is not an RBD image", name)
	}
	if o := d.cur.Load(); o != nil && o.rbd != nil {
		if o.rbd.LockState() == "held" {
			return l, nil
		}
		// Lost to another client: close our fenced handle (Close waits
		// for the calls in flight; later ones find the volume closed or
		// not open) and open it again below.
		if d.cur.CompareAndSwap(o, nil) {
			o.raw.Close()
		}
	}
	c, done, err := m.cluster(d.rec.RBD)
	if err != nil {
		return l, fmt.Errorf("lun %s: %w", name, rbdErr(err))
	}
	defer done()
	v, err := c.Open(rbdRef(d.rec.RBD), rbdvol.OpenOptions{Owner: m.rbdOwner(d.rec.ID), Takeover: true})
	if err == nil && v.Size() < d.rec.Size {
		v.Close()
		err = fmt.Errorf("rbd %s: %d bytes, smaller than the %d recorded: %w", d.rec.RBD, v.Size(), d.rec.Size, rbdvol.ErrInvalid)
	}
	if err != nil {
		s := err.Error()
		d.why.Store(&s)
		return l, fmt.Errorf("lun %s: takeover: %w", name, rbdErr(err))
	}
	if !d.cur.CompareAndSwap(nil, m.rbdVol(d.rec.ID, v)) {
		v.Close() // the reopen loop opened it meanwhile
	}
	d.why.Store(nil)
	m.log.Warn().Str("lun", name).Str("rbd", d.rec.RBD.String()).Msg("RBD image taken over: its previous holder is blocklisted")
	return l, nil
}

// rbdChunk is the copy chunk of a pair with an RBD leg: one RBD object
// (4 MiB, rbd's default object size), so that a copy write is one whole
// object op on the OSD rather than four quarter ones (rbd import writes
// whole objects too).
const rbdChunk = 4 << 20

// copyChunk is the copy chunk of a new pair from se to te: the server's
// ChunkSize, raised to rbdChunk when either leg is an RBD image. It stays
// a multiple of the region size (the pair record keeps it).
func (m *Manager) copyChunk(se, te *lunEntry) int64 {
	c := m.opts.ChunkSize
	if se.vol.rec.Kind == metavol.VolumeKindRBD || te.vol.rec.Kind == metavol.VolumeKindRBD {
		c = max(c, rbdChunk)
	}
	if r := c % m.opts.RegionSize; r != 0 {
		c += m.opts.RegionSize - r
	}
	return c
}

// rbdInFlight is the number of copy workers (chunks in flight) of a pair
// with an RBD leg: an RBD write completes when its object is on the OSDs,
// a round trip through the messenger, so a copy keeps more of them in
// flight than a file copy needs (rbd import keeps 10 objects in flight,
// rbd_concurrent_management_ops).
const rbdInFlight = 8

// copyWorkers is the number of chunks the initial copy keeps in flight:
// the server's InFlight, raised to rbdInFlight when either leg is an RBD
// image.
func (p *pair) copyWorkers() int {
	n := p.m.opts.InFlight
	if lv := p.legs(); lv != nil && (lv.src.rec.Kind == metavol.VolumeKindRBD || lv.tgt.rec.Kind == metavol.VolumeKindRBD) {
		n = max(n, rbdInFlight)
	}
	return n
}
