package api

import (
	"sort"
	"strings"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Targets, LUN mappings, ACLs, CHAP and the discovery CHAP: lm checks,
// persists and applies every change (lm/targets.go); these translate.

func targetObject(iqn string) string { return "target " + iqn }

const discoveryObject = "discovery"

// Targets lists every target, sorted by IQN.
func (s *Service) Targets() ([]wire.Target, error) {
	infos, err := s.lm.TargetInfos()
	if err != nil {
		return nil, toWire(err, targetObject(""))
	}
	return viewsOf(infos, targetView), nil
}

// Target shows one target and the iSCSI sessions logged in to it.
func (s *Service) Target(iqn string) (wire.Target, error) {
	info, err := s.lm.TargetInfo(iqn)
	if err != nil {
		return wire.Target{}, toWire(err, targetObject(iqn))
	}
	t := targetView(info)
	if s.exp == nil {
		return t, nil
	}
	for _, si := range s.exp.Sessions() {
		if si.Target == iqn {
			t.Sessions = append(t.Sessions, wire.Session{
				Initiator: si.Initiator, ISID: si.ISID, TSIH: si.TSIH, Remote: si.Remote,
				HeaderDigest: si.HeaderDigest, DataDigest: si.DataDigest,
			})
		}
	}
	sort.Slice(t.Sessions, func(i, j int) bool { return t.Sessions[i].TSIH < t.Sessions[j].TSIH })
	return t, nil
}

// changed answers a target change: the target as it is now, or the error.
func (s *Service) changed(iqn string, err error) (wire.Target, error) {
	if err != nil {
		return wire.Target{}, toWire(err, targetObject(iqn))
	}
	return s.Target(iqn)
}

// CreateTarget creates a target with no LUNs, no initiators and no CHAP.
func (s *Service) CreateTarget(iqn string, portals ...string) (wire.Target, error) {
	err := s.lm.CreateTargetOn(iqn, portals)
	if err == nil {
		s.log.Debug().Str("iqn", iqn).Strs("portals", portals).Msg("target created")
	}
	return s.changed(iqn, err)
}

// AddPortal adds a portal to a target's portal group.
func (s *Service) AddPortal(iqn, portal string) (wire.Target, error) {
	err := s.lm.AddTargetPortal(iqn, portal)
	if err == nil {
		s.log.Debug().Str("iqn", iqn).Str("portal", portal).Msg("portal added to the target")
	}
	return s.changed(iqn, err)
}

// RemovePortal removes a portal (or ALL: the whole group) from a target.
func (s *Service) RemovePortal(iqn, portal string) (wire.Target, error) {
	p := portal
	if strings.EqualFold(p, wire.AllInitiators) {
		p = ""
	}
	err := s.lm.RemoveTargetPortal(iqn, p)
	if err == nil {
		s.log.Debug().Str("iqn", iqn).Str("portal", portal).Msg("portal removed from the target")
	}
	return s.changed(iqn, err)
}

// DeleteTarget deletes a target; with LUNs mapped only when force is set.
func (s *Service) DeleteTarget(iqn string, force bool) error {
	if err := s.lm.DeleteTarget(iqn, force); err != nil {
		return toWire(err, targetObject(iqn))
	}
	s.log.Debug().Str("iqn", iqn).Msg("target deleted")
	return nil
}

// Map exports a LUN on a target at a LUN number (the lowest free one when
// req.Number is nil).
func (s *Service) Map(iqn string, req wire.MapLUN) (wire.Target, error) {
	n, err := s.lm.MapLUNWith(iqn, req.LUN, lm.MapOptions{Number: req.Number, ReadOnly: req.ReadOnly, Initiators: req.Initiators})
	if err == nil {
		s.log.Debug().Str("iqn", iqn).Str("lun", req.LUN).Uint64("number", n).
			Bool("read_only", req.ReadOnly).Strs("initiators", req.Initiators).Msg("LUN mapped")
	}
	return s.changed(iqn, err)
}

// Logout ends every session initiator has on the target iqn. Refused
// (changing nothing) for an unknown target, a missing initiator name, and
// an initiator with no session there.
func (s *Service) Logout(iqn, initiator string) (wire.Logout, error) {
	obj := targetObject(iqn)
	if initiator == "" {
		return wire.Logout{}, invalid(obj, "logout: an initiator name is required (--initiator)")
	}
	if _, err := s.lm.TargetInfo(iqn); err != nil {
		return wire.Logout{}, toWire(err, obj)
	}
	n := 0
	if s.exp != nil {
		n = s.exp.Logout(iqn, initiator)
	}
	if n == 0 {
		return wire.Logout{}, notFound(obj, "initiator %s has no session on this target", initiator)
	}
	return wire.Logout{Initiator: initiator, Sessions: n}, nil
}

// SetMapping changes a mapping's write protection or initiator mask.
func (s *Service) SetMapping(iqn, lunName string, req wire.SetMapping) (wire.Target, error) {
	err := s.lm.SetMapping(iqn, lunName, lm.MappingChange{ReadOnly: req.ReadOnly, Initiators: req.Initiators})
	if err == nil {
		ev := s.log.Debug().Str("iqn", iqn).Str("lun", lunName)
		if req.ReadOnly != nil {
			ev = ev.Bool("read_only", *req.ReadOnly)
		}
		if req.Initiators != nil {
			ev = ev.Strs("initiators", *req.Initiators)
		}
		ev.Msg("LUN mapping changed")
	}
	return s.changed(iqn, err)
}

// Unmap removes a LUN (by name) from a target.
func (s *Service) Unmap(iqn, lunName string) (wire.Target, error) {
	err := s.lm.UnmapLUN(iqn, lunName)
	if err == nil {
		s.log.Debug().Str("iqn", iqn).Str("lun", lunName).Msg("LUN unmapped")
	}
	return s.changed(iqn, err)
}

// initiatorName translates wire.AllInitiators (any case) to lm's "" (ALL).
func initiatorName(initiator string) string {
	if strings.EqualFold(initiator, wire.AllInitiators) {
		return ""
	}
	return initiator
}

// Allow lets an initiator (or ALL) log in.
func (s *Service) Allow(iqn, initiator string) (wire.Target, error) {
	err := s.lm.AllowInitiator(iqn, initiatorName(initiator))
	if err == nil {
		s.log.Debug().Str("iqn", iqn).Str("initiator", initiator).Msg("initiator allowed")
	}
	return s.changed(iqn, err)
}

// Disallow removes an initiator (or ALL) from a target's ACL.
func (s *Service) Disallow(iqn, initiator string) (wire.Target, error) {
	return s.changed(iqn, s.lm.DisallowInitiator(iqn, initiatorName(initiator)))
}

func chapRecord(req wire.SetCHAP) metavol.CHAP {
	return metavol.CHAP{User: req.User, Secret: req.Secret, MutualUser: req.MutualUser, MutualSecret: req.MutualSecret}
}

// SetCHAP sets one-way or mutual CHAP; short secrets come back as warnings.
func (s *Service) SetCHAP(iqn string, req wire.SetCHAP) (wire.Target, error) {
	warnings, err := s.lm.SetTargetCHAP(iqn, chapRecord(req))
	if err != nil {
		return wire.Target{}, toWire(err, targetObject(iqn))
	}
	s.log.Debug().Str("iqn", iqn).Str("user", req.User).Bool("mutual", req.MutualUser != "" || req.MutualSecret != "").Msg("CHAP set")
	v, err := s.Target(iqn)
	v.Warnings = warnings
	return v, err
}

// ClearCHAP turns CHAP off.
func (s *Service) ClearCHAP(iqn string) (wire.Target, error) {
	return s.changed(iqn, s.lm.ClearTargetCHAP(iqn))
}

// Discovery shows how discovery sessions authenticate (never the secrets).
func (s *Service) Discovery() (wire.Discovery, error) {
	c, err := s.lm.DiscoveryCHAP()
	if err != nil {
		return wire.Discovery{}, toWire(err, discoveryObject)
	}
	return wire.Discovery{CHAP: chapInfo(c)}, nil
}

// SetDiscoveryCHAP makes discovery (SendTargets) sessions authenticate
// with CHAP, one-way or mutual.
func (s *Service) SetDiscoveryCHAP(req wire.SetCHAP) (wire.Discovery, error) {
	warnings, err := s.lm.SetDiscoveryCHAP(chapRecord(req))
	if err != nil {
		return wire.Discovery{}, toWire(err, discoveryObject)
	}
	s.log.Debug().Str("user", req.User).Bool("mutual", req.MutualUser != "").Msg("discovery CHAP set")
	v, err := s.Discovery()
	v.Warnings = warnings
	return v, err
}

// ClearDiscoveryCHAP lets discovery sessions in without authentication.
func (s *Service) ClearDiscoveryCHAP() (wire.Discovery, error) {
	if err := s.lm.ClearDiscoveryCHAP(); err != nil {
		return wire.Discovery{}, toWire(err, discoveryObject)
	}
	s.log.Debug().Msg("discovery CHAP off")
	return s.Discovery()
}
