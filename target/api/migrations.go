package api

import (
	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Migrations (pairs), addressed by their source LUN's name: lm checks and
// runs every operation (lm/pairrules.go, lm/pair.go, lm/split.go).

func pairObject(source string) string { return "migration " + source }

// CreateMigration creates a pair.
func (s *Service) CreateMigration(req wire.CreateMigration) (wire.Migration, error) {
	p, err := s.lm.CreatePair(lm.PairRequest{
		Source: req.Source, Target: req.Target, Speed: lm.Speed(req.Speed),
		MaxMBps: req.MaxMBps, AutoSplit: req.AutoSplit, Verify: req.Verify,
		Vehicle: req.Vehicle, Preempt: req.Preempt, AllowUnfenced: req.AllowUnfenced,
	})
	if err != nil {
		return wire.Migration{}, toWire(err, pairObject(req.Source))
	}
	s.log.Debug().Str("lun", req.Source).Str("target_lun", req.Target).Str("pair", p.ID).Msg("migration created")
	v := s.pairView(p)
	if w := s.lm.BypassWarning(p); w != "" {
		s.log.Warn().Str("lun", req.Source).Str("pair", p.ID).Msg(w)
		v.Warnings = append(v.Warnings, w)
	}
	return v, nil
}

// Migrations lists every pair, sorted by source name.
func (s *Service) Migrations() []wire.Migration {
	return viewsOf(s.lm.Pairs(), s.pairView)
}

// pairView is a pair's view with the fence of its source's old path
// (lm.Manager.Fence; shown for an imported source).
func (s *Service) pairView(p lm.PairStatus) wire.Migration {
	v := migrationView(p)
	v.Fence = fenceView(s.lm.Fence(p.SourceID))
	return v
}

// Migration shows the pair of a source LUN.
func (s *Service) Migration(source string) (wire.Migration, error) {
	p, err := s.lm.Pair(source)
	if err != nil {
		return wire.Migration{}, toWire(err, pairObject(source))
	}
	return s.pairView(p), nil
}

// MigrationAction pauses, resumes or cancels a pair.
func (s *Service) MigrationAction(source, action string) (wire.Migration, error) {
	obj := pairObject(source)
	var err error
	switch action {
	case "pause":
		err = s.lm.Pause(source)
	case "resume":
		err = s.lm.Resume(source)
	case "cancel":
		// The cancelled pair's record is deleted, and the source may have
		// an older, split pair on record: answer with the pair that was
		// cancelled, not whatever lm.Pair finds afterwards.
		before, berr := s.lm.Pair(source)
		if err = s.lm.Cancel(source); err == nil {
			s.log.Debug().Str("lun", source).Str("action", action).Msg("migration " + action)
			if berr != nil {
				return wire.Migration{Source: source, State: lm.StateCancelled.String()}, nil
			}
			before.State, before.Reason = lm.StateCancelled.String(), "cancelled by admin"
			before.RateBps, before.ETASeconds = 0, 0
			return s.pairView(before), nil
		}
	default:
		return wire.Migration{}, notFound(obj, "no action %q (pause, resume, cancel)", action)
	}
	if err != nil {
		return wire.Migration{}, toWire(err, obj)
	}
	s.log.Debug().Str("lun", source).Str("action", action).Msg("migration " + action)
	return s.Migration(source)
}

// SetMigration changes a pair's speed level and/or absolute cap.
func (s *Service) SetMigration(source string, req wire.SetMigration) (wire.Migration, error) {
	p, err := s.lm.Set(source, setRequest(req))
	if err != nil {
		return wire.Migration{}, toWire(err, pairObject(source))
	}
	return s.pairView(p), nil
}

// setRequest translates a throttle change (lm checks it).
func setRequest(req wire.SetMigration) lm.SetRequest {
	var sr lm.SetRequest
	if req.Speed != nil {
		sp := lm.Speed(*req.Speed)
		sr.Speed = &sp
	}
	sr.MaxMBps = req.MaxMBps
	return sr
}

// Split splits one pair or several in one consistent split.
func (s *Service) Split(req wire.Split) (wire.SplitResult, error) {
	obj := lm.SplitObject(req.Sources)
	pause, err := lm.MaxPause(obj, req.MaxPause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	r, err := s.lm.Split(req.Sources, pause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	v := splitView(r)
	s.log.Debug().Strs("sources", req.Sources).Float64("pause_ms", v.PauseMS).Msg("split")
	return v, nil
}
