package lm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/lmtgt/lmtgt/metavol"
)

// The iSCSI configuration records: targets, their LUN mappings, initiator
// ACLs and CHAP, and the discovery CHAP. lm owns their rules because some
// touch LUNs and pairs (a pair's target LUN is never mapped, a mapped LUN
// is never deleted): every change is checked and persisted in one meta
// volume transaction under Manager.admin, the lock that also serializes
// LUN and pair changes, and is then applied live through the Exporter
// (target/api adapts target.Server). If Apply fails, the change is undone
// in the meta volume, the restored configuration applied again, and the
// request refused with ErrApply. lm never imports package target: the
// Exporter gets the records (TargetConfig) and builds its targets itself.

// MaxLUNNumber is the highest LUN number a mapping may use (SAM flat space
// addressing: 14 bits).
const MaxLUNNumber = 16383

// discoveryCHAPKey names the meta volume value holding the discovery CHAP
// credentials (a metavol.CHAP as JSON; absent: no discovery auth).
const discoveryCHAPKey = "discovery-chap"

// TargetConfig is the persisted iSCSI configuration, read in one
// snapshot: what the Exporter applies.
type TargetConfig struct {
	Targets []metavol.Target // by IQN
	// LUNs are the records of the mapped LUNs, by LUN ID. A mapping whose
	// LUN record cannot be read is absent here and its error is in
	// LUNErrors (by LUN ID).
	LUNs      map[string]metavol.LUN
	LUNErrors map[string]error
	// Access holds the stored ALUA access states of the mapped LUNs by
	// LUN ID, then by target port group ID (metavol/alua.go; a group
	// that is absent has the default state; what the names mean is
	// package target's rule).
	Access map[string]map[uint16]string
	// DiscoveryCHAP is nil when discovery sessions need no CHAP.
	DiscoveryCHAP *metavol.CHAP
}

// Exporter applies the iSCSI configuration live. lm calls it with
// Manager.admin held, after every committed target or discovery change
// and from ApplyTargets; it must not call lm's admin operations (LUN,
// which only looks up a host I/O handle, is fine).
type Exporter interface {
	ApplyTargets(cfg TargetConfig) error
}

// PortalLister is implemented by an Exporter that knows the portals the
// server listens on ("ip:port", bound addresses): a target's portal group
// may only name those. Without it, any well-formed portal is accepted.
type PortalLister interface {
	Portals() []string
}

// SetExporter sets (or, with nil, clears) the Exporter. Call it before
// the admin API serves requests.
func (m *Manager) SetExporter(e Exporter) {
	m.admin.Lock()
	defer m.admin.Unlock()
	m.exporter = e
}

// TargetConfig reads the whole iSCSI configuration in one snapshot.
func (m *Manager) TargetConfig() (TargetConfig, error) {
	var cfg TargetConfig
	err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		cfg, err = readTargetConfig(tx)
		return err
	})
	return cfg, err
}

