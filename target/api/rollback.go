package api

import (
	"net/http"
	"strings"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Rollback after the switch, commit, retire and the delete of ended
// records (lm/rollback.go): POST /v1/migrations/rollback and /commit,
// DELETE /v1/migrations/{source}, POST /v1/sessions/{name}/rollback and
// /commit, POST /v1/migrations/{source}/retire. split --keep-source and
// --retire ride on the split bodies.

// rollbackRoutes registers the routes above.
func (s *Server) rollbackRoutes(m *http.ServeMux) {
	svc := s.svc
	v := wire.Version
	m.HandleFunc("POST "+v+"/migrations/rollback", withBody(func(w http.ResponseWriter, r *http.Request, req wire.Split) {
		res, err := svc.Rollback(req)
		reply(w, http.StatusOK, res, err, pairObject(strings.Join(req.Sources, ",")))
	}))
	m.HandleFunc("POST "+v+"/migrations/commit", withBody(func(w http.ResponseWriter, r *http.Request, req wire.Commit) {
		res, err := svc.Commit(req)
		reply(w, http.StatusOK, res, err, pairObject(strings.Join(req.Sources, ",")))
	}))
	m.HandleFunc("POST "+v+"/migrations/{source}/retire", withOptionalBody(func(w http.ResponseWriter, r *http.Request, req wire.Retire) {
		src := r.PathValue("source")
		res, err := svc.Retire(src, req)
		reply(w, http.StatusOK, res, err, pairObject(src))
	}))
	m.HandleFunc("DELETE "+v+"/migrations/{source}", func(w http.ResponseWriter, r *http.Request) {
		src := r.PathValue("source")
		res, err := svc.DeleteMigrations(src)
		reply(w, http.StatusOK, res, err, pairObject(src))
	})
	for _, action := range []string{"rollback", "commit"} {
		m.HandleFunc("POST "+v+"/sessions/{name}/"+action, withOptionalBody(func(w http.ResponseWriter, r *http.Request, req wire.SplitSession) {
			name := r.PathValue("name")
			var res wire.SplitResult
			var err error
			if action == "rollback" {
				res, err = svc.RollbackSession(name, req)
			} else {
				res, err = svc.CommitSession(name, req)
			}
			reply(w, http.StatusOK, res, err, sessionObject(name))
		}))
	}
}

// checkKeepSource refuses a split that asks for both --keep-source and
// --retire.
func checkKeepSource(obj string, keepSource bool, r *wire.Retire) error {
	if keepSource && r != nil {
		return apiErr(http.StatusBadRequest, obj, "retire refused with keep_source: the old volumes are still mirrored (retire on commit)")
	}
	return nil
}

func retireOptions(r *wire.Retire) lm.RetireOptions {
	return lm.RetireOptions{Scrub: r.Scrub, DeleteVolume: r.DeleteVolume}
}

// Retire retires the old LUN of the source's last split pair.
func (s *Service) Retire(source string, req wire.Retire) (wire.Retired, error) {
	res, err := s.lm.Retire(source, retireOptions(&req))
	if err != nil {
		return wire.Retired{}, toWire(err, pairObject(source))
	}
	return retiredView(res), nil
}

func retiredView(res lm.RetireResult) wire.Retired {
	return wire.Retired{Source: res.Source, LUN: res.LUN, Volume: res.Volume, Path: res.Path, Scrub: res.Scrub,
		VolumeDeleted: res.VolumeDeleted, VolumeNote: res.VolumeNote}
}

// retire retires the old LUN of every source after a split or commit;
// a failure is reported per LUN (the split or commit stands).
func (s *Service) retire(sources []string, r *wire.Retire) []wire.Retired {
	if r == nil {
		return nil
	}
	var out []wire.Retired
	for _, src := range sources {
		res, err := s.lm.Retire(src, retireOptions(r))
		w := retiredView(res)
		w.Source = src
		if err != nil {
			w.Error = toWire(err, pairObject(src)).Message
		}
		out = append(out, w)
	}
	return out
}

// Rollback switches switched pairs back to their old volumes.
func (s *Service) Rollback(req wire.Split) (wire.SplitResult, error) {
	obj := lm.SplitObject(req.Sources)
	if req.KeepSource || req.Retire != nil {
		return wire.SplitResult{}, apiErr(http.StatusBadRequest, obj, "rollback takes no keep_source or retire")
	}
	pause, err := lm.MaxPause(obj, req.MaxPause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	r, err := s.lm.Rollback(req.Sources, pause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	v := splitView(r)
	v.State = lm.StateSynced.String()
	s.log.Info().Strs("sources", req.Sources).Float64("pause_ms", v.PauseMS).Msg("rollback")
	return v, nil
}

// Commit ends the mirroring of switched pairs, then retires if asked.
func (s *Service) Commit(req wire.Commit) (wire.SplitResult, error) {
	obj := lm.SplitObject(req.Sources)
	r, err := s.lm.Commit(req.Sources)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	s.log.Info().Strs("sources", req.Sources).Msg("commit")
	return wire.SplitResult{Pairs: r.Pairs, State: lm.StateSplit.String(), Retired: s.retire(r.Pairs, req.Retire)}, nil
}

// DeleteMigrations forgets the ended pair records of a source.
func (s *Service) DeleteMigrations(source string) (wire.DeletedMigrations, error) {
	ids, err := s.lm.DeletePairRecords(source)
	if err != nil {
		return wire.DeletedMigrations{}, toWire(err, pairObject(source))
	}
	return wire.DeletedMigrations{Source: source, Pairs: ids}, nil
}

// RollbackSession rolls back every pair of a switched session.
func (s *Service) RollbackSession(name string, req wire.SplitSession) (wire.SplitResult, error) {
	obj := sessionObject(name)
	if req.KeepSource || req.Retire != nil {
		return wire.SplitResult{}, apiErr(http.StatusBadRequest, obj, "rollback takes no keep_source or retire")
	}
	pause, err := lm.MaxPause(obj, req.MaxPause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	r, err := s.lm.RollbackSession(name, pause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	v := splitView(r)
	v.State = lm.StateSynced.String()
	s.log.Info().Str("session", name).Float64("pause_ms", v.PauseMS).Msg("session rollback")
	return v, nil
}

// CommitSession commits every pair of a switched session.
func (s *Service) CommitSession(name string, req wire.SplitSession) (wire.SplitResult, error) {
	obj := sessionObject(name)
	if req.KeepSource || req.MaxPause != "" {
		return wire.SplitResult{}, apiErr(http.StatusBadRequest, obj, "commit takes no keep_source or max_pause")
	}
	r, err := s.lm.CommitSession(name)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	s.log.Info().Str("session", name).Msg("session commit")
	return wire.SplitResult{Pairs: r.Pairs, State: lm.StateSplit.String(), Retired: s.retire(r.Pairs, req.Retire)}, nil
}
