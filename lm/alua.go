package lm

import (
	"maps"

	"github.com/lmtgt/lmtgt/metavol"
)

// ALUA configuration (metavol/alua.go holds the records, package target
// serves them). A target's port identity, its target port group and its
// relative target port ID, is in its target record; a LUN's access states
// are one record per LUN, holding only the groups whose state is not the
// default. Which IDs and state names are valid, and which state is the
// default, is package target's rule: lm does not import target, so the
// API checks the values there and passes the checked ones in; lm persists
// them and applies them live like every target change (commitApply), and
// metavol keeps relative port IDs unique.

// ALUAConfig is the ALUA configuration read in one snapshot.
type ALUAConfig struct {
	Targets []metavol.Target
	// LUNs are one LUN or every LUN (ALUA's lunName).
	LUNs []metavol.LUN
	// Access holds the LUNs' stored access states by LUN ID, then by
	// target port group ID.
	Access map[string]map[uint16]string
}

// ALUA reads the targets and the access states of the LUN called lunName,
// or of every LUN when lunName is "" (a "not found" Refusal for an
// unknown one).
func (m *Manager) ALUA(lunName string) (ALUAConfig, error) {
	c := ALUAConfig{Access: map[string]map[uint16]string{}}
	err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		if c.Targets, err = tx.Targets(); err != nil {
			return err
		}
		if c.LUNs, err = oneOrAll(lunName, tx.LUNByName, tx.LUNs, lunObject(lunName)); err != nil {
			return err
		}
		for _, l := range c.LUNs {
			if c.Access[l.ID], err = tx.GetLUNAccess(l.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return c, err
}

// SetTargetPort puts a target into target port group group and/or gives
// it the relative target port ID port (nil: unchanged), live, and returns
// the new record. The IDs are checked by the caller; a port ID another
// target holds is refused by metavol (metavol.ErrExists), an unknown
// target as not found; nothing changes then.
func (m *Manager) SetTargetPort(iqn string, group, port *uint16) (metavol.Target, error) {
	if group == nil && port == nil {
		return metavol.Target{}, refuse(ErrInvalid, targetObject(iqn), "give a target port group and/or a relative target port ID")
	}
	var out metavol.Target
	err := m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		if group != nil {
			t.Group = *group
		}
		if port != nil {
			t.Port = *port
		}
		out = *t
		return nil
	})
	return out, err
}

// SetLUNAccess stores the access state of the LUN called lunName in
// target port group group, live; state "" removes the group's record (it
// has the default state again). The group and state are checked by the
// caller; an unknown LUN is refused as not found and nothing changes.
func (m *Manager) SetLUNAccess(lunName string, group uint16, state string) error {
	obj := lunObject(lunName)
	return m.commitApply(obj, func(tx *metavol.Tx) (func(*metavol.Tx) error, error) {
		l, err := tx.LUNByName(lunName)
		if err != nil {
			return nil, orNotFound(err, obj)
		}
		old, err := tx.GetLUNAccess(l.ID)
		if err != nil {
			return nil, err
		}
		states := maps.Clone(old)
		if states == nil {
			states = map[uint16]string{}
		}
		if state == "" {
			delete(states, group)
		} else {
			states[group] = state
		}
		undo := func(tx *metavol.Tx) error { return tx.PutLUNAccess(l.ID, old) }
		return undo, tx.PutLUNAccess(l.ID, states)
	})
}
