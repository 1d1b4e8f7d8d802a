package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// ALUA shows the target port groups, the targets' ports and the LUNs'
// access states (one LUN when lun is not empty).
func (c *Client) ALUA(ctx context.Context, lun string) (wire.ALUA, error) {
	path := wire.Version + "/alua"
	if lun != "" {
		path += "?lun=" + url.QueryEscape(lun)
	}
	return call[wire.ALUA](ctx, c, http.MethodGet, path, nil)
}

// SetTargetALUA sets a target's target port group and/or relative target
// port ID (nil: unchanged).
func (c *Client) SetTargetALUA(ctx context.Context, iqn string, req wire.SetALUATarget) (wire.ALUATarget, error) {
	return call[wire.ALUATarget](ctx, c, http.MethodPut, wire.Version+"/alua/targets/"+esc(iqn), req)
}

// SetALUAState sets a LUN's access state in one target port group.
func (c *Client) SetALUAState(ctx context.Context, lun string, group int, state string) (wire.ALUALUN, error) {
	return call[wire.ALUALUN](ctx, c, http.MethodPut,
		wire.Version+"/alua/luns/"+esc(lun)+"/groups/"+strconv.Itoa(group), wire.SetALUAState{State: state})
}
