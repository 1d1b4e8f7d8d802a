package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// MaxLUNNumber is the highest LUN number a mapping may use (SAM flat
// space addressing: 14 bits).
const MaxLUNNumber = 16383

// DefaultMaxPause is the split's I/O pause budget when none is given.
const DefaultMaxPause = 100 * time.Millisecond

// Manager is what the API needs from package lm (*lm.Manager implements it).
type Manager interface {
	LUN(id string) (volume.Volume, error)
	CreateLUN(req lm.CreateLUNRequest) (metavol.LUN, error)
	ImportLUN(req lm.ImportLUNRequest) (metavol.LUN, error)
	RemoteState(lunID string) string
	Fence(lunID string) lm.FenceStatus
	ResizeLUN(name string, size int64) (metavol.LUN, error)
	DeleteLUN(name string) error
	DeleteLUNWith(name string, opts lm.DeleteLUNOptions) error
	RBDState(lunID string) (lm.RBDStatus, bool)
	TakeoverLUN(name string) (metavol.LUN, error)
	TakeoverLUNFrom(name string, from *metavol.Remote) (metavol.LUN, error)
	CreatePair(req lm.PairRequest) (lm.PairStatus, error)
	Pairs() []lm.PairStatus
	Pair(source string) (lm.PairStatus, error)
	Pause(source string) error
	Resume(source string) error
	Cancel(source string) error
	Set(source string, req lm.SetRequest) (lm.PairStatus, error)
	Split(sources []string, maxPause time.Duration) (lm.SplitResult, error)
	LUNStatus(id string) lm.LUNStatus
}

// Exporter is what the API needs from the iSCSI side (*target.Server).
type Exporter interface {
	Apply(targets []target.Target) error
	CapacityChanged(lunID string)
	Sessions() []iscsi.SessionInfo
	SetDiscoveryCHAP(c *iscsi.CHAP)
}

// Service is the admin operations behind the HTTP handlers; `serve --demo`
// calls it directly. Safe for concurrent use.
type Service struct {
	db  *metavol.DB
	lm  Manager
	exp Exporter // nil: nothing is exported live (tests of the API alone)
	log zerolog.Logger

	// mu serializes every change that involves target records (and the
	// LUN deletes and pair creations that check them), so that changes are
	// persisted and then applied live in one order. Never held during
	// host I/O; held during Apply.
	mu sync.Mutex
}

// NewService returns the admin operations over db, the LUN manager and the
// exporter (which may be nil).
func NewService(db *metavol.DB, m Manager, exp Exporter, log zerolog.Logger) *Service {
	return &Service{db: db, lm: m, exp: exp, log: log}
}

// pairHoldsLUN reports whether a pair in this state still holds its LUNs
// (every state but the final split and cancelled).
func pairHoldsLUN(state string) bool {
	return state != "split" && state != "cancelled"
}

// orNotFound turns metavol.ErrNotFound into a 404 about obj; other errors
// pass unchanged.
func orNotFound(err error, obj string) error {
	if errors.Is(err, metavol.ErrNotFound) {
		return notFound(obj, "not found")
	}
	return err
}

// oneOrAll returns the record key names (a 404 about obj if there is none),
// or every record when key is "".
func oneOrAll[T any](key string, get func(string) (T, error), all func() ([]T, error), obj string) ([]T, error) {
	if key == "" {
		return all()
	}
	r, err := get(key)
	if err != nil {
		return nil, orNotFound(err, obj)
	}
	return []T{r}, nil
}

// only returns the one view of a lookup by name (oneOrAll with a key).
func only[T any](views []T, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, err
	}
	return views[0], nil
}

// ---- LUNs ----

func lunObject(name string) string { return "lun " + name }

// CreateLUN creates a LUN through lm after checking the request.
func (s *Service) CreateLUN(req wire.CreateLUN) (wire.LUN, error) {
	obj := lunObject(req.Name)
	if req.Name == "" {
		return wire.LUN{}, invalid("lun", "a name is required")
	}
	if err := checkLUNName(req.Name); err != nil {
		return wire.LUN{}, err
	}
	bs := req.BlockSize
	if bs == 0 {
		bs = 512
	}
	if bs != 512 && bs != 4096 {
		return wire.LUN{}, invalid(obj, "block size %d: must be 512 or 4096", req.BlockSize)
	}
	switch {
	case req.Size < 0:
		return wire.LUN{}, invalid(obj, "size %d is negative", req.Size)
	case req.Size == 0 && req.Path == "" && req.RBD == "":
		return wire.LUN{}, invalid(obj, "a size is required (for example --size 1GiB)")
	case req.Size != 0 && req.Size < int64(bs):
		return wire.LUN{}, invalid(obj, "size %d is too small: at least one block of %d bytes", req.Size, bs)
	case req.Size%int64(bs) != 0:
		return wire.LUN{}, invalid(obj, "size %d is not a multiple of the block size %d", req.Size, bs)
	}
	if req.Path != "" {
		if err := checkPath(req.Path, req.Size); err != nil {
			return wire.LUN{}, invalid(obj, "%v", err)
		}
	}
	if req.RBD != "" && (req.Path != "" || req.Direct || req.Force) {
		return wire.LUN{}, invalid(obj, "--rbd excludes --path, --direct and --force")
	}
	var adopt *metavol.Remote
	if req.AdoptFrom != "" {
		if req.RBD == "" {
			return wire.LUN{}, invalid(obj, "--adopt-from is for --rbd (a handover of an RBD LUN between two servers)")
		}
		r, err := adoptRemote(req.AdoptFrom)
		if err != nil {
			return wire.LUN{}, invalid(obj, "%v", err)
		}
		adopt = r
	}
	l, err := s.lm.CreateLUN(lm.CreateLUNRequest{Name: req.Name, Size: req.Size, BlockSize: bs, Path: req.Path, Direct: req.Direct, Force: req.Force,
		RBD: req.RBD, Takeover: req.Takeover, AdoptFrom: adopt})
	if err != nil {
		return wire.LUN{}, toWire(err, obj)
	}
	s.log.Info().Str("lun", l.Name).Str("id", l.ID).Int64("size", l.Size).Bool("direct", req.Direct).Msg("LUN created")
	return s.LUN(l.Name)
}

