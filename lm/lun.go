package lm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	"golang.org/x/sys/unix"
)

// LUN names: a letter or digit, then letters, digits, '.', '_' or '-', at
// most 64 characters.
var lunNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidLUNName reports whether name is a valid LUN name.
func ValidLUNName(name string) error {
	if !lunNameRE.MatchString(name) {
		return refuseAs(ErrInvalid, "lun name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// CreateLUN makes a new LUN: a new sparse file under DataDir/volumes when
// Path is empty, else the existing file or block device at Path (Size 0 =
// its size), or a new sparse file at Path if nothing is there. Direct opens
// the data volume with O_DIRECT, now and at every later open.
func (m *Manager) CreateLUN(req CreateLUNRequest) (metavol.LUN, error) {
	if req.AdoptFromURL != "" {
		if req.RBD == "" {
			return metavol.LUN{}, refuse(ErrInvalid, lunObject(req.Name), "--adopt-from is for --rbd (a handover of an RBD LUN between two servers)")
		}
		r, err := parseAdoptFrom(req.AdoptFromURL)
		if err != nil {
			return metavol.LUN{}, refuse(ErrInvalid, lunObject(req.Name), "%v", err)
		}
		req.AdoptFrom = r
	}
	if req.RBD == "" && (req.CephConf != "" || req.CephID != "" || req.CephKeyring != "") {
		return metavol.LUN{}, refuse(ErrInvalid, lunObject(req.Name), "--ceph-conf, --ceph-id and --ceph-keyring are for --rbd (the cluster of the LUN's image)")
	}
	if req.RBD != "" {
		return m.createRBDLUN(req) // rbd.go
	}
	bs, err := checkCreateLUN(&req)
	if err != nil {
		return metavol.LUN{}, err
	}
	if err := checkIdentity(lunObject(req.Name), req.ID, req.NAA, req.Serial); err != nil {
		return metavol.LUN{}, err
	}
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return metavol.LUN{}, fmt.Errorf("lun %s: manager closed: %w", req.Name, ErrState)
	}
	// Name and path must be free, and the path allowed (checkLUNPath).
	var path string
	if req.Path != "" {
		p, err := filepath.Abs(req.Path)
		if err != nil {
			return metavol.LUN{}, invalidf("lun %s: path %q", req.Name, req.Path)
		}
		path = p
	}
	var vols []metavol.Volume
	err = m.db.View(func(tx *metavol.Tx) error {
		if _, err := tx.LUNByName(req.Name); err == nil {
			return fmt.Errorf("lun %s: %w", req.Name, ErrExists)
		} else if !errors.Is(err, metavol.ErrNotFound) {
			return err
		}
		if req.ID != "" {
			if l, err := tx.GetLUN(req.ID); err == nil {
				return refuse(ErrExists, lunObject(req.Name), "id %s is already lun %s's", req.ID, l.Name)
			} else if !errors.Is(err, metavol.ErrNotFound) {
				return err
			}
		}
		if path == "" {
			return nil
		}
		var err error
		vols, err = tx.Volumes()
		return err
	})
	if err != nil {
		return metavol.LUN{}, err
	}
	if path != "" {
		if err := m.checkLUNPath(req.Name, path, req.Force, vols); err != nil {
			return metavol.LUN{}, err
		}
		if err := checkParentDir(lunObject(req.Name), path); err != nil {
			return metavol.LUN{}, err
		}
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
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) && req.Size > 0 {
			f, err = volume.Create(path, req.Size, vopts)
			created = true
		} else {
			f, err = volume.Open(path, vopts)
		}
	}
	if err != nil {
		return metavol.LUN{}, fmt.Errorf("lun %s: %w", req.Name, tooLarge(req.Size, err))
	}
	fail := func(err error) (metavol.LUN, error) {
		f.Close()
		if created {
			os.Remove(f.Path())
		}
		return metavol.LUN{}, err
	}
	size, err := lunSize(req.Name, path, req.Size, f.Size(), bs)
	if err != nil {
		return fail(err)
	}
	if size > f.Size() {
		return fail(invalidf("lun %s: size %s is larger than %s (%s)", req.Name, sizeText(size), path, sizeText(f.Size())))
	}
	vrec.Kind = f.Kind()
	vrec.Size = f.Size()
	lrec := newLUNRecord(req.Name, size, bs, vrec.ID, now)
	lrec.ID = orDefault(req.ID, lrec.ID)
	lrec.NAA = orDefault(req.NAA, lrec.NAA)
	lrec.Serial = orDefault(req.Serial, lrec.Serial)
	if err := m.addLUN(vrec, lrec, m.fileVol(vrec.ID, f)); err != nil {
		return fail(err)
	}
	m.log.Debug().Str("lun", lrec.Name).Str("lun_id", lrec.ID).Int64("size", size).Str("path", vrec.Path).Bool("direct", vrec.Direct).Msg("LUN created")
	return lrec, nil
}

// checkCreateLUN applies the rules of a new LUN's request that need no
// lock: a name (ValidLUNName), the block size (512, the default, or
// 4096), the size (positive, a whole number of blocks, or 0 with a Path:
// the file's or device's size) and checkPath. It returns the block size.
// The rules on where a path may be are checkLUNPath's, then
// checkParentDir's, under the admin lock.
func checkCreateLUN(req *CreateLUNRequest) (uint32, error) {
	obj := lunObject(req.Name)
	if req.Name == "" {
		return 0, refuse(ErrInvalid, "lun", "a name is required")
	}
	if err := ValidLUNName(req.Name); err != nil {
		return 0, err
	}
	bs := req.BlockSize
	if bs == 0 {
		bs = 512
	}
	if !servedBlockSize(int64(bs)) {
		return 0, refuse(ErrInvalid, obj, "block size %d: must be 512 or 4096", req.BlockSize)
	}
	switch {
	case req.Size < 0:
		return 0, refuse(ErrInvalid, obj, "size %s is negative", sizeText(req.Size))
	case req.Size == 0 && req.Path == "":
		return 0, refuse(ErrInvalid, obj, "a size is required (for example --size 1GiB)")
	case req.Size != 0 && req.Size < int64(bs):
		return 0, refuse(ErrInvalid, obj, "size %s is too small: at least one block of %d bytes", sizeText(req.Size), bs)
	}
	if err := checkBlocks(obj, req.Size, bs); err != nil {
		return 0, err
	}
	if req.Path != "" {
		if err := checkPath(req.Path, req.Size); err != nil {
			return 0, refuse(ErrInvalid, obj, "%v", err)
		}
	}
	return bs, nil
}

// servedBlockSize reports whether lmtgt serves LUNs with blocks of bs
// bytes: 512 or 4096 (a created LUN's choice, an imported LUN's given).
func servedBlockSize(bs int64) bool { return bs == 512 || bs == 4096 }

// checkBlocks refuses a LUN size that is not a whole number of blocks.
func checkBlocks(obj string, size int64, bs uint32) error {
	if size%int64(bs) != 0 {
		return refuse(ErrInvalid, obj, "size %s is not a multiple of the block size %d", sizeText(size), bs)
	}
	return nil
}

// checkPath refuses a --path that cannot work before anything else looks
// at it: relative paths (the daemon's working directory is not the
// client's), devices that do not exist (lmtgt never creates files under
// /dev, but for /dev/shm, a tmpfs) and files that do not exist when no
// size says how large to create them. It only looks (stat), never
// creates; checkLUNPath then applies the rules about which paths lmtgt
// may use, and checkParentDir refuses a new file in a missing directory.
func checkPath(path string, size int64) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("path %s is not absolute", path)
	}
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("path %s: %w", path, err)
	case within(filepath.Clean(path), "/dev") && !within(filepath.Clean(path), "/dev/shm"):
		return fmt.Errorf("path %s: no such device", path)
	case size == 0:
		return fmt.Errorf("path %s does not exist: give --size to create a sparse file there", path)
	}
	return nil
}

