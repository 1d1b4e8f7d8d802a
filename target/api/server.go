package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// holds 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Options configure the admin API server.
type Options struct {
	Service *Service
	// Socket is the unix socket path (required). A stale socket file is
	// replaced; a live one (another lmtgt) is an error.
	Socket string
	// TCP is an optional "host:port" listener; it requires Token.
	TCP   string
	Token string
	// Version and Portals are shown by GET /v1/health.
	Version string
	Portals func() []string
	Log     zerolog.Logger
}

// Server serves the admin API. It owns its listeners and serving
// goroutines: Start starts them, Shutdown stops them and waits.
type Server struct {
	opts    Options
	svc     *Service
	log     zerolog.Logger
	mux     *http.ServeMux
	handler http.Handler

	// quit is closed when Shutdown starts: long polls (GET /v1/events
	// with wait) answer at once instead of holding the shutdown.
	quit     chan struct{}
	quitOnce sync.Once

	mu      sync.Mutex // guards the fields below
	servers []*http.Server
	unixL   net.Listener
	tcpL    net.Listener
	wg      sync.WaitGroup
	errc    chan error
}

// New checks the options and builds the routes; it binds nothing yet.
func New(opts Options) (*Server, error) {
	if opts.Service == nil {
		return nil, errors.New("admin api: no service")
	}
	if opts.Socket == "" {
		return nil, errors.New("admin api: no socket path")
	}
	if len(opts.Socket) > maxSocketPath {
		return nil, fmt.Errorf("admin socket %s: path is %d bytes, longer than the %d a unix socket allows; choose a shorter --admin", opts.Socket, len(opts.Socket), maxSocketPath)
	}
	if opts.TCP != "" && opts.Token == "" {
		return nil, fmt.Errorf("admin tcp %s: a token is required (--admin-token or LMTGT_ADMIN_TOKEN)", opts.TCP)
	}
	s := &Server{opts: opts, svc: opts.Service, log: opts.Log, errc: make(chan error, 2), quit: make(chan struct{})}
	s.routes()
	s.handler = s.logged(refuseDotSegments(s.mux))
	return s, nil
}

// Handler is the API without authentication (what the unix socket serves).
func (s *Server) Handler() http.Handler { return s.handler }

// Start binds the unix socket (mode 0600) and the TCP listener if asked,
// and serves them in goroutines owned by the Server.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ul, err := listenUnix(s.opts.Socket)
	if err != nil {
		return err
	}
	s.unixL = ul
	s.serveLocked(ul, s.handler)
	if s.opts.TCP != "" {
		tl, err := net.Listen("tcp", s.opts.TCP)
		if err != nil {
			s.closeLocked(context.Background())
			return fmt.Errorf("admin tcp %s: %w", s.opts.TCP, err)
		}
		s.tcpL = tl
		s.serveLocked(tl, s.authorized(s.handler))
	}
	return nil
}

func (s *Server) serveLocked(l net.Listener, h http.Handler) {
	srv := &http.Server{
		Handler:           h,
		ConnContext:       withCaller, // audit.go: who is asking
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          nil,
	}
	s.servers = append(s.servers, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Str("addr", l.Addr().String()).Msg("admin listener failed")
			select {
			case s.errc <- fmt.Errorf("admin %s: %w", l.Addr(), err):
			default:
			}
		}
	}()
}

// Errors delivers a listener that failed while serving.
func (s *Server) Errors() <-chan error { return s.errc }

// SocketPath is the unix socket path.
func (s *Server) SocketPath() string { return s.opts.Socket }

// TCPAddr is the bound TCP address, or nil.
func (s *Server) TCPAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcpL == nil {
		return nil
	}
	return s.tcpL.Addr()
}

// Shutdown stops accepting requests, waits for the running ones until ctx
// ends, removes the socket file and waits for the serving goroutines.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	err := s.closeLocked(ctx)
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) closeLocked(ctx context.Context) error {
	s.quitOnce.Do(func() { close(s.quit) })
	var errs []error
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			srv.Close()
		}
	}
	s.servers = nil
	if s.unixL != nil {
		s.unixL.Close()
		os.Remove(s.opts.Socket)
		s.unixL = nil
	}
	if s.tcpL != nil {
		s.tcpL.Close()
		s.tcpL = nil
	}
	return errors.Join(errs...)
}

// listenUnix binds a unix socket with mode 0600, replacing a stale one.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another server is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket %s: remove stale socket: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return l, nil
}

