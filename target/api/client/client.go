package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Client talks to one lmtgt admin endpoint. Safe for concurrent use.
type Client struct {
	http  *http.Client
	base  string // "http://lmtgt" for a unix socket, "http://host:port" for TCP
	token string
	addr  string
}

// Options configure a Client.
type Options struct {
	// Token is sent as "Authorization: Bearer TOKEN" when not empty.
	Token string
	// Timeout bounds one request (default 5 minutes: a split or a large
	// create can take a while).
	Timeout time.Duration
}

// New returns a client for addr: a unix socket path (anything that is not
// "http://..." / "https://..." and has no host:port shape is a path), or a
// TCP address "host:port" / "http://host:port".
func New(addr string, opts Options) *Client {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	c := &Client{token: opts.Token, addr: addr}
	tr := &http.Transport{MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second}
	switch {
	case strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://"):
		c.base = strings.TrimRight(addr, "/")
	case isHostPort(addr):
		c.base = "http://" + addr
	default:
		path := addr
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://lmtgt"
	}
	c.http = &http.Client{Transport: tr, Timeout: opts.Timeout}
	return c
}

// isHostPort reports whether s looks like "host:port" rather than a path.
func isHostPort(s string) bool {
	if strings.Contains(s, "/") {
		return false
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return false
	}
	_ = host
	for _, r := range port {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Addr is the address the client was made for.
func (c *Client) Addr() string { return c.addr }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Do sends one request with an optional JSON body and decodes a JSON
// response into out (when not nil). Non-2xx responses come back as
// *wire.Error. Connection failures name the address.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	return c.DoRaw(ctx, method, path, rd, out)
}

// DoRaw is Do with a raw request body (tests use it for malformed JSON).
func (c *Client) DoRaw(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &ConnError{Addr: c.addr, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response of %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &wire.Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
		}
		return e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// ConnError is a failure to reach the admin endpoint at all.
type ConnError struct {
	Addr string
	Err  error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("admin %s: cannot reach lmtgt: %s (is `lmtgt serve` running? use --admin or LMTGT_ADMIN)", e.Addr, connReason(e.Err))
}

// connReason is the reason of a connection failure without the Go
// internals around it (`Get "http://lmtgt/v1/luns": dial unix S:
// connect: `): "no such file or directory", "connection refused",
// "permission denied", "i/o timeout".
func connReason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

func (e *ConnError) Unwrap() error { return e.Err }

// StatusOf returns the HTTP status of an API error, or 0.
func StatusOf(err error) int {
	var e *wire.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// esc escapes a name as one URL path segment. url.PathEscape leaves "."
// and ".." as they are, which the server's mux would clean away (GET
// /v1/luns/. is the LUN list): they are sent as %2E so the server sees the
// name and answers with its name rule.
func esc(s string) string {
	switch s {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(s)
}

// call sends one request (see Do) and returns the response decoded as a T.
func call[T any](ctx context.Context, c *Client, method, path string, body any) (T, error) {
	var v T
	err := c.Do(ctx, method, path, body, &v)
	return v, err
}

// Health checks the server.
func (c *Client) Health(ctx context.Context) (wire.Health, error) {
	return call[wire.Health](ctx, c, http.MethodGet, wire.Version+"/health", nil)
}

// CreateLUN creates a LUN.
func (c *Client) CreateLUN(ctx context.Context, req wire.CreateLUN) (wire.LUN, error) {
	return call[wire.LUN](ctx, c, http.MethodPost, wire.Version+"/luns", req)
}

// ImportLUN creates a LUN on a LUN of another iSCSI target.
func (c *Client) ImportLUN(ctx context.Context, req wire.ImportLUN) (wire.LUN, error) {
	return call[wire.LUN](ctx, c, http.MethodPost, wire.Version+"/luns/import", req)
}

// LUNs lists every LUN.
func (c *Client) LUNs(ctx context.Context) ([]wire.LUN, error) {
	return call[[]wire.LUN](ctx, c, http.MethodGet, wire.Version+"/luns", nil)
}

// LUN shows one LUN by name.
func (c *Client) LUN(ctx context.Context, name string) (wire.LUN, error) {
	return call[wire.LUN](ctx, c, http.MethodGet, wire.Version+"/luns/"+esc(name), nil)
}

// ResizeLUN grows a LUN to size bytes.
func (c *Client) ResizeLUN(ctx context.Context, name string, size int64) (wire.LUN, error) {
	return call[wire.LUN](ctx, c, http.MethodPost, wire.Version+"/luns/"+esc(name)+"/resize", wire.ResizeLUN{Size: size})
}

// DeleteLUN deletes a LUN (refused while mapped or in a pair).
func (c *Client) DeleteLUN(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, wire.Version+"/luns/"+esc(name), nil, nil)
}

// TakeoverLUN takes a LUN's RBD image back from another client.
func (c *Client) TakeoverLUN(ctx context.Context, name string) (wire.LUN, error) {
	return call[wire.LUN](ctx, c, http.MethodPost, wire.Version+"/luns/"+esc(name)+"/takeover", nil)
}

// TakeoverLUNFrom takes a LUN's RBD image over from another lmtgt
// server, re-reading the reservations of that server's LUN adoptFrom
// (iscsi:// URL) first (a handover).
func (c *Client) TakeoverLUNFrom(ctx context.Context, name, adoptFrom string) (wire.LUN, error) {
	return call[wire.LUN](ctx, c, http.MethodPost, wire.Version+"/luns/"+esc(name)+"/takeover?adopt_from="+url.QueryEscape(adoptFrom), nil)
}

// DeleteLUNImage deletes a LUN and its RBD image even when lmtgt did not
// create the image.
func (c *Client) DeleteLUNImage(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, wire.Version+"/luns/"+esc(name)+"?delete_image=true", nil, nil)
}

// CreateTarget creates a target.
func (c *Client) CreateTarget(ctx context.Context, iqn string, portals ...string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodPost, wire.Version+"/targets", wire.CreateTarget{IQN: iqn, Portals: portals})
}

// AddPortal adds a portal to a target's portal group.
func (c *Client) AddPortal(ctx context.Context, iqn, portal string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodPost, wire.Version+"/targets/"+esc(iqn)+"/portals", wire.Portal{Portal: portal})
}