// checkParentDir refuses a new file at path in a directory that does not
// exist (lmtgt creates the file, never its directories). Checked after
// checkLUNPath, whose refusals say more.
func checkParentDir(obj, path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return refuse(ErrInvalid, obj, "path %s: directory %s does not exist", path, filepath.Dir(path))
	}
	return nil
}

// lunSize is the size of a new LUN on a data volume of volSize bytes
// (what names it): the size asked for, or with 0 the volume's whole
// blocks, at least one.
func lunSize(name, what string, asked, volSize int64, bs uint32) (int64, error) {
	if asked != 0 {
		return asked, nil
	}
	size := volSize / int64(bs) * int64(bs)
	if size == 0 {
		return 0, invalidf("lun %s: %s holds less than one %d-byte block", name, what, bs)
	}
	return size, nil
}

// newLUNRecord is the record of a new LUN of size bytes in bs-byte
// blocks on data volume volID, with a new ID, NAA and serial.
func newLUNRecord(name string, size int64, bs uint32, volID string, now time.Time) metavol.LUN {
	return metavol.LUN{
		ID:        metavol.NewID(),
		Name:      name,
		Size:      size,
		BlockSize: bs,
		NAA:       metavol.NewNAA(),
		Serial:    metavol.NewSerial(),
		VolumeID:  volID,
		Created:   now,
	}
}