func readTargetConfig(tx *metavol.Tx) (TargetConfig, error) {
	cfg := TargetConfig{LUNs: map[string]metavol.LUN{}, LUNErrors: map[string]error{}, Access: map[string]map[uint16]string{}}
	var err error
	if cfg.Targets, err = tx.Targets(); err != nil {
		return cfg, fmt.Errorf("read targets from the meta volume: %w", err)
	}
	for _, t := range cfg.Targets {
		for _, mp := range t.Mappings {
			if _, ok := cfg.LUNs[mp.LUNID]; ok {
				continue
			}
			l, err := tx.GetLUN(mp.LUNID)
			if err != nil {
				cfg.LUNErrors[mp.LUNID] = err
				continue
			}
			cfg.LUNs[mp.LUNID] = l
			if cfg.Access[mp.LUNID], err = tx.GetLUNAccess(mp.LUNID); err != nil {
				return cfg, fmt.Errorf("read ALUA states from the meta volume: %w", err)
			}
		}
	}
	if cfg.DiscoveryCHAP, err = discoveryCHAP(tx); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// ApplyTargets applies the persisted configuration live (at startup).
func (m *Manager) ApplyTargets() error {
	m.admin.Lock()
	defer m.admin.Unlock()
	return m.applyAdminLocked()
}

func (m *Manager) applyAdminLocked() error {
	if m.exporter == nil {
		return nil
	}
	cfg, err := m.TargetConfig()
	if err != nil {
		return err
	}
	return m.exporter.ApplyTargets(cfg)
}

// commitApply runs change under the admin lock in one meta volume
// transaction and applies the configuration live. change returns the undo
// of what it did (run in a second transaction if Apply fails, then
// applied again).
func (m *Manager) commitApply(obj string, change func(tx *metavol.Tx) (undo func(tx *metavol.Tx) error, err error)) error {
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.closedRefusal(obj); err != nil {
		return err
	}
	var undo func(tx *metavol.Tx) error
	if err := m.db.Update(func(tx *metavol.Tx) error {
		var err error
		undo, err = change(tx)
		return err
	}); err != nil {
		return err
	}
	err := m.applyAdminLocked()
	if err == nil {
		return nil
	}
	if uerr := m.db.Update(undo); uerr != nil {
		m.log.Error().Err(uerr).Str("object", obj).Msg("rollback after a failed apply failed: meta volume and live configuration differ until restart")
	} else if aerr := m.applyAdminLocked(); aerr != nil {
		m.log.Error().Err(aerr).Str("object", obj).Msg("re-apply after rollback failed")
	}
	return refuse(ErrApply, obj, "apply failed, change rolled back: %v", err)
}

// orNotFound turns metavol.ErrNotFound into a Refusal "obj: not found";
// other errors pass unchanged.
func orNotFound(err error, obj string) error {
	if errors.Is(err, metavol.ErrNotFound) {
		return refuse(ErrNotFound, obj, "not found")
	}
	return err
}

func (m *Manager) closedRefusal(obj string) error {
	if m.isClosed() {
		return refuse(ErrState, obj, "manager closed")
	}
	return nil
}

// CreateTarget creates a target with no LUNs, no initiators and no CHAP,
// served on every portal.
func (m *Manager) CreateTarget(iqn string) error { return m.CreateTargetOn(iqn, nil) }

// CreateTargetOn creates a target served only on portals (its portal
// group; empty: every portal), with no LUNs, no initiators and no CHAP.
func (m *Manager) CreateTargetOn(iqn string, portals []string) error {
	obj := targetObject(iqn)
	if err := ValidateISCSIName(iqn); err != nil {
		return refuse(ErrInvalid, obj, "bad IQN: %v", err)
	}
	var group []string
	for _, p := range portals {
		c, err := m.checkPortal(obj, p)
		if err != nil {
			return err
		}
		if !slices.Contains(group, c) {
			group = append(group, c)
		}
	}
	slices.Sort(group)
	return m.createTargetWith(iqn, 0, 0, group) // configplan.go
}

// DeleteTarget deletes a target; with LUNs mapped only when force is set
// (the Exporter then drops its sessions).
func (m *Manager) DeleteTarget(iqn string, force bool) error {
	obj := targetObject(iqn)
	return m.commitApply(obj, func(tx *metavol.Tx) (func(*metavol.Tx) error, error) {
		t, err := tx.GetTarget(iqn)
		if err != nil {
			return nil, orNotFound(err, obj)
		}
		if len(t.Mappings) > 0 && !force {
			return nil, refuse(ErrMapped, obj, "has %d LUN(s) mapped: unmap them first, or delete with --force", len(t.Mappings))
		}
		undo := func(tx *metavol.Tx) error { return tx.PutTarget(t) }
		return undo, tx.DeleteTarget(iqn)
	})
}

// changeTarget runs fn on a copy of the target record in one
// transaction, persists it and applies it live (commitApply).
func (m *Manager) changeTarget(iqn string, fn func(tx *metavol.Tx, t *metavol.Target) error) error {
	obj := targetObject(iqn)
	return m.commitApply(obj, func(tx *metavol.Tx) (func(*metavol.Tx) error, error) {
		old, err := tx.GetTarget(iqn)
		if err != nil {
			return nil, orNotFound(err, obj)
		}
		nt := old
		nt.Mappings = slices.Clone(old.Mappings)
		nt.Initiators = slices.Clone(old.Initiators)
		nt.Portals = slices.Clone(old.Portals)
		if old.CHAP != nil {
			c := *old.CHAP
			nt.CHAP = &c
		}
		if err := fn(tx, &nt); err != nil {
			return nil, err
		}
		undo := func(tx *metavol.Tx) error { return tx.PutTarget(old) }
		return undo, tx.PutTarget(nt)
	})
}

// AddTargetPortal adds portal ("ip:port", one the server listens on) to
// a target's portal group. A target whose group was empty (every portal)
// is served from then on only on this one: its sessions on the other
// portals are ended.
func (m *Manager) AddTargetPortal(iqn, portal string) error {
	obj := targetObject(iqn)
	c, err := m.checkPortal(obj, portal)
	if err != nil {
		return err
	}
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		if slices.Contains(t.Portals, c) {
			return refuse(ErrExists, obj, "portal %s is already in its portal group", c)
		}
		t.Portals = append(t.Portals, c)
		slices.Sort(t.Portals)
		return nil
	})
}

