package lm

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// The plan of a configuration apply (config.go): the difference between
// the wanted Config and the running server, checked as a whole before the
// first change, as ordered steps:
//
//  1. discovery CHAP;
//  2. new LUNs, grown LUNs;
//  3. new targets (with their ALUA port and portal group), changed
//     target ports and portal groups;
//  4. per target: mappings removed, ACL, CHAP, mapping options changed
//     (read-only, mask), mappings added;
//  5. LUN ALUA access states;
//  6. new pairs and sessions, option changes of existing ones
//     (configpairopts.go: Set, SetSession);
//  7. with Prune: targets, then LUNs the file does not name.
//
// Mappings are removed before they are added (a number may move to
// another LUN) and before pairs are created (a pair's target LUN is never
// mapped); LUNs are deleted last (an owned volume's data cannot be
// brought back, so nothing may fail after it).

// The phases of a plan, in the order their steps run (see above).
const (
	phaseDiscovery     = iota // discovery CHAP
	phaseLUNs                 // new, imported and grown LUNs
	phaseTargets              // new targets, target ports, portal groups
	phaseTargetContent        // per target: unmaps, ACL, CHAP, mapping options, maps
	phaseALUA                 // LUN access states
	phaseMigrations           // new pairs and sessions, their options
	phasePrune                // deletions (--prune)
	numPhases
)

// curConfig is the running configuration as planning needs it.
type curConfig struct {
	Config
	luns    map[string]*ConfigLUN    // by name
	ids     map[string]string        // LUN ID -> name
	targets map[string]*ConfigTarget // by IQN
	// pairOf holds the LUNs in a pair that still holds them (by name):
	// the pair's source name and its session's name ("" alone).
	pairOf   map[string]curPair
	pairs    map[string]curPair // by source name
	sessions map[string]bool    // every session name, finished or not
	ports    map[uint16]string  // relative port ID -> IQN
}

type curPair struct {
	source, target, session string
	rec                     metavol.Pair
}

func (m *Manager) readCurrent() (*curConfig, error) {
	cur := &curConfig{luns: map[string]*ConfigLUN{}, ids: map[string]string{}, targets: map[string]*ConfigTarget{},
		pairOf: map[string]curPair{}, pairs: map[string]curPair{}, sessions: map[string]bool{}, ports: map[uint16]string{}}
	err := m.db.View(func(tx *metavol.Tx) error {
		c, err := m.readConfig(tx)
		if err != nil {
			return err
		}
		cur.Config = c
		luns, err := tx.LUNs()
		if err != nil {
			return err
		}
		for _, l := range luns {
			cur.ids[l.ID] = l.Name
		}
		sess, err := tx.Sessions()
		if err != nil {
			return err
		}
		sessName := map[string]string{}
		for _, s := range sess {
			cur.sessions[s.Name] = true
			sessName[s.ID] = s.Name
		}
		pairs, err := tx.Pairs()
		if err != nil {
			return err
		}
		for _, p := range pairs {
			if !pairHoldsLUNs(p.State) {
				continue
			}
			cp := curPair{source: cur.ids[p.SourceLUN], target: cur.ids[p.TargetLUN], session: sessName[p.Session], rec: p}
			cur.pairs[cp.source] = cp
			cur.pairOf[cp.source] = cp
			cur.pairOf[cp.target] = cp
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("config: read the running configuration: %w", err)
	}
	for i := range cur.LUNs {
		cur.luns[cur.LUNs[i].Name] = &cur.LUNs[i]
	}
	for i := range cur.Targets {
		t := &cur.Targets[i]
		cur.targets[t.IQN] = t
		cur.ports[t.Port] = t.IQN
	}
	return cur, nil
}

// planner collects the steps, the kept objects and the refusals.
type planner struct {
	m       *Manager
	cur     *curConfig
	want    Config
	opts    ApplyOptions
	steps   [numPhases][]configStep
	kept    []ConfigChange
	refused []*Refusal
}

func (p *planner) refuse(err error, obj, format string, args ...any) {
	p.refused = append(p.refused, refuse(err, obj, format, args...))
}

func (p *planner) add(phase int, op ChangeOp, obj, detail string, do, undo func() error) {
	p.steps[phase] = append(p.steps[phase], configStep{change: ConfigChange{Op: op, Object: obj, Detail: detail}, do: do, undo: undo})
}

func (p *planner) keep(obj, detail string) {
	p.kept = append(p.kept, ConfigChange{Op: OpKeep, Object: obj, Detail: detail})
}

// planConfig checks want and builds the steps; nothing changes.
func (m *Manager) planConfig(want Config, opts ApplyOptions) ([]configStep, []ConfigChange, error) {
	if err := m.closedRefusal("config"); err != nil {
		return nil, nil, err
	}
	if want.Version != ConfigVersion {
		return nil, nil, refuse(ErrInvalid, "config", "version %d: this server reads version %d", want.Version, ConfigVersion)
	}
	cur, err := m.readCurrent()
	if err != nil {
		return nil, nil, err
	}
	p := &planner{m: m, cur: cur, want: want, opts: opts}
	// Every check runs, whatever the ones before found: a refused plan
	// lists every refusal, each with its object and condition, so that
	// one edit of the file can fix them all.
	wantLUNs := p.checkNames()
	p.planDiscovery()
	p.planLUNs(wantLUNs)
	p.planTargets(wantLUNs)
	p.planALUA()
	p.planMigrations(wantLUNs)
	p.planPrune(wantLUNs)
	if err := JoinRefusals("config", p.refused); err != nil {
		return nil, nil, err
	}
	var steps []configStep
	for _, ph := range p.steps {
		steps = append(steps, ph...)
	}
	return steps, p.kept, nil
}

// checkNames refuses duplicates and references to LUNs the file does not
// define; it returns the wanted LUNs by name.
func (p *planner) checkNames() map[string]*ConfigLUN {
	luns := map[string]*ConfigLUN{}
	ids := map[string]string{}
	for i := range p.want.LUNs {
		l := &p.want.LUNs[i]
		if err := ValidLUNName(l.Name); err != nil {
			p.refuse(ErrInvalid, lunObject(l.Name), "%v", err)
			continue
		}
		if _, dup := luns[l.Name]; dup {
			p.refuse(ErrInvalid, lunObject(l.Name), "named twice in the file")
			continue
		}
		luns[l.Name] = l
		if l.Path != "" && !filepath.IsAbs(l.Path) {
			p.refuse(ErrInvalid, lunObject(l.Name), "volume path %q: want an absolute path", l.Path)
		}
		if l.ID != "" {
			if other, dup := ids[l.ID]; dup {
				p.refuse(ErrInvalid, lunObject(l.Name), "id %s is also lun %s's in the file", l.ID, other)
			}
			ids[l.ID] = l.Name
		}
	}
	iqns := map[string]bool{}
	ports := map[uint16]string{}
	for _, t := range p.want.Targets {
		obj := targetObject(t.IQN)
		if err := ValidateISCSIName(t.IQN); err != nil {
			p.refuse(ErrInvalid, obj, "bad IQN: %v", err)
		}
		if iqns[t.IQN] {
			p.refuse(ErrInvalid, obj, "named twice in the file")
		}
		iqns[t.IQN] = true
		if t.Port != 0 {
			if other, dup := ports[t.Port]; dup {
				p.refuse(ErrInvalid, obj, "relative port ID %d is also target %s's in the file", t.Port, other)
			}
			ports[t.Port] = t.IQN
		}
		nums := map[uint64]bool{}
		mapped := map[string]bool{}
		for _, mp := range t.LUNs {
			switch {
			case mp.Number > MaxLUNNumber:
				p.refuse(ErrInvalid, obj, "LUN number %d is above the highest, %d", mp.Number, MaxLUNNumber)
			case nums[mp.Number]:
				p.refuse(ErrInvalid, obj, "LUN number %d is used twice", mp.Number)
			case mapped[mp.LUN]:
				p.refuse(ErrInvalid, obj, "lun %s is mapped twice", mp.LUN)
			case luns[mp.LUN] == nil:
				p.refuse(ErrNotFound, obj, "LUN %d names lun %s, which the file does not define", mp.Number, mp.LUN)
			}
			nums[mp.Number], mapped[mp.LUN] = true, true
			for _, in := range mp.Initiators {
				if err := ValidateISCSIName(in); err != nil {
					p.refuse(ErrInvalid, obj, "LUN %d: mapping mask: bad initiator name %q: %v", mp.Number, in, err)
				}
			}
		}
		for _, in := range t.Initiators {
			if err := ValidateISCSIName(in); err != nil {
				p.refuse(ErrInvalid, obj, "initiator %q: %v", in, err)
			}
		}
	}
	return luns
}

// resolveCHAP replaces placeholders in want with the secrets of cur; a
// placeholder without a current secret is refused.
func (p *planner) resolveCHAP(obj string, want, cur *metavol.CHAP) *metavol.CHAP {
	if want == nil {
		return nil
	}
	c := *want
	n := len(p.refused)
	if c.Secret == SecretPlaceholder {
		if cur == nil || cur.Secret == "" {
			p.refuse(ErrInvalid, obj, "chap: the secret is %s (an export without --with-secrets) and there is no current secret to keep: give the secret", SecretPlaceholder)
		} else {
			c.Secret = cur.Secret
		}
	}
	if c.MutualSecret == SecretPlaceholder {
		if cur == nil || cur.MutualSecret == "" {
			p.refuse(ErrInvalid, obj, "chap: the mutual secret is %s and there is no current mutual secret to keep: give the secret", SecretPlaceholder)
		} else {
			c.MutualSecret = cur.MutualSecret
		}
	}
	if len(p.refused) > n {
		return nil
	}
	if _, err := checkCHAP(obj, c); err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			p.refused = append(p.refused, r)
		} else {
			p.refuse(ErrInvalid, obj, "%v", err)
		}
		return nil
	}
	return &c
}