// ImportLUN creates a LUN whose data volume is a LUN on another iSCSI
// target (lm.ImportLUN). The URL must not carry credentials (they would
// end up in shell history and process lists): they come in the CHAP
// fields. No error or log line names a secret.
func (s *Service) ImportLUN(req wire.ImportLUN) (wire.LUN, error) {
	obj := lunObject(req.Name)
	if req.Name == "" {
		return wire.LUN{}, invalid("lun", "a name is required")
	}
	if req.From == "" {
		return wire.LUN{}, invalid(obj, "--from iscsi://HOST[:PORT]/IQN/LUN is required")
	}
	u, err := iscsivol.ParseURL(req.From)
	if err != nil {
		return wire.LUN{}, invalid(obj, "%v", err)
	}
	if u.CHAPUser != "" {
		return wire.LUN{}, invalid(obj, "%s: give CHAP credentials with --chap-user and --chap-secret-file, not in the URL", iscsivol.Redact(req.From))
	}
	if (req.CHAPUser == "") != (req.CHAPSecret == "") {
		return wire.LUN{}, invalid(obj, "CHAP needs both a user and a secret")
	}
	if (req.MutualUser == "") != (req.MutualSecret == "") || (req.MutualUser != "" && req.CHAPUser == "") {
		return wire.LUN{}, invalid(obj, "mutual CHAP needs a mutual user and secret, and one-way CHAP too")
	}
	switch req.Identity {
	case "", lm.IdentityAdopt, lm.IdentityOwn:
	default:
		return wire.LUN{}, invalid(obj, "identity %q: want %s or %s", req.Identity, lm.IdentityAdopt, lm.IdentityOwn)
	}
	l, err := s.lm.ImportLUN(lm.ImportLUNRequest{Name: req.Name, Identity: req.Identity, Remote: metavol.Remote{
		Portal: u.Portal, Target: u.Target, LUN: u.LUN,
		CHAPUser: req.CHAPUser, CHAPSecret: req.CHAPSecret, MutualUser: req.MutualUser, MutualSecret: req.MutualSecret,
	}})
	if err != nil {
		return wire.LUN{}, toWire(err, obj)
	}
	return s.LUN(l.Name)
}

// checkPath refuses a --path that cannot work before lm sees it: relative
// paths (the daemon's working directory is not the client's), devices that
// do not exist (lmtgt never creates files under /dev), files that do not
// exist when no size says how large to create them, and files in a
// directory that does not exist. It only looks (stat), never creates.
func checkPath(path string, size int64) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("path %s is not absolute", path)
	}
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("path %s: %w", path, err)
	case strings.HasPrefix(filepath.Clean(path), "/dev/"):
		return fmt.Errorf("path %s: no such device", path)
	case size == 0:
		return fmt.Errorf("path %s does not exist: give --size to create a sparse file there", path)
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return fmt.Errorf("path %s: directory %s does not exist", path, filepath.Dir(path))
	}
	return nil
}

// LUNs lists every LUN, sorted by name.
func (s *Service) LUNs() ([]wire.LUN, error) { return s.lunViews("") }

// LUN shows one LUN by name; a name that breaks the name rule is
// refused with the rule, not looked up.
func (s *Service) LUN(name string) (wire.LUN, error) {
	if err := checkLUNName(name); err != nil {
		return wire.LUN{}, err
	}
	return only(s.lunViews(name))
}

// checkLUNName applies lm's LUN name rule (lm.ValidLUNName owns it).
func checkLUNName(name string) error {
	if err := lm.ValidLUNName(name); err != nil {
		return toWire(err, lunObject(name))
	}
	return nil
}

