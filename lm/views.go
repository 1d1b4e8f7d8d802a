package lm

import (
	"slices"
	"sort"

	"github.com/lmtgt/lmtgt/metavol"
)

// The read side of the admin operations on LUNs and targets: what `lun
// show` and `target show` report, built from one meta volume snapshot plus
// the Manager's live state. Plain structs without JSON tags: target/api
// converts each to its wire type in one place.

// LUNInfo is a LUN as `lun show` reports it.
type LUNInfo struct {
	LUN metavol.LUN
	// Volume is the data volume's record; nil when it has none.
	Volume *metavol.Volume
	// Mappings are where the LUN is exported.
	Mappings []LUNMapping
	// Pair is set while the LUN is in a pair that still holds it.
	Pair *LUNPair
	// Status says whether the LUN serves host I/O.
	Status LUNStatus
	// RemoteSession is the initiator session state of a remote data
	// volume (RemoteState); "" for a local one.
	RemoteSession string
	// Fence is the fence on a remote data volume's old path (Fence);
	// FenceNone for a local one.
	Fence FenceStatus
	// RBD is the state of an RBD data volume (RBDState); nil for others.
	RBD *RBDStatus
}

// LUNMapping is one export of a LUN: a target and a LUN number.
type LUNMapping struct {
	Target string
	Number uint64
	// ReadOnly and Initiators: the mapping's write protection and mask.
	ReadOnly   bool
	Initiators []string
}

// LUNPair is a LUN's role in a pair.
type LUNPair struct {
	Role   string // "source" or "target"
	PairID string
	Peer   string // the other LUN's name (its ID if it has no record)
	State  string
}

// pairHoldsLUNs reports whether a pair record in this state still holds
// its LUNs: every state but the final split and cancelled (a faulty pair
// holds them until it is cancelled).
func pairHoldsLUNs(state string) bool {
	return state != StateSplit.String() && state != StateCancelled.String()
}

// oneOrAll returns every record when key is "", else the one get finds
// (a "not found" Refusal about obj if there is none).
func oneOrAll[T any](key string, get func(string) (T, error), all func() ([]T, error), obj string) ([]T, error) {
	if key == "" {
		return all()
	}
	r, err := get(key)
	if err != nil {
		return nil, orNotFound(err, obj)
	}
	return []T{r}, nil
}

// LUNInfos returns every LUN, sorted by name.
func (m *Manager) LUNInfos() ([]LUNInfo, error) { return m.lunInfos("") }

// LUNInfo returns the LUN called name; a name that breaks the name rule is
// refused with the rule, not looked up.
func (m *Manager) LUNInfo(name string) (LUNInfo, error) {
	if err := ValidLUNName(name); err != nil {
		return LUNInfo{}, err
	}
	out, err := m.lunInfos(name)
	if err != nil {
		return LUNInfo{}, err
	}
	return out[0], nil
}

// lunInfos builds the LUN infos (all when name is "", else the one or a
// "not found" Refusal) from one snapshot.
func (m *Manager) lunInfos(name string) ([]LUNInfo, error) {
	var out []LUNInfo
	err := m.db.View(func(tx *metavol.Tx) error {
		luns, err := oneOrAll(name, tx.LUNByName, tx.LUNs, lunObject(name))
		if err != nil {
			return err
		}
		targets, err := tx.Targets()
		if err != nil {
			return err
		}
		pairs, err := tx.Pairs()
		if err != nil {
			return err
		}
		names := map[string]string{} // LUN ID -> name, for pair peers
		for _, l := range luns {
			names[l.ID] = l.Name
		}
		peerName := func(id string) string {
			if n, ok := names[id]; ok {
				return n
			}
			if l, err := tx.GetLUN(id); err == nil {
				names[id] = l.Name
				return l.Name
			}
			return id
		}
		for _, l := range luns {
			info := LUNInfo{LUN: l}
			if v, err := tx.GetVolume(l.VolumeID); err == nil {
				info.Volume = &v
			}
			for _, t := range targets {
				for _, mp := range t.Mappings {
					if mp.LUNID == l.ID {
						info.Mappings = append(info.Mappings, LUNMapping{Target: t.IQN, Number: mp.LUN, ReadOnly: mp.ReadOnly, Initiators: slices.Clone(mp.Initiators)})
					}
				}
			}
			for _, p := range pairs {
				if !pairHoldsLUNs(p.State) {
					continue
				}
				switch l.ID {
				case p.SourceLUN:
					info.Pair = &LUNPair{Role: "source", PairID: p.ID, Peer: peerName(p.TargetLUN), State: p.State}
				case p.TargetLUN:
					info.Pair = &LUNPair{Role: "target", PairID: p.ID, Peer: peerName(p.SourceLUN), State: p.State}
				}
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Status = m.LUNStatus(out[i].LUN.ID)
		if v := out[i].Volume; v != nil && v.Remote != nil {
			out[i].RemoteSession = m.RemoteState(out[i].LUN.ID)
			out[i].Fence = m.Fence(out[i].LUN.ID)
		}
		if st, ok := m.RBDState(out[i].LUN.ID); ok {
			out[i].RBD = &st
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LUN.Name < out[j].LUN.Name })
	return out, nil
}

// TargetInfo is a target as `target show` reports it: its record (which
// holds the CHAP secrets: never show them) and its LUNs by number.
type TargetInfo struct {
	Target metavol.Target
	LUNs   []TargetLUN
}

// TargetLUN is one LUN number of a target; Name, Size and BlockSize are
// empty when the LUN has no record.
type TargetLUN struct {
	Number    uint64
	ID        string
	Name      string
	Size      int64
	BlockSize uint32
	// ReadOnly and Initiators are the mapping's write protection and
	// initiator mask (MapOptions).
	ReadOnly   bool
	Initiators []string
}

// TargetInfos returns every target, sorted by IQN.
func (m *Manager) TargetInfos() ([]TargetInfo, error) { return m.targetInfos("") }

// TargetInfo returns one target (a "not found" Refusal if there is none).
func (m *Manager) TargetInfo(iqn string) (TargetInfo, error) {
	out, err := m.targetInfos(iqn)
	if err != nil {
		return TargetInfo{}, err
	}
	return out[0], nil
}

func (m *Manager) targetInfos(iqn string) ([]TargetInfo, error) {
	var out []TargetInfo
	err := m.db.View(func(tx *metavol.Tx) error {
		recs, err := oneOrAll(iqn, tx.GetTarget, tx.Targets, targetObject(iqn))
		if err != nil {
			return err
		}
		for _, t := range recs {
			info := TargetInfo{Target: t}
			for _, mp := range t.Mappings {
				tl := TargetLUN{Number: mp.LUN, ID: mp.LUNID, ReadOnly: mp.ReadOnly, Initiators: slices.Clone(mp.Initiators)}
				if l, err := tx.GetLUN(mp.LUNID); err == nil {
					tl.Name, tl.Size, tl.BlockSize = l.Name, l.Size, l.BlockSize
				}
				info.LUNs = append(info.LUNs, tl)
			}
			sort.Slice(info.LUNs, func(i, j int) bool { return info.LUNs[i].Number < info.LUNs[j].Number })
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target.IQN < out[j].Target.IQN })
	return out, nil
}
