package client

import (
	"context"
	"net/http"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// SplitWith is Split with its options: keepSource keeps the pairs
// switched (mirrored back until rollback or commit); retire (nil: none)
// retires the old LUNs after a plain split.
func (c *Client) SplitWith(ctx context.Context, sources []string, maxPause time.Duration, keepSource, force bool, retire *wire.Retire) (wire.SplitResult, error) {
	req := wire.Split{Sources: sources, KeepSource: keepSource, Force: force, Retire: retire}
	if maxPause != 0 { // 0: the daemon's default; a negative one is refused there
		req.MaxPause = maxPause.String()
	}
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/migrations/split", req)
}

// Rollback switches switched pairs back to their old volumes.
func (c *Client) Rollback(ctx context.Context, sources []string, maxPause time.Duration) (wire.SplitResult, error) {
	req := wire.Split{Sources: sources}
	if maxPause != 0 {
		req.MaxPause = maxPause.String()
	}
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/migrations/rollback", req)
}

// Commit ends the mirroring of switched pairs (they become split) and
// retires the old LUNs if retire is not nil.
func (c *Client) Commit(ctx context.Context, sources []string, retire *wire.Retire) (wire.SplitResult, error) {
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/migrations/commit", wire.Commit{Sources: sources, Retire: retire})
}

// Retire retires the old LUN of the source's last split pair.
func (c *Client) Retire(ctx context.Context, source string, retire wire.Retire) (wire.Retired, error) {
	return call[wire.Retired](ctx, c, http.MethodPost, wire.Version+"/migrations/"+esc(source)+"/retire", retire)
}

// DeleteMigrations forgets the ended pair records of a source.
func (c *Client) DeleteMigrations(ctx context.Context, source string) (wire.DeletedMigrations, error) {
	return call[wire.DeletedMigrations](ctx, c, http.MethodDelete, wire.Version+"/migrations/"+esc(source), nil)
}

// SplitSessionWith is SplitSession with --keep-source and --retire.
func (c *Client) SplitSessionWith(ctx context.Context, name string, maxPause time.Duration, keepSource bool, retire *wire.Retire) (wire.SplitResult, error) {
	req := wire.SplitSession{KeepSource: keepSource, Retire: retire}
	if maxPause != 0 {
		req.MaxPause = maxPause.String()
	}
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/sessions/"+esc(name)+"/split", req)
}

// RollbackSession rolls back every pair of a switched session.
func (c *Client) RollbackSession(ctx context.Context, name string, maxPause time.Duration) (wire.SplitResult, error) {
	var req wire.SplitSession
	if maxPause != 0 {
		req.MaxPause = maxPause.String()
	}
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/sessions/"+esc(name)+"/rollback", req)
}

// CommitSession commits every pair of a switched session.
func (c *Client) CommitSession(ctx context.Context, name string, retire *wire.Retire) (wire.SplitResult, error) {
	return call[wire.SplitResult](ctx, c, http.MethodPost, wire.Version+"/sessions/"+esc(name)+"/commit", wire.SplitSession{Retire: retire})
}