// RemoveTargetPortal removes portal from a target's portal group; its
// sessions on that portal are ended. Removing the last portal is refused
// (an empty group means every portal: that would widen, not narrow, where
// the target is served); portal "" (ALL) empties the group on purpose.
func (m *Manager) RemoveTargetPortal(iqn, portal string) error {
	obj := targetObject(iqn)
	var c string
	if portal != "" {
		ap, err := netip.ParseAddrPort(portal)
		if err != nil {
			return refuse(ErrInvalid, obj, "portal %q: want ip:port (%v)", portal, err)
		}
		c = canonicalPortal(ap)
	}
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		if c == "" {
			if len(t.Portals) == 0 {
				return refuse(ErrNotFound, obj, "has no portal group: it is already served on every portal")
			}
			t.Portals = nil
			return nil
		}
		i := slices.Index(t.Portals, c)
		if i < 0 {
			return refuse(ErrNotFound, obj, "portal %s is not in its portal group", c)
		}
		if len(t.Portals) == 1 {
			return refuse(ErrState, obj, "portal %s is its last portal: with none the target would be served on every portal (add another portal first, or remove ALL to serve it everywhere)", c)
		}
		t.Portals = slices.Delete(t.Portals, i, i+1)
		return nil
	})
}

// checkPortal parses a portal and checks the server listens on it; it
// returns the canonical "ip:port" form stored in the target record.
func (m *Manager) checkPortal(obj, portal string) (string, error) {
	ap, err := netip.ParseAddrPort(portal)
	if err != nil {
		return "", refuse(ErrInvalid, obj, "portal %q: want ip:port, one of serve --portal (%v)", portal, err)
	}
	c := canonicalPortal(ap)
	m.admin.Lock()
	pl, ok := m.exporter.(PortalLister)
	m.admin.Unlock()
	if !ok {
		return c, nil
	}
	listening := pl.Portals()
	for _, l := range listening {
		if lp, err := netip.ParseAddrPort(l); err == nil && canonicalPortal(lp) == c {
			return c, nil
		}
	}
	return "", refuse(ErrInvalid, obj, "portal %s: the server does not listen there (serve --portal: %s)", c, strings.Join(listening, ", "))
}