// lunViews builds the LUN views (all when name is "") from one snapshot.
func (s *Service) lunViews(name string) ([]wire.LUN, error) {
	var out []wire.LUN
	err := s.db.View(func(tx *metavol.Tx) error {
		luns, err := oneOrAll(name, tx.LUNByName, tx.LUNs, lunObject(name))
		if err != nil {
			return err
		}
		targets, err := tx.Targets()
		if err != nil {
			return err
		}
		pairs, err := tx.Pairs()
		if err != nil {
			return err
		}
		names := map[string]string{} // LUN ID -> name, for pair peers
		if name == "" {
			for _, l := range luns {
				names[l.ID] = l.Name
			}
		}
		peerName := func(id string) string {
			if n, ok := names[id]; ok {
				return n
			}
			if l, err := tx.GetLUN(id); err == nil {
				names[id] = l.Name
				return l.Name
			}
			return id
		}
		for _, l := range luns {
			v := wire.LUN{
				ID: l.ID, Name: l.Name, Size: l.Size, BlockSize: l.BlockSize,
				NAA: l.NAA, Serial: l.Serial, Volume: l.VolumeID, Created: l.Created,
				Mappings: []wire.LUNMapping{},
			}
			if vol, err := tx.GetVolume(l.VolumeID); err == nil {
				v.VolumePath, v.VolumeKind, v.Owned, v.DirectIO = vol.Path, vol.Kind, vol.Owned, vol.Direct
				if vol.RBD != nil {
					v.VolumePath = "rbd:" + vol.RBD.String()
				}
				if vol.Remote != nil {
					v.VolumePath = vol.Remote.URL()
					v.Remote = &wire.LUNRemote{URL: vol.Remote.URL(), CHAPUser: vol.Remote.CHAPUser}
				}
			}
			v.Identity = "own"
			if a := l.Adopted; a != nil {
				v.Identity, v.Vendor, v.Product = "adopted", a.Vendor, a.Product
			}
			for _, t := range targets {
				for _, m := range t.Mappings {
					if m.LUNID == l.ID {
						v.Mappings = append(v.Mappings, wire.LUNMapping{Target: t.IQN, LUN: m.LUN})
					}
				}
			}
			for _, p := range pairs {
				if !pairHoldsLUN(p.State) {
					continue
				}
				switch l.ID {
				case p.SourceLUN:
					v.Migration = &wire.LUNMigration{Role: "source", Pair: p.ID, Peer: peerName(p.TargetLUN), State: p.State}
				case p.TargetLUN:
					v.Migration = &wire.LUNMigration{Role: "target", Pair: p.ID, Peer: peerName(p.SourceLUN), State: p.State}
				}
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, toWire(err, lunObject(name))
	}
	for i := range out {
		st := s.lm.LUNStatus(out[i].ID)
		out[i].State, out[i].Offline = st.State.String(), st.Reason
		if out[i].Remote != nil {
			out[i].Remote.Session = s.lm.RemoteState(out[i].ID)
			out[i].Remote.Fence = s.fenceView(out[i].ID)
		}
		if st, ok := s.lm.RBDState(out[i].ID); ok {
			out[i].RBD = &wire.LUNRBD{Image: st.Image, Lock: st.Lock, Cluster: st.Cluster}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if out == nil {
		out = []wire.LUN{}
	}
	return out, nil
}

// ResizeLUN grows a LUN and tells the hosts (CAPACITY DATA HAS CHANGED).
func (s *Service) ResizeLUN(name string, size int64) (wire.LUN, error) {
	obj := lunObject(name)
	cur, err := s.LUN(name)
	if err != nil {
		return wire.LUN{}, err
	}
	switch {
	case size <= 0:
		return wire.LUN{}, invalid(obj, "a new size is required (for example --size 2GiB)")
	case size%int64(cur.BlockSize) != 0:
		return wire.LUN{}, invalid(obj, "size %d is not a multiple of the block size %d", size, cur.BlockSize)
	case size < cur.Size:
		return wire.LUN{}, invalid(obj, "size %d is smaller than the current %d: LUNs only grow", size, cur.Size)
	case size == cur.Size:
		return cur, nil
	}
	l, err := s.lm.ResizeLUN(name, size)
	if err != nil {
		return wire.LUN{}, toWire(err, obj)
	}
	if s.exp != nil {
		s.exp.CapacityChanged(l.ID)
	}
	s.log.Info().Str("lun", name).Int64("size", l.Size).Msg("LUN resized")
	return s.LUN(name)
}

// TakeoverLUN takes a LUN's RBD image back from another client
// (lm.TakeoverLUN).
func (s *Service) TakeoverLUN(name string) (wire.LUN, error) {
	return s.TakeoverLUNFrom(name, "")
}

// TakeoverLUNFrom is TakeoverLUN; adoptFrom (an iscsi:// URL, "" for
// none) is the other server's LUN of a handover, whose reservations are
// read again first (lm.TakeoverLUNFrom).
func (s *Service) TakeoverLUNFrom(name, adoptFrom string) (wire.LUN, error) {
	var from *metavol.Remote
	if adoptFrom != "" {
		r, err := adoptRemote(adoptFrom)
		if err != nil {
			return wire.LUN{}, invalid(lunObject(name), "%v", err)
		}
		from = r
	}
	if _, err := s.lm.TakeoverLUNFrom(name, from); err != nil {
		return wire.LUN{}, toWire(err, lunObject(name))
	}
	return s.LUN(name)
}

// adoptRemote parses the --adopt-from URL of an RBD handover (no CHAP:
// the other server's target must let this server's initiator in).
func adoptRemote(u string) (*metavol.Remote, error) {
	c, err := iscsivol.ParseURL(u)
	if err != nil {
		return nil, fmt.Errorf("--adopt-from: %w", err)
	}
	if c.CHAPUser != "" {
		return nil, fmt.Errorf("--adopt-from %s: no credentials in the URL (CHAP is not supported for a handover)", iscsivol.Redact(u))
	}
	return &metavol.Remote{Portal: c.Portal, Target: c.Target, LUN: c.LUN}, nil
}

// DeleteLUN deletes a LUN; refused while it is mapped or in a pair.
func (s *Service) DeleteLUN(name string) error { return s.DeleteLUNWith(name, false) }

// DeleteLUNWith is DeleteLUN; deleteImage also deletes an RBD image that
// lmtgt did not create.
func (s *Service) DeleteLUNWith(name string, deleteImage bool) error {
	obj := lunObject(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.LUN(name)
	if err != nil {
		return err
	}
	if len(cur.Mappings) > 0 {
		var where []string
		for _, m := range cur.Mappings {
			where = append(where, fmt.Sprintf("%s LUN %d", m.Target, m.LUN))
		}
		return conflict(obj, "mapped to a target (%s): unmap it first", strings.Join(where, ", "))
	}
	if cur.Migration != nil {
		return conflict(obj, "in a migration pair (%s of pair %s with %s, %s): cancel or split it first",
			cur.Migration.Role, cur.Migration.Pair, cur.Migration.Peer, cur.Migration.State)
	}
	if err := s.lm.DeleteLUNWith(name, lm.DeleteLUNOptions{DeleteImage: deleteImage}); err != nil {
		return toWire(err, obj)
	}
	s.log.Info().Str("lun", name).Msg("LUN deleted")
	return nil
}

// ---- targets ----

func targetObject(iqn string) string { return "target " + iqn }

// Targets lists every target, sorted by IQN.
func (s *Service) Targets() ([]wire.Target, error) { return s.targetViews("") }

// Target shows one target.
func (s *Service) Target(iqn string) (wire.Target, error) {
	t, err := only(s.targetViews(iqn))
	if err != nil || s.exp == nil {
		return t, err
	}
	for _, si := range s.exp.Sessions() {
		if si.Target == iqn {
			t.Sessions = append(t.Sessions, wire.Session{
				Initiator: si.Initiator, ISID: si.ISID, TSIH: si.TSIH, Remote: si.Remote,
				HeaderDigest: si.HeaderDigest, DataDigest: si.DataDigest,
			})
		}
	}
	sort.Slice(t.Sessions, func(i, j int) bool { return t.Sessions[i].TSIH < t.Sessions[j].TSIH })
	return t, nil
}

func (s *Service) targetViews(iqn string) ([]wire.Target, error) {
	var out []wire.Target
	err := s.db.View(func(tx *metavol.Tx) error {
		recs, err := oneOrAll(iqn, tx.GetTarget, tx.Targets, targetObject(iqn))
		if err != nil {
			return err
		}
		for _, t := range recs {
			out = append(out, targetView(tx, t))
		}
		return nil
	})
	if err != nil {
		return nil, toWire(err, targetObject(iqn))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IQN < out[j].IQN })
	if out == nil {
		out = []wire.Target{}
	}
	return out, nil
}

func targetView(tx *metavol.Tx, t metavol.Target) wire.Target {
	v := wire.Target{
		IQN: t.IQN, AllowAll: t.AllowAll, Created: t.Created,
		Initiators: append([]string{}, t.Initiators...),
		LUNs:       []wire.TargetLUN{},
	}
	if t.CHAP != nil {
		v.CHAP = &wire.CHAPInfo{User: t.CHAP.User, MutualUser: t.CHAP.MutualUser}
	}
	for _, m := range t.Mappings {
		tl := wire.TargetLUN{LUN: m.LUN, ID: m.LUNID}
		if l, err := tx.GetLUN(m.LUNID); err == nil {
			tl.Name, tl.Size, tl.BlockSize = l.Name, l.Size, l.BlockSize
		}
		v.LUNs = append(v.LUNs, tl)
	}
	sort.Slice(v.LUNs, func(i, j int) bool { return v.LUNs[i].LUN < v.LUNs[j].LUN })
	return v
}

// CreateTarget creates a target with no LUNs, no initiators and no CHAP.
func (s *Service) CreateTarget(iqn string) (wire.Target, error) {
	obj := targetObject(iqn)
	if err := ValidateISCSIName(iqn); err != nil {
		return wire.Target{}, invalid(obj, "bad IQN: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.db.Update(func(tx *metavol.Tx) error {
		if _, err := tx.GetTarget(iqn); err == nil {
			return conflict(obj, "already exists")
		} else if !errors.Is(err, metavol.ErrNotFound) {
			return err
		}
		return tx.PutTarget(metavol.Target{IQN: iqn, Created: time.Now().UTC()})
	})
	if err != nil {
		return wire.Target{}, toWire(err, obj)
	}
	if err := s.applyOrUndoLocked(obj, func(tx *metavol.Tx) error { return tx.DeleteTarget(iqn) }); err != nil {
		return wire.Target{}, err
	}
	s.log.Info().Str("target", iqn).Msg("target created")
	return s.Target(iqn)
}

// DeleteTarget deletes a target; with LUNs mapped only when force is set
// (its sessions are then dropped by Apply).
func (s *Service) DeleteTarget(iqn string, force bool) error {
	obj := targetObject(iqn)
	s.mu.Lock()
	defer s.mu.Unlock()
	var old metavol.Target
	err := s.db.Update(func(tx *metavol.Tx) error {
		t, err := tx.GetTarget(iqn)
		if err != nil {
			return orNotFound(err, obj)
		}
		if len(t.Mappings) > 0 && !force {
			return conflict(obj, "has %d LUN(s) mapped: unmap them first, or delete with --force", len(t.Mappings))
		}
		old = t
		return tx.DeleteTarget(iqn)
	})
	if err != nil {
		return toWire(err, obj)
	}
	if err := s.applyOrUndoLocked(obj, func(tx *metavol.Tx) error { return tx.PutTarget(old) }); err != nil {
		return err
	}
	s.log.Info().Str("target", iqn).Msg("target deleted")
	return nil
}

// changeTarget runs fn on the target record in one transaction, persists
// it, applies the whole configuration live, and rolls back if that fails.
func (s *Service) changeTarget(iqn string, fn func(tx *metavol.Tx, t *metavol.Target) error) (wire.Target, error) {
	obj := targetObject(iqn)
	s.mu.Lock()
	defer s.mu.Unlock()
	var old metavol.Target
	err := s.db.Update(func(tx *metavol.Tx) error {
		t, err := tx.GetTarget(iqn)
		if err != nil {
			return orNotFound(err, obj)
		}
		old = t
		nt := t
		nt.Mappings = slices.Clone(t.Mappings)
		nt.Initiators = slices.Clone(t.Initiators)
		if t.CHAP != nil {
			c := *t.CHAP
			nt.CHAP = &c
		}
		if err := fn(tx, &nt); err != nil {
			return err
		}
		return tx.PutTarget(nt)
	})
	if err != nil {
		return wire.Target{}, toWire(err, obj)
	}
	if err := s.applyOrUndoLocked(obj, func(tx *metavol.Tx) error { return tx.PutTarget(old) }); err != nil {
		return wire.Target{}, err
	}
	return s.Target(iqn)
}

// applyOrUndoLocked applies a persisted change live. If that fails it
// undoes the change in the meta volume, applies the restored configuration
// again, and returns a 500 about obj.
func (s *Service) applyOrUndoLocked(obj string, undo func(tx *metavol.Tx) error) error {
	err := s.applyLocked()
	if err == nil {
		return nil
	}
	if uerr := s.db.Update(undo); uerr != nil {
		s.log.Error().Err(uerr).Str("object", obj).Msg("rollback after a failed apply failed: meta volume and live configuration differ until restart")
	} else if aerr := s.applyLocked(); aerr != nil {
		s.log.Error().Err(aerr).Str("object", obj).Msg("re-apply after rollback failed")
	}
	return apiErr(500, obj, "apply failed, change rolled back: %v", err)
}

// ApplyAll builds every target from the meta volume and applies it live.
func (s *Service) ApplyAll() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked()
}

func (s *Service) applyLocked() error {
	if s.exp == nil {
		return nil
	}
	targets, skipped, err := BuildTargets(s.db, s.lm.LUN)
	if err != nil {
		return err
	}
	for _, e := range skipped {
		s.log.Error().Err(e).Msg("LUN left out of its target")
	}
	dc, err := s.discoveryCHAP()
	if err != nil {
		return err
	}
	if err := s.exp.Apply(targets); err != nil {
		return err
	}
	var ic *iscsi.CHAP
	if dc != nil {
		ic = &iscsi.CHAP{User: dc.User, Secret: dc.Secret, MutualUser: dc.MutualUser, MutualSecret: dc.MutualSecret}
	}
	s.exp.SetDiscoveryCHAP(ic)
	return nil
}

// Map exports a LUN on a target at a LUN number (the lowest free one when
// req.Number is nil). Refused for an unknown LUN, a LUN already mapped on
// this target, a number in use, and a LUN that is the target of a pair.
func (s *Service) Map(iqn string, req wire.MapLUN) (wire.Target, error) {
	obj := targetObject(iqn)
	if req.LUN == "" {
		return wire.Target{}, invalid(obj, "a LUN name is required")
	}
	if req.Number != nil && *req.Number > MaxLUNNumber {
		return wire.Target{}, invalid(obj, "LUN number %d is above the highest, %d", *req.Number, MaxLUNNumber)
	}
	var number uint64
	v, err := s.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		l, err := tx.LUNByName(req.LUN)
		if err != nil {
			return orNotFound(err, lunObject(req.LUN))
		}
		pairs, err := tx.Pairs()
		if err != nil {
			return err
		}
		for _, p := range pairs {
			if p.TargetLUN == l.ID && pairHoldsLUN(p.State) {
				return conflict(lunObject(req.LUN), "in a migration pair: it is the target of pair %s (%s); it cannot be mapped until the pair is split or cancelled", p.ID, p.State)
			}
		}
		used := map[uint64]bool{}
		for _, m := range t.Mappings {
			if m.LUNID == l.ID {
				return conflict(lunObject(req.LUN), "already mapped on %s at LUN %d", iqn, m.LUN)
			}
			used[m.LUN] = true
		}
		if req.Number != nil {
			if used[*req.Number] {
				return conflict(obj, "LUN number %d is already in use", *req.Number)
			}
			number = *req.Number
		} else {
			for number = 0; used[number]; number++ {
			}
			if number > MaxLUNNumber {
				return conflict(obj, "no free LUN number")
			}
		}
		t.Mappings = append(t.Mappings, metavol.Mapping{LUN: number, LUNID: l.ID})
		return nil
	})
	if err == nil {
		s.log.Info().Str("target", iqn).Str("lun", req.LUN).Uint64("number", number).Msg("LUN mapped")
	}
	return v, err
}

// Unmap removes a LUN (by name) from a target.
func (s *Service) Unmap(iqn, lunName string) (wire.Target, error) {
	v, err := s.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		l, err := tx.LUNByName(lunName)
		if err != nil {
			return orNotFound(err, lunObject(lunName))
		}
		i := slices.IndexFunc(t.Mappings, func(m metavol.Mapping) bool { return m.LUNID == l.ID })
		if i < 0 {
			return notFound(lunObject(lunName), "not mapped on %s", iqn)
		}
		t.Mappings = slices.Delete(t.Mappings, i, i+1)
		return nil
	})
	if err == nil {
		s.log.Info().Str("target", iqn).Str("lun", lunName).Msg("LUN unmapped")
	}
	return v, err
}

