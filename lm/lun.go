package lm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
)

// LUN names: a letter or digit, then letters, digits, '.', '_' or '-', at
// most 64 characters.
var lunNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidLUNName reports whether name is a valid LUN name.
func ValidLUNName(name string) error {
	if !lunNameRE.MatchString(name) {
		return fmt.Errorf("lun name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit: %w", name, ErrInvalid)
	}
	return nil
}

// CreateLUN makes a new LUN: a new sparse file under DataDir/volumes when
// Path is empty, else the existing file or block device at Path (Size 0 =
// its size), or a new sparse file at Path if nothing is there. Direct opens
// the data volume with O_DIRECT, now and at every later open.
func (m *Manager) CreateLUN(req CreateLUNRequest) (metavol.LUN, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return metavol.LUN{}, fmt.Errorf("lun %s: manager closed: %w", req.Name, ErrState)
	}
	if err := ValidLUNName(req.Name); err != nil {
		return metavol.LUN{}, err
	}
	bs := req.BlockSize
	if bs == 0 {
		bs = 512
	}
	if bs != 512 && bs != 4096 {
		return metavol.LUN{}, fmt.Errorf("lun %s: block size %d (want 512 or 4096): %w", req.Name, req.BlockSize, ErrInvalid)
	}
	if req.Size < 0 || (req.Size == 0 && req.Path == "") {
		return metavol.LUN{}, fmt.Errorf("lun %s: size %d must be positive: %w", req.Name, req.Size, ErrInvalid)
	}
	if req.Size%int64(bs) != 0 {
		return metavol.LUN{}, fmt.Errorf("lun %s: size %d is not a multiple of the block size %d: %w", req.Name, req.Size, bs, ErrInvalid)
	}
	// Name and path must be free.
	var path string
	if req.Path != "" {
		p, err := filepath.Abs(req.Path)
		if err != nil {
			return metavol.LUN{}, fmt.Errorf("lun %s: path %q: %w", req.Name, req.Path, ErrInvalid)
		}
		path = p
	}
	err := m.db.View(func(tx *metavol.Tx) error {
		if _, err := tx.LUNByName(req.Name); err == nil {
			return fmt.Errorf("lun %s: %w", req.Name, ErrExists)
		} else if !errors.Is(err, metavol.ErrNotFound) {
			return err
		}
		if path == "" {
			return nil
		}
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		fi, _ := os.Stat(path) // nil when the file is still to be created
		for _, v := range vols {
			if v.Path == path {
				return fmt.Errorf("lun %s: path %s is already data volume %s: %w", req.Name, path, v.ID, ErrExists)
			}
			if fi != nil && sameData(fi, v.Path) {
				return fmt.Errorf("lun %s: path %s is the same file or device as data volume %s (%s): %w", req.Name, path, v.ID, v.Path, ErrExists)
			}
		}
		return nil
	})
	if err != nil {
		return metavol.LUN{}, err
	}

	now := time.Now().UTC()
	vrec := metavol.Volume{ID: metavol.NewID(), Direct: req.Direct, Created: now}
	vopts := volume.Options{Direct: req.Direct}
	var f *volume.File
	created := false
	switch {
	case path == "":
		vrec.Path = m.volumePath(vrec.ID)
		vrec.Owned = true
		if err := os.MkdirAll(filepath.Dir(vrec.Path), 0o700); err != nil {
			return metavol.LUN{}, fmt.Errorf("lun %s: data dir: %w", req.Name, err)
		}
		f, err = volume.Create(vrec.Path, req.Size, vopts)
		created = true
	default:
		vrec.Path = path
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			if req.Size == 0 {
				return metavol.LUN{}, fmt.Errorf("lun %s: %s does not exist and no size was given: %w", req.Name, path, ErrInvalid)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return metavol.LUN{}, fmt.Errorf("lun %s: %w", req.Name, err)
			}
			f, err = volume.Create(path, req.Size, vopts)
			created = true
		} else {
			f, err = volume.Open(path, vopts)
		}
	}
	if err != nil {
		return metavol.LUN{}, fmt.Errorf("lun %s: %w", req.Name, err)
	}
	fail := func(err error) (metavol.LUN, error) {
		f.Close()
		if created {
			os.Remove(f.Path())
		}
		return metavol.LUN{}, err
	}
	size := req.Size
	if size == 0 {
		size = f.Size() / int64(bs) * int64(bs)
		if size == 0 {
			return fail(fmt.Errorf("lun %s: %s holds less than one %d-byte block: %w", req.Name, path, bs, ErrInvalid))
		}
	}
	if size > f.Size() {
		return fail(fmt.Errorf("lun %s: size %d is larger than %s (%d bytes): %w", req.Name, size, path, f.Size(), ErrInvalid))
	}
	vrec.Kind = f.Kind()
	vrec.Size = f.Size()
	lrec := metavol.LUN{
		ID:        metavol.NewID(),
		Name:      req.Name,
		Size:      size,
		BlockSize: bs,
		NAA:       metavol.NewNAA(),
		Serial:    metavol.NewSerial(),
		VolumeID:  vrec.ID,
		Created:   now,
	}
	if err := m.db.Update(func(tx *metavol.Tx) error {
		if err := tx.PutVolume(vrec); err != nil {
			return err
		}
		return tx.PutLUN(lrec)
	}); err != nil {
		return fail(mapMetaErr("lun", req.Name, err))
	}
	d := &dataVol{rec: vrec}
	ov := &openVol{v: f, file: f, raw: f}
	if m.opts.WrapVolume != nil {
		if w := m.opts.WrapVolume(vrec.ID, f); w != nil && w != volume.Volume(f) {
			ov.v, ov.file = w, nil
		}
	}
	d.cur.Store(ov)
	m.mu.Lock()
	m.mu.vols[vrec.ID] = d
	m.mu.luns[lrec.ID] = m.newEntry(lrec)
	m.mu.Unlock()
	m.log.Info().Str("lun", lrec.Name).Str("id", lrec.ID).Int64("size", size).Str("path", vrec.Path).Bool("direct", vrec.Direct).Msg("LUN created")
	return lrec, nil
}

