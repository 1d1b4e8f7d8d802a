package api

import (
	"net/http"
	"time"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Schedules, priorities and the server-wide copy limits: lm decides
// (lm/queue.go, lm/schedule.go); these translate.

const limitsObject = "config"

// scheduleOf reads a request's priority and start time with lm's rules
// (a clock time is the server's local time).
func scheduleOf(obj, priority, startAt string) (int, time.Time, error) {
	prio, err := lm.ParsePriority(obj, priority)
	if err != nil {
		return 0, time.Time{}, toWire(err, obj)
	}
	start, err := lm.ParseStartAt(obj, startAt, time.Now())
	if err != nil {
		return 0, time.Time{}, toWire(err, obj)
	}
	return prio, start, nil
}

// windowsOf reads a request's daily windows and maximum elapsed time
// (lm's rules; "" is no limit).
func windowsOf(obj string, windows []string, maxElapsed string) ([]lm.Window, time.Duration, error) {
	ws, err := lm.ParseWindows(obj, windows)
	if err != nil {
		return nil, 0, toWire(err, obj)
	}
	d, err := lm.ParseMaxElapsed(obj, maxElapsed)
	if err != nil {
		return nil, 0, toWire(err, obj)
	}
	return ws, d, nil
}

func limitsView(l lm.Limits) wire.Limits {
	return wire.Limits{MaxActive: l.MaxActive, Active: l.Active, Waiting: l.Waiting, MaxTotalMBps: l.MaxTotalMBps}
}

// Limits reports the server-wide copy limits.
func (s *Service) Limits() wire.Limits { return limitsView(s.lm.Limits()) }

// SetLimits changes them at run time.
func (s *Service) SetLimits(req wire.SetLimits) (wire.Limits, error) {
	l, err := s.lm.SetLimits(lm.LimitsRequest{MaxActive: req.MaxActive, MaxTotalMBps: req.MaxTotalMBps})
	if err != nil {
		return wire.Limits{}, toWire(err, limitsObject)
	}
	s.log.Info().Int("max_active", l.MaxActive).Int64("max_total_mbps", l.MaxTotalMBps).Msg("config set")
	return limitsView(l), nil
}

// limitsRoutes registers /v1/config/limits.
func (s *Server) limitsRoutes(m *http.ServeMux) {
	svc := s.svc
	v := wire.Version
	m.HandleFunc("GET "+v+"/config/limits", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, svc.Limits())
	})
	m.HandleFunc("PATCH "+v+"/config/limits", withBody(func(w http.ResponseWriter, r *http.Request, req wire.SetLimits) {
		l, err := svc.SetLimits(req)
		reply(w, http.StatusOK, l, err, limitsObject)
	}))
}
