package client

import (
	"context"
	"net/http"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Limits reports the server-wide copy limits (max active, bandwidth budget).
func (c *Client) Limits(ctx context.Context) (wire.Limits, error) {
	return call[wire.Limits](ctx, c, http.MethodGet, wire.Version+"/config/limits", nil)
}

// SetLimits changes the server-wide copy limits at run time.
func (c *Client) SetLimits(ctx context.Context, req wire.SetLimits) (wire.Limits, error) {
	return call[wire.Limits](ctx, c, http.MethodPatch, wire.Version+"/config/limits", req)
}

// MigrationActionForce resumes or cancels a pair (named by source, target
// or pair ID); force makes the lone operation on a session's pair
// (recorded on the session).
func (c *Client) MigrationActionForce(ctx context.Context, name, action string, force bool) (wire.Migration, error) {
	path := wire.Version + "/migrations/" + esc(name) + "/" + action
	if force {
		path += "?force=true"
	}
	return call[wire.Migration](ctx, c, http.MethodPost, path, nil)
}

// SplitForce is Split with force (pairs of a session split alone).
func (c *Client) SplitForce(ctx context.Context, names []string, maxPause time.Duration, force bool) (wire.SplitResult, error) {
	req := wire.Split{Sources: names, Force: force}
	if maxPause != 0 {
		req.MaxPause = maxPause.String()
	}
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/migrations/split", req)
}