// entryByName returns the routing entry and record of a LUN name.
func (m *Manager) entryByName(name string) (*lunEntry, metavol.LUN, error) {
	var l metavol.LUN
	err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		l, err = tx.LUNByName(name)
		return err
	})
	if err != nil {
		return nil, l, mapMetaErr("lun", name, err)
	}
	m.mu.Lock()
	e := m.mu.luns[l.ID]
	m.mu.Unlock()
	if e == nil {
		return nil, l, fmt.Errorf("lun %s: not loaded: %w", name, ErrNotFound)
	}
	return e, l, nil
}

// pairOf returns the active pair a LUN is in, or nil.
func (m *Manager) pairOf(id string) *pair {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.mu.pairs {
		if p.src.id == id || p.tgt.id == id {
			return p
		}
	}
	return nil
}

// ResizeLUN grows a LUN (and its data volume if it is smaller). Shrinking
// and resizing a LUN in a pair are refused.
func (m *Manager) ResizeLUN(name string, size int64) (metavol.LUN, error) {
	m.admin.Lock()
	defer m.admin.Unlock()
	e, l, err := m.entryByName(name)
	if err != nil {
		return l, err
	}
	if err := m.refuseOffline("resize", l); err != nil {
		return l, err
	}
	if p := m.pairOf(l.ID); p != nil {
		return l, fmt.Errorf("lun %s: resize refused: pair %s: %w", name, p.id, ErrInPair)
	}
	if size < l.Size {
		return l, fmt.Errorf("lun %s: cannot shrink from %d to %d bytes: %w", name, l.Size, size, ErrInvalid)
	}
	if size%int64(l.BlockSize) != 0 {
		return l, fmt.Errorf("lun %s: size %d is not a multiple of the block size %d: %w", name, size, l.BlockSize, ErrInvalid)
	}
	if size == l.Size {
		return l, nil
	}
	o, err := e.vol.get()
	if err != nil {
		return l, fmt.Errorf("lun %s: %w", name, err)
	}
	vrec := e.vol.rec
	if o.raw.Size() < size {
		if err := o.raw.Resize(size); err != nil {
			return l, fmt.Errorf("lun %s: %w", name, err)
		}
	}
	vrec.Size = o.raw.Size()
	l.Size = size
	if err := m.db.Update(func(tx *metavol.Tx) error {
		if err := tx.PutVolume(vrec); err != nil {
			return err
		}
		return tx.PutLUN(l)
	}); err != nil {
		return l, mapMetaErr("lun", name, err)
	}
	e.vol.rec = vrec
	e.size.Store(size)
	m.log.Info().Str("lun", name).Int64("size", size).Msg("LUN resized")
	return l, nil
}

