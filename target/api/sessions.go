package api

import (
	"net/http"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Migration sessions: lm checks and runs every operation
// (lm/sessionadmin.go); these translate.

func sessionObject(name string) string { return "session " + name }

// CreateSession creates a migration session and all its pairs (all or
// nothing; lm names the refused pair).
func (s *Service) CreateSession(req wire.CreateSession) (wire.MigrationSession, error) {
	prio, start, err := scheduleOf(sessionObject(req.Name), req.Priority, req.StartAt) // schedule.go
	if err != nil {
		return wire.MigrationSession{}, err
	}
	ws, maxEl, err := windowsOf(sessionObject(req.Name), req.Windows, req.MaxElapsed)
	if err != nil {
		return wire.MigrationSession{}, err
	}
	lat, err := lm.ParseHostLatency(sessionObject(req.Name), req.MaxHostLatency)
	if err != nil {
		return wire.MigrationSession{}, toWire(err, sessionObject(req.Name))
	}
	lr := lm.SessionRequest{Name: req.Name, Speed: lm.Speed(req.Speed), MaxMBps: req.MaxMBps, MaxActive: req.MaxActive,
		AutoSplit: req.AutoSplit, Verify: req.Verify, Priority: prio, StartAt: start, Windows: ws, MaxElapsed: maxEl,
		MaxHostLatency: lat, DryRun: req.DryRun}
	for _, p := range req.Pairs {
		lr.Pairs = append(lr.Pairs, lm.PairRequest{Source: p.Source, Target: p.Target, Vehicle: p.Vehicle})
	}
	st, err := s.lm.CreateSession(lr)
	if err != nil {
		return wire.MigrationSession{}, toWire(err, sessionObject(req.Name))
	}
	if st.DryRun {
		return sessionView(st), nil
	}
	s.log.Debug().Str("session", req.Name).Int("pairs", len(req.Pairs)).Msg("session created")
	return sessionView(st), nil
}

// Sessions lists the migration sessions by name.
func (s *Service) Sessions() ([]wire.MigrationSession, error) {
	return viewsOf(s.lm.Sessions(), sessionView), nil
}

// Session shows one migration session.
func (s *Service) Session(name string) (wire.MigrationSession, error) {
	st, err := s.lm.Session(name)
	if err != nil {
		return wire.MigrationSession{}, toWire(err, sessionObject(name))
	}
	return sessionView(st), nil
}

// SessionAction pauses, resumes or cancels a session.
func (s *Service) SessionAction(name, action string) (wire.MigrationSession, error) {
	obj := sessionObject(name)
	var st lm.SessionStatus
	var err error
	switch action {
	case "pause":
		st, err = s.lm.PauseSession(name)
	case "resume":
		st, err = s.lm.ResumeSession(name)
	case "cancel":
		st, err = s.lm.CancelSession(name)
	default:
		return wire.MigrationSession{}, notFound(obj, "no action %q (pause, resume, cancel, split, set)", action)
	}
	if err != nil {
		return wire.MigrationSession{}, toWire(err, obj)
	}
	s.log.Debug().Str("session", name).Str("action", action).Msg("session " + action)
	return sessionView(st), nil
}

// SetSession changes the speed level and/or cap of every pair of a session.
func (s *Service) SetSession(name string, req wire.SetMigration) (wire.MigrationSession, error) {
	sr, err := setRequest(sessionObject(name), req)
	if err != nil {
		return wire.MigrationSession{}, err
	}
	st, err := s.lm.SetSession(name, sr)
	if err != nil {
		return wire.MigrationSession{}, toWire(err, sessionObject(name))
	}
	return sessionView(st), nil
}

// SplitSession splits every pair of a session in one consistent split.
func (s *Service) SplitSession(name string, req wire.SplitSession) (wire.SplitResult, error) {
	obj := sessionObject(name)
	pause, err := lm.MaxPause(obj, req.MaxPause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	if err := checkKeepSource(obj, req.KeepSource, req.Retire); err != nil {
		return wire.SplitResult{}, err
	}
	split, state := s.lm.SplitSession, lm.StateSplit
	if req.KeepSource {
		split, state = s.lm.SplitKeepSourceSession, lm.StateSwitched // rollback.go
	}
	r, err := split(name, pause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	v := splitView(r)
	v.State = state.String()
	s.log.Debug().Str("session", name).Float64("pause_ms", v.PauseMS).Bool("keep_source", req.KeepSource).Msg("session split")
	v.Retired = s.retire(r.Pairs, req.Retire)
	return v, nil
}

// DeleteSession forgets a split or cancelled session.
func (s *Service) DeleteSession(name string) error {
	if err := s.lm.DeleteSession(name); err != nil {
		return toWire(err, sessionObject(name))
	}
	return nil
}

// sessionRoutes registers /v1/sessions (see doc.go).
func (s *Server) sessionRoutes(m *http.ServeMux) {
	svc := s.svc
	v := wire.Version
	m.HandleFunc("POST "+v+"/sessions", withBody(func(w http.ResponseWriter, r *http.Request, req wire.CreateSession) {
		st, err := svc.CreateSession(req)
		reply(w, createdUnlessDryRun(req.DryRun), st, err, sessionObject(req.Name))
	}))
	m.HandleFunc("GET "+v+"/sessions", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.Sessions()
		reply(w, http.StatusOK, st, err, "sessions")
	})
	m.HandleFunc("GET "+v+"/sessions/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		st, err := svc.Session(name)
		reply(w, http.StatusOK, st, err, sessionObject(name))
	})
	set := withBody(func(w http.ResponseWriter, r *http.Request, req wire.SetMigration) {
		name := r.PathValue("name")
		st, err := svc.SetSession(name, req)
		reply(w, http.StatusOK, st, err, sessionObject(name))
	})
	m.HandleFunc("PATCH "+v+"/sessions/{name}", set)
	m.HandleFunc("POST "+v+"/sessions/{name}/set", set)
	m.HandleFunc("POST "+v+"/sessions/{name}/split", withOptionalBody(func(w http.ResponseWriter, r *http.Request, req wire.SplitSession) {
		name := r.PathValue("name")
		res, err := svc.SplitSession(name, req)
		reply(w, http.StatusOK, res, err, sessionObject(name))
	}))
	m.HandleFunc("POST "+v+"/sessions/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		st, err := svc.SessionAction(name, r.PathValue("action"))
		reply(w, http.StatusOK, st, err, sessionObject(name))
	})
	m.HandleFunc("DELETE "+v+"/sessions/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		reply(w, 0, nil, svc.DeleteSession(name), sessionObject(name))
	})
}