func chapEqual(a, b *metavol.CHAP) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func chapDetail(c *metavol.CHAP) string {
	if c == nil {
		return "off"
	}
	if c.MutualUser != "" {
		return fmt.Sprintf("user %s, mutual user %s", c.User, c.MutualUser)
	}
	return "user " + c.User
}

func (p *planner) planDiscovery() {
	cur := p.cur.Discovery
	want := p.resolveCHAP(discoveryObject, p.want.Discovery, cur)
	if p.want.Discovery != nil && want == nil {
		return // refused
	}
	if chapEqual(want, cur) {
		return
	}
	m := p.m
	set := func(c *metavol.CHAP) func() error {
		return func() error {
			if c == nil {
				return m.ClearDiscoveryCHAP()
			}
			_, err := m.SetDiscoveryCHAP(*c)
			return err
		}
	}
	p.add(phaseDiscovery, OpChange, discoveryObject, "chap "+chapDetail(want), set(want), set(cur))
}

// planLUNs plans new and grown LUNs and refuses what cannot change live.
func (p *planner) planLUNs(want map[string]*ConfigLUN) {
	m := p.m
	for _, name := range slices.Sorted(maps.Keys(want)) {
		w := want[name]
		obj := lunObject(name)
		bs := w.BlockSize
		if bs == 0 {
			bs = 512
		}
		c := p.cur.luns[name]
		if c == nil {
			p.planNewLUN(w, bs)
			continue
		}
		var bad []string
		if w.ID != "" && w.ID != c.ID {
			bad = append(bad, fmt.Sprintf("id %s is %s here", w.ID, c.ID))
		}
		if w.NAA != "" && w.NAA != c.NAA {
			bad = append(bad, fmt.Sprintf("naa %s is %s here", w.NAA, c.NAA))
		}
		if w.Serial != "" && w.Serial != c.Serial {
			bad = append(bad, fmt.Sprintf("serial %s is %s here", w.Serial, c.Serial))
		}
		if bs != c.BlockSize {
			bad = append(bad, fmt.Sprintf("block size %d is %d here", bs, c.BlockSize))
		}
		if w.Kind != "" && w.Kind != c.Kind {
			bad = append(bad, fmt.Sprintf("volume kind %s is %s here", w.Kind, c.Kind))
		}
		if (c.Remote == nil && c.RBD == "") && w.Path != c.Path {
			bad = append(bad, fmt.Sprintf("volume path %s is %s here", pathName(w.Path), pathName(c.Path)))
		}
		if w.Direct != c.Direct {
			bad = append(bad, fmt.Sprintf("direct I/O %t is %t here", w.Direct, c.Direct))
		}
		if w.RBD != c.RBD {
			bad = append(bad, fmt.Sprintf("rbd image %q is %q here", w.RBD, c.RBD))
		} else if w.RBDCluster != c.RBDCluster {
			bad = append(bad, fmt.Sprintf("the rbd image's Ceph cluster %+v is %+v here", w.RBDCluster, c.RBDCluster))
		}
		if (w.Remote == nil) != (c.Remote == nil) || (w.Remote != nil && !remoteMatches(*w.Remote, *c.Remote)) {
			bad = append(bad, "its remote data volume (url or credentials) differs")
		}
		refused := len(bad) > 0
		if refused {
			p.refuse(ErrInvalid, obj, "cannot be changed live: %s (a LUN's identity, block size and data volume are fixed: delete and re-create it)", strings.Join(bad, "; "))
		}
		switch {
		case w.Size < c.Size:
			p.refuse(ErrInvalid, obj, "size %s is smaller than the current %s: LUNs only grow", sizeText(w.Size), sizeText(c.Size))
		case w.Size > c.Size:
			if cp, ok := p.cur.pairOf[name]; ok {
				p.refuse(ErrInPair, obj, "cannot grow to %s: in migration pair %s (%s)", sizeText(w.Size), cp.rec.ID, cp.rec.State)
				refused = true
			}
			if w.Size%int64(bs) != 0 {
				p.refuse(ErrInvalid, obj, "size %s is not a whole number of %d-byte blocks", sizeText(w.Size), bs)
				refused = true
			}
			if refused {
				continue
			}
			size := w.Size
			p.add(phaseLUNs, OpChange, obj, fmt.Sprintf("grow from %s to %s", sizeText(c.Size), sizeText(size)),
				func() error { _, err := m.ResizeLUN(name, size); return err }, nil)
		}
	}
}

