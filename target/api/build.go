package api

import (
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// VolumeOpener returns the host I/O handle of a LUN ID (lm.Manager.LUN).
type VolumeOpener func(lunID string) (volume.Volume, error)

// BuildTargets turns lm's configuration snapshot into the full list
// target.Server.Apply takes: every mapping resolved to its LUN record
// (identity, block size) and its I/O handle from open. A mapping whose LUN
// record is missing, whose NAA or ALUA states are malformed or whose
// handle cannot be opened is left out and reported in skipped, so one bad LUN never keeps
// the others from being served.
func BuildTargets(cfg lm.TargetConfig, open VolumeOpener) (targets []target.Target, skipped []error) {
	recs, luns := cfg.Targets, cfg.LUNs
	reported := map[string]bool{}
	for _, t := range recs {
		for _, m := range t.Mappings {
			if err := cfg.LUNErrors[m.LUNID]; err != nil && !reported[m.LUNID] {
				reported[m.LUNID] = true
				skipped = append(skipped, fmt.Errorf("target %s LUN %d: lun %s: %w", t.IQN, m.LUN, m.LUNID, err))
			}
		}
	}
	for _, rec := range recs {
		t := target.Target{
			IQN:        rec.IQN,
			Group:      rec.Group,
			RelPort:    rec.Port,
			AllowAll:   rec.AllowAll,
			Initiators: append([]string(nil), rec.Initiators...),
			Portals:    append([]string(nil), rec.Portals...),
		}
		if rec.CHAP != nil {
			t.CHAP = &iscsi.CHAP{
				User: rec.CHAP.User, Secret: rec.CHAP.Secret,
				MutualUser: rec.CHAP.MutualUser, MutualSecret: rec.CHAP.MutualSecret,
			}
		}
		for _, m := range rec.Mappings {
			l, ok := luns[m.LUNID]
			if !ok {
				continue // reported above
			}
			naa, err := parseNAA(l.NAA)
			if err != nil {
				skipped = append(skipped, fmt.Errorf("target %s LUN %d: lun %s: %w", rec.IQN, m.LUN, l.Name, err))
				continue
			}
			states, err := groupStates(cfg.Access[l.ID])
			if err != nil {
				skipped = append(skipped, fmt.Errorf("target %s LUN %d: lun %s: ALUA states: %w", rec.IQN, m.LUN, l.Name, err))
				continue
			}
			v, err := open(l.ID)
			if err != nil {
				skipped = append(skipped, fmt.Errorf("target %s LUN %d: lun %s: %w", rec.IQN, m.LUN, l.Name, err))
				continue
			}
			t.LUNs = append(t.LUNs, target.LUN{
				Number:     m.LUN,
				ID:         l.ID,
				Name:       l.Name,
				NAA:        naa,
				Serial:     l.Serial,
				Adopted:    adopted(l.Adopted),
				BlockSize:  l.BlockSize,
				ALUA:       states,
				Volume:     v,
				ReadOnly:   m.ReadOnly,
				Initiators: append([]string(nil), m.Initiators...),
			})
		}
		sort.Slice(t.LUNs, func(i, j int) bool { return t.LUNs[i].Number < t.LUNs[j].Number })
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].IQN < targets[j].IQN })
	return targets, skipped
}

// adopted converts a LUN record's adopted identity for the target.
func adopted(a *metavol.Identity) *target.Identity {
	if a == nil {
		return nil
	}
	return &target.Identity{Vendor: a.Vendor, Product: a.Product, Revision: a.Revision, Designators: a.Designators}
}

// parseNAA decodes the 32 hex digits of a LUN's NAA identifier.
func parseNAA(s string) ([16]byte, error) {
	var out [16]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(out) {
		return out, fmt.Errorf("NAA identifier %q is not 32 hex digits", s)
	}
	copy(out[:], b)
	return out, nil
}
