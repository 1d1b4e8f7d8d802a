package lm

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// Configuration as a file (`lmtgt config export|apply`, docs/design.md
// "Configuration as a file"). ExportConfig reads the whole admin
// configuration in one snapshot: LUNs (with their identity, so that it
// survives a restore), their data volumes, targets, mappings, ACLs, CHAP,
// discovery CHAP, ALUA settings, and the definitions of the pairs and
// sessions that still hold their LUNs. PlanConfig compares a wanted
// Config with the running server and returns the changes, one per line;
// ApplyConfig carries them out through the ordinary admin operations
// (CreateLUN, MapLUN, SetTargetCHAP, CreatePair, ...), which keep owning
// their rules. The whole plan is checked before the first change: what
// cannot be done live (a LUN's block size, data volume or identity, a
// shrink, a pair's target) is refused with the object and the reason and
// nothing changes. If a step fails midway, the steps done so far are
// undone in reverse order (those that can be: a LUN's growth and a
// deleted LUN's data cannot) and the error says exactly what was applied
// and what was undone.
//
// Objects of the running server that the file does not name (LUNs,
// targets) are kept unless Prune is set; a target named in the file is
// made to match it exactly (its mappings, ACL and CHAP). Migrations are
// never cancelled by apply: a pair or session the file does not name is
// reported as kept.

// ConfigVersion is the version of the configuration format.
const ConfigVersion = 1

// SecretPlaceholder stands for a CHAP secret in an export made without
// secrets. Apply keeps the current secret where it finds it (and refuses
// it where there is no current secret to keep).
const SecretPlaceholder = "(hidden)"

// Config is the admin configuration of a server. Lists are sorted (LUNs
// by name, targets by IQN, mappings by number, pairs by source, sessions
// by name); secrets are always filled in (target/api hides them).
type Config struct {
	Version    int
	Discovery  *metavol.CHAP // nil: discovery needs no CHAP
	LUNs       []ConfigLUN
	Targets    []ConfigTarget
	Migrations []ConfigPair // pairs created alone
	Sessions   []ConfigSession
}

// ConfigLUN is a LUN and its data volume.
type ConfigLUN struct {
	Name string
	// ID, NAA and Serial are the LUN's identity; empty in a file: apply
	// makes new ones for a new LUN (and compares nothing for an old one).
	ID, NAA, Serial string
	Size            int64
	BlockSize       uint32 // 0: 512
	// Kind is "file", "block", "iscsi" or "rbd" ("" in a file: file or
	// block, whatever Path is).
	Kind string
	// Path is the file or device of a local data volume; "" is a file
	// lmtgt owns in its data dir.
	Path   string
	Direct bool
	Remote *ConfigRemote // Kind iscsi
	RBD    string        // Kind rbd: POOL/IMAGE
	// RBDCluster is the LUN's own Ceph cluster (lun create --ceph-conf,
	// --ceph-id, --ceph-keyring; empty: the server's).
	RBDCluster RBDCluster
	// Adopted: the LUN presents an imported LUN's identity.
	Adopted bool
	// ALUA holds the LUN's stored access states by target port group
	// (only those that are not the default; names are package target's).
	ALUA map[uint16]string
}

// RBDCluster names a Ceph cluster by its client configuration: the
// ceph.conf, the client name and the keyring path (each "": the server's).
type RBDCluster struct{ Conf, ID, Keyring string }

// ConfigRemote is where a remote data volume is and its login secrets.
type ConfigRemote struct {
	URL                      string
	CHAPUser, CHAPSecret     string
	MutualUser, MutualSecret string
}

// ConfigTarget is a target: its ALUA port, ACL, CHAP and mappings.
type ConfigTarget struct {
	IQN string
	// Group and Port are the ALUA target port group and relative target
	// port ID; 0 in a file: the server's choice (new) or unchanged.
	Group, Port uint16
	AllowAll    bool
	Initiators  []string // sorted
	CHAP        *metavol.CHAP
	LUNs        []ConfigMapping // by number
	// Portals is the target's portal group ("ip:port", sorted, canonical);
	// nil: every portal the server listens on.
	Portals []string
}

// ConfigMapping is a LUN number of a target, the LUN's name and the
// mapping's options (MapOptions).
type ConfigMapping struct {
	Number   uint64
	LUN      string
	ReadOnly bool
	// Initiators masks the mapping (sorted; nil: every initiator the
	// target allows).
	Initiators []string
}