// RemovePortal removes a portal (or ALL) from a target's portal group.
func (c *Client) RemovePortal(ctx context.Context, iqn, portal string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodDelete, wire.Version+"/targets/"+esc(iqn)+"/portals/"+esc(portal), nil)
}

// Targets lists every target.
func (c *Client) Targets(ctx context.Context) ([]wire.Target, error) {
	return call[[]wire.Target](ctx, c, http.MethodGet, wire.Version+"/targets", nil)
}

// Target shows one target.
func (c *Client) Target(ctx context.Context, iqn string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodGet, wire.Version+"/targets/"+esc(iqn), nil)
}

// DeleteTarget deletes a target; with force even when LUNs are mapped.
func (c *Client) DeleteTarget(ctx context.Context, iqn string, force bool) error {
	p := wire.Version + "/targets/" + esc(iqn)
	if force {
		p += "?force=true"
	}
	return c.Do(ctx, http.MethodDelete, p, nil, nil)
}

// Map exports a LUN (by name) on a target; number nil = lowest free.
func (c *Client) Map(ctx context.Context, iqn, lun string, number *uint64) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodPost, wire.Version+"/targets/"+esc(iqn)+"/luns", wire.MapLUN{LUN: lun, Number: number})
}

// MapWith maps a LUN with every mapping setting (number, write
// protection, initiator mask).
func (c *Client) MapWith(ctx context.Context, iqn string, req wire.MapLUN) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodPost, wire.Version+"/targets/"+esc(iqn)+"/luns", req)
}

// Logout ends every session initiator has on the target iqn.
func (c *Client) Logout(ctx context.Context, iqn, initiator string) (wire.Logout, error) {
	return call[wire.Logout](ctx, c, http.MethodPost, wire.Version+"/targets/"+esc(iqn)+"/logout", wire.Logout{Initiator: initiator})
}

// SetMapping changes a mapping's write protection or initiator mask.
func (c *Client) SetMapping(ctx context.Context, iqn, lun string, req wire.SetMapping) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodPatch, wire.Version+"/targets/"+esc(iqn)+"/luns/"+esc(lun), req)
}