// canonicalPortal is the stored form of a portal: IPv4-mapped IPv6
// addresses unmapped, IPv6 in brackets.
func canonicalPortal(ap netip.AddrPort) string {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// MapOptions are the settings of one mapping (targetcli's mapped LUN).
type MapOptions struct {
	// Number is the LUN number; nil: the lowest free one.
	Number *uint64
	// ReadOnly write-protects the LUN at this mapping: hosts can read
	// it, every command that changes blocks gets DATA PROTECT. It binds
	// hosts only: a migration of the LUN still copies and switches it
	// (the copier and the split write the volumes, not a host command).
	ReadOnly bool
	// Initiators, when not empty, masks the mapping: only these
	// initiators see the LUN at this number (REPORT LUNS, I/O). They need
	// not be in the target's ACL yet; without an ACL entry they cannot
	// log in at all.
	Initiators []string
}

// MapLUN exports the LUN called lun on a target at a LUN number (the
// lowest free one when number is nil), writable and seen by every
// allowed initiator, and returns the number (MapLUNWith).
func (m *Manager) MapLUN(iqn, lun string, number *uint64) (uint64, error) {
	return m.MapLUNWith(iqn, lun, MapOptions{Number: number})
}

// MapLUNWith exports the LUN called lun on a target with opts and returns
// the LUN number. Refused for an unknown LUN, a LUN already mapped on
// this target, a number in use or above MaxLUNNumber, a bad initiator
// name, and a LUN that is the target of a pair.
func (m *Manager) MapLUNWith(iqn, lun string, opts MapOptions) (uint64, error) {
	obj := targetObject(iqn)
	number := opts.Number
	if lun == "" {
		return 0, refuse(ErrInvalid, obj, "a LUN name is required")
	}
	if number != nil && *number > MaxLUNNumber {
		return 0, refuse(ErrInvalid, obj, "LUN number %d is above the highest, %d", *number, MaxLUNNumber)
	}
	inis, err := maskInitiators(obj, opts.Initiators)
	if err != nil {
		return 0, err
	}
	var n uint64
	err = m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		l, err := tx.LUNByName(lun)
		if err != nil {
			return orNotFound(err, lunObject(lun))
		}
		if err := refuseMapPairTarget(tx, l); err != nil {
			return err
		}
		used := map[uint64]bool{}
		for _, mp := range t.Mappings {
			if mp.LUNID == l.ID {
				return refuse(ErrExists, lunObject(lun), "already mapped on %s at LUN %d", iqn, mp.LUN)
			}
			used[mp.LUN] = true
		}
		if number != nil {
			if used[*number] {
				return refuse(ErrExists, obj, "LUN number %d is already in use", *number)
			}
			n = *number
		} else {
			for n = 0; used[n]; n++ {
			}
			if n > MaxLUNNumber {
				return refuse(ErrExists, obj, "no free LUN number")
			}
		}
		t.Mappings = append(t.Mappings, metavol.Mapping{LUN: n, LUNID: l.ID, ReadOnly: opts.ReadOnly, Initiators: inis})
		return nil
	})
	return n, err
}

// MappingChange changes an existing mapping; a nil field keeps its
// setting. An empty Initiators list unmasks the mapping.
type MappingChange struct {
	ReadOnly   *bool
	Initiators *[]string
}

// SetMapping changes the write protection or the initiator mask of the
// LUN called lun on a target, live: sessions already logged in see the
// change with their next command (a LUN masked from them answers
// LOGICAL UNIT NOT SUPPORTED, REPORTED LUNS DATA HAS CHANGED is raised).
func (m *Manager) SetMapping(iqn, lun string, ch MappingChange) error {
	obj := targetObject(iqn)
	var inis []string
	if ch.Initiators != nil {
		var err error
		if inis, err = maskInitiators(obj, *ch.Initiators); err != nil {
			return err
		}
	}
	if ch.ReadOnly == nil && ch.Initiators == nil {
		return refuse(ErrInvalid, obj, "nothing to change: give the write protection or the initiators")
	}
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		i, err := mappingIndex(tx, t, lun)
		if err != nil {
			return err
		}
		if ch.ReadOnly != nil {
			t.Mappings[i].ReadOnly = *ch.ReadOnly
		}
		if ch.Initiators != nil {
			t.Mappings[i].Initiators = inis
		}
		return nil
	})
}

// mappingIndex finds the mapping of the LUN called lun in target t (in
// the caller's transaction); a LUN that does not exist or is not mapped
// there is not found.
func mappingIndex(tx *metavol.Tx, t *metavol.Target, lun string) (int, error) {
	l, err := tx.LUNByName(lun)
	if err != nil {
		return -1, orNotFound(err, lunObject(lun))
	}
	i := slices.IndexFunc(t.Mappings, func(mp metavol.Mapping) bool { return mp.LUNID == l.ID })
	if i < 0 {
		return -1, refuse(ErrNotFound, lunObject(lun), "not mapped on %s", t.IQN)
	}
	return i, nil
}