// orZero is a block size with the default (0 is 512).
func orZero(bs uint32) uint32 {
	if bs == 0 {
		return 512
	}
	return bs
}

func pathName(p string) string {
	if p == "" {
		return "(data dir)"
	}
	return p
}

// remoteMatches compares a wanted remote volume with the current one; a
// placeholder secret matches the current secret.
func remoteMatches(w, c ConfigRemote) bool {
	if u, err := iscsivol.ParseURL(w.URL); err == nil { // the export's form: HOST:PORT
		w.URL = metavol.Remote{Portal: u.Portal, Target: u.Target, LUN: u.LUN}.URL()
	}
	if w.CHAPSecret == SecretPlaceholder {
		w.CHAPSecret = c.CHAPSecret
	}
	if w.MutualSecret == SecretPlaceholder {
		w.MutualSecret = c.MutualSecret
	}
	return w == c
}

func (p *planner) planNewLUN(w *ConfigLUN, bs uint32) {
	m := p.m
	obj := lunObject(w.Name)
	if w.Remote != nil || w.Kind == metavol.VolumeKindISCSI {
		p.planImport(w)
		return
	}
	n := len(p.refused)
	if w.RBD != "" || w.Kind == metavol.VolumeKindRBD {
		p.refuse(ErrInvalid, obj, "apply does not create RBD LUNs: create it with `lmtgt lun create --rbd` first")
	}
	if w.Adopted {
		p.refuse(ErrInvalid, obj, "only an imported LUN (volume kind iscsi) can have an adopted identity")
	}
	if w.Kind == "block" && w.Path == "" {
		p.refuse(ErrInvalid, obj, "volume kind block needs the device's path")
	}
	switch {
	case w.Size < 0:
		p.refuse(ErrInvalid, obj, "size %s is negative", sizeText(w.Size))
	case w.Size == 0:
		p.refuse(ErrInvalid, obj, "a new LUN needs a size")
	case w.Size%int64(bs) != 0:
		p.refuse(ErrInvalid, obj, "size %s is not a whole number of %d-byte blocks", sizeText(w.Size), bs)
	}
	if !p.newIdentityOK(obj, w) || len(p.refused) > n {
		return
	}
	req := CreateLUNRequest{Name: w.Name, Size: w.Size, BlockSize: bs, Path: w.Path, Direct: w.Direct, ID: w.ID, NAA: w.NAA, Serial: w.Serial}
	name := w.Name
	p.add(phaseLUNs, OpCreate, obj, fmt.Sprintf("%s, %d-byte blocks, volume %s", sizeText(w.Size), bs, pathName(w.Path)),
		func() error { _, err := m.CreateLUN(req); return err },
		func() error { return m.DeleteLUN(name) })
}

// newIdentityOK checks the identity a new LUN w is given (its ID free,
// ID, NAA and serial well formed); a refusal is noted and false returned.
func (p *planner) newIdentityOK(obj string, w *ConfigLUN) bool {
	n := len(p.refused)
	if w.ID != "" {
		if other, ok := p.cur.ids[w.ID]; ok {
			p.refuse(ErrExists, obj, "id %s is already lun %s's", w.ID, other)
		}
	}
	// Each part on its own, so that every bad one is said.
	for _, part := range [][3]string{{w.ID, "", ""}, {"", w.NAA, ""}, {"", "", w.Serial}} {
		if err := checkIdentity(obj, part[0], part[1], part[2]); err != nil {
			p.refused = append(p.refused, err)
		}
	}
	return len(p.refused) == n
}