// checkNewDataVolume refuses a new LUN whose name is taken, or whose data
// volume (what names it) another volume record already is (same reports
// it).
func (m *Manager) checkNewDataVolume(name, what string, same func(metavol.Volume) bool) error {
	return m.db.View(func(tx *metavol.Tx) error {
		if _, err := tx.LUNByName(name); err == nil {
			return fmt.Errorf("lun %s: %w", name, ErrExists)
		} else if !errors.Is(err, metavol.ErrNotFound) {
			return err
		}
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		for _, v := range vols {
			if same(v) {
				return fmt.Errorf("lun %s: %s is already data volume %s: %w", name, what, v.ID, ErrExists)
			}
		}
		return nil
	})
}

// addLUN commits a new LUN and its data volume in one transaction and
// installs its routing entry, with ov as the volume's open handle.
func (m *Manager) addLUN(vrec metavol.Volume, lrec metavol.LUN, ov *openVol) error {
	if err := m.db.Update(func(tx *metavol.Tx) error {
		if err := tx.PutVolume(vrec); err != nil {
			return err
		}
		return tx.PutLUN(lrec)
	}); err != nil {
		return mapMetaErr("lun", lrec.Name, err)
	}
	d := &dataVol{rec: vrec}
	d.cur.Store(ov)
	m.mu.Lock()
	m.mu.vols[vrec.ID] = d
	m.mu.luns[lrec.ID] = m.newEntry(lrec)
	m.mu.Unlock()
	return nil
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

// ResizeLUN grows a LUN (and its data volume if it is smaller); an
// unchanged size changes nothing. Shrinking and resizing a LUN in a pair
// are refused.
func (m *Manager) ResizeLUN(name string, size int64) (metavol.LUN, error) {
	obj := lunObject(name)
	if err := ValidLUNName(name); err != nil {
		return metavol.LUN{}, err
	}
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.settled("lun " + name + ": resize"); err != nil {
		return metavol.LUN{}, err
	}
	e, l, err := m.entryByName(name)
	if err != nil {
		return l, err
	}
	switch {
	case size <= 0:
		return l, refuse(ErrInvalid, obj, "a new size is required (for example --size 2GiB)")
	case size%int64(l.BlockSize) != 0:
		return l, checkBlocks(obj, size, l.BlockSize)
	case size < l.Size:
		return l, refuse(ErrInvalid, obj, "size %s is smaller than the current %s: LUNs only grow", sizeText(size), sizeText(l.Size))
	case size == l.Size:
		return l, nil
	}
	if err := m.refuseOffline("resize", l); err != nil {
		return l, err
	}
	if p := m.pairOf(l.ID); p != nil {
		return l, fmt.Errorf("lun %s: resize refused: pair %s: %w", name, p.id, ErrInPair)
	}
	o, err := e.vol.get()
	if err != nil {
		return l, fmt.Errorf("lun %s: %w", name, err)
	}
	vrec := e.vol.rec
	if o.raw.Size() < size {
		if o.rbd != nil {
			if err := o.rbd.Resize(size); err != nil {
				return l, fmt.Errorf("lun %s: %w", name, rbdErr(err))
			}
		} else if o.local == nil {
			return l, invalidf("lun %s: size %s is larger than its remote data volume %s (%s); grow it there first", name, sizeText(size), vrec.Remote.URL(), sizeText(o.raw.Size()))
		} else if err := o.local.Resize(size); err != nil {
			return l, fmt.Errorf("lun %s: %w", name, tooLarge(size, err))
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
	m.log.Debug().Str("lun", name).Int64("size", size).Msg("LUN resized")
	return l, nil
}

// DeleteLUN removes a LUN. Refused while it is mapped to any target or in
// a pair. An owned data volume file is deleted; an existing file or device
// the LUN was created on is only forgotten.
func (m *Manager) DeleteLUN(name string) error {
	return m.DeleteLUNWith(name, DeleteLUNOptions{})
}

// DeleteLUNWith is DeleteLUN with options: DeleteImage also deletes an
// RBD image lmtgt did not create (one it created always goes).
func (m *Manager) DeleteLUNWith(name string, opts DeleteLUNOptions) error {
	if err := ValidLUNName(name); err != nil {
		return err
	}
	m.admin.Lock()
	defer m.admin.Unlock()
	err := m.deleteLUNLocked(name, opts)
	m.pruneClusters() // rbd.go: the last LUN of a cluster may have gone
	return err
}

// deleteLUNLocked is DeleteLUNWith with admin held (Retire scrubs and
// deletes under one hold).
func (m *Manager) deleteLUNLocked(name string, opts DeleteLUNOptions) error {
	obj := lunObject(name)
	if err := m.settled("lun " + name + ": delete"); err != nil {
		return err
	}
	e, l, err := m.entryByName(name)
	if err != nil {
		return err
	}
	if opts.DeleteImage && e.vol.rec.RBD == nil {
		return refuse(ErrInvalid, obj, "delete-image refused: its data volume is not an RBD image")
	}
	var vrec metavol.Volume
	err = m.db.Update(func(tx *metavol.Tx) error {
		ts, err := tx.Targets()
		if err != nil {
			return err
		}
		var where []string
		for _, t := range ts {
			for _, mp := range t.Mappings {
				if mp.LUNID == l.ID {
					where = append(where, fmt.Sprintf("%s LUN %d", t.IQN, mp.LUN))
				}
			}
		}
		if len(where) > 0 {
			return refuse(ErrMapped, obj, "mapped to a target (%s): unmap it first", strings.Join(where, ", "))
		}
		ps, err := tx.Pairs()
		if err != nil {
			return err
		}
		for _, p := range ps {
			if !pairHoldsLUNs(p.State) || (p.SourceLUN != l.ID && p.TargetLUN != l.ID) {
				continue
			}
			role, peer := "source", p.TargetLUN
			if p.TargetLUN == l.ID {
				role, peer = "target", p.SourceLUN
			}
			if pl, err := tx.GetLUN(peer); err == nil {
				peer = pl.Name
			}
			r := refuse(ErrInPair, obj, "in a migration pair (%s of pair %s with %s, %s): cancel or split it first", role, p.ID, peer, p.State)
			if m.refuseOffline("delete", l) != nil {
				r.Err = fmt.Errorf("%w: %w", ErrInPair, ErrOffline) // the pair could not be loaded
			}
			return r
		}
		if err := m.refuseOffline("delete", l); err != nil {
			return err
		}
		if p := m.pairOf(l.ID); p != nil {
			return fmt.Errorf("lun %s: delete refused: pair %s: %w", name, p.id, ErrInPair)
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
		var r *Refusal
		if errors.As(err, &r) || errors.Is(err, ErrInPair) || errors.Is(err, ErrOffline) {
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
	m.releaseFenceRecord(d, vrec, name) // fence.go
	held := rbdHeld(d)                  // rbd.go
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
	if err := m.removeRBDImage(name, vrec, opts.DeleteImage, held); err != nil {
		m.log.Warn().Err(err).Str("lun", name).Msg("LUN deleted, its RBD image not")
		return fmt.Errorf("LUN deleted, but: %w: %w", err, ErrUnavailable)
	}
	m.log.Debug().Str("lun", name).Str("lun_id", l.ID).Msg("LUN deleted")
	return nil
}

// DefaultSystemDirs are the locations a LUN's path may not be in (itself
// or where its symbolic links lead) unless the request says Force: the
// operating system's programs, libraries, configuration and boot files,
// the kernel's pseudo filesystems, runtime state and the package
// databases. /dev is handled apart (systemPathRule).
func DefaultSystemDirs() []string {
	return []string{
		"/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
		"/proc", "/run", "/sbin", "/sys", "/usr",
		"/var/lib/apt", "/var/lib/dpkg", "/var/lib/rpm", "/var/lib/systemd",
	}
}

// checkLUNPath applies the path rules to a new LUN's path (absolute, not
// necessarily existing), in this order; the first that refuses names the
// path and the condition:
//
//  1. Never (not even with Force): the meta volume directory, anything
//     else inside the data dir (lmtgt keeps there only the volumes it
//     creates itself, DataDir/volumes/<id>.img), the admin socket, and
//     anything that is the same file or device as one of these or as
//     another LUN's data volume (sameData): through a symbolic link, a
//     hard link or another device node; nor the block device (or the disk
//     holding the partition) that holds the data dir.
//  2. Unless Force: a system location (SystemDirs, default
//     DefaultSystemDirs), anything in /dev but a block device or a file
//     under /dev/shm, and a block device that holds a mounted filesystem.
//
// Both the path as given and the path with every symbolic link resolved
// are checked (the path as given first, then whether it is the same file
// as one in use, then the resolved path).
func (m *Manager) checkLUNPath(name, path string, force bool, vols []metavol.Volume) error {
	fi, err := os.Stat(path)
	if err != nil {
		fi = nil // still to be created (or unreadable: Open says why)
	}
	paths := []string{filepath.Clean(path)}
	if r := resolvePath(path); r != paths[0] {
		paths = append(paths, r)
	}
	if err := m.reservedPathRule(paths[0]); err != nil {
		return fmt.Errorf("lun %s: --path %s %w", name, path, err)
	}
	if fi != nil {
		for _, u := range m.inUse(vols) {
			if sameData(fi, u.path) {
				return fmt.Errorf("lun %s: --path %s is the same file or device as %s: %w", name, path, u.what, ErrExists)
			}
		}
		if fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			if err := m.holdsDataDir(fi); err != nil {
				return fmt.Errorf("lun %s: --path %s %w", name, path, err)
			}
		}
	}
	for _, v := range vols {
		if v.Path == path {
			return fmt.Errorf("lun %s: --path %s is already data volume %s: %w", name, path, v.ID, ErrExists)
		}
	}
	if err := m.reservedPathRule(paths[len(paths)-1]); err != nil {
		return fmt.Errorf("lun %s: --path %s %w", name, path, err)
	}
	if err := m.sameDirRule(path, true); err != nil {
		return fmt.Errorf("lun %s: --path %s %w", name, path, err)
	}
	if force {
		return nil
	}
	for _, c := range paths {
		if err := m.systemPathRule(c, fi); err != nil {
			return fmt.Errorf("lun %s: --path %s %w (give --force to use it anyway)", name, path, err)
		}
	}
	return nil
}

// volumeAllowed is the part of rule 1 of checkLUNPath that protects
// lmtgt's own files, for a volume record about to be opened (at startup or
// a reopen): a record written before the rule existed (or edited) that
// names a file of the meta volume or the admin socket, or the same file
// through any link, is never opened. (Other files inside the data dir that
// older versions accepted stay usable: they harm nothing.)
func (m *Manager) volumeAllowed(rec metavol.Volume) error {
	if rec.Owned && m.opts.DataDir != "" && rec.Path == m.volumePath(rec.ID) {
		return nil
	}
	for _, c := range uniq(filepath.Clean(rec.Path), resolvePath(rec.Path)) {
		if err := m.ownFileRule(c); err != nil {
			return fmt.Errorf("path %s %w: not opened", rec.Path, err)
		}
	}
	if err := m.sameDirRule(rec.Path, false); err != nil {
		return fmt.Errorf("path %s %w: not opened", rec.Path, err)
	}
	if fi, err := os.Stat(rec.Path); err == nil {
		for _, u := range m.inUse(nil) {
			if sameData(fi, u.path) {
				return fmt.Errorf("path %s is the same file or device as %s: not opened: %w", rec.Path, u.what, ErrExists)
			}
		}
	}
	return nil
}

// reservedPathRule refuses a path (cleaned or resolved) inside the meta
// volume directory or the data dir, or equal to the admin socket. The
// error reads after "--path P".
func (m *Manager) reservedPathRule(c string) error {
	if err := m.ownFileRule(c); err != nil {
		return err
	}
	if dd := m.opts.DataDir; dd != "" {
		abs, _ := filepath.Abs(dd)
		for _, d := range uniq(abs, resolvePath(abs)) {
			if within(c, d) {
				return invalidf("is inside the data directory %s, which holds only the volumes lmtgt creates itself (omit --path for one)", d)
			}
		}
	}
	return nil
}

// sameDirRule is rule 1 by device and inode rather than by name: p (or
// one of its existing parents) is the meta volume directory or, when
// dataDir is set, the data dir, reached through a name the path rules
// cannot see (a bind mount). Checked after them, so that their more
// precise refusals come first.
func (m *Manager) sameDirRule(p string, dataDir bool) error {
	if dir := m.db.Dir(); dir != "" && inDir(p, dir) {
		return invalidf("is inside the meta volume directory %s (through another mount of it)", dir)
	}
	if dd := m.opts.DataDir; dataDir && dd != "" && inDir(p, dd) {
		return invalidf("is inside the data directory %s (through another mount of it), which holds only the volumes lmtgt creates itself (omit --path for one)", dd)
	}
	return nil
}

// inDir reports whether p (clean, absolute) or one of its existing
// parents is the directory dir itself by device and inode: the same
// directory reached through another name a path comparison cannot see (a
// bind mount of the data dir or of the meta volume directory).
func inDir(p, dir string) bool {
	di, err := os.Stat(dir)
	if err != nil || !di.IsDir() {
		return false
	}
	for a := p; ; a = filepath.Dir(a) {
		if fi, err := os.Stat(a); err == nil && fi.IsDir() && os.SameFile(fi, di) {
			return true
		}
		if a == filepath.Dir(a) {
			return false
		}
	}
}

// ownFileRule refuses a path (cleaned or resolved) inside the meta volume
// directory or equal to the admin socket.
func (m *Manager) ownFileRule(c string) error {
	if dir := m.db.Dir(); dir != "" {
		for _, d := range uniq(filepath.Clean(dir), resolvePath(dir)) {
			if within(c, d) {
				return invalidf("is inside the meta volume directory %s", d)
			}
		}
	}
	if s := m.opts.AdminSocket; s != "" {
		for _, d := range uniq(filepath.Clean(s), resolvePath(s)) {
			if c == d {
				return invalidf("is the admin API socket")
			}
		}
	}
	return nil
}

// used is a file lmtgt already uses, and what for.
type used struct{ path, what string }

// inUse lists the files whose bytes lmtgt uses: the data volumes, the
// meta volume's files and the admin socket.
func (m *Manager) inUse(vols []metavol.Volume) []used {
	var out []used
	for _, v := range vols {
		out = append(out, used{v.Path, fmt.Sprintf("data volume %s (%s)", v.ID, v.Path)})
	}
	if dir := m.db.Dir(); dir != "" {
		if es, err := os.ReadDir(dir); err == nil {
			for _, e := range es {
				p := filepath.Join(dir, e.Name())
				out = append(out, used{p, "the meta volume's file " + p})
			}
		}
	}
	if s := m.opts.AdminSocket; s != "" {
		out = append(out, used{s, "the admin API socket " + s})
	}
	return out
}

// holdsDataDir refuses a block device that holds the data dir or the meta
// volume directory: the device of their filesystem, or the whole disk of
// that partition.
func (m *Manager) holdsDataDir(fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	for _, d := range uniq(m.db.Dir(), m.opts.DataDir) {
		if d == "" {
			continue
		}
		var ds syscall.Stat_t
		if syscall.Stat(d, &ds) != nil {
			continue
		}
		for _, h := range blockHolders(uint64(ds.Dev)) {
			if h == uint64(st.Rdev) {
				return invalidf("is the block device holding %s", d)
			}
		}
	}
	return nil
}

// systemPathRule refuses (unless Force) a path (cleaned or resolved) in a
// system location, in /dev but neither a block device nor under /dev/shm,
// or a block device holding a mounted filesystem.
func (m *Manager) systemPathRule(c string, fi os.FileInfo) error {
	dirs := m.opts.SystemDirs
	if dirs == nil {
		dirs = DefaultSystemDirs()
	}
	for _, d := range dirs {
		if within(c, filepath.Clean(d)) {
			return invalidf("is in the system location %s", d)
		}
	}
	block := fi != nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	if within(c, "/dev") && !within(c, "/dev/shm") && !block {
		return invalidf("is in /dev but not a block device")
	}
	if block {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		for _, mt := range mounts() {
			for _, h := range blockHolders(mt.dev) {
				if h == uint64(st.Rdev) {
					return invalidf("holds the filesystem mounted at %s", mt.dir)
				}
			}
		}
	}
	return nil
}

// sameData reports whether fi (a stat of a new --path) names the bytes of
// the file at path: the same file through a symbolic or hard link, or the
// same block device through another device node.
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

// resolvePath is p (absolute) with every symbolic link resolved; for a
// path that does not exist yet, its deepest existing parent is resolved.
func resolvePath(p string) string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	dir := filepath.Dir(p)
	if dir == p {
		return p
	}
	return filepath.Join(resolvePath(dir), filepath.Base(p))
}

// within reports whether path p is dir or inside it (both clean).
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

func uniq(a, b string) []string {
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}

// blockHolders is the block device dev and, for a partition, the disk
// that holds it (from /sys/dev/block).
func blockHolders(dev uint64) []uint64 {
	out := []uint64{dev}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
	if _, err := os.Stat(filepath.Join(sys, "partition")); err != nil {
		return out
	}
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return out
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "dev"))
	if err != nil {
		return out
	}
	var maj, min uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err == nil {
		out = append(out, unix.Mkdev(maj, min))
	}
	return out
}

type mount struct {
	dev uint64
	dir string
}

// mounts lists the mounted filesystems' devices (/proc/self/mountinfo).
func mounts() []mount {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mount
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err != nil || maj == 0 {
			continue // 0: no device (tmpfs, proc, overlay ...)
		}
		out = append(out, mount{unix.Mkdev(maj, min), f[4]})
	}
	return out
}

// tooLarge turns EFBIG (a size the filesystem cannot hold) into ErrTooLarge.
func tooLarge(size int64, err error) error {
	if errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("size %s: %w (%v)", sizeText(size), ErrTooLarge, err)
	}
	return err
}
