package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// apiErr makes an error response about object with a status and a reason.
func apiErr(status int, object, format string, args ...any) *wire.Error {
	reason := fmt.Sprintf(format, args...)
	msg := reason
	if object != "" {
		msg = object + ": " + reason
	}
	return &wire.Error{Status: status, Message: msg, Object: object, Reason: reason}
}

func invalid(object, format string, args ...any) *wire.Error {
	return apiErr(http.StatusBadRequest, object, format, args...)
}

func notFound(object, format string, args ...any) *wire.Error {
	return apiErr(http.StatusNotFound, object, format, args...)
}

// sentinels maps the lm, metavol and volume sentinel errors to a status.
// The first match wins, so the more specific errors come first.
var sentinels = []struct {
	err    error
	status int
}{
	{lm.ErrApply, http.StatusInternalServerError},
	{lm.ErrFence, http.StatusConflict}, // the old path of an imported source cannot be fenced
	{lm.ErrInPair, http.StatusConflict},
	{lm.ErrMapped, http.StatusConflict},
	{lm.ErrNotSynced, http.StatusConflict},
	{lm.ErrSplitTimeout, http.StatusConflict},
	{lm.ErrVerify, http.StatusConflict},
	{lm.ErrState, http.StatusConflict},
	{lm.ErrHeld, http.StatusConflict}, // an RBD image locked by another client
	{lm.ErrUnavailable, http.StatusServiceUnavailable},
	{lm.ErrOffline, http.StatusConflict}, // fenced by a pair that could not be loaded (the message names it)
	{lm.ErrExists, http.StatusConflict},
	{lm.ErrTooLarge, http.StatusBadRequest}, // EFBIG: a size the filesystem cannot hold
	{metavol.ErrExists, http.StatusConflict},
	{lm.ErrInvalid, http.StatusBadRequest},
	{metavol.ErrInvalid, http.StatusBadRequest},
	{volume.ErrNotFound, http.StatusBadRequest}, // a --path that does not exist
	{volume.ErrOutOfRange, http.StatusBadRequest},
	{lm.ErrNotFound, http.StatusNotFound},
	{metavol.ErrNotFound, http.StatusNotFound},
	{metavol.ErrConflict, http.StatusConflict},
	{metavol.ErrFull, http.StatusInsufficientStorage},
}

// toWire turns any error into an error response about object. Errors that
// match no sentinel are internal (500).
//
// A refusal of lm (lm.Refusal) keeps its own object and reason, and its
// message is the refusal's alone (a refusal wrapped with more context, as
// a split wraps a pair's, is answered as the refusal).
func toWire(err error, object string) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	e := &wire.Error{Status: http.StatusInternalServerError, Message: err.Error(), Object: object, Reason: err.Error()}
	var r *lm.Refusal
	if errors.As(err, &r) {
		e.Message, e.Reason = r.Error(), r.Reason
		if r.Object != "" {
			e.Object = r.Object
		}
		for _, s := range sentinels {
			if errors.Is(r, s.err) {
				e.Status = s.status
				break
			}
		}
		return e
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			e.Status = s.status
			e.Reason = s.err.Error()
			break
		}
	}
	return e
}
