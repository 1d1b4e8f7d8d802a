package api

import (
	"net/http"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Migrations (pairs), addressed by their source LUN's name: lm checks and
// runs every operation (lm/pairrules.go, lm/pair.go, lm/split.go).

func pairObject(source string) string { return "migration " + source }

// CreateMigration creates a pair.
func (s *Service) CreateMigration(req wire.CreateMigration) (wire.Migration, error) {
	prio, start, err := scheduleOf(pairObject(req.Source), req.Priority, req.StartAt) // schedule.go
	if err != nil {
		return wire.Migration{}, err
	}
	ws, maxEl, err := windowsOf(pairObject(req.Source), req.Windows, req.MaxElapsed)
	if err != nil {
		return wire.Migration{}, err
	}
	lat, err := lm.ParseHostLatency(pairObject(req.Source), req.MaxHostLatency)
	if err != nil {
		return wire.Migration{}, toWire(err, pairObject(req.Source))
	}
	p, err := s.lm.CreatePair(lm.PairRequest{
		Source: req.Source, Target: req.Target, Speed: lm.Speed(req.Speed),
		MaxMBps: req.MaxMBps, AutoSplit: req.AutoSplit, Verify: req.Verify, MaxHostLatency: lat,
		Vehicle: req.Vehicle, Preempt: req.Preempt, AllowUnfenced: req.AllowUnfenced, DryRun: req.DryRun,
		Priority: prio, StartAt: start, Windows: ws, MaxElapsed: maxEl,
	})
	if err != nil {
		return wire.Migration{}, toWire(err, pairObject(req.Source))
	}
	if p.DryRun {
		return migrationView(p), nil
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

// MigrationAction pauses, resumes or cancels a pair (named by its source,
// its target or its ID); force makes a lone resume or cancel of a
// session's pair (lm/sessionref.go).
func (s *Service) MigrationAction(source, action string, force bool) (wire.Migration, error) {
	obj := pairObject(source)
	var err error
	switch action {
	case "pause":
		err = s.lm.Pause(source)
	case "resume":
		err = s.lm.ResumeNamed(source, force)
	case "cancel":
		// The cancelled pair's record is deleted, and the source may have
		// an older, split pair on record: answer with the pair that was
		// cancelled, not whatever lm.Pair finds afterwards.
		before, berr := s.lm.Pair(source)
		if err = s.lm.CancelNamed(source, force); err == nil {
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
	sr, err := setRequest(pairObject(source), req)
	if err != nil {
		return wire.Migration{}, err
	}
	p, err := s.lm.Set(source, sr)
	if err != nil {
		return wire.Migration{}, toWire(err, pairObject(source))
	}
	return s.pairView(p), nil
}

// setRequest translates a change of a pair's or session's options (lm
// checks it; the priority's name is read here, with lm's rule).
func setRequest(obj string, req wire.SetMigration) (lm.SetRequest, error) {
	var sr lm.SetRequest
	if req.Speed != nil {
		sp := lm.Speed(*req.Speed)
		sr.Speed = &sp
	}
	sr.MaxMBps = req.MaxMBps
	if req.Priority != nil {
		n, err := lm.ParsePriority(obj, *req.Priority)
		if err != nil {
			return sr, toWire(err, obj)
		}
		sr.Priority = &n
	}
	sr.AutoSplit, sr.Verify, sr.MaxActive = req.AutoSplit, req.Verify, req.MaxActive
	if req.Windows != nil {
		ws, _, err := windowsOf(obj, *req.Windows, "")
		if err != nil {
			return sr, err
		}
		sr.Windows = &ws
	}
	if req.MaxElapsed != nil {
		d, err := lm.ParseMaxElapsed(obj, *req.MaxElapsed)
		if err != nil {
			return sr, toWire(err, obj)
		}
		sr.MaxElapsed = &d
	}
	if req.MaxHostLatency != nil {
		d, err := lm.ParseHostLatency(obj, *req.MaxHostLatency)
		if err != nil {
			return sr, toWire(err, obj)
		}
		sr.MaxHostLatency = &d
	}
	return sr, nil
}

// Split splits one pair or several in one consistent split.
func (s *Service) Split(req wire.Split) (wire.SplitResult, error) {
	obj := lm.SplitObject(req.Sources)
	pause, err := lm.MaxPause(obj, req.MaxPause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	if err := checkKeepSource(obj, req.KeepSource, req.Retire); err != nil {
		return wire.SplitResult{}, err
	}
	state := lm.StateSplit
	var r lm.SplitResult
	if req.KeepSource {
		state = lm.StateSwitched
		r, err = s.lm.SplitKeepSource(req.Sources, pause, req.Force) // rollback.go
	} else {
		r, err = s.lm.SplitNamed(req.Sources, pause, req.Force)
	}
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	v := splitView(r)
	v.State = state.String()
	s.log.Debug().Strs("sources", req.Sources).Float64("pause_ms", v.PauseMS).Bool("keep_source", req.KeepSource).Msg("split")
	v.Retired = s.retire(r.Pairs, req.Retire)
	return v, nil
}

// createdUnlessDryRun is the status of a create: 201, or 200 for a dry
// run (nothing was created).
func createdUnlessDryRun(dryRun bool) int {
	if dryRun {
		return http.StatusOK
	}
	return http.StatusCreated
}