// Allow lets an initiator (or ALL) log in. Allowing a listed initiator
// again changes nothing.
func (s *Service) Allow(iqn, initiator string) (wire.Target, error) {
	all := strings.EqualFold(initiator, wire.AllInitiators)
	if !all {
		if err := ValidateISCSIName(initiator); err != nil {
			return wire.Target{}, invalid("initiator "+initiator, "bad initiator name: %v (or ALL)", err)
		}
	}
	v, err := s.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		if all {
			t.AllowAll = true
		} else if !slices.Contains(t.Initiators, initiator) {
			t.Initiators = append(t.Initiators, initiator)
		}
		return nil
	})
	if err == nil {
		s.log.Info().Str("target", iqn).Str("initiator", initiator).Msg("initiator allowed")
	}
	return v, err
}

// Disallow removes an initiator (or ALL) from a target's ACL. Sessions
// already logged in are not dropped by lmtgt's ACL change alone; see Apply.
func (s *Service) Disallow(iqn, initiator string) (wire.Target, error) {
	all := strings.EqualFold(initiator, wire.AllInitiators)
	return s.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		if all {
			if !t.AllowAll {
				return notFound("initiator ALL", "not allowed on %s", iqn)
			}
			t.AllowAll = false
			return nil
		}
		i := slices.Index(t.Initiators, initiator)
		if i < 0 {
			return notFound("initiator "+initiator, "not allowed on %s", iqn)
		}
		t.Initiators = slices.Delete(t.Initiators, i, i+1)
		return nil
	})
}