// authorized requires "Authorization: Bearer TOKEN" (the TCP listener).
func (s *Server) authorized(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.opts.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if len(got) == 0 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lmtgt"`)
			writeError(w, apiErr(http.StatusUnauthorized, "admin api", "missing bearer token (Authorization: Bearer TOKEN)"))
			return
		}
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lmtgt", error="invalid_token"`)
			writeError(w, apiErr(http.StatusUnauthorized, "admin api", "wrong bearer token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

type recorder struct {
	http.ResponseWriter
	status int
	// body keeps the start of the response (the object or the error)
	// of an admin action (keep) or of a failed request, for its event
	// and its log line.
	body []byte
	keep bool
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.keep && r.status < 400 {
		return r.ResponseWriter.Write(b)
	}
	if n := min(len(b), maxRecorded-len(r.body)); n > 0 {
		r.body = append(r.body, b[:n]...)
	}
	return r.ResponseWriter.Write(b)
}

// Flush passes a flush on (long polls of /v1/events write once anyway).
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// maxRecorded bounds the response bytes kept for the admin event.
const maxRecorded = 8 << 10

// logged logs every request: an admin action (any method but GET) in one
// info line with who asked, what, the outcome and the reason of a
// failure, and records it in the event log (audit.go); reads at debug
// (a failed read at info with its reason).
func (s *Server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK, keep: r.Method != http.MethodGet && r.Method != http.MethodHead}
		var req *requestNames
		if rec.keep && r.Body != nil {
			req = &requestNames{}
			r.Body = req.tee(r.Body) // audit.go: only the names are kept, never a secret
		}
		next.ServeHTTP(rec, r)
		a := s.audit(r, rec, req)
		var ev *zerolog.Event
		switch {
		case rec.status >= 500:
			ev = s.log.Error()
		case rec.status >= 400 || a != nil:
			ev = s.log.Info()
		default:
			ev = s.log.Debug()
		}
		if a != nil {
			ev = ev.Str("action", a.Action).Str("object", a.Object).Str("who", a.Who).Bool("ok", a.OK)
		}
		if rec.status >= 400 {
			ev = ev.Str("reason", errorReason(rec.body))
		}
		msg := "admin request"
		if a != nil {
			msg = "admin action"
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status).
			Dur("took", time.Since(start)).Msg(msg)
	})
}

// refuseDotSegments answers a path with a "." or ".." segment with 400
// instead of letting the mux clean it and redirect (GET /v1/luns/. would
// become the LUN list). A name "." or ".." is sent escaped (%2E, see the
// client) and reaches the handlers, which apply the name rules.
func refuseDotSegments(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, seg := range strings.Split(r.URL.EscapedPath(), "/") {
			if seg == "." || seg == ".." {
				writeError(w, invalid("path "+r.URL.EscapedPath(), "a %q segment is not a name (escape names as URL path segments: %%2E)", seg))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	writeJSONTo(w, v)
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeError(w http.ResponseWriter, e *wire.Error) {
	writeJSON(w, e.Status, e)
}

// reply writes v (or err, about object) as JSON.
func reply(w http.ResponseWriter, status int, v any, err error, object string) {
	if err != nil {
		writeError(w, toWire(err, object))
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, status, v)
}

// decode reads exactly one JSON object into v, refusing unknown fields,
// trailing data and bodies over maxBody.
func decode(w http.ResponseWriter, r *http.Request, v any) *wire.Error {
	body := http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return invalid("request", "empty body: want a JSON object")
		case errors.As(err, &mbe):
			return invalid("request", "body larger than %d bytes", maxBody)
		}
		return invalid("request", "malformed JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("request", "malformed JSON: trailing data after the object")
	}
	return nil
}

// withBody decodes the request body into a T (see decode) and passes it to
// h; a body that does not decode is answered with its error.
func withBody[T any](h func(w http.ResponseWriter, r *http.Request, req T)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req T
		if e := decode(w, r, &req); e != nil {
			writeError(w, e)
			return
		}
		h(w, r, req)
	}
}

// withOptionalBody is withBody for a route whose JSON body may be left
// out: without one, h gets the zero T.
func withOptionalBody[T any](h func(w http.ResponseWriter, r *http.Request, req T)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req T
		if r.ContentLength != 0 {
			if e := decode(w, r, &req); e != nil {
				writeError(w, e)
				return
			}
		}
		h(w, r, req)
	}
}

// boolQuery reads the strict boolean query parameter name ("", false, 0,
// true, 1; absent is false); anything else is refused for object.
func boolQuery(r *http.Request, name, object string) (bool, *wire.Error) {
	switch q := r.URL.Query().Get(name); q {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, invalid(object, "%s=%q: want true or false", name, q)
	}
}

// targetArg serves a route on one target that names a second object in
// its path (.../{iqn}/.../{param}): f gets both and its target is the
// answer.
func targetArg(f func(iqn, arg string) (wire.Target, error), param string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		iqn := r.PathValue("iqn")
		t, err := f(iqn, r.PathValue(param))
		reply(w, http.StatusOK, t, err, targetObject(iqn))
	}
}