// Unmap removes a LUN (by name) from a target.
func (c *Client) Unmap(ctx context.Context, iqn, lun string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodDelete, wire.Version+"/targets/"+esc(iqn)+"/luns/"+esc(lun), nil)
}

// Allow lets an initiator (or ALL) log in to a target.
func (c *Client) Allow(ctx context.Context, iqn, initiator string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodPost, wire.Version+"/targets/"+esc(iqn)+"/initiators", wire.Allow{Initiator: initiator})
}

// Disallow removes an initiator (or ALL) from a target's ACL.
func (c *Client) Disallow(ctx context.Context, iqn, initiator string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodDelete, wire.Version+"/targets/"+esc(iqn)+"/initiators/"+esc(initiator), nil)
}

// SetCHAP sets a target's CHAP credentials.
func (c *Client) SetCHAP(ctx context.Context, iqn string, req wire.SetCHAP) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodPut, wire.Version+"/targets/"+esc(iqn)+"/chap", req)
}

// Discovery shows how discovery sessions authenticate.
func (c *Client) Discovery(ctx context.Context) (wire.Discovery, error) {
	return call[wire.Discovery](ctx, c, http.MethodGet, wire.Version+"/discovery", nil)
}

// SetDiscoveryCHAP requires CHAP on discovery sessions.
func (c *Client) SetDiscoveryCHAP(ctx context.Context, req wire.SetCHAP) (wire.Discovery, error) {
	return call[wire.Discovery](ctx, c, http.MethodPut, wire.Version+"/discovery/chap", req)
}

// ClearDiscoveryCHAP lets discovery sessions in without authentication.
func (c *Client) ClearDiscoveryCHAP(ctx context.Context) (wire.Discovery, error) {
	return call[wire.Discovery](ctx, c, http.MethodDelete, wire.Version+"/discovery/chap", nil)
}

// ClearCHAP turns CHAP off for a target.
func (c *Client) ClearCHAP(ctx context.Context, iqn string) (wire.Target, error) {
	return call[wire.Target](ctx, c, http.MethodDelete, wire.Version+"/targets/"+esc(iqn)+"/chap", nil)
}

// CreateMigration creates a migration pair.
func (c *Client) CreateMigration(ctx context.Context, req wire.CreateMigration) (wire.Migration, error) {
	return call[wire.Migration](ctx, c, http.MethodPost, wire.Version+"/migrations", req)
}

// Migrations lists every pair.
func (c *Client) Migrations(ctx context.Context) ([]wire.Migration, error) {
	return call[[]wire.Migration](ctx, c, http.MethodGet, wire.Version+"/migrations", nil)
}

// Migration shows the pair whose source LUN is named source.
func (c *Client) Migration(ctx context.Context, source string) (wire.Migration, error) {
	return call[wire.Migration](ctx, c, http.MethodGet, wire.Version+"/migrations/"+esc(source), nil)
}

// PauseMigration pauses a pair.
func (c *Client) PauseMigration(ctx context.Context, source string) (wire.Migration, error) {
	return c.migrationAction(ctx, source, "pause")
}

// ResumeMigration resumes a pair.
func (c *Client) ResumeMigration(ctx context.Context, source string) (wire.Migration, error) {
	return c.migrationAction(ctx, source, "resume")
}

// CancelMigration cancels a pair.
func (c *Client) CancelMigration(ctx context.Context, source string) (wire.Migration, error) {
	return c.migrationAction(ctx, source, "cancel")
}

func (c *Client) migrationAction(ctx context.Context, source, action string) (wire.Migration, error) {
	return call[wire.Migration](ctx, c, http.MethodPost, wire.Version+"/migrations/"+esc(source)+"/"+action, nil)
}

// SetMigration changes a pair's throttle.
func (c *Client) SetMigration(ctx context.Context, source string, req wire.SetMigration) (wire.Migration, error) {
	return call[wire.Migration](ctx, c, http.MethodPatch, wire.Version+"/migrations/"+esc(source), req)
}

// Split splits one pair or several in one consistent split.
func (c *Client) Split(ctx context.Context, sources []string, maxPause time.Duration) (wire.SplitResult, error) {
	req := wire.Split{Sources: sources}
	if maxPause != 0 { // 0: the daemon's default; a negative one is refused there
		req.MaxPause = maxPause.String()
	}
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/migrations/split", req)
}