// DeleteLUN removes a LUN. Refused while it is mapped to any target or in
// a pair. An owned data volume file is deleted; an existing file or device
// the LUN was created on is only forgotten.
func (m *Manager) DeleteLUN(name string) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	e, l, err := m.entryByName(name)
	if err != nil {
		return err
	}
	if err := m.refuseOffline("delete", l); err != nil {
		return err
	}
	if p := m.pairOf(l.ID); p != nil {
		return fmt.Errorf("lun %s: delete refused: pair %s: %w", name, p.id, ErrInPair)
	}
	var vrec metavol.Volume
	err = m.db.Update(func(tx *metavol.Tx) error {
		ts, err := tx.Targets()
		if err != nil {
			return err
		}
		for _, t := range ts {
			for _, mp := range t.Mappings {
				if mp.LUNID == l.ID {
					return fmt.Errorf("lun %s: delete refused: mapped to target %s as LUN %d: %w", name, t.IQN, mp.LUN, ErrMapped)
				}
			}
		}
		vrec, err = tx.GetVolume(l.VolumeID)
		if err != nil && !errors.Is(err, metavol.ErrNotFound) {
			return err
		}
		if err == nil {
			if err := tx.DeleteVolume(l.VolumeID); err != nil {
				return err
			}
		}
		return tx.DeleteLUN(l.ID) // and its saved reservations
	})
	if err != nil {
		if errors.Is(err, ErrMapped) {
			return err
		}
		return mapMetaErr("lun", name, err)
	}
	_ = m.withGates([]*lunEntry{e}, func() error {
		e.closed.Store(true)
		return nil
	})
	m.mu.Lock()
	delete(m.mu.luns, l.ID)
	d := m.mu.vols[l.VolumeID]
	delete(m.mu.vols, l.VolumeID)
	m.mu.Unlock()
	if d != nil {
		if o := d.cur.Swap(nil); o != nil {
			o.raw.Close()
		}
	}
	if vrec.Owned && vrec.Path != "" {
		if err := os.Remove(vrec.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn().Err(err).Str("lun", name).Str("path", vrec.Path).Msg("could not delete the data volume file")
		}
	}
	m.log.Info().Str("lun", name).Str("id", l.ID).Msg("LUN deleted")
	return nil
}

// sameData reports whether fi (a stat of a new --path) names the bytes of
// the existing volume at path: the same file through a symbolic or hard
// link, or the same block device through another device node.
func sameData(fi os.FileInfo, path string) bool {
	vi, err := os.Stat(path)
	if err != nil {
		return false
	}
	if os.SameFile(fi, vi) {
		return true
	}
	if fi.Mode()&os.ModeDevice == 0 || vi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 || vi.Mode()&os.ModeCharDevice != 0 {
		return false
	}
	a, ok1 := fi.Sys().(*syscall.Stat_t)
	b, ok2 := vi.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && a.Rdev == b.Rdev
}
