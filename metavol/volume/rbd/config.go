package rbd

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Config says how to reach a Ceph cluster. Empty fields take librados'
// defaults (CEPH_CONF or /etc/ceph/ceph.conf, client.admin, the keyring
// the configuration names).
type Config struct {
	// Conf is the ceph.conf path.
	Conf string
	// ID is the client name without "client." (e.g. "lmtgt").
	ID string
	// Keyring is the keyring path.
	Keyring string
	// OpTimeout bounds every monitor and OSD operation: an I/O to an
	// unreachable OSD fails after it instead of waiting forever, so a
	// migration leg goes interrupted (0: DefaultOpTimeout).
	OpTimeout time.Duration
}

// Override returns c with conf, id and keyring in place of c's fields
// where they are not empty: a LUN naming its own cluster over the
// server's default (c). The operation timeout stays c's.
func (c Config) Override(conf, id, keyring string) Config {
	if conf != "" {
		c.Conf = conf
	}
	if id != "" {
		c.ID = id
	}
	if keyring != "" {
		c.Keyring = keyring
	}
	return c
}

// DefaultOpTimeout is Config.OpTimeout when unset.
const DefaultOpTimeout = 30 * time.Second

// String names the cluster access without secrets (there are none in a
// Config: the keyring is a path).
func (c Config) String() string {
	conf, id := c.Conf, c.ID
	if conf == "" {
		conf = "default ceph.conf"
	}
	if id == "" {
		id = "admin"
	}
	return fmt.Sprintf("%s as client.%s", conf, id)
}

// Ref names an image: POOL/IMAGE.
type Ref struct {
	Pool  string
	Image string
}

func (r Ref) String() string { return r.Pool + "/" + r.Image }

// Pool and image names: what the rbd tool accepts, without '/' or '@'.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}$`)

// ParseRef parses POOL/IMAGE.
func ParseRef(s string) (Ref, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			r := Ref{Pool: s[:i], Image: s[i+1:]}
			if !nameRE.MatchString(r.Pool) || !nameRE.MatchString(r.Image) {
				break
			}
			return r, nil
		}
	}
	return Ref{}, fmt.Errorf("rbd image %q: want POOL/IMAGE (letters, digits, '.', '_', '-'): %w", s, ErrInvalid)
}

// OpenOptions are the options of Cluster.Open.
type OpenOptions struct {
	// Owner names this lmtgt's use of the image (kept in the image's
	// metadata key OwnerKey while it holds the lock). An exclusive lock
	// left by a dead client whose recorded owner is Owner is our own,
	// from before a crash, and is broken without Takeover.
	Owner string
	// Takeover breaks the exclusive lock of another client (which Ceph
	// then blocklists, so it can no longer write) and takes it.
	Takeover bool
}

// OwnerKey is the image metadata key holding the owner of the lmtgt that
// holds the image's exclusive lock.
const OwnerKey = "lmtgt.owner"

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotBuilt: this lmtgt was built without RBD support.
	ErrNotBuilt = errors.New("this lmtgt was built without RBD support; build with `make RBD=1` (go build -tags rbd,pacific against librbd-dev)")
	// ErrLocked: another client holds the image's exclusive lock (see
	// *LockedError for the holder).
	ErrLocked = errors.New("image locked by another client")
	// ErrInvalid: a bad name or argument.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: the pool or image does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the image exists already.
	ErrExists = errors.New("exists")
	// ErrNoLockFeature: the image lacks the exclusive-lock feature.
	ErrNoLockFeature = errors.New("image has no exclusive-lock feature")
	// ErrClosed: the Clusters were closed (the server is stopping).
	ErrClosed = errors.New("ceph connections closed")
)

// LockedError is the refusal of an image whose exclusive lock another
// client holds. It names the holder.
type LockedError struct {
	Ref Ref
	// Holder is the lock owner as Ceph names it (e.g. "client.4235"),
	// with the address of its watch when known.
	Holder string
	// Owner is the holder's lmtgt owner (OwnerKey), when it is an lmtgt.
	Owner string
}

func (e *LockedError) Error() string {
	who := e.Holder
	if e.Owner != "" {
		who += " (lmtgt " + e.Owner + ")"
	}
	return fmt.Sprintf("rbd %s: exclusive lock held by %s; take it over explicitly (lun create --takeover, lun takeover) only when that client must stop writing", e.Ref, who)
}

func (e *LockedError) Unwrap() error { return ErrLocked }