// targetBody serves a route on one target with a JSON body of type T.
func targetBody[T any](f func(iqn string, req T) (wire.Target, error)) http.HandlerFunc {
	return withBody(func(w http.ResponseWriter, r *http.Request, req T) {
		iqn := r.PathValue("iqn")
		t, err := f(iqn, req)
		reply(w, http.StatusOK, t, err, targetObject(iqn))
	})
}

func (s *Server) routes() {
	m := http.NewServeMux()
	s.mux = m
	svc := s.svc
	v := wire.Version

	m.HandleFunc("GET "+v+"/health", func(w http.ResponseWriter, r *http.Request) {
		h := wire.Health{Status: "ok", Version: s.opts.Version, Portals: []string{}}
		if s.opts.Portals != nil {
			h.Portals = s.opts.Portals()
		}
		writeJSON(w, http.StatusOK, h)
	})

	// LUNs.
	m.HandleFunc("POST "+v+"/luns", withBody(func(w http.ResponseWriter, r *http.Request, req wire.CreateLUN) {
		l, err := svc.CreateLUN(req)
		reply(w, http.StatusCreated, l, err, lunObject(req.Name))
	}))
	m.HandleFunc("POST "+v+"/luns/import", withBody(func(w http.ResponseWriter, r *http.Request, req wire.ImportLUN) {
		l, err := svc.ImportLUN(req)
		reply(w, http.StatusCreated, l, err, lunObject(req.Name))
	}))
	m.HandleFunc("GET "+v+"/luns", func(w http.ResponseWriter, r *http.Request) {
		l, err := svc.LUNs()
		reply(w, http.StatusOK, l, err, "luns")
	})
	m.HandleFunc("GET "+v+"/luns/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		l, err := svc.LUN(name)
		reply(w, http.StatusOK, l, err, lunObject(name))
	})
	resize := withBody(func(w http.ResponseWriter, r *http.Request, req wire.ResizeLUN) {
		name := r.PathValue("name")
		l, err := svc.ResizeLUN(name, req.Size)
		reply(w, http.StatusOK, l, err, lunObject(name))
	})
	m.HandleFunc("POST "+v+"/luns/{name}/resize", resize)
	m.HandleFunc("POST "+v+"/luns/{name}/takeover", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		l, err := svc.TakeoverLUNFrom(name, r.URL.Query().Get("adopt_from"))
		reply(w, http.StatusOK, l, err, lunObject(name))
	})
	m.HandleFunc("PATCH "+v+"/luns/{name}/resize", resize)
	m.HandleFunc("DELETE "+v+"/luns/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		reply(w, 0, nil, svc.DeleteLUNWith(name, r.URL.Query().Get("delete_image") == "true"), lunObject(name))
	})

	// Targets.
	m.HandleFunc("POST "+v+"/targets", withBody(func(w http.ResponseWriter, r *http.Request, req wire.CreateTarget) {
		t, err := svc.CreateTarget(req.IQN, req.Portals...)
		reply(w, http.StatusCreated, t, err, targetObject(req.IQN))
	}))
	m.HandleFunc("GET "+v+"/targets", func(w http.ResponseWriter, r *http.Request) {
		t, err := svc.Targets()
		reply(w, http.StatusOK, t, err, "targets")
	})
	m.HandleFunc("GET "+v+"/targets/{iqn}", func(w http.ResponseWriter, r *http.Request) {
		iqn := r.PathValue("iqn")
		t, err := svc.Target(iqn)
		reply(w, http.StatusOK, t, err, targetObject(iqn))
	})
	m.HandleFunc("DELETE "+v+"/targets/{iqn}", func(w http.ResponseWriter, r *http.Request) {
		iqn := r.PathValue("iqn")
		force, e := boolQuery(r, "force", targetObject(iqn))
		if e != nil {
			writeError(w, e)
			return
		}
		reply(w, 0, nil, svc.DeleteTarget(iqn, force), targetObject(iqn))
	})
	m.HandleFunc("POST "+v+"/targets/{iqn}/luns", targetBody(svc.Map))
	m.HandleFunc("POST "+v+"/targets/{iqn}/portals", targetBody(func(iqn string, req wire.Portal) (wire.Target, error) {
		return svc.AddPortal(iqn, req.Portal)
	}))
	m.HandleFunc("DELETE "+v+"/targets/{iqn}/portals/{portal}", targetArg(svc.RemovePortal, "portal"))
	m.HandleFunc("POST "+v+"/targets/{iqn}/logout", withBody(func(w http.ResponseWriter, r *http.Request, req wire.Logout) {
		iqn := r.PathValue("iqn")
		out, err := svc.Logout(iqn, req.Initiator)
		reply(w, http.StatusOK, out, err, targetObject(iqn))
	}))
	m.HandleFunc("PATCH "+v+"/targets/{iqn}/luns/{name}", withBody(func(w http.ResponseWriter, r *http.Request, req wire.SetMapping) {
		iqn := r.PathValue("iqn")
		t, err := svc.SetMapping(iqn, r.PathValue("name"), req)
		reply(w, http.StatusOK, t, err, targetObject(iqn))
	}))
	m.HandleFunc("DELETE "+v+"/targets/{iqn}/luns/{name}", targetArg(svc.Unmap, "name"))
	m.HandleFunc("POST "+v+"/targets/{iqn}/initiators", targetBody(func(iqn string, req wire.Allow) (wire.Target, error) {
		return svc.Allow(iqn, req.Initiator)
	}))
	m.HandleFunc("DELETE "+v+"/targets/{iqn}/initiators/{name}", targetArg(svc.Disallow, "name"))
	m.HandleFunc("PUT "+v+"/targets/{iqn}/chap", targetBody(svc.SetCHAP))
	m.HandleFunc("DELETE "+v+"/targets/{iqn}/chap", func(w http.ResponseWriter, r *http.Request) {
		iqn := r.PathValue("iqn")
		t, err := svc.ClearCHAP(iqn)
		reply(w, http.StatusOK, t, err, targetObject(iqn))
	})

	// Discovery sessions.
	m.HandleFunc("GET "+v+"/discovery", func(w http.ResponseWriter, r *http.Request) {
		d, err := svc.Discovery()
		reply(w, http.StatusOK, d, err, discoveryObject)
	})
	m.HandleFunc("PUT "+v+"/discovery/chap", withBody(func(w http.ResponseWriter, r *http.Request, req wire.SetCHAP) {
		d, err := svc.SetDiscoveryCHAP(req)
		reply(w, http.StatusOK, d, err, discoveryObject)
	}))
	m.HandleFunc("DELETE "+v+"/discovery/chap", func(w http.ResponseWriter, r *http.Request) {
		d, err := svc.ClearDiscoveryCHAP()
		reply(w, http.StatusOK, d, err, discoveryObject)
	})

	// Migrations.
	m.HandleFunc("POST "+v+"/migrations", withBody(func(w http.ResponseWriter, r *http.Request, req wire.CreateMigration) {
		p, err := svc.CreateMigration(req)
		reply(w, createdUnlessDryRun(req.DryRun), p, err, pairObject(req.Source))
	}))
	m.HandleFunc("GET "+v+"/migrations", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, svc.Migrations())
	})
	m.HandleFunc("POST "+v+"/migrations/split", withBody(func(w http.ResponseWriter, r *http.Request, req wire.Split) {
		res, err := svc.Split(req)
		reply(w, http.StatusOK, res, err, pairObject(strings.Join(req.Sources, ",")))
	}))
	m.HandleFunc("GET "+v+"/migrations/{source}", func(w http.ResponseWriter, r *http.Request) {
		src := r.PathValue("source")
		p, err := svc.Migration(src)
		reply(w, http.StatusOK, p, err, pairObject(src))
	})
	m.HandleFunc("PATCH "+v+"/migrations/{source}", withBody(func(w http.ResponseWriter, r *http.Request, req wire.SetMigration) {
		src := r.PathValue("source")
		p, err := svc.SetMigration(src, req)
		reply(w, http.StatusOK, p, err, pairObject(src))
	}))
	m.HandleFunc("POST "+v+"/migrations/{source}/{action}", func(w http.ResponseWriter, r *http.Request) {
		src := r.PathValue("source")
		p, err := svc.MigrationAction(src, r.PathValue("action"), r.URL.Query().Get("force") == "true")
		reply(w, http.StatusOK, p, err, pairObject(src))
	})

	s.sessionRoutes(m) // sessions.go
	s.limitsRoutes(m)  // schedule.go
	s.aluaRoutes(m)    // alua.go
	s.configRoutes(m)  // config.go

	s.rollbackRoutes(m) // rollback.go
	s.eventRoutes(m)    // events.go

	// Everything else: JSON 404, or 405 when the path exists with other methods.
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, meth := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			r2 := r.Clone(r.Context())
			r2.Method = meth
			if _, p := m.Handler(r2); p != "/" && p != "" {
				allow = append(allow, meth)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, apiErr(http.StatusMethodNotAllowed, r.URL.Path, "method %s not allowed (allowed: %s)", r.Method, strings.Join(allow, ", ")))
			return
		}
		writeError(w, notFound(r.URL.Path, "no such API path (see docs/cli.md)"))
	})
}
