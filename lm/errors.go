package lm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// Sentinel errors (wrapped with the object's name; match with errors.Is).
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalid      = errors.New("invalid argument")
	ErrInPair       = errors.New("in a migration pair")
	ErrMapped       = errors.New("mapped to a target")
	ErrNotSynced    = errors.New("pair not synced")
	ErrSplitTimeout = errors.New("split deferred: in-flight I/O did not drain within the pause budget")
	ErrVerify       = errors.New("verify found a difference")
	ErrState        = errors.New("not allowed in this state")
	ErrUnavailable  = errors.New("data volume unavailable")
	ErrTooLarge     = errors.New("file too large for the filesystem")
	// ErrHeld: another client holds the data volume (an RBD image's
	// exclusive lock); taking it over must be asked for.
	ErrHeld = errors.New("held by another client")
	// ErrOffline: the LUN does not serve host I/O (offline.go): a pair
	// naming it could not be loaded, or its data volume is unavailable or
	// was lost. The same sentinel as volume.ErrOffline, so the SCSI front
	// end answers NOT READY without importing lm.
	ErrOffline = volume.ErrOffline
)

// ErrApply: a target change was persisted but could not be applied live
// (the Exporter failed); it was rolled back in the meta volume.
var ErrApply = errors.New("apply failed")

// Refusal is an admin request that lm refused: which object (as the admin
// names it: "lun NAME", "target IQN", "migration SOURCE", "session NAME",
// "discovery", ...), the condition that refused it (Reason, said to the
// admin as is) and its class, one of the sentinels above (Err), which
// says how the admin API answers (400, 404, 409, 500). A refused request
// changes nothing.
type Refusal struct {
	Object string
	Reason string
	Err    error
	// Each lists the refusals a combined one stands for (JoinRefusals):
	// one per object and condition, in the order they were found.
	Each []*Refusal
}

func (r *Refusal) Error() string {
	if r.Object == "" {
		return r.Reason
	}
	return r.Object + ": " + r.Reason
}

func (r *Refusal) Unwrap() error { return r.Err }

// JoinRefusals combines every refusal of one request (a configuration
// plan: several objects, several conditions each) into one, about object:
// its reason counts and numbers them ("3 changes refused: (1) lun a: ...;
// (2) ..."), Each lists them, and its class is the first one's. Combined
// refusals in rs are flattened and a refusal said twice is said once.
// No refusal is nil, one is itself.
func JoinRefusals(object string, rs []*Refusal) error {
	var each []*Refusal
	said := map[string]bool{}
	for _, r := range rs {
		parts := r.Each
		if len(parts) == 0 {
			parts = []*Refusal{r}
		}
		for _, x := range parts {
			if msg := x.Error(); !said[msg] {
				said[msg] = true
				each = append(each, x)
			}
		}
	}
	switch len(each) {
	case 0:
		return nil
	case 1:
		return each[0]
	}
	msgs := make([]string, len(each))
	for i, r := range each {
		msgs[i] = fmt.Sprintf("(%d) %s", i+1, r.Error())
	}
	return &Refusal{Object: object, Reason: fmt.Sprintf("%d changes refused: %s", len(each), strings.Join(msgs, "; ")), Err: each[0].Err, Each: each}
}

// refuse builds a Refusal of class err about object.
func refuse(err error, object, format string, args ...any) *Refusal {
	return &Refusal{Object: object, Reason: fmt.Sprintf(format, args...), Err: err}
}

// refuseAs is refuse for a reason that names its object itself ("lun
// name ...", "pair SRC: ..."): the message is the reason alone, without
// the sentinel's text (the class is the exit code and the HTTP status),
// and the admin API keeps the object it was asked about.
func refuseAs(err error, format string, args ...any) *Refusal {
	return &Refusal{Reason: fmt.Sprintf(format, args...), Err: err}
}

// Object names, as the admin API says them in errors.
func lunObject(name string) string     { return "lun " + name }
func targetObject(iqn string) string   { return "target " + iqn }
func pairObject(source string) string  { return "migration " + source }
func sessionObject(name string) string { return "session " + name }

const discoveryObject = "discovery"

// ruleError is a rule's refusal of class ErrInvalid whose text is the
// reason alone: the class is the exit code and the HTTP status, so the
// message does not end with the sentinel's "invalid argument".
type ruleError string

func (e ruleError) Error() string { return string(e) }
func (e ruleError) Unwrap() error { return ErrInvalid }

// invalidf is a ruleError: fmt.Errorf("...: %w", ErrInvalid) without the
// sentinel's text.
func invalidf(format string, args ...any) error { return ruleError(fmt.Sprintf(format, args...)) }
