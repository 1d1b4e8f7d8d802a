package api

import (
	"net/http"
	"time"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// SessionManager is what the session routes need from package lm
// (*lm.Manager implements it). A Manager without it answers 501.
type SessionManager interface {
	CreateSession(req lm.SessionRequest) (lm.SessionStatus, error)
	Sessions() []lm.SessionStatus
	Session(name string) (lm.SessionStatus, error)
	PauseSession(name string) (lm.SessionStatus, error)
	ResumeSession(name string) (lm.SessionStatus, error)
	CancelSession(name string) (lm.SessionStatus, error)
	SetSession(name string, req lm.SetRequest) (lm.SessionStatus, error)
	SplitSession(name string, maxPause time.Duration) (lm.SplitResult, error)
	DeleteSession(name string) error
}

func sessionObject(name string) string { return "session " + name }

func (s *Service) sessionManager() (SessionManager, error) {
	sm, ok := s.lm.(SessionManager)
	if !ok {
		return nil, apiErr(http.StatusNotImplemented, "sessions", "migration sessions are not supported by this manager")
	}
	return sm, nil
}

func sessionView(st lm.SessionStatus) wire.MigrationSession {
	limit, by := lm.RateLimit(st.Speed, st.MaxMBps)
	v := wire.MigrationSession{
		LimitBps: limit, LimitedBy: by,
		ID: st.ID, Name: st.Name, State: st.State, Reason: st.Reason, Speed: string(st.Speed),
		MaxMBps: st.MaxMBps, MaxActive: st.MaxActive, AutoSplit: st.AutoSplit, Verify: st.Verify,
		Paused: st.Paused, CopiedBytes: st.CopiedBytes, TotalBytes: st.TotalBytes, DCLBytes: st.DCLBytes,
		RateBps: st.RateBps, ETASeconds: st.ETASeconds, SplitPauseMS: st.SplitPauseMS,
		Counts: st.Counts, Pairs: make([]wire.Migration, 0, len(st.Pairs)), Created: st.Created,
	}
	if v.Counts == nil {
		v.Counts = map[string]int{}
	}
	for _, p := range st.Pairs {
		v.Pairs = append(v.Pairs, migrationView(p))
	}
	return v
}

// CreateSession creates a migration session and all its pairs (all or
// nothing; lm names the refused pair).
func (s *Service) CreateSession(req wire.CreateSession) (wire.MigrationSession, error) {
	obj := sessionObject(req.Name)
	if req.Name == "" {
		return wire.MigrationSession{}, invalid("session", "a name is required")
	}
	if len(req.Pairs) == 0 {
		return wire.MigrationSession{}, invalid(obj, "at least one pair (source and target LUN) is required")
	}
	speed, err := parseSpeed(obj, req.Speed)
	if err != nil {
		return wire.MigrationSession{}, err
	}
	if req.MaxMBps < 0 {
		return wire.MigrationSession{}, invalid(obj, "max MB/s %d is negative", req.MaxMBps)
	}
	if req.MaxActive < 0 {
		return wire.MigrationSession{}, invalid(obj, "max active %d is negative (0: every pair copies at once)", req.MaxActive)
	}
	sm, err := s.sessionManager()
	if err != nil {
		return wire.MigrationSession{}, err
	}
	lr := lm.SessionRequest{Name: req.Name, Speed: speed, MaxMBps: req.MaxMBps, MaxActive: req.MaxActive,
		AutoSplit: req.AutoSplit, Verify: req.Verify}
	for i, p := range req.Pairs {
		if p.Source == "" || p.Target == "" {
			return wire.MigrationSession{}, invalid(obj, "pair %d: both a source and a target LUN are required", i+1)
		}
		lr.Pairs = append(lr.Pairs, lm.PairRequest{Source: p.Source, Target: p.Target})
	}
	s.mu.Lock() // pair creation checks target mappings
	defer s.mu.Unlock()
	st, err := sm.CreateSession(lr)
	if err != nil {
		return wire.MigrationSession{}, toWire(err, obj)
	}
	s.log.Info().Str("session", req.Name).Int("pairs", len(req.Pairs)).Msg("session created")
	return sessionView(st), nil
}

// Sessions lists the migration sessions by name.
func (s *Service) Sessions() ([]wire.MigrationSession, error) {
	sm, err := s.sessionManager()
	if err != nil {
		return nil, err
	}
	out := []wire.MigrationSession{}
	for _, st := range sm.Sessions() {
		out = append(out, sessionView(st))
	}
	return out, nil
}

// Session shows one migration session.
func (s *Service) Session(name string) (wire.MigrationSession, error) {
	sm, err := s.sessionManager()
	if err != nil {
		return wire.MigrationSession{}, err
	}
	st, err := sm.Session(name)
	if err != nil {
		return wire.MigrationSession{}, toWire(err, sessionObject(name))
	}
	return sessionView(st), nil
}

// SessionAction pauses, resumes or cancels a session.
func (s *Service) SessionAction(name, action string) (wire.MigrationSession, error) {
	obj := sessionObject(name)
	sm, err := s.sessionManager()
	if err != nil {
		return wire.MigrationSession{}, err
	}
	var st lm.SessionStatus
	switch action {
	case "pause":
		st, err = sm.PauseSession(name)
	case "resume":
		st, err = sm.ResumeSession(name)
	case "cancel":
		s.mu.Lock()
		st, err = sm.CancelSession(name)
		s.mu.Unlock()
	default:
		return wire.MigrationSession{}, notFound(obj, "no action %q (pause, resume, cancel, split, set)", action)
	}
	if err != nil {
		return wire.MigrationSession{}, toWire(err, obj)
	}
	s.log.Info().Str("session", name).Str("action", action).Msg("session " + action)
	return sessionView(st), nil
}

// SetSession changes the speed level and/or cap of every pair of a session.
func (s *Service) SetSession(name string, req wire.SetMigration) (wire.MigrationSession, error) {
	obj := sessionObject(name)
	var sr lm.SetRequest
	if req.Speed == nil && req.MaxMBps == nil {
		return wire.MigrationSession{}, invalid(obj, "nothing to set: give a speed and/or max_mbps")
	}
	if req.Speed != nil {
		sp, err := parseSpeed(obj, *req.Speed)
		if err != nil {
			return wire.MigrationSession{}, err
		}
		sr.Speed = &sp
	}
	if req.MaxMBps != nil {
		if *req.MaxMBps < 0 {
			return wire.MigrationSession{}, invalid(obj, "max MB/s %d is negative (0 removes the cap)", *req.MaxMBps)
		}
		sr.MaxMBps = req.MaxMBps
	}
	sm, err := s.sessionManager()
	if err != nil {
		return wire.MigrationSession{}, err
	}
	st, err := sm.SetSession(name, sr)
	if err != nil {
		return wire.MigrationSession{}, toWire(err, obj)
	}
	return sessionView(st), nil
}

// SplitSession splits every pair of a session in one consistent split.
func (s *Service) SplitSession(name string, req wire.SplitSession) (wire.SplitResult, error) {
	obj := sessionObject(name)
	pause := DefaultMaxPause
	if req.MaxPause != "" {
		d, err := time.ParseDuration(req.MaxPause)
		if err != nil || d < time.Millisecond || d > time.Minute {
			return wire.SplitResult{}, invalid(obj, "max pause %q: want a duration between 1ms and 1m (for example 100ms)", req.MaxPause)
		}
		pause = d
	}
	sm, err := s.sessionManager()
	if err != nil {
		return wire.SplitResult{}, err
	}
	r, err := sm.SplitSession(name, pause)
	if err != nil {
		return wire.SplitResult{}, toWire(err, obj)
	}
	s.log.Info().Str("session", name).Float64("pause_ms", r.PauseMS).Msg("session split")
	return wire.SplitResult{Pairs: r.Pairs, PauseMS: r.PauseMS}, nil
}

// DeleteSession forgets a split or cancelled session.
func (s *Service) DeleteSession(name string) error {
	sm, err := s.sessionManager()
	if err != nil {
		return err
	}
	if err := sm.DeleteSession(name); err != nil {
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
		reply(w, http.StatusCreated, st, err, sessionObject(req.Name))
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
	m.HandleFunc("POST "+v+"/sessions/{name}/split", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var req wire.SplitSession
		if r.ContentLength != 0 { // the body is optional
			if e := decode(w, r, &req); e != nil {
				writeError(w, e)
				return
			}
		}
		res, err := svc.SplitSession(name, req)
		reply(w, http.StatusOK, res, err, sessionObject(name))
	})
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