// planImport plans a new LUN whose data volume is a LUN on another iSCSI
// target (lun import): its size and block size are the external LUN's
// (checked against the file's after the import: a step that fails is
// undone).
func (p *planner) planImport(w *ConfigLUN) {
	m := p.m
	obj := lunObject(w.Name)
	r := w.Remote
	n := len(p.refused)
	if r == nil || r.URL == "" {
		p.refuse(ErrInvalid, obj, "volume kind iscsi needs remote.url")
	}
	if r != nil && (r.CHAPSecret == SecretPlaceholder || r.MutualSecret == SecretPlaceholder) {
		p.refuse(ErrInvalid, obj, "remote: the CHAP secret is %s (an export without --with-secrets): give the secret to import it", SecretPlaceholder)
	}
	var req ImportLUNRequest
	if r != nil && r.URL != "" {
		req = ImportLUNRequest{Name: w.Name, From: r.URL, CHAPUser: r.CHAPUser, CHAPSecret: r.CHAPSecret,
			MutualUser: r.MutualUser, MutualSecret: r.MutualSecret, Identity: IdentityOwn, ID: w.ID, NAA: w.NAA, Serial: w.Serial}
		if w.Adopted {
			req.Identity = IdentityAdopt
		}
		if _, err := checkImport(req); err != nil {
			p.refused = append(p.refused, asRefusal(err, obj))
		}
	}
	if !p.newIdentityOK(obj, w) || len(p.refused) > n {
		return
	}
	name, size, bs := w.Name, w.Size, orZero(w.BlockSize)
	p.add(phaseLUNs, OpCreate, obj, fmt.Sprintf("import %s (identity %s)", r.URL, req.Identity),
		func() error {
			l, err := m.ImportLUN(req)
			if err != nil {
				return err
			}
			if l.Size != size || l.BlockSize != bs {
				derr := m.DeleteLUN(name)
				return errors.Join(refuse(ErrInvalid, obj, "the external LUN has %s in %d-byte blocks, the file says %s in %d-byte blocks", sizeText(l.Size), l.BlockSize, sizeText(size), bs), derr)
			}
			return nil
		},
		func() error { return m.DeleteLUN(name) })
}

// planTargets plans new targets, port changes, and per target its
// mappings, ACL and CHAP.
func (p *planner) planTargets(wantLUNs map[string]*ConfigLUN) {
	m := p.m
	for i := range p.want.Targets {
		w := &p.want.Targets[i]
		iqn := w.IQN
		obj := targetObject(iqn)
		// A refusal here does not end the target's checks: its mappings,
		// ACL and CHAP are checked too (the plan is refused as a whole).
		if w.Port != 0 {
			if holder, ok := p.cur.ports[w.Port]; ok && holder != iqn {
				p.refuse(ErrExists, obj, "relative port ID %d is held by target %s here: change that one first (in a separate apply)", w.Port, holder)
			}
		}
		c := p.cur.targets[iqn]
		portals, _ := p.wantPortals(obj, w.Portals, c)
		if c == nil {
			c = &ConfigTarget{IQN: iqn}
			group, port := w.Group, w.Port
			p.add(phaseTargets, OpCreate, obj, fmt.Sprintf("group %s, port %s%s", idOrAuto(group), idOrAuto(port), portalsDetail(portals)),
				func() error { return m.createTargetWith(iqn, group, port, portals) },
				func() error { return m.DeleteTarget(iqn, true) })
		} else {
			p.planTargetPort(w, c)
			if !slices.Equal(portals, c.Portals) {
				old := c.Portals
				p.add(phaseTargets, OpChange, obj, fmt.Sprintf("portals %s→%s", portalList(old), portalList(portals)),
					func() error { return m.setTargetPortals(iqn, portals) },
					func() error { return m.setTargetPortals(iqn, old) })
			}
		}
		// Mappings: remove what differs (phase 3), add what is missing
		// (after the ACL and CHAP).
		cm := map[string]uint64{}
		for _, mp := range c.LUNs {
			cm[mp.LUN] = mp.Number
		}
		wm := map[string]uint64{}
		for _, mp := range w.LUNs {
			wm[mp.LUN] = mp.Number
		}
		var adds []ConfigMapping
		for _, mp := range c.LUNs {
			if n, ok := wm[mp.LUN]; ok && n == mp.Number {
				continue
			}
			lun, num := mp.LUN, mp.Number
			old := MapOptions{Number: &num, ReadOnly: mp.ReadOnly, Initiators: mp.Initiators}
			p.add(phaseTargetContent, OpChange, obj, fmt.Sprintf("unmap lun %s (LUN %d)", lun, num),
				func() error { return m.UnmapLUN(iqn, lun) },
				func() error { _, err := m.MapLUNWith(iqn, lun, old); return err })
		}
		var opts []configStep // mapping option changes, after the ACL
		for _, mp := range w.LUNs {
			if n, ok := cm[mp.LUN]; ok && n == mp.Number {
				cur := c.LUNs[slices.IndexFunc(c.LUNs, func(x ConfigMapping) bool { return x.LUN == mp.LUN })]
				if s, ok := p.mappingChange(obj, iqn, mp, cur); ok {
					opts = append(opts, s)
				}
				continue
			}
			if cp, ok := p.cur.pairOf[mp.LUN]; ok && cp.target == mp.LUN {
				p.refuse(ErrInPair, lunObject(mp.LUN), "cannot be mapped on %s: it is the target of migration pair %s (%s)", iqn, cp.rec.ID, cp.rec.State)
				continue
			}
			adds = append(adds, mp)
		}
		// ACL.
		if w.AllowAll != c.AllowAll {
			allow := w.AllowAll
			set := func(on bool) func() error {
				return func() error {
					if on {
						return m.AllowInitiator(iqn, "")
					}
					return m.DisallowInitiator(iqn, "")
				}
			}
			p.add(phaseTargetContent, OpChange, obj, fmt.Sprintf("allow ALL %t", allow), set(allow), set(!allow))
		}
		for _, in := range c.Initiators {
			if !slices.Contains(w.Initiators, in) {
				in := in
				p.add(phaseTargetContent, OpChange, obj, "disallow initiator "+in,
					func() error { return m.DisallowInitiator(iqn, in) },
					func() error { return m.AllowInitiator(iqn, in) })
			}
		}
		for _, in := range slices.Sorted(slices.Values(w.Initiators)) {
			if !slices.Contains(c.Initiators, in) {
				in := in
				p.add(phaseTargetContent, OpChange, obj, "allow initiator "+in,
					func() error { return m.AllowInitiator(iqn, in) },
					func() error { return m.DisallowInitiator(iqn, in) })
			}
		}
		// CHAP.
		wc := p.resolveCHAP(obj, w.CHAP, c.CHAP)
		if w.CHAP == nil || wc != nil {
			if !chapEqual(wc, c.CHAP) {
				set := func(ch *metavol.CHAP) func() error {
					return func() error {
						if ch == nil {
							return m.ClearTargetCHAP(iqn)
						}
						_, err := m.SetTargetCHAP(iqn, *ch)
						return err
					}
				}
				p.add(phaseTargetContent, OpChange, obj, "chap "+chapDetail(wc), set(wc), set(c.CHAP))
			}
		}
		p.steps[phaseTargetContent] = append(p.steps[phaseTargetContent], opts...)
		for _, mp := range adds {
			lun, num := mp.LUN, mp.Number
			mo := MapOptions{Number: &num, ReadOnly: mp.ReadOnly, Initiators: canonicalMask(mp.Initiators)}
			p.add(phaseTargetContent, OpChange, obj, fmt.Sprintf("map lun %s as LUN %d%s", lun, num, mappingDetail(mp.ReadOnly, mo.Initiators)),
				func() error { _, err := m.MapLUNWith(iqn, lun, mo); return err },
				func() error { return m.UnmapLUN(iqn, lun) })
		}
	}
}

