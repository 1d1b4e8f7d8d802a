package lm

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/lmtgt/lmtgt/metavol"
)

// Retire and clean up (issue 11; Huawei `delete lun_migration
// is_delete_target`, PowerPath cleanup): after a split or a commit, the
// target LUN of the ended pair holds the old volume. Retire deletes that
// LUN, optionally scrubbing its volume first; DeletePairRecords forgets
// the ended pair records of a source.
//
// Decisions:
//   - Retire acts on the last ended pair of the source, which must be
//     split; a source with a pair in progress (or switched: commit it
//     first) is refused. The old LUN must not be mapped to a target (the
//     LUN delete's rule): the refusal names the mapping.
//   - The volume: one lmtgt created (a file in the data dir, an RBD image
//     it created) is deleted with the LUN; another file (or an RBD image)
//     only with DeleteVolume; a block device or a remote (iSCSI) volume is
//     never deleted (DeleteVolume is refused for it: scrub it instead).
//     The result says which happened.
//   - Scrub: the whole volume is discarded (volume.Unmap: a hole punched,
//     or zeros written where the file system or device cannot punch), then
//     read back; whatever did not read as zeros is written with zeros,
//     and the volume is synced, all before the LUN is deleted. The result
//     says "discard" or "discard+zero".

// RetireOptions says what Retire does besides deleting the old LUN.
type RetireOptions struct {
	// Scrub discards (then zeroes where needed) the old volume first.
	Scrub bool
	// DeleteVolume deletes the old volume even if lmtgt did not create
	// it (a file or an RBD image; never a block device or remote LUN).
	DeleteVolume bool
}

// RetireResult reports a retire.
type RetireResult struct {
	Source string // the source LUN of the ended pair
	LUN    string // the retired (old) LUN
	Volume string // its data volume ID
	Path   string // the volume's file or device ("" for remote, RBD)
	// Scrub: "" (not asked), "discard" or "discard+zero".
	Scrub string
	// VolumeDeleted says whether the volume itself is gone; VolumeNote
	// says why not when it is kept.
	VolumeDeleted bool
	VolumeNote    string
}

// Retire deletes the old LUN of the source's last split pair (the
// target LUN, which holds the old volume after a split or a commit) and,
// depending on opts and on who created it, its volume.
func (m *Manager) Retire(source string, opts RetireOptions) (RetireResult, error) {
	obj := pairObject(source)
	m.admin.Lock()
	defer m.admin.Unlock()
	if m.isClosed() {
		return RetireResult{}, fmt.Errorf("retire %s: manager closed: %w", source, ErrState)
	}
	if err := m.settled("retire " + source); err != nil {
		return RetireResult{}, err
	}
	switch p, err := m.activePair(source); {
	case err == nil:
		return RetireResult{}, refuse(ErrState, obj, "retire refused: pair %s is %s (retire follows a split or a commit)", p.id, p.getState())
	case errors.Is(err, ErrOffline):
		return RetireResult{}, fmt.Errorf("retire refused: %w", err) // a pair that could not be loaded
	}
	var last *metavol.Pair
	for _, r := range m.endedNamed(m.finishedRecords(), source) { // sessionref.go: source, ID or target
		if last == nil || r.Created.After(last.Created) {
			last = &r
		}
	}
	if last == nil {
		return RetireResult{}, refuse(ErrNotFound, obj, "retire refused: no ended migration of %s on record", source)
	}
	if last.State != StateSplit.String() {
		return RetireResult{}, refuse(ErrState, obj, "retire refused: the last migration of %s is %s, not split", source, last.State)
	}
	old := m.lunName(last.TargetLUN)
	if old == last.TargetLUN {
		return RetireResult{}, refuse(ErrNotFound, obj, "retire refused: the old LUN (ID %s) is gone already", last.TargetLUN)
	}
	e, l, err := m.entryByName(old)
	if err != nil {
		return RetireResult{}, err
	}
	var vrec metavol.Volume
	var where []string
	if err := m.db.View(func(tx *metavol.Tx) error {
		ts, err := tx.Targets()
		if err != nil {
			return err
		}
		for _, t := range ts {
			for _, mp := range t.Mappings {
				if mp.LUNID == l.ID {
					where = append(where, fmt.Sprintf("%s LUN %d", t.IQN, mp.LUN))
				}
			}
		}
		vrec, err = tx.GetVolume(l.VolumeID)
		return err
	}); err != nil {
		return RetireResult{}, mapMetaErr("lun", old, err)
	}
	if len(where) > 0 {
		return RetireResult{}, refuse(ErrMapped, lunObject(old), "retire refused: the old LUN is mapped (%v): unmap it first", where)
	}
	res := RetireResult{Source: source, LUN: old, Volume: vrec.ID, Path: vrec.Path}
	removeFile := false
	switch {
	case vrec.Owned:
		res.VolumeDeleted = true
	case !opts.DeleteVolume:
		res.VolumeNote = "kept: lmtgt did not create it (--delete-volume deletes it)"
	case vrec.RBD != nil:
		res.VolumeDeleted = true
	case vrec.Remote != nil || !regularFile(vrec.Path):
		return RetireResult{}, refuse(ErrInvalid, lunObject(old), "retire refused: --delete-volume: its volume %s is not a file lmtgt can delete (a device or a remote LUN): use --scrub", volumeWhere(vrec))
	default:
		res.VolumeDeleted, removeFile = true, true
	}
	if opts.Scrub {
		how, err := scrub(e)
		if err != nil {
			return RetireResult{}, fmt.Errorf("retire %s: scrub of %s (%s): %w (nothing deleted)", source, old, volumeWhere(vrec), err)
		}
		res.Scrub = how
	}
	if err := m.deleteLUNLocked(old, DeleteLUNOptions{DeleteImage: opts.DeleteVolume && vrec.RBD != nil}); err != nil {
		return RetireResult{}, fmt.Errorf("retire %s: %w", source, err)
	}
	if removeFile {
		if err := os.Remove(vrec.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			res.VolumeDeleted = false
			res.VolumeNote = "LUN deleted, the file not: " + err.Error()
		}
	}
	m.log.Info().Str("source", source).Str("lun", old).Str("volume", vrec.ID).Str("scrub", res.Scrub).
		Bool("volume_deleted", res.VolumeDeleted).Msg("old LUN retired")
	return res, nil
}

func regularFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

func volumeWhere(v metavol.Volume) string {
	switch {
	case v.Path != "":
		return v.Path
	case v.Remote != nil:
		return v.Remote.URL()
	case v.RBD != nil:
		return "rbd"
	}
	return v.ID
}

// scrub discards the LUN's whole volume, reads it back and writes zeros
// where the discard left data, then syncs. The caller holds admin and has
// checked that no pair and no target uses the LUN.
func scrub(e *lunEntry) (string, error) {
	o, err := e.vol.get()
	if err != nil {
		return "", err
	}
	size := o.raw.Size()
	how := "discard"
	if err := o.v.Unmap(0, size); err != nil {
		how = "discard failed (" + err.Error() + "), zero"
	}
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	zero := make([]byte, chunk)
	zeroed := false
	for off := int64(0); off < size; off += chunk {
		n := min(int64(chunk), size-off)
		if _, err := o.v.ReadAt(buf[:n], off); err != nil {
			return "", fmt.Errorf("read back at %d: %w", off, err)
		}
		if bytes.Equal(buf[:n], zero[:n]) {
			continue
		}
		if _, err := o.v.WriteAt(zero[:n], off); err != nil {
			return "", fmt.Errorf("zero at %d: %w", off, err)
		}
		zeroed = true
	}
	if zeroed && how == "discard" {
		how = "discard+zero"
	}
	if err := o.v.Sync(); err != nil {
		return "", fmt.Errorf("sync: %w", err)
	}
	return how, nil
}

// DeletePairRecords forgets the ended pair records (split; a cancelled
// one left by a crash) of the LUN named source, and returns their IDs. A
// source with a pair in progress keeps it (refused if it has no ended
// record at all).
func (m *Manager) DeletePairRecords(source string) ([]string, error) {
	obj := pairObject(source)
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.settled("pair records of " + source + ": delete"); err != nil {
		return nil, err
	}
	var ids []string
	err := m.db.Update(func(tx *metavol.Tx) error {
		ps, err := tx.Pairs()
		if err != nil {
			return err
		}
		var ended []metavol.Pair
		for _, r := range ps {
			if st, err := ParseState(r.State); err == nil && st.Final() && st != StateFaulty {
				ended = append(ended, r)
			}
		}
		for _, r := range m.endedNamed(ended, source) { // sessionref.go: source, ID or target
			if err := tx.DeletePair(r.ID); err != nil {
				return err
			}
			ids = append(ids, r.ID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migration delete %s: %w", source, err)
	}
	if len(ids) == 0 {
		if p, err := m.activePair(source); err == nil {
			return nil, refuse(ErrState, obj, "delete refused: pair %s is %s and no ended migration is on record (cancel, split or commit it first)", p.id, p.getState())
		}
		return nil, refuse(ErrNotFound, obj, "no ended migration of %s on record", source)
	}
	m.log.Info().Str("source", source).Strs("pairs", ids).Msg("ended migration records deleted")
	return ids, nil
}