// maskInitiators checks the initiator names of a mapping mask and
// returns them sorted without duplicates (nil for none).
func maskInitiators(obj string, inis []string) ([]string, error) {
	if len(inis) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(inis))
	for _, ini := range inis {
		if err := ValidateISCSIName(ini); err != nil {
			return nil, refuse(ErrInvalid, obj, "mapping mask: bad initiator name %q: %v", ini, err)
		}
		out = append(out, ini)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// The rule "a pair's target LUN is never mapped" (hosts must never write
// the target of a migration, nor read it before the split), from both of
// its sides: refuseMapPairTarget when a LUN is mapped,
// refuseMappedPairTarget when a pair is created. Both read the records in
// the caller's transaction, under Manager.admin.

// refuseMapPairTarget refuses to map l while it is the target of a pair
// that still holds it.
func refuseMapPairTarget(tx *metavol.Tx, l metavol.LUN) error {
	pairs, err := tx.Pairs()
	if err != nil {
		return err
	}
	for _, p := range pairs {
		if p.TargetLUN == l.ID && pairHoldsLUNs(p.State) {
			return refuse(ErrInPair, lunObject(l.Name), "in a migration pair: it is the target of pair %s (%s); it cannot be mapped until the pair is split or cancelled", p.ID, p.State)
		}
	}
	return nil
}

// refuseMappedPairTarget refuses a new pair (named by source) whose target
// LUN tl is mapped.
func refuseMappedPairTarget(tx *metavol.Tx, source string, tl metavol.LUN) error {
	ts, err := tx.Targets()
	if err != nil {
		return err
	}
	for _, t := range ts {
		for _, mp := range t.Mappings {
			if mp.LUNID == tl.ID {
				return fmt.Errorf("pair %s: target LUN %s is mapped to target %s as LUN %d: %w",
					source, tl.Name, t.IQN, mp.LUN, ErrMapped)
			}
		}
	}
	return nil
}

// UnmapLUN removes the LUN called lun from a target.
func (m *Manager) UnmapLUN(iqn, lun string) error {
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		i, err := mappingIndex(tx, t, lun)
		if err != nil {
			return err
		}
		t.Mappings = slices.Delete(t.Mappings, i, i+1)
		return nil
	})
}

// AllowInitiator lets an initiator log in to a target; "" means every
// initiator (ALL). Allowing a listed initiator again changes nothing.
func (m *Manager) AllowInitiator(iqn, initiator string) error {
	if initiator != "" {
		if err := ValidateISCSIName(initiator); err != nil {
			return refuse(ErrInvalid, "initiator "+initiator, "bad initiator name: %v (or ALL)", err)
		}
	}
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		if initiator == "" {
			t.AllowAll = true
		} else if !slices.Contains(t.Initiators, initiator) {
			t.Initiators = append(t.Initiators, initiator)
		}
		return nil
	})
}

// DisallowInitiator removes an initiator ("": ALL) from a target's ACL.
// Sessions already logged in are dropped by the Exporter, not here.
func (m *Manager) DisallowInitiator(iqn, initiator string) error {
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		if initiator == "" {
			if !t.AllowAll {
				return refuse(ErrNotFound, "initiator ALL", "not allowed on %s", iqn)
			}
			t.AllowAll = false
			return nil
		}
		i := slices.Index(t.Initiators, initiator)
		if i < 0 {
			return refuse(ErrNotFound, "initiator "+initiator, "not allowed on %s", iqn)
		}
		t.Initiators = slices.Delete(t.Initiators, i, i+1)
		return nil
	})
}

// SetTargetCHAP sets one-way (User/Secret) or mutual CHAP on a target.
// Short secrets are accepted; the warnings say so.
func (m *Manager) SetTargetCHAP(iqn string, c metavol.CHAP) (warnings []string, err error) {
	warnings, err = checkCHAP(targetObject(iqn), c)
	if err != nil {
		return nil, err
	}
	mutual := c.MutualUser != "" || c.MutualSecret != ""
	err = m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		t.CHAP = &metavol.CHAP{User: c.User, Secret: c.Secret}
		if mutual {
			t.CHAP.MutualUser, t.CHAP.MutualSecret = c.MutualUser, c.MutualSecret
		}
		return nil
	})
	return warnings, err
}

