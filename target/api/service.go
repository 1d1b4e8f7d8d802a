package api

import (
	"slices"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// Exporter is what the API needs from the iSCSI side (*target.Server).
type Exporter interface {
	Apply(targets []target.Target) error
	CapacityChanged(lunID string)
	Sessions() []iscsi.SessionInfo
	SetDiscoveryCHAP(c *iscsi.CHAP)
	// Logout ends an initiator's sessions on a target; it returns how
	// many it ended.
	Logout(target, initiator string) int
	// Portals lists the portals the server listens on ("ip:port").
	Portals() []string
}

// Service is the admin operations behind the HTTP handlers; `serve --demo`
// calls it directly. Safe for concurrent use. It only translates: every
// rule, lock and transaction is lm's (see doc.go).
type Service struct {
	lm  *lm.Manager
	exp Exporter // nil: nothing is exported live (tests of the API alone)
	log zerolog.Logger
}

// NewService returns the admin operations over the LUN manager and the
// exporter (which may be nil). It makes the exporter lm's Exporter, so
// that every committed target change is applied live.
func NewService(m *lm.Manager, exp Exporter, log zerolog.Logger) *Service {
	s := &Service{lm: m, exp: exp, log: log}
	if exp != nil {
		m.SetExporter(applier{s})
	}
	return s
}

// applier adapts the Exporter to lm.Exporter: it builds the targets from
// lm's configuration snapshot and applies them.
type applier struct{ s *Service }

func (a applier) ApplyTargets(cfg lm.TargetConfig) error {
	targets, skipped := BuildTargets(cfg, a.s.lm.LUN)
	for _, e := range skipped {
		a.s.log.Error().Err(e).Msg("LUN left out of its target")
	}
	if err := a.s.exp.Apply(targets); err != nil {
		return err
	}
	var ic *iscsi.CHAP
	if dc := cfg.DiscoveryCHAP; dc != nil {
		ic = &iscsi.CHAP{User: dc.User, Secret: dc.Secret, MutualUser: dc.MutualUser, MutualSecret: dc.MutualSecret}
	}
	a.s.exp.SetDiscoveryCHAP(ic)
	listening := a.s.exp.Portals()
	for _, t := range targets {
		for _, p := range t.Portals {
			if !slices.ContainsFunc(listening, func(l string) bool { return target.SamePortal(l, p) }) && len(listening) > 0 {
				a.s.log.Warn().Str("iqn", t.IQN).Str("portal", p).Strs("listening", listening).
					Msg("portal of the target is not among the server's portals (serve --portal): the target is not served there")
			}
		}
	}
	return nil
}

// Portals lists the server's portals: lm checks a target's portal group
// against them (lm.PortalLister).
func (a applier) Portals() []string { return a.s.exp.Portals() }

// ApplyAll applies the whole configuration of the meta volume live.
func (s *Service) ApplyAll() error { return s.lm.ApplyTargets() }

// ---- LUNs ----

func lunObject(name string) string { return "lun " + name }

// CreateLUN creates a LUN.
func (s *Service) CreateLUN(req wire.CreateLUN) (wire.LUN, error) {
	l, err := s.lm.CreateLUN(lm.CreateLUNRequest{Name: req.Name, Size: req.Size, BlockSize: req.BlockSize, Path: req.Path, Direct: req.Direct, Force: req.Force,
		RBD: req.RBD, Takeover: req.Takeover, AdoptFromURL: req.AdoptFrom,
		CephConf: req.CephConf, CephID: req.CephID, CephKeyring: req.CephKeyring})
	if err != nil {
		return wire.LUN{}, toWire(err, lunObject(req.Name))
	}
	s.log.Debug().Str("lun", l.Name).Str("lun_id", l.ID).Int64("size", l.Size).Bool("direct", req.Direct).Msg("LUN created")
	return s.LUN(l.Name)
}

// ImportLUN creates a LUN whose data volume is a LUN on another iSCSI
// target (lm.ImportLUN). No error or log line names a secret.
func (s *Service) ImportLUN(req wire.ImportLUN) (wire.LUN, error) {
	l, err := s.lm.ImportLUN(lm.ImportLUNRequest{
		Name: req.Name, From: req.From, Identity: req.Identity,
		CHAPUser: req.CHAPUser, CHAPSecret: req.CHAPSecret, MutualUser: req.MutualUser, MutualSecret: req.MutualSecret,
	})
	if err != nil {
		return wire.LUN{}, toWire(err, lunObject(req.Name))
	}
	return s.LUN(l.Name)
}

// LUNs lists every LUN, sorted by name.
func (s *Service) LUNs() ([]wire.LUN, error) {
	infos, err := s.lm.LUNInfos()
	if err != nil {
		return nil, toWire(err, lunObject(""))
	}
	return viewsOf(infos, lunView), nil
}

// LUN shows one LUN by name.
func (s *Service) LUN(name string) (wire.LUN, error) {
	info, err := s.lm.LUNInfo(name)
	if err != nil {
		return wire.LUN{}, toWire(err, lunObject(name))
	}
	return lunView(info), nil
}

// ResizeLUN grows a LUN and tells the hosts (CAPACITY DATA HAS CHANGED).
func (s *Service) ResizeLUN(name string, size int64) (wire.LUN, error) {
	before, err := s.lm.LUNInfo(name)
	if err != nil {
		return wire.LUN{}, toWire(err, lunObject(name))
	}
	l, err := s.lm.ResizeLUN(name, size)
	if err != nil {
		return wire.LUN{}, toWire(err, lunObject(name))
	}
	if l.Size == before.LUN.Size {
		return s.LUN(name)
	}
	if s.exp != nil {
		s.exp.CapacityChanged(l.ID)
	}
	s.log.Debug().Str("lun", name).Int64("size", l.Size).Msg("LUN resized")
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
	if _, err := s.lm.TakeoverLUNFrom(name, adoptFrom); err != nil {
		return wire.LUN{}, toWire(err, lunObject(name))
	}
	return s.LUN(name)
}

// DeleteLUN deletes a LUN; refused while it is mapped or in a pair.
func (s *Service) DeleteLUN(name string) error { return s.DeleteLUNWith(name, false) }

// DeleteLUNWith is DeleteLUN; deleteImage also deletes an RBD image that
// lmtgt did not create.
func (s *Service) DeleteLUNWith(name string, deleteImage bool) error {
	if err := s.lm.DeleteLUNWith(name, lm.DeleteLUNOptions{DeleteImage: deleteImage}); err != nil {
		return toWire(err, lunObject(name))
	}
	s.log.Debug().Str("lun", name).Msg("LUN deleted")
	return nil
}