// planTargetPort plans a change of an existing target's ALUA group or
// relative port ID (0 in the file: unchanged).
func (p *planner) planTargetPort(w, c *ConfigTarget) {
	if (w.Group == 0 || w.Group == c.Group) && (w.Port == 0 || w.Port == c.Port) {
		return
	}
	m, iqn := p.m, w.IQN
	var g, pt *uint16
	if w.Group != 0 && w.Group != c.Group {
		g = &w.Group
	}
	if w.Port != 0 && w.Port != c.Port {
		pt = &w.Port
	}
	og, op := c.Group, c.Port
	p.add(phaseTargets, OpChange, targetObject(iqn), fmt.Sprintf("ALUA group %d→%s, port %d→%s", c.Group, idOrAuto(w.Group), c.Port, idOrAuto(w.Port)),
		func() error { _, err := m.SetTargetPort(iqn, g, pt); return err },
		func() error { _, err := m.SetTargetPort(iqn, &og, &op); return err })
}

// wantPortals checks a target's wanted portal group and returns it
// canonical and sorted (nil: every portal). A portal the target has now
// is kept as it is; a new one must be a portal the server listens on
// (checkPortal, the rule of AddTargetPortal). cur is nil for a new target.
func (p *planner) wantPortals(obj string, want []string, cur *ConfigTarget) ([]string, bool) {
	var out []string
	ok := true
	for _, s := range want {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			p.refuse(ErrInvalid, obj, "portal %q: want ip:port, one of serve --portal (%v)", s, err)
			ok = false
			continue
		}
		c := canonicalPortal(ap)
		if cur == nil || !slices.Contains(cur.Portals, c) {
			if _, err := p.m.checkPortal(obj, c); err != nil {
				p.refused = append(p.refused, asRefusal(err, obj))
				ok = false
				continue
			}
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, ok
}

// setTargetPortals replaces a target's portal group (checked by the plan)
// in one change, live: sessions on a portal it leaves are ended.
func (m *Manager) setTargetPortals(iqn string, portals []string) error {
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		t.Portals = slices.Clone(portals)
		return nil
	})
}

func portalList(ps []string) string {
	if len(ps) == 0 {
		return "(every portal)"
	}
	return strings.Join(ps, ",")
}

func portalsDetail(ps []string) string {
	if len(ps) == 0 {
		return ""
	}
	return ", portals " + portalList(ps)
}

// canonicalMask is a mapping mask sorted without duplicates (nil: none);
// the names were checked by checkNames.
func canonicalMask(inis []string) []string {
	if len(inis) == 0 {
		return nil
	}
	return slices.Compact(slices.Sorted(slices.Values(inis)))
}

func mappingDetail(readOnly bool, mask []string) string {
	var s string
	if readOnly {
		s += ", read-only"
	}
	if len(mask) > 0 {
		s += ", only " + strings.Join(mask, ",")
	}
	return s
}

// mappingChange plans a change of a kept mapping's write protection or
// mask (SetMapping, live); ok is false when nothing differs.
func (p *planner) mappingChange(obj, iqn string, w, c ConfigMapping) (configStep, bool) {
	wm, cm := canonicalMask(w.Initiators), canonicalMask(c.Initiators)
	if w.ReadOnly == c.ReadOnly && slices.Equal(wm, cm) {
		return configStep{}, false
	}
	m, lun := p.m, w.LUN
	set := func(ro bool, mask []string) func() error {
		return func() error {
			inis := slices.Clone(mask)
			if inis == nil {
				inis = []string{} // an empty mask unmasks
			}
			return m.SetMapping(iqn, lun, MappingChange{ReadOnly: &ro, Initiators: &inis})
		}
	}
	mask := "every initiator"
	if len(wm) > 0 {
		mask = "only " + strings.Join(wm, ",")
	}
	detail := fmt.Sprintf("mapping of lun %s (LUN %d): read-only %t, %s", lun, w.Number, w.ReadOnly, mask)
	return configStep{change: ConfigChange{Op: OpChange, Object: obj, Detail: detail}, do: set(w.ReadOnly, wm), undo: set(c.ReadOnly, cm)}, true
}

func idOrAuto(id uint16) string {
	if id == 0 {
		return "(server's choice)"
	}
	return fmt.Sprint(id)
}