// ClearTargetCHAP turns a target's CHAP off.
func (m *Manager) ClearTargetCHAP(iqn string) error {
	return m.changeTarget(iqn, func(tx *metavol.Tx, t *metavol.Target) error {
		t.CHAP = nil
		return nil
	})
}

// checkCHAP checks CHAP credentials for obj and returns the warnings about
// short secrets (the limits are in iscsiname.go).
func checkCHAP(obj string, c metavol.CHAP) ([]string, error) {
	if err := validateCHAPPart("initiator", c.User, c.Secret); err != nil {
		return nil, refuse(ErrInvalid, obj, "chap: %v", err)
	}
	var warnings []string
	if len(c.Secret) < MinRecommendedSecret {
		warnings = append(warnings, fmt.Sprintf("the CHAP secret has %d characters; RFC 7143 wants at least %d (96 bits) and some initiators refuse shorter ones", len(c.Secret), MinRecommendedSecret))
	}
	if c.MutualUser != "" || c.MutualSecret != "" {
		if err := validateCHAPPart("mutual", c.MutualUser, c.MutualSecret); err != nil {
			return nil, refuse(ErrInvalid, obj, "chap: %v (mutual CHAP needs both --mutual-user and --mutual-secret)", err)
		}
		if c.MutualSecret == c.Secret {
			return nil, refuse(ErrInvalid, obj, "chap: the mutual secret must differ from the initiator secret (RFC 7143 §12.1.3)")
		}
		if len(c.MutualSecret) < MinRecommendedSecret {
			warnings = append(warnings, fmt.Sprintf("the mutual CHAP secret has %d characters; RFC 7143 wants at least %d", len(c.MutualSecret), MinRecommendedSecret))
		}
	}
	return warnings, nil
}

// discoveryCHAP reads the discovery CHAP credentials (nil: none).
func discoveryCHAP(tx *metavol.Tx) (*metavol.CHAP, error) {
	b, err := tx.GetMeta(discoveryCHAPKey)
	if err == nil && b == nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discovery CHAP: %w", err)
	}
	c := new(metavol.CHAP)
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("discovery CHAP: meta %s: %w", discoveryCHAPKey, err)
	}
	return c, nil
}

// DiscoveryCHAP returns the discovery CHAP credentials (nil: discovery
// sessions need no authentication).
func (m *Manager) DiscoveryCHAP() (*metavol.CHAP, error) {
	var c *metavol.CHAP
	err := m.db.View(func(tx *metavol.Tx) error {
		var err error
		c, err = discoveryCHAP(tx)
		return err
	})
	return c, err
}

// SetDiscoveryCHAP makes discovery (SendTargets) sessions authenticate
// with CHAP, one-way or mutual; the warnings are about short secrets.
func (m *Manager) SetDiscoveryCHAP(c metavol.CHAP) (warnings []string, err error) {
	warnings, err = checkCHAP(discoveryObject, c)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", discoveryObject, err)
	}
	return warnings, m.changeDiscovery(func(tx *metavol.Tx) error { return tx.PutMeta(discoveryCHAPKey, b) })
}

// ClearDiscoveryCHAP lets discovery sessions in without authentication.
func (m *Manager) ClearDiscoveryCHAP() error {
	return m.changeDiscovery(func(tx *metavol.Tx) error { return tx.DeleteMeta(discoveryCHAPKey) })
}

// changeDiscovery persists a discovery change and applies it live
// (commitApply).
func (m *Manager) changeDiscovery(fn func(tx *metavol.Tx) error) error {
	return m.commitApply(discoveryObject, func(tx *metavol.Tx) (func(*metavol.Tx) error, error) {
		old, err := tx.GetMeta(discoveryCHAPKey)
		if err != nil {
			return nil, err
		}
		undo := func(tx *metavol.Tx) error {
			if old == nil {
				return tx.DeleteMeta(discoveryCHAPKey)
			}
			return tx.PutMeta(discoveryCHAPKey, old)
		}
		return undo, fn(tx)
	})
}