// ConfigPair is the definition of a pair created alone: its LUNs, its
// vehicle and its options (configpairopts.go).
type ConfigPair struct {
	Source, Target string
	Vehicle        string // "": auto
	PairOptions
}

// ConfigSession is the definition of a migration session: the options it
// gives to every pair, its own limit of pairs copying at once, and its
// pairs.
type ConfigSession struct {
	Name      string
	MaxActive int
	PairOptions
	Pairs []ConfigSessionPair // in the session's order
}

// ConfigSessionPair is one pair of a session. Options is nil when the
// pair has the session's options, else the pair's own (`migration set` on
// the pair; its AutoSplit is the session's).
type ConfigSessionPair struct {
	Source, Target, Vehicle string
	Options                 *PairOptions
}

// DataDir is the server's data dir (target/api keeps the configuration
// backups under it).
func (m *Manager) DataDir() string { return m.opts.DataDir }

// ExportConfig reads the whole configuration in one snapshot.
func (m *Manager) ExportConfig() (Config, error) {
	var c Config
	err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		c, err = m.readConfig(tx)
		return err
	})
	if err != nil {
		return Config{}, fmt.Errorf("config export: %w", err)
	}
	return c, nil
}

func (m *Manager) readConfig(tx *metavol.Tx) (Config, error) {
	now := time.Now()
	c := Config{Version: ConfigVersion}
	var err error
	if c.Discovery, err = discoveryCHAP(tx); err != nil {
		return c, err
	}
	luns, err := tx.LUNs()
	if err != nil {
		return c, err
	}
	names := map[string]string{} // LUN ID -> name
	for _, l := range luns {
		names[l.ID] = l.Name
		cl := ConfigLUN{Name: l.Name, ID: l.ID, NAA: l.NAA, Serial: l.Serial, Size: l.Size, BlockSize: l.BlockSize, Adopted: l.Adopted != nil}
		v, err := tx.GetVolume(l.VolumeID)
		if err != nil {
			return c, fmt.Errorf("lun %s: data volume %s: %w", l.Name, l.VolumeID, err)
		}
		cl.Kind, cl.Direct = volumeKind(v), v.Direct
		switch {
		case v.Remote != nil:
			r := v.Remote
			cl.Remote = &ConfigRemote{URL: r.URL(), CHAPUser: r.CHAPUser, CHAPSecret: r.CHAPSecret, MutualUser: r.MutualUser, MutualSecret: r.MutualSecret}
		case v.RBD != nil:
			cl.RBD = v.RBD.String()
			cl.RBDCluster = RBDCluster{Conf: v.RBD.Conf, ID: v.RBD.ID, Keyring: v.RBD.Keyring}
		case !v.Owned || v.Path != m.volumePath(v.ID):
			cl.Path = v.Path
		}
		if cl.ALUA, err = tx.GetLUNAccess(l.ID); err != nil {
			return c, err
		}
		if len(cl.ALUA) == 0 {
			cl.ALUA = nil
		}
		c.LUNs = append(c.LUNs, cl)
	}
	sort.Slice(c.LUNs, func(i, j int) bool { return c.LUNs[i].Name < c.LUNs[j].Name })
	name := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		return id
	}
	ts, err := tx.Targets()
	if err != nil {
		return c, err
	}
	for _, t := range ts {
		ct := ConfigTarget{IQN: t.IQN, Group: t.Group, Port: t.Port, AllowAll: t.AllowAll, Initiators: slices.Sorted(slices.Values(t.Initiators))}
		if len(t.Portals) > 0 {
			ct.Portals = slices.Sorted(slices.Values(t.Portals))
		}
		if t.CHAP != nil {
			ch := *t.CHAP
			ct.CHAP = &ch
		}
		for _, mp := range t.Mappings {
			cm := ConfigMapping{Number: mp.LUN, LUN: name(mp.LUNID), ReadOnly: mp.ReadOnly}
			if len(mp.Initiators) > 0 {
				cm.Initiators = slices.Compact(slices.Sorted(slices.Values(mp.Initiators)))
			}
			ct.LUNs = append(ct.LUNs, cm)
		}
		sort.Slice(ct.LUNs, func(i, j int) bool { return ct.LUNs[i].Number < ct.LUNs[j].Number })
		c.Targets = append(c.Targets, ct)
	}
	sort.Slice(c.Targets, func(i, j int) bool { return c.Targets[i].IQN < c.Targets[j].IQN })
	pairs, err := tx.Pairs()
	if err != nil {
		return c, err
	}
	vehicle := map[string]string{} // pair ID -> wanted vehicle
	recs := map[string]metavol.Pair{}
	for _, p := range pairs {
		vehicle[p.ID] = orDefault(p.VehicleWanted, VehicleAuto)
		recs[p.ID] = p
		if p.Session != "" || !pairHoldsLUNs(p.State) {
			continue
		}
		opts, err := pairRecordOptions(pairObject(name(p.SourceLUN)), p, now)
		if err != nil {
			return c, err
		}
		c.Migrations = append(c.Migrations, ConfigPair{Source: name(p.SourceLUN), Target: name(p.TargetLUN), Vehicle: vehicle[p.ID], PairOptions: opts})
	}
	sort.Slice(c.Migrations, func(i, j int) bool { return c.Migrations[i].Source < c.Migrations[j].Source })
	sess, err := tx.Sessions()
	if err != nil {
		return c, err
	}
	for _, s := range sess {
		if s.Final != "" {
			continue
		}
		opts, err := sessionRecordOptions(sessionObject(s.Name), s, now)
		if err != nil {
			return c, err
		}
		cs := ConfigSession{Name: s.Name, MaxActive: s.MaxActive, PairOptions: opts}
		for i, id := range s.PairIDs {
			sp := ConfigSessionPair{Vehicle: orDefault(vehicle[id], VehicleAuto)}
			if i < len(s.Sources) {
				sp.Source = s.Sources[i]
			}
			if i < len(s.Targets) {
				sp.Target = s.Targets[i]
			}
			if rec, ok := recs[id]; ok && pairHoldsLUNs(rec.State) {
				mo, err := pairRecordOptions(pairObject(sp.Source), rec, now)
				if err != nil {
					return c, err
				}
				if mo = mo.asMember(opts); !mo.same(opts) {
					sp.Options = &mo
				}
			}
			cs.Pairs = append(cs.Pairs, sp)
		}
		c.Sessions = append(c.Sessions, cs)
	}
	sort.Slice(c.Sessions, func(i, j int) bool { return c.Sessions[i].Name < c.Sessions[j].Name })
	return c, nil
}