// planALUA sets the access states of every LUN of the file to exactly
// its ALUA map (groups it does not list get the default state).
func (p *planner) planALUA() {
	m := p.m
	for _, w := range p.want.LUNs {
		var cur map[uint16]string
		if c := p.cur.luns[w.Name]; c != nil {
			cur = c.ALUA
		}
		groups := map[uint16]bool{}
		for g := range cur {
			groups[g] = true
		}
		for g := range w.ALUA {
			groups[g] = true
		}
		name := w.Name
		for _, g := range slices.Sorted(maps.Keys(groups)) {
			if g == 0 {
				p.refuse(ErrInvalid, lunObject(name), "alua: target port group 0: groups are 1..65535")
				continue
			}
			ws, cs := w.ALUA[g], cur[g]
			if ws == cs {
				continue
			}
			g := g
			p.add(phaseALUA, OpChange, lunObject(name), fmt.Sprintf("ALUA group %d: %s", g, orDefault(ws, "default state")),
				func() error { return m.SetLUNAccess(name, g, ws) },
				func() error { return m.SetLUNAccess(name, g, cs) })
		}
	}
}

// planMigrations plans new pairs and sessions and the changes of their
// options (those pairOptionTable can set live, and a session's max
// active); what no operation changes on a running migration (a pair's
// target or vehicle, a session's pairs, a pending start time) is refused.
func (p *planner) planMigrations(wantLUNs map[string]*ConfigLUN) {
	m := p.m
	// Where each LUN is mapped after the apply: as the file says on its
	// targets, as now on the targets it does not name (kept or pruned).
	mappedInFile := map[string]string{}
	wantT := map[string]bool{}
	for _, t := range p.want.Targets {
		wantT[t.IQN] = true
		for _, mp := range t.LUNs {
			mappedInFile[mp.LUN] = t.IQN
		}
	}
	if !p.opts.Prune {
		for _, t := range p.cur.Targets {
			if !wantT[t.IQN] {
				for _, mp := range t.LUNs {
					mappedInFile[mp.LUN] = t.IQN
				}
			}
		}
	}
	inFile := map[string]bool{} // LUN names used by pairs of the file
	checkLUNs := func(obj, source, target string) bool {
		ok := true
		for _, l := range []string{source, target} {
			if wantLUNs[l] == nil {
				p.refuse(ErrNotFound, obj, "lun %s is not defined in the file", l)
				ok = false
			}
			if inFile[l] {
				p.refuse(ErrInPair, obj, "lun %s is in two pairs of the file", l)
				ok = false
			}
			inFile[l] = true
		}
		if sl, tl := wantLUNs[source], wantLUNs[target]; sl != nil && tl != nil {
			if tl.Size < sl.Size {
				p.refuse(ErrInvalid, obj, "target lun %s (%s) is smaller than the source (%s)", target, sizeText(tl.Size), sizeText(sl.Size))
				ok = false
			}
			if orZero(tl.BlockSize) != orZero(sl.BlockSize) {
				p.refuse(ErrInvalid, obj, "block sizes differ: source %d, target lun %s %d", orZero(sl.BlockSize), target, orZero(tl.BlockSize))
				ok = false
			}
		}
		if iqn, mapped := mappedInFile[target]; mapped {
			p.refuse(ErrMapped, obj, "its target lun %s would be mapped on %s: a pair's target is never mapped", target, iqn)
			ok = false
		}
		return ok
	}
	now := time.Now()
	for _, w := range p.want.Migrations {
		obj := pairObject(w.Source)
		// Each check runs whatever the others found; the pair is
		// planned only when none refused it.
		n := len(p.refused)
		lunsOK := checkLUNs(obj, w.Source, w.Target)
		optsOK := p.checkOptions(obj, w.PairOptions)
		wo := w.PairOptions.normalized(now)
		vehicle := orDefault(w.Vehicle, VehicleAuto)
		c, exists := p.cur.pairs[w.Source]
		if !exists {
			if cp, busy := p.cur.pairOf[w.Source]; busy {
				p.refuse(ErrInPair, obj, "its source lun %s is the target of migration pair %s here", w.Source, cp.rec.ID)
			}
			if cp, busy := p.cur.pairOf[w.Target]; busy {
				p.refuse(ErrInPair, obj, "its target lun %s is in migration pair %s here", w.Target, cp.rec.ID)
			}
			req := wo.pairRequest(w.Source, w.Target, vehicle)
			if lunsOK && optsOK {
				if err := checkPairRequest(&req); err != nil {
					p.refused = append(p.refused, asRefusal(err, obj))
				}
			}
			if len(p.refused) > n {
				continue
			}
			source := w.Source
			p.add(phaseMigrations, OpCreate, obj, fmt.Sprintf("to %s, speed %s, max %s", w.Target, wo.Speed, maxMBpsText(wo.MaxMBps)),
				func() error { _, err := m.CreatePair(req); return err },
				func() error { return m.Cancel(source) })
			continue
		}
		var bad []string
		if c.session != "" {
			bad = append(bad, "it belongs to session "+c.session+" here")
		}
		if c.target != w.Target {
			bad = append(bad, fmt.Sprintf("target %s is %s here", w.Target, c.target))
		}
		if cv := orDefault(c.rec.VehicleWanted, VehicleAuto); cv != vehicle {
			bad = append(bad, fmt.Sprintf("vehicle %s is %s here", vehicle, cv))
		}
		co, err := pairRecordOptions(obj, c.rec, now)
		if err != nil {
			p.refuse(ErrInvalid, obj, "%v", err)
			continue
		}
		do, undo, line, fixed := optionsDiff(wo, co)
		bad = append(bad, fixed...)
		if len(bad) > 0 {
			p.refuse(ErrState, obj, "cannot be changed live: %s (cancel and re-create the pair for that)", strings.Join(bad, "; "))
		}
		if len(p.refused) > n {
			continue
		}
		if line != "" {
			if err := checkSetRequest(obj, &do); err != nil {
				p.refused = append(p.refused, asRefusal(err, obj))
				continue
			}
			source := w.Source
			p.add(phaseMigrations, OpChange, obj, line,
				func() error { _, err := m.Set(source, do); return err },
				func() error { _, err := m.Set(source, undo); return err })
		}
	}
	wantSess := map[string]bool{}
	curSess := map[string]ConfigSession{}
	for _, s := range p.cur.Sessions {
		curSess[s.Name] = s
	}
	for _, w := range p.want.Sessions {
		obj := sessionObject(w.Name)
		if wantSess[w.Name] {
			p.refuse(ErrInvalid, obj, "named twice in the file")
			continue
		}
		wantSess[w.Name] = true
		// Each check runs whatever the others found; the session is
		// planned only when none refused it.
		n := len(p.refused)
		p.checkOptions(obj, w.PairOptions)
		if w.MaxActive < 0 {
			p.refuse(ErrInvalid, obj, "max active %d is negative (0: every pair copies at once)", w.MaxActive)
		}
		wo := w.PairOptions.normalized(now)
		for _, sp := range w.Pairs {
			checkLUNs(obj, sp.Source, sp.Target)
		}
		c, exists := curSess[w.Name]
		if !exists {
			if p.cur.sessions[w.Name] {
				p.refuse(ErrExists, obj, "a finished session of that name exists here: delete it first (lmtgt session delete)")
			}
			req := wo.sessionRequest(w.Name)
			req.MaxActive = w.MaxActive
			for _, sp := range w.Pairs {
				if cp, busy := p.cur.pairOf[sp.Source]; busy {
					p.refuse(ErrInPair, obj, "lun %s is in migration pair %s here", sp.Source, cp.rec.ID)
				}
				if cp, busy := p.cur.pairOf[sp.Target]; busy {
					p.refuse(ErrInPair, obj, "lun %s is in migration pair %s here", sp.Target, cp.rec.ID)
				}
				req.Pairs = append(req.Pairs, PairRequest{Source: sp.Source, Target: sp.Target, Vehicle: orDefault(sp.Vehicle, VehicleAuto)})
			}
			if len(p.refused) > n {
				continue
			}
			name := w.Name
			p.add(phaseMigrations, OpCreate, obj, fmt.Sprintf("%d pair(s), speed %s, max %s, max active %d", len(w.Pairs), wo.Speed, maxMBpsText(wo.MaxMBps), w.MaxActive),
				func() error { _, err := m.CreateSession(req); return err },
				func() error { _, err := m.CancelSession(name); return err })
			for _, sp := range w.Pairs {
				p.planMember(obj, sp, wo, wo, now) // created with the session's options
			}
			continue
		}
		var bad []string
		if !slices.EqualFunc(c.Pairs, w.Pairs, func(a, b ConfigSessionPair) bool {
			return a.Source == b.Source && a.Target == b.Target && a.Vehicle == orDefault(b.Vehicle, VehicleAuto)
		}) {
			bad = append(bad, "its pairs differ")
		}
		do, undo, line, fixed := optionsDiff(wo, c.PairOptions.normalized(now))
		bad = append(bad, fixed...)
		if len(bad) > 0 {
			p.refuse(ErrState, obj, "cannot be changed live: %s (cancel the session and create it again for that)", strings.Join(bad, "; "))
		}
		if len(p.refused) > n {
			continue
		}
		if w.MaxActive != c.MaxActive {
			wa, ca := w.MaxActive, c.MaxActive
			do.MaxActive, undo.MaxActive = &wa, &ca
			if line != "" {
				line += ", "
			}
			line += fmt.Sprintf("max active %d→%d", ca, wa)
		}
		if line != "" {
			if err := checkSetRequest(obj, &do); err != nil {
				p.refused = append(p.refused, asRefusal(err, obj))
				continue
			}
			name := w.Name
			p.add(phaseMigrations, OpChange, obj, line,
				func() error { _, err := m.SetSession(name, do); return err },
				func() error { _, err := m.SetSession(name, undo); return err })
		}
		// The pairs' own options, as they are after the session's change.
		cs := c.PairOptions.normalized(now)
		for i, sp := range w.Pairs {
			cur := cs
			if o := c.Pairs[i].Options; o != nil {
				cur = o.normalized(now)
			}
			p.planMember(obj, sp, wo, sessionAfter(cur, cs, wo), now)
		}
	}
	// Migrations are never cancelled by apply.
	wantPairs := map[string]bool{}
	for _, w := range p.want.Migrations {
		wantPairs[w.Source] = true
	}
	for _, c := range p.cur.Migrations {
		if !wantPairs[c.Source] {
			p.keep(pairObject(c.Source), "not in the file; apply never cancels a migration (lmtgt migration cancel)")
		}
	}
	for _, c := range p.cur.Sessions {
		if !wantSess[c.Name] {
			p.keep(sessionObject(c.Name), "not in the file; apply never cancels a migration (lmtgt session cancel)")
		}
	}
}