// SetCHAP sets one-way (user/secret) or mutual CHAP. Short secrets are
// accepted with a warning in the response.
func (s *Service) SetCHAP(iqn string, req wire.SetCHAP) (wire.Target, error) {
	obj := targetObject(iqn)
	warnings, err := validateCHAP(obj, req)
	if err != nil {
		return wire.Target{}, err
	}
	mutual := req.MutualUser != "" || req.MutualSecret != ""
	v, err := s.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		t.CHAP = &metavol.CHAP{User: req.User, Secret: req.Secret}
		if mutual {
			t.CHAP.MutualUser, t.CHAP.MutualSecret = req.MutualUser, req.MutualSecret
		}
		return nil
	})
	if err != nil {
		return v, err
	}
	s.log.Info().Str("target", iqn).Str("user", req.User).Bool("mutual", mutual).Msg("CHAP set")
	v.Warnings = warnings
	return v, nil
}

// validateCHAP checks a CHAP request for obj and returns the warnings
// about short secrets.
func validateCHAP(obj string, req wire.SetCHAP) ([]string, error) {
	if err := validateCHAPPart("initiator", req.User, req.Secret); err != nil {
		return nil, invalid(obj, "chap: %v", err)
	}
	var warnings []string
	if len(req.Secret) < MinRecommendedSecret {
		warnings = append(warnings, fmt.Sprintf("the CHAP secret has %d characters; RFC 7143 wants at least %d (96 bits) and some initiators refuse shorter ones", len(req.Secret), MinRecommendedSecret))
	}
	if req.MutualUser != "" || req.MutualSecret != "" {
		if err := validateCHAPPart("mutual", req.MutualUser, req.MutualSecret); err != nil {
			return nil, invalid(obj, "chap: %v (mutual CHAP needs both --mutual-user and --mutual-secret)", err)
		}
		if req.MutualSecret == req.Secret {
			return nil, invalid(obj, "chap: the mutual secret must differ from the initiator secret (RFC 7143 §12.1.3)")
		}
		if len(req.MutualSecret) < MinRecommendedSecret {
			warnings = append(warnings, fmt.Sprintf("the mutual CHAP secret has %d characters; RFC 7143 wants at least %d", len(req.MutualSecret), MinRecommendedSecret))
		}
	}
	return warnings, nil
}