// volumeKind is a volume record's kind; records written before Kind
// existed are local files or devices.
func volumeKind(v metavol.Volume) string {
	if v.Kind == "" {
		return "file"
	}
	return v.Kind
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ApplyOptions are the options of PlanConfig and ApplyConfig.
type ApplyOptions struct {
	// Prune deletes the LUNs and targets the file does not name (never
	// a migration); without it they are kept and the plan says so.
	Prune bool
	// LoggedIn is the number of iSCSI sessions logged in to each target
	// now (by IQN; the caller asks the iSCSI side). Prune refuses to
	// delete a target with sessions, or a LUN mapped on one: a host must
	// never lose a disk because a file forgot it.
	LoggedIn map[string]int
	// Who asked (the admin API caller): each change applied is an admin
	// event of its object, by Who.
	Who string
}

// ChangeOp is what a configuration change does to its object.
type ChangeOp int

// Change operations.
const (
	OpCreate ChangeOp = iota
	OpChange
	OpDelete
	OpKeep // nothing is done; the plan says why
)

func (o ChangeOp) String() string {
	switch o {
	case OpCreate:
		return "create"
	case OpChange:
		return "change"
	case OpDelete:
		return "delete"
	case OpKeep:
		return "keep"
	}
	return fmt.Sprintf("ChangeOp(%d)", int(o))
}

// ConfigChange is one line of a plan.
type ConfigChange struct {
	Op     ChangeOp
	Object string // "lun NAME", "target IQN", "discovery", "migration SOURCE", "session NAME"
	Detail string
}

// String is the plan line: "+ lun a: create (...)", "~ target t: ...",
// "- lun b: delete", "= lun c: kept (...)".
func (c ConfigChange) String() string {
	sign := map[ChangeOp]string{OpCreate: "+", OpChange: "~", OpDelete: "-", OpKeep: "="}[c.Op]
	return sign + " " + c.Object + ": " + c.Detail
}

// ConfigPlan is what ApplyConfig does (Changes, in order) and what it
// leaves as it is although the file does not name it (Kept).
type ConfigPlan struct {
	Changes []ConfigChange
	Kept    []ConfigChange
}

// configStep is a planned change with its action and its undo (nil: it
// cannot be undone).
type configStep struct {
	change ConfigChange
	do     func() error
	undo   func() error
}

// ApplyError says where an apply stopped: the step that failed, the steps
// applied before it, and which of those were undone.
type ApplyError struct {
	Failed  ConfigChange
	Err     error
	Applied []ConfigChange // done before the failure
	Undone  []ConfigChange // of Applied, undone again
	// NotUndone are applied steps that could not be undone (with why).
	NotUndone []string
}

func (e *ApplyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config apply: step %d (%s) failed: %v", len(e.Applied)+1, e.Failed, e.Err)
	if len(e.Applied) == 0 {
		b.WriteString("; nothing was changed")
		return b.String()
	}
	fmt.Fprintf(&b, "; %d step(s) had been applied, %d undone", len(e.Applied), len(e.Undone))
	if len(e.NotUndone) > 0 {
		fmt.Fprintf(&b, "; still applied: %s", strings.Join(e.NotUndone, "; "))
	}
	return b.String()
}

func (e *ApplyError) Unwrap() error { return e.Err }

// PlanConfig checks want against the running server and returns the plan;
// nothing changes. A change that cannot be done live is refused (a
// Refusal naming the object and the reason; all of them when several).
func (m *Manager) PlanConfig(want Config, opts ApplyOptions) (ConfigPlan, error) {
	m.cfgApply.Lock()
	defer m.cfgApply.Unlock()
	steps, kept, err := m.planConfig(want, opts)
	if err != nil {
		return ConfigPlan{}, err
	}
	return planOf(steps, kept), nil
}

func planOf(steps []configStep, kept []ConfigChange) ConfigPlan {
	p := ConfigPlan{Kept: kept}
	for _, s := range steps {
		p.Changes = append(p.Changes, s.change)
	}
	return p
}

// ApplyConfig makes the running server match want, live, and returns the
// plan it carried out. A refused plan changes nothing; a step that fails
// returns an *ApplyError after undoing the steps before it.
func (m *Manager) ApplyConfig(want Config, opts ApplyOptions) (ConfigPlan, error) {
	m.cfgApply.Lock()
	defer m.cfgApply.Unlock()
	steps, kept, err := m.planConfig(want, opts)
	if err != nil {
		return ConfigPlan{}, err
	}
	plan := planOf(steps, kept)
	for i, s := range steps {
		if err := s.do(); err != nil {
			return plan, m.undoSteps(steps[:i], s.change, err)
		}
		m.log.Info().Str("change", s.change.String()).Msg("config apply")
		m.events.Record(changeEvent(s.change, opts.Who))
	}
	return plan, nil
}

// changeEvent is the admin event of one change a config apply made: its
// object, and as the reason what was done ("create: 2 MiB, ...").
func changeEvent(c ConfigChange, who string) Event {
	e := Event{Type: EventAdmin, Action: "config apply", Object: c.Object, Who: who, OK: true, Reason: c.Op.String() + ": " + c.Detail}
	kind, name, _ := strings.Cut(c.Object, " ")
	switch kind {
	case "lun", "migration":
		e.LUN = name
	case "target":
		e.Target = name
	case "session":
		e.Session = name
	}
	return e
}

// undoSteps undoes done in reverse order after failed failed with err.
func (m *Manager) undoSteps(done []configStep, failed ConfigChange, err error) error {
	ae := &ApplyError{Failed: failed, Err: err}
	for _, s := range done {
		ae.Applied = append(ae.Applied, s.change)
	}
	for i := len(done) - 1; i >= 0; i-- {
		s := done[i]
		if s.undo == nil {
			ae.NotUndone = append(ae.NotUndone, s.change.String()+" (cannot be undone)")
			continue
		}
		if uerr := s.undo(); uerr != nil {
			ae.NotUndone = append(ae.NotUndone, fmt.Sprintf("%s (undo failed: %v)", s.change, uerr))
			continue
		}
		ae.Undone = append(ae.Undone, s.change)
	}
	m.log.Error().Err(ae).Msg("config apply failed")
	return ae
}
