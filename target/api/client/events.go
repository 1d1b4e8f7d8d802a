package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// EventQuery selects events (GET /v1/events).
type EventQuery struct {
	After uint64
	Since time.Time
	Types []string
	Limit int
	// Wait > 0 makes the request a long poll (see the server's doc).
	Wait time.Duration
}

// Events lists the events q selects.
func (c *Client) Events(ctx context.Context, q EventQuery) (wire.EventList, error) {
	v := url.Values{}
	if q.After > 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if len(q.Types) > 0 {
		v.Set("type", strings.Join(q.Types, ","))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Wait > 0 {
		v.Set("wait", q.Wait.String())
	}
	path := wire.Version + "/events"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	return call[wire.EventList](ctx, c, http.MethodGet, path, nil)
}

// MigrationHistory lists the histories of the pairs of source ("" all).
func (c *Client) MigrationHistory(ctx context.Context, source string) ([]wire.PairHistory, error) {
	path := wire.Version + "/history/migrations"
	if source != "" {
		path += "?source=" + url.QueryEscape(source)
	}
	return call[[]wire.PairHistory](ctx, c, http.MethodGet, path, nil)
}

// SessionHistory is the history of the session named name.
func (c *Client) SessionHistory(ctx context.Context, name string) (wire.SessionHistory, error) {
	return call[wire.SessionHistory](ctx, c, http.MethodGet, wire.Version+"/history/sessions/"+esc(name), nil)
}