// checkOptions notes every refusal of the pair options o of obj and
// reports whether there was none.
func (p *planner) checkOptions(obj string, o PairOptions) bool {
	rs := o.check(obj)
	p.refused = append(p.refused, rs...)
	return len(rs) == 0
}

// planMember plans the change of a session's pair sp to its own options
// (sp.Options; nil: the session's, wo) from cur, its options once the
// session's change is done, through `migration set` on the pair.
func (p *planner) planMember(obj string, sp ConfigSessionPair, wo, cur PairOptions, now time.Time) {
	want := wo
	if sp.Options != nil {
		if !p.checkOptions(obj, *sp.Options) {
			return
		}
		want = sp.Options.normalized(now)
	}
	do, undo, line, fixed := optionsDiff(want.asMember(wo), cur.asMember(wo))
	if len(fixed) > 0 {
		p.refuse(ErrState, obj, "pair %s: cannot be changed live: %s (a session's pairs start together: cancel the session and create it again for that)", sp.Source, strings.Join(fixed, "; "))
		return
	}
	if line == "" {
		return
	}
	if err := checkSetRequest(obj, &do); err != nil {
		p.refused = append(p.refused, asRefusal(err, obj))
		return
	}
	m, source := p.m, sp.Source
	p.add(phaseMigrations, OpChange, obj, "pair "+source+": "+line,
		func() error { _, err := m.Set(source, do); return err },
		func() error { _, err := m.Set(source, undo); return err })
}

