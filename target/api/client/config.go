package client

import (
	"context"
	"net/http"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// ExportConfig returns the server's configuration; secrets are
// placeholders unless withSecrets.
func (c *Client) ExportConfig(ctx context.Context, withSecrets bool) (wire.Config, error) {
	path := wire.Version + "/config"
	if withSecrets {
		path += "?secrets=true"
	}
	return call[wire.Config](ctx, c, http.MethodGet, path, nil)
}

// ApplyConfig plans (DryRun) or applies a configuration.
func (c *Client) ApplyConfig(ctx context.Context, req wire.ApplyConfig) (wire.ApplyResult, error) {
	return call[wire.ApplyResult](ctx, c, http.MethodPost, wire.Version+"/config/apply", req)
}

// ConfigBackups lists the automatic configuration backups, newest first.
func (c *Client) ConfigBackups(ctx context.Context) ([]wire.ConfigBackup, error) {
	return call[[]wire.ConfigBackup](ctx, c, http.MethodGet, wire.Version+"/config/backups", nil)
}
