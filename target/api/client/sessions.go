package client

import (
	"context"
	"net/http"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// CreateSession creates a migration session and all its pairs.
func (c *Client) CreateSession(ctx context.Context, req wire.CreateSession) (wire.MigrationSession, error) {
	return call[wire.MigrationSession](ctx, c, http.MethodPost, wire.Version+"/sessions", req)
}

// Sessions lists the migration sessions.
func (c *Client) Sessions(ctx context.Context) ([]wire.MigrationSession, error) {
	return call[[]wire.MigrationSession](ctx, c, http.MethodGet, wire.Version+"/sessions", nil)
}

// MigrationSession shows one migration session.
func (c *Client) MigrationSession(ctx context.Context, name string) (wire.MigrationSession, error) {
	return call[wire.MigrationSession](ctx, c, http.MethodGet, wire.Version+"/sessions/"+esc(name), nil)
}

// PauseSession pauses every pair of a session.
func (c *Client) PauseSession(ctx context.Context, name string) (wire.MigrationSession, error) {
	return c.sessionAction(ctx, name, "pause")
}

// ResumeSession resumes a paused session.
func (c *Client) ResumeSession(ctx context.Context, name string) (wire.MigrationSession, error) {
	return c.sessionAction(ctx, name, "resume")
}

// CancelSession cancels every pair of a session.
func (c *Client) CancelSession(ctx context.Context, name string) (wire.MigrationSession, error) {
	return c.sessionAction(ctx, name, "cancel")
}

func (c *Client) sessionAction(ctx context.Context, name, action string) (wire.MigrationSession, error) {
	return call[wire.MigrationSession](ctx, c, http.MethodPost, wire.Version+"/sessions/"+esc(name)+"/"+action, nil)
}

// SetSession changes the speed and/or cap of every pair of a session.
func (c *Client) SetSession(ctx context.Context, name string, req wire.SetMigration) (wire.MigrationSession, error) {
	return call[wire.MigrationSession](ctx, c, http.MethodPatch, wire.Version+"/sessions/"+esc(name), req)
}

// SplitSession splits every pair of a session in one consistent split.
func (c *Client) SplitSession(ctx context.Context, name string, maxPause time.Duration) (wire.SplitResult, error) {
	var req wire.SplitSession
	if maxPause != 0 { // 0: the daemon's default; a negative one is refused there
		req.MaxPause = maxPause.String()
	}
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/sessions/"+esc(name)+"/split", req)
}

// DeleteSession forgets a split or cancelled session.
func (c *Client) DeleteSession(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, wire.Version+"/sessions/"+esc(name), nil, nil)
}