// planPrune deletes (Prune) or keeps the targets and LUNs the file does
// not name.
func (p *planner) planPrune(wantLUNs map[string]*ConfigLUN) {
	m := p.m
	wantT := map[string]bool{}
	for _, t := range p.want.Targets {
		wantT[t.IQN] = true
	}
	for _, c := range p.cur.Targets {
		if wantT[c.IQN] {
			continue
		}
		obj := targetObject(c.IQN)
		if !p.opts.Prune {
			p.keep(obj, "not in the file (--prune deletes it)")
			continue
		}
		if n := p.opts.LoggedIn[c.IQN]; n > 0 {
			p.refuse(ErrState, obj, "cannot be pruned: %d iSCSI session(s) logged in (lmtgt target show); name it in the file, or delete it with lmtgt target delete --force", n)
			continue
		}
		iqn := c.IQN
		var old metavol.Target
		p.add(phasePrune, OpDelete, obj, fmt.Sprintf("delete (%d LUN(s) mapped)", len(c.LUNs)),
			func() error {
				err := m.db.View(func(tx *metavol.Tx) error {
					var err error
					old, err = tx.GetTarget(iqn)
					return err
				})
				if err != nil {
					return orNotFound(err, obj)
				}
				return m.DeleteTarget(iqn, true)
			},
			func() error { return m.restoreTarget(old) })
	}
	for _, c := range p.cur.LUNs {
		if wantLUNs[c.Name] != nil {
			continue
		}
		obj := lunObject(c.Name)
		if !p.opts.Prune {
			p.keep(obj, "not in the file (--prune deletes it)")
			continue
		}
		if cp, ok := p.cur.pairOf[c.Name]; ok {
			p.refuse(ErrInPair, obj, "cannot be deleted: in migration pair %s (%s); cancel or split it first", cp.rec.ID, cp.rec.State)
			continue
		}
		if iqn, n := p.servedOn(c.Name, wantT); n > 0 {
			p.refuse(ErrState, obj, "cannot be pruned: mapped on %s, which has %d iSCSI session(s) logged in; unmap it first (lmtgt target unmap)", iqn, n)
			continue
		}
		name := c.Name
		detail := "delete"
		if c.Path == "" && c.Kind == "file" {
			detail = "delete (and its data file in the data dir)"
		}
		p.add(phasePrune, OpDelete, obj, detail, func() error { return m.DeleteLUN(name) }, nil)
	}
}

// servedOn returns a target the file does not name that maps the LUN
// called name now and has iSCSI sessions logged in, and their number (0:
// none). A target the file names lists its LUNs: one it leaves out is
// unmapped by the file's own word.
func (p *planner) servedOn(name string, named map[string]bool) (string, int) {
	for _, t := range p.cur.Targets {
		if named[t.IQN] {
			continue
		}
		for _, mp := range t.LUNs {
			if mp.LUN == name && p.opts.LoggedIn[t.IQN] > 0 {
				return t.IQN, p.opts.LoggedIn[t.IQN]
			}
		}
	}
	return "", 0
}

// asRefusal returns err as a Refusal about obj.
func asRefusal(err error, obj string) *Refusal {
	var r *Refusal
	if errors.As(err, &r) {
		return r
	}
	return refuse(ErrInvalid, obj, "%v", err)
}

// createTargetWith creates a target with its ALUA group and relative port
// ID (0: the server's choice) and its portal group (canonical, checked by
// the plan; nil: every portal), live, in one change.
func (m *Manager) createTargetWith(iqn string, group, port uint16, portals []string) error {
	obj := targetObject(iqn)
	if err := ValidateISCSIName(iqn); err != nil {
		return refuse(ErrInvalid, obj, "bad IQN: %v", err)
	}
	return m.commitApply(obj, func(tx *metavol.Tx) (func(*metavol.Tx) error, error) {
		if _, err := tx.GetTarget(iqn); err == nil {
			return nil, refuse(ErrExists, obj, "already exists")
		} else if !errors.Is(err, metavol.ErrNotFound) {
			return nil, err
		}
		undo := func(tx *metavol.Tx) error { return tx.DeleteTarget(iqn) }
		return undo, tx.PutTarget(metavol.Target{IQN: iqn, Group: group, Port: port, Created: time.Now().UTC(), Portals: slices.Clone(portals)})
	})
}

// restoreTarget puts a deleted target's record back, live (the undo of a
// pruned target).
func (m *Manager) restoreTarget(t metavol.Target) error {
	obj := targetObject(t.IQN)
	return m.commitApply(obj, func(tx *metavol.Tx) (func(*metavol.Tx) error, error) {
		undo := func(tx *metavol.Tx) error { return tx.DeleteTarget(t.IQN) }
		return undo, tx.PutTarget(t)
	})
}

// refuseTakenID refuses a new LUN called name whose wanted ID (if any)
// another LUN has: its record would be overwritten.
func (m *Manager) refuseTakenID(name, id string) error {
	if id == "" {
		return nil
	}
	return m.db.View(func(tx *metavol.Tx) error {
		if l, err := tx.GetLUN(id); err == nil {
			return refuse(ErrExists, lunObject(name), "id %s is already lun %s's", id, l.Name)
		} else if !errors.Is(err, metavol.ErrNotFound) {
			return err
		}
		return nil
	})
}

// checkIdentity checks a wanted LUN identity (each part may be empty: a
// new one is made).
func checkIdentity(obj, id, naa, serial string) *Refusal {
	hex := func(s string, n int, upper bool) bool {
		if len(s) != n {
			return false
		}
		for _, r := range s {
			ok := r >= '0' && r <= '9' || (!upper && r >= 'a' && r <= 'f') || (upper && r >= 'A' && r <= 'F')
			if !ok {
				return false
			}
		}
		return true
	}
	switch {
	case id != "" && !hex(id, 16, false):
		return refuse(ErrInvalid, obj, "id %q: want 16 lowercase hex digits", id)
	case naa != "" && (!hex(naa, 32, false) || naa[0] != '6'):
		return refuse(ErrInvalid, obj, "naa %q: want 32 lowercase hex digits starting with 6 (NAA type 6)", naa)
	case serial != "" && (len(serial) > 251 || strings.ContainsFunc(serial, func(r rune) bool { return r < ' ' || r > '~' })):
		// VPD 0x80: printable ASCII (an adopted serial may have spaces).
		return refuse(ErrInvalid, obj, "serial %q: want up to 251 printable ASCII characters", serial)
	}
	return nil
}