// ---- discovery ----

// discoveryCHAPKey names the meta volume value holding the discovery CHAP
// credentials (a metavol.CHAP as JSON; absent: no discovery auth).
const discoveryCHAPKey = "discovery-chap"

const discoveryObject = "discovery"

// discoveryCHAP reads the discovery CHAP credentials (nil: none).
func (s *Service) discoveryCHAP() (*metavol.CHAP, error) {
	var c *metavol.CHAP
	err := s.db.View(func(tx *metavol.Tx) error {
		b, err := tx.GetMeta(discoveryCHAPKey)
		if err != nil || b == nil {
			return err
		}
		c = new(metavol.CHAP)
		if err := json.Unmarshal(b, c); err != nil {
			return fmt.Errorf("meta %s: %w", discoveryCHAPKey, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("discovery CHAP: %w", err)
	}
	return c, nil
}

// Discovery shows how discovery sessions authenticate (never the secrets).
func (s *Service) Discovery() (wire.Discovery, error) {
	c, err := s.discoveryCHAP()
	if err != nil {
		return wire.Discovery{}, toWire(err, discoveryObject)
	}
	var v wire.Discovery
	if c != nil {
		v.CHAP = &wire.CHAPInfo{User: c.User, MutualUser: c.MutualUser}
	}
	return v, nil
}

// SetDiscoveryCHAP makes discovery (SendTargets) sessions authenticate
// with CHAP, one-way or mutual.
func (s *Service) SetDiscoveryCHAP(req wire.SetCHAP) (wire.Discovery, error) {
	warnings, err := validateCHAP(discoveryObject, req)
	if err != nil {
		return wire.Discovery{}, err
	}
	b, err := json.Marshal(metavol.CHAP{User: req.User, Secret: req.Secret, MutualUser: req.MutualUser, MutualSecret: req.MutualSecret})
	if err != nil {
		return wire.Discovery{}, apiErr(500, discoveryObject, "encode: %v", err)
	}
	if err := s.changeDiscovery(func(tx *metavol.Tx) error { return tx.PutMeta(discoveryCHAPKey, b) }); err != nil {
		return wire.Discovery{}, err
	}
	s.log.Info().Str("user", req.User).Bool("mutual", req.MutualUser != "").Msg("discovery CHAP set")
	v, err := s.Discovery()
	v.Warnings = warnings
	return v, err
}

// ClearDiscoveryCHAP lets discovery sessions in without authentication.
func (s *Service) ClearDiscoveryCHAP() (wire.Discovery, error) {
	if err := s.changeDiscovery(func(tx *metavol.Tx) error { return tx.DeleteMeta(discoveryCHAPKey) }); err != nil {
		return wire.Discovery{}, err
	}
	s.log.Info().Msg("discovery CHAP off")
	return s.Discovery()
}

// changeDiscovery persists a discovery change and applies it live, rolling
// it back if that fails.
func (s *Service) changeDiscovery(fn func(tx *metavol.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []byte
	err := s.db.Update(func(tx *metavol.Tx) error {
		var err error
		if old, err = tx.GetMeta(discoveryCHAPKey); err != nil {
			return err
		}
		return fn(tx)
	})
	if err != nil {
		return toWire(err, discoveryObject)
	}
	return s.applyOrUndoLocked(discoveryObject, func(tx *metavol.Tx) error {
		if old == nil {
			return tx.DeleteMeta(discoveryCHAPKey)
		}
		return tx.PutMeta(discoveryCHAPKey, old)
	})
}

// ClearCHAP turns CHAP off.
func (s *Service) ClearCHAP(iqn string) (wire.Target, error) {
	return s.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		t.CHAP = nil
		return nil
	})
}

// ---- migrations ----

func pairObject(source string) string { return "migration " + source }

func migrationView(p lm.PairStatus) wire.Migration {
	limit, by := lm.RateLimit(p.Speed, p.MaxMBps)
	return wire.Migration{
		LimitBps: limit, LimitedBy: by,
		ID: p.ID, Source: p.Source, Target: p.Target, State: p.State, Reason: p.Reason,
		CopiedBytes: p.CopiedBytes, TotalBytes: p.TotalBytes, DCLBytes: p.DCLBytes,
		RateBps: p.RateBps, ETASeconds: p.ETASeconds, Vehicle: p.Vehicle,
		Speed: string(p.Speed), MaxMBps: p.MaxMBps, AutoSplit: p.AutoSplit, Verify: p.Verify,
		SplitPauseMS: p.SplitPauseMS, Created: p.Created,
		CursorBytes: p.CursorBytes, DataBytes: p.DataBytes, RecopiedBytes: p.RecopiedBytes,
		SourceID: p.SourceID, TargetID: p.TargetID,
	}
}

func parseSpeed(obj, s string) (lm.Speed, error) {
	switch lm.Speed(s) {
	case lm.SpeedLow, lm.SpeedMedium, lm.SpeedHigh, lm.SpeedHighest:
		return lm.Speed(s), nil
	case "":
		return lm.SpeedMedium, nil
	}
	return "", invalid(obj, "speed %q: must be low, medium, high or highest", s)
}

// CreateMigration creates a pair (lm checks sizes, block sizes, mappings
// and pairs; the API serializes it against target changes).
func (s *Service) CreateMigration(req wire.CreateMigration) (wire.Migration, error) {
	obj := pairObject(req.Source)
	if req.Source == "" || req.Target == "" {
		return wire.Migration{}, invalid("migration", "both a source and a target LUN are required")
	}
	if req.Source == req.Target {
		return wire.Migration{}, invalid(obj, "source and target are the same LUN")
	}
	speed, err := parseSpeed(obj, req.Speed)
	if err != nil {
		return wire.Migration{}, err
	}
	if req.MaxMBps < 0 {
		return wire.Migration{}, invalid(obj, "max MB/s %d is negative", req.MaxMBps)
	}
	switch req.Vehicle {
	case "", "auto", "generic", "copy_file_range":
	default:
		return wire.Migration{}, invalid(obj, "vehicle %q: must be auto, generic or copy_file_range", req.Vehicle)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.lm.CreatePair(lm.PairRequest{
		Source: req.Source, Target: req.Target, Speed: speed,
		MaxMBps: req.MaxMBps, AutoSplit: req.AutoSplit, Verify: req.Verify,
		Vehicle: req.Vehicle, Preempt: req.Preempt, AllowUnfenced: req.AllowUnfenced,
	})
	if err != nil {
		return wire.Migration{}, toWire(err, obj)
	}
	s.log.Info().Str("source", req.Source).Str("target", req.Target).Str("pair", p.ID).Msg("migration created")
	v := migrationView(p)
	f := s.lm.Fence(p.SourceID)
	v.Fence = s.fenceView(p.SourceID)
	if f.State == lm.FenceUnfenced {
		w := bypassWarning(req.Source, f.Remote)
		s.log.Warn().Str("source", req.Source).Str("remote", f.Remote).Str("pair", p.ID).Msg(w)
		v.Warnings = append(v.Warnings, w)
	}
	return v, nil
}

// bypassWarning is the warning of a migration whose source is imported
// from an array without persistent reservations, accepted with
// --allow-unfenced: lmtgt cannot fence the old path, so a host write that
// reaches the old array directly escapes the DCL and is lost at the split
// (docs/design.md "Fencing").
func bypassWarning(lun, url string) string {
	return fmt.Sprintf("WARNING: source LUN %s is imported from %s, which has no persistent reservations: lmtgt cannot fence its other paths. "+
		"Until the split, no host may use any path to %s other than through lmtgt. "+
		"A write that reaches the old array directly is NOT tracked and is LOST at the split.", lun, url, url)
}

// Migrations lists every pair, sorted by source name.
func (s *Service) Migrations() []wire.Migration {
	ps := s.lm.Pairs()
	out := make([]wire.Migration, 0, len(ps))
	for _, p := range ps {
		v := migrationView(p)
		v.Fence = s.fenceView(p.SourceID)
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// Migration shows the pair of a source LUN.
func (s *Service) Migration(source string) (wire.Migration, error) {
	p, err := s.lm.Pair(source)
	if err != nil {
		return wire.Migration{}, toWire(err, pairObject(source))
	}
	v := migrationView(p)
	v.Fence = s.fenceView(p.SourceID)
	return v, nil
}

// fenceView is the fence of a LUN's remote data volume as shown ("" for
// none: a local volume, or no pair needed one).
func (s *Service) fenceView(lunID string) string {
	f := s.lm.Fence(lunID)
	if f.State == lm.FenceNone {
		return ""
	}
	return f.String()
}

// MigrationAction pauses, resumes or cancels a pair.
func (s *Service) MigrationAction(source, action string) (wire.Migration, error) {
	obj := pairObject(source)
	var err error
	switch action {
	case "pause":
		err = s.lm.Pause(source)
	case "resume":
		err = s.lm.Resume(source)
	case "cancel":
		// The cancelled pair's record is deleted, and the source may have
		// an older, split pair on record: answer with the pair that was
		// cancelled, not whatever lm.Pair finds afterwards.
		before, berr := s.lm.Pair(source)
		s.mu.Lock()
		err = s.lm.Cancel(source)
		s.mu.Unlock()
		if err == nil {
			s.log.Info().Str("source", source).Str("action", action).Msg("migration " + action)
			if berr != nil {
				return wire.Migration{Source: source, State: lm.StateCancelled.String()}, nil
			}
			before.State, before.Reason = lm.StateCancelled.String(), "cancelled by admin"
			before.RateBps, before.ETASeconds = 0, 0
			return migrationView(before), nil
		}
	default:
		return wire.Migration{}, notFound(obj, "no action %q (pause, resume, cancel)", action)
	}
	if err != nil {
		return wire.Migration{}, toWire(s.ended(err, source), obj)
	}
	s.log.Info().Str("source", source).Str("action", action).Msg("migration " + action)
	p, err := s.lm.Pair(source)
	if err != nil {
		return wire.Migration{}, toWire(err, obj)
	}
	return migrationView(p), nil
}

// ended explains a "not found" from an action on a pair: lm acts only on
// active pairs, but `migration show` still shows a source's last finished
// pair, so "not found" would contradict it. The first named source whose
// pair has ended (or is unknown) decides.
func (s *Service) ended(err error, sources ...string) error {
	if !errors.Is(err, lm.ErrNotFound) {
		return err
	}
	for _, src := range sources {
		p, perr := s.lm.Pair(src)
		if perr != nil {
			return err
		}
		st, _ := lm.ParseState(p.State)
		if st.Final() {
			return conflict(pairObject(src), "pair %s → %s is %s (a final state): no migration in progress; start a new one with migration create", p.Source, p.Target, p.State)
		}
	}
	return err
}

// SetMigration changes a pair's speed level and/or absolute cap.
func (s *Service) SetMigration(source string, req wire.SetMigration) (wire.Migration, error) {
	obj := pairObject(source)
	var sr lm.SetRequest
	if req.Speed == nil && req.MaxMBps == nil {
		return wire.Migration{}, invalid(obj, "nothing to set: give a speed and/or max_mbps")
	}
	if req.Speed != nil {
		sp, err := parseSpeed(obj, *req.Speed)
		if err != nil {
			return wire.Migration{}, err
		}
		sr.Speed = &sp
	}
	if req.MaxMBps != nil {
		if *req.MaxMBps < 0 {
			return wire.Migration{}, invalid(obj, "max MB/s %d is negative (0 removes the cap)", *req.MaxMBps)
		}
		sr.MaxMBps = req.MaxMBps
	}
	p, err := s.lm.Set(source, sr)
	if err != nil {
		return wire.Migration{}, toWire(s.ended(err, source), obj)
	}
	return migrationView(p), nil
}

// Split splits one pair or several in one consistent split.
func (s *Service) Split(req wire.Split) (wire.SplitResult, error) {
	if len(req.Sources) == 0 {
		return wire.SplitResult{}, invalid("split", "name at least one source LUN")
	}
	obj := pairObject(strings.Join(req.Sources, ","))
	seen := map[string]bool{}
	for _, src := range req.Sources {
		if seen[src] {
			return wire.SplitResult{}, invalid(obj, "source %s named twice", src)
		}
		seen[src] = true
	}
	pause := DefaultMaxPause
	if req.MaxPause != "" {
		d, err := time.ParseDuration(req.MaxPause)
		if err != nil || d < time.Millisecond || d > time.Minute {
			return wire.SplitResult{}, invalid(obj, "max pause %q: want a duration between 1ms and 1m (for example 100ms)", req.MaxPause)
		}
		pause = d
	}
	r, err := s.lm.Split(req.Sources, pause)
	if err != nil {
		return wire.SplitResult{}, toWire(s.ended(err, req.Sources...), obj)
	}
	pm := r.PauseMS
	if pm == 0 && r.Pause != 0 {
		pm = float64(r.Pause) / float64(time.Millisecond)
	}
	s.log.Info().Strs("sources", req.Sources).Float64("pause_ms", pm).Msg("split")
	return wire.SplitResult{Pairs: r.Pairs, PauseMS: pm}, nil
}
