package metavol

import (
	"fmt"
	"maps"
)

// ALUA records. A target's port identity (its target port group and its
// relative target port identifier) lives in its Target record (Group,
// Port); a LUN's access states live under "alua/LUNID", one record per
// LUN, holding only the groups whose state is not the default. What the
// state names mean, and which names are valid, is package target's rule;
// metavol only stores them and keeps relative port IDs unique.
const prefixALUA = "alua/"

// MaxPortID is the highest relative target port identifier and target
// port group ID (both are 16-bit fields in SCSI; 0 is reserved).
const MaxPortID = 65535

// DefaultGroup is the target port group of a target created without one.
const DefaultGroup = 1

// LUNAccess is the record of a LUN's ALUA access states by target port
// group ID. A group that is absent has the default state.
type LUNAccess struct {
	LUNID  string            `json:"lun_id"`
	States map[uint16]string `json:"states"`
}

// GetLUNAccess returns a LUN's stored access states by group (nil, nil
// when none is stored).
func (tx *Tx) GetLUNAccess(lunID string) (map[uint16]string, error) {
	var a LUNAccess
	ok, err := tx.exists(prefixALUA + lunID)
	if err != nil {
		return nil, fmt.Errorf("alua states of lun %q: read: %w", lunID, err)
	}
	if !ok {
		return nil, nil
	}
	if err := tx.getJSON(prefixALUA+lunID, "alua states of lun", lunID, &a); err != nil {
		return nil, err
	}
	return a.States, nil
}

// PutLUNAccess stores a LUN's access states by group; an empty map
// deletes the record (every group has the default state).
func (tx *Tx) PutLUNAccess(lunID string, states map[uint16]string) error {
	if err := need("alua states", "lun id", lunID); err != nil {
		return err
	}
	for g := range states {
		if g == 0 {
			return fmt.Errorf("alua states of lun %q: target port group 0: %w", lunID, ErrInvalid)
		}
	}
	if len(states) == 0 {
		if err := tx.txn.Delete([]byte(prefixALUA + lunID)); err != nil {
			return fmt.Errorf("alua states of lun %q: delete: %w", lunID, err)
		}
		return nil
	}
	return tx.putJSON(prefixALUA+lunID, "alua states of lun", lunID, LUNAccess{LUNID: lunID, States: maps.Clone(states)})
}

// LUNAccesses lists every stored LUN access record, by LUN ID.
func (tx *Tx) LUNAccesses() ([]LUNAccess, error) {
	return list[LUNAccess](tx, prefixALUA, "alua states of lun")
}

// fillTargetPort gives t the default group when it has none and a free
// relative port ID when it has none, and refuses a port ID another target
// holds (ErrExists). Called by PutTarget.
func (tx *Tx) fillTargetPort(t *Target) error {
	if t.Group == 0 {
		t.Group = DefaultGroup
	}
	others, err := tx.Targets()
	if err != nil {
		return err
	}
	used := map[uint16]string{}
	for _, o := range others {
		if o.IQN != t.IQN && o.Port != 0 {
			used[o.Port] = o.IQN
		}
	}
	if t.Port != 0 {
		if owner, ok := used[t.Port]; ok {
			return fmt.Errorf("target %q: relative target port ID %d is used by target %s: %w", t.IQN, t.Port, owner, ErrExists)
		}
		return nil
	}
	for p := 1; p <= MaxPortID; p++ {
		if _, ok := used[uint16(p)]; !ok {
			t.Port = uint16(p)
			return nil
		}
	}
	return fmt.Errorf("target %q: every relative target port ID (1..%d) is in use: %w", t.IQN, MaxPortID, ErrInvalid)
}

// fillTargetPorts gives every target record written before targets had a
// port group and a relative port ID (Group or Port 0) its defaults, in
// IQN order, so that every record has a port ID before anything is
// served. Run by Open.
func (db *DB) fillTargetPorts() error {
	var missing bool
	if err := db.View(func(tx *Tx) error {
		ts, err := tx.Targets()
		for _, t := range ts {
			missing = missing || t.Port == 0 || t.Group == 0
		}
		return err
	}); err != nil {
		return fmt.Errorf("meta volume %s: read targets: %w", db.dir, err)
	}
	if !missing {
		return nil
	}
	err := db.Update(func(tx *Tx) error {
		ts, err := tx.Targets()
		if err != nil {
			return err
		}
		for _, t := range ts {
			if t.Port != 0 && t.Group != 0 {
				continue
			}
			if err := tx.PutTarget(t); err != nil {
				return err
			}
			db.log.Info().Str("target", t.IQN).Msg("target record given its ALUA port group and relative port ID")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("meta volume %s: assign relative target port IDs: %w", db.dir, err)
	}
	return nil
}
