package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target"
)

// Collector gathers a Snapshot from the daemon's parts.
type Collector struct {
	Version string
	DB      *metavol.DB
	Manager *lm.Manager
	Target  *target.Server
}

// Snapshot reads every source once.
func (c *Collector) Snapshot() (Snapshot, error) {
	s := Snapshot{Version: c.Version}
	ts := c.Target.Stats()
	s.Targets, s.Logins = ts.Targets, ts.Logins
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
	seen := map[string]bool{}
	for _, r := range recs {
		l := LUN{Name: r.Name, ID: r.ID, SizeBytes: r.Size, IO: io[r.ID]}
		if v, err := c.Manager.LUN(r.ID); err == nil {
			l.SizeBytes = v.Size()
		}
		seen[r.ID] = true
		s.LUNs = append(s.LUNs, l)
	}
	// A LUN deleted between the two reads is still served: keep it.
	for _, l := range ts.LUNs {
		if !seen[l.ID] {
			s.LUNs = append(s.LUNs, LUN{Name: l.Name, ID: l.ID, SizeBytes: l.SizeBytes, IO: l})
		}
	}
	s.Pairs = c.Manager.Pairs()
	return s, nil
}

// Handler serves GET /metrics from c.
func Handler(c *Collector, log zerolog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		snap, err := c.Snapshot()
		if err != nil {
			log.Warn().Err(err).Msg("metrics scrape")
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var buf bytes.Buffer
		if err := Write(&buf, snap); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		w.Write(buf.Bytes())
	})
	return mux
}

// Server is the metrics HTTP listener. Listen binds it; Shutdown stops it.
// It owns its serve goroutine.
type Server struct {
	log  zerolog.Logger
	ln   net.Listener
	http *http.Server
	done chan struct{}
	err  error // the serve loop's error, set before done closes
}

// Listen binds addr (TCP host:port) and starts serving c.
func Listen(addr string, c *Collector, log zerolog.Logger) (*Server, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("metrics listener %q: want host:port: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	s := &Server{
		log:  log,
		ln:   ln,
		done: make(chan struct{}),
		http: &http.Server{
			Handler:           Handler(c, log),
			ReadHeaderTimeout: 10 * time.Second,
			WriteTimeout:      30 * time.Second,
		},
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
			log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("metrics listener stopped")
		}
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("metrics listening")
	return s, nil
}

// Addr is the bound address (the real port for port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops accepting, lets running scrapes finish (until ctx ends)
// and waits for the serve goroutine.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	<-s.done
	if err == nil {
		err = s.err
	}
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}
