package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target"
)

// Sources are the daemon's parts a scrape reads.
type Sources struct {
	Version string
	DB      *metavol.DB
	Manager *lm.Manager
	Target  *target.Server
}

// Snapshot reads every source once.
func (c Sources) Snapshot() (Snapshot, error) {
	s := Snapshot{Version: c.Version}
	ts := c.Target.Stats()
	s.Targets, s.Sessions, s.Logins, s.ZeroCopy, s.IdlePoll = ts.Targets, ts.Sessions, ts.Logins, ts.ZeroCopy, ts.IdlePoll
	io := map[string]target.LUNStats{}
	for _, l := range ts.LUNs {
		io[l.ID] = l
	}
	var recs []metavol.LUN
	if err := c.DB.View(func(tx *metavol.Tx) error {
		var err error
		recs, err = tx.LUNs()
		return err
	}); err != nil {
		return Snapshot{}, fmt.Errorf("metrics: list LUNs: %w", err)
	}
	seenID, seenName := map[string]bool{}, map[string]bool{}
	for _, r := range recs {
		l := LUN{Name: r.Name, ID: r.ID, SizeBytes: r.Size, IO: io[r.ID]}
		if v, err := c.Manager.LUN(r.ID); err == nil {
			l.SizeBytes = v.Size()
		}
		seenID[r.ID], seenName[r.Name] = true, true
		s.LUNs = append(s.LUNs, l)
	}
	// A LUN deleted between the two reads is still served: keep it,
	// unless a new LUN already took its name (one series per name).
	for _, l := range ts.LUNs {
		if !seenID[l.ID] && !seenName[l.Name] {
			seenName[l.Name] = true
			s.LUNs = append(s.LUNs, LUN{Name: l.Name, ID: l.ID, SizeBytes: l.SizeBytes, IO: l})
		}
	}
	s.Pairs = c.Manager.LivePairs()
	s.Splits = c.Manager.SplitStats()
	return s, nil
}

// NewRegistry returns a registry with the Go runtime (go_*), process
// (process_*) and build (go_build_info) collectors and lmtgt's own
// families, read through snap at every scrape. The Server owns one; there
// is no package-level registry.
func NewRegistry(snap func() (Snapshot, error)) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		newCollector(snap),
	)
	return reg
}

// Options are the metrics listener's settings.
type Options struct {
	Log zerolog.Logger
	// Pprof mounts net/http/pprof under /debug/pprof/ on this listener
	// (and nowhere else).
	Pprof bool
}

// Handler serves GET /metrics from reg (text format 0.0.4, or OpenMetrics
// when the scraper asks for it) and, with opts.Pprof, /debug/pprof/.
func Handler(reg *prometheus.Registry, opts Options) http.Handler {
	mux := http.NewServeMux()
	prom := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          errorLog{opts.Log},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Registry:          reg, // promhttp_metric_handler_errors_total
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		prom.ServeHTTP(w, r)
	})
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// errorLog adapts promhttp's error log to zerolog.
type errorLog struct{ log zerolog.Logger }

func (l errorLog) Println(v ...any) { l.log.Warn().Msg(fmt.Sprint(v...)) }

// Server is the metrics HTTP listener. Listen binds it; Shutdown stops it.
// It owns its serve goroutine and its registry.
type Server struct {
	log  zerolog.Logger
	ln   net.Listener
	http *http.Server
	// stop cancels the context of every request (their BaseContext), so
	// that a CPU profile or trace in progress ends at Shutdown instead of
	// holding it for ?seconds=N.
	stop context.CancelFunc
	done chan struct{}
	err  error // the serve loop's error, set before done closes
}

// Listen binds addr (TCP host:port) and starts serving src.
func Listen(addr string, src Sources, opts Options) (*Server, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("metrics listener %q: want host:port: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	log := opts.Log
	base, stop := context.WithCancel(context.Background())
	s := &Server{
		log:  log,
		ln:   ln,
		stop: stop,
		done: make(chan struct{}),
		http: &http.Server{
			Handler:           Handler(NewRegistry(src.Snapshot), opts),
			BaseContext:       func(net.Listener) context.Context { return base },
			ReadHeaderTimeout: 10 * time.Second,
			// pprof's profile and trace extend it by their ?seconds=N.
			WriteTimeout: 30 * time.Second,
		},
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
			log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("metrics listener stopped")
		}
	}()
	log.Info().Str("addr", ln.Addr().String()).Bool("pprof", opts.Pprof).Msg("metrics listening")
	return s, nil
}

// Addr is the bound address (the real port for port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops accepting, cancels the requests' contexts (a running
// pprof profile or trace ends early; a scrape does not look at it), lets
// running requests finish (until ctx ends, then closes their connections)
// and waits for the serve goroutine.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	<-s.done
	if err == nil {
		err = s.err
	}
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}
