package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Audit of admin actions: every request that is not a read (any method but
// GET and HEAD) is one admin action, logged in one line by logged and
// recorded in the event log (type "admin") with who asked: on the unix
// socket the peer's user and process (SO_PEERCRED: "user root (uid 0, pid
// 1234)"), on the TCP listener "token holder at ADDR". The object comes
// from the route's path values, else from the response body (the created
// object's name); a refusal carries the error's reason.

type callerKey struct{}

// withCaller is the admin servers' ConnContext: it names the peer once per
// connection.
func withCaller(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, callerKey{}, callerOf(c))
}

func callerOf(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return "token holder at " + c.RemoteAddr().String()
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "unix socket peer"
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return "unix socket peer"
	}
	uid := strconv.FormatUint(uint64(cred.Uid), 10)
	name := "uid " + uid
	if u, err := user.LookupId(uid); err == nil {
		name = u.Username
	}
	return "user " + name + " (uid " + uid + ", pid " + strconv.Itoa(int(cred.Pid)) + ")"
}

func callerFrom(r *http.Request) string {
	if s, ok := r.Context().Value(callerKey{}).(string); ok {
		return s
	}
	return "admin api"
}

// errorReason is the reason of an error response body (or the body).
func errorReason(body []byte) string {
	var e wire.Error
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return e.Message
	}
	return strings.TrimSpace(string(body))
}

// kinds names the object kind of the first path segment after /v1.
var kinds = map[string]string{
	"luns": "lun", "targets": "target", "migrations": "migration", "sessions": "session",
	"discovery": "discovery", "alua": "alua",
}

// audit records an admin action in the event log and returns it; reads
// return nil.
func (s *Server) audit(r *http.Request, rec *recorder, req *requestNames) *lm.Event {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, wire.Version+"/"), "/")
	kind := kinds[segs[0]]
	if kind == "" {
		kind = segs[0]
	}
	e := lm.Event{Type: lm.EventAdmin, Who: callerFrom(r), OK: rec.status < 400}
	e.Action = kind + " " + verb(r, segs)
	name := ""
	for _, k := range []string{"name", "iqn", "source"} {
		if v := r.PathValue(k); v != "" {
			name = v
			break
		}
	}
	var body struct {
		Name   string `json:"name"`
		IQN    string `json:"iqn"`
		Source string `json:"source"`
		Object string `json:"object"`
	}
	json.Unmarshal(rec.body, &body)
	if name == "" {
		name = body.Name + body.IQN + body.Source
	}
	switch {
	case name != "":
		e.Object = kind + " " + name
	case body.Object != "":
		e.Object = body.Object
	default:
		e.Object = kind
	}
	switch kind {
	case "lun":
		e.LUN = name
	case "target":
		e.Target = name
		if lunName := r.PathValue("name"); lunName != "" && strings.HasSuffix(r.Pattern, "/luns/{name}") {
			e.LUN = lunName
		}
		if strings.HasSuffix(r.Pattern, "/initiators/{name}") {
			e.Initiator = r.PathValue("name")
		}
		if n := req.get(); n.LUN != "" || n.Initiator != "" { // map, allow
			e.LUN, e.Initiator = cmp.Or(e.LUN, n.LUN), cmp.Or(e.Initiator, n.Initiator)
		}
	case "migration":
		e.LUN = name
	case "session":
		e.Session = name
	}
	if !e.OK {
		e.Reason = errorReason(rec.body)
	}
	s.svc.lm.Events().Record(e)
	return &e
}

// verb names what a request does from its route.
func verb(r *http.Request, segs []string) string {
	if a := r.PathValue("action"); a != "" {
		return a
	}
	last := segs[len(segs)-1]
	pat := r.Pattern
	switch {
	case strings.HasSuffix(pat, "/luns") && len(segs) > 2:
		return "map"
	case strings.HasSuffix(pat, "/luns/{name}") && segs[0] == "targets":
		return "unmap"
	case strings.HasSuffix(pat, "/initiators"):
		return "allow"
	case strings.HasSuffix(pat, "/initiators/{name}"):
		return "disallow"
	case strings.HasSuffix(pat, "/chap") && r.Method == http.MethodDelete:
		return "chap clear"
	case strings.HasSuffix(pat, "/chap"):
		return "chap set"
	}
	switch r.Method {
	case http.MethodDelete:
		return "delete"
	case http.MethodPatch:
		return "set"
	}
	if len(segs) == 1 {
		return "create"
	}
	if strings.HasPrefix(last, "{") || r.PathValue(strings.Trim(last, "{}")) == last {
		return strings.ToLower(r.Method)
	}
	return last
}

// requestNames are the names an admin request's body carries (the LUN a
// map names, the initiator an allow names). The body is read once by the
// handler; tee keeps a bounded copy, decoded only into these two fields,
// so that no secret (CHAP) is ever kept.
type requestNames struct {
	buf bytes.Buffer
}

// names is what get returns.
type names struct{ LUN, Initiator string }

func (q *requestNames) tee(body io.ReadCloser) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{io.TeeReader(body, limitWriter{&q.buf, maxRecorded}), body}
}

// get decodes the names and forgets the copy of the body.
func (q *requestNames) get() names {
	if q == nil {
		return names{}
	}
	var v struct {
		LUN       string `json:"lun"`
		Initiator string `json:"initiator"`
	}
	json.Unmarshal(q.buf.Bytes(), &v)
	q.buf.Reset()
	return names{v.LUN, v.Initiator}
}

// limitWriter writes at most n bytes into w and drops the rest.
type limitWriter struct {
	w *bytes.Buffer
	n int
}

func (l limitWriter) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
