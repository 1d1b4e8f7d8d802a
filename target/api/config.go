package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Configuration as a file (lm/config.go owns the export, the plan and its
// rules; here they are only translated):
//
//	GET  /v1/config[?secrets=true]   the whole configuration (wire.Config)
//	POST /v1/config/apply            {"config":{...},"dry_run":bool,"prune":bool}
//	GET  /v1/config/backups          the automatic backups, newest first
//
// Before an apply that changes something, the configuration as it was
// (with secrets: a backup must restore everything) is written to
// DATA_DIR/config-backups/config-TIMESTAMP.json (mode 0600), and only the
// newest BackupsKept are kept. ALUA IDs and state names are package
// target's rules, checked here before lm sees them.

// BackupsKept is how many automatic configuration backups are kept.
const BackupsKept = 10

// backupDirName is the backups' folder in the data dir.
const backupDirName = "config-backups"

const configObject = "config"

func (s *Server) configRoutes(m *http.ServeMux) {
	svc := s.svc
	v := wire.Version
	m.HandleFunc("GET "+v+"/config", func(w http.ResponseWriter, r *http.Request) {
		secrets, e := boolQuery(r, "secrets", configObject)
		if e != nil {
			writeError(w, e)
			return
		}
		c, err := svc.ExportConfig(secrets)
		reply(w, http.StatusOK, c, err, configObject)
	})
	m.HandleFunc("POST "+v+"/config/apply", withBody(func(w http.ResponseWriter, r *http.Request, req wire.ApplyConfig) {
		res, err := svc.ApplyConfig(req, callerFrom(r))
		reply(w, http.StatusOK, res, err, configObject)
	}))
	m.HandleFunc("GET "+v+"/config/backups", func(w http.ResponseWriter, r *http.Request) {
		b, err := svc.ConfigBackups()
		reply(w, http.StatusOK, b, err, configObject)
	})
}

// ExportConfig returns the configuration; secrets are replaced by
// wire.SecretPlaceholder unless withSecrets.
func (s *Service) ExportConfig(withSecrets bool) (wire.Config, error) {
	c, err := s.lm.ExportConfig()
	if err != nil {
		return wire.Config{}, toWire(err, configObject)
	}
	return configToWire(c, withSecrets), nil
}

func hide(secret string, show bool) string {
	if show || secret == "" {
		return secret
	}
	return wire.SecretPlaceholder
}

func chapToWire(c *metavol.CHAP, show bool) *wire.ConfigCHAP {
	if c == nil {
		return nil
	}
	return &wire.ConfigCHAP{User: c.User, Secret: hide(c.Secret, show), MutualUser: c.MutualUser, MutualSecret: hide(c.MutualSecret, show)}
}

func configToWire(c lm.Config, show bool) wire.Config {
	out := wire.Config{Version: c.Version, DiscoveryCHAP: chapToWire(c.Discovery, show),
		LUNs: []wire.ConfigLUN{}, Targets: []wire.ConfigTarget{}, Migrations: []wire.ConfigMigration{}, Sessions: []wire.ConfigSession{}}
	for _, l := range c.LUNs {
		wl := wire.ConfigLUN{Name: l.Name, ID: l.ID, NAA: l.NAA, Serial: l.Serial, Size: l.Size, BlockSize: l.BlockSize,
			Volume: wire.ConfigVolume{Kind: l.Kind, Path: l.Path, Direct: l.Direct, RBD: l.RBD,
				CephConf: l.RBDCluster.Conf, CephID: l.RBDCluster.ID, CephKeyring: l.RBDCluster.Keyring}}
		if r := l.Remote; r != nil {
			wl.Volume.Remote = &wire.ConfigRemote{URL: r.URL, CHAPUser: r.CHAPUser, CHAPSecret: hide(r.CHAPSecret, show),
				MutualUser: r.MutualUser, MutualSecret: hide(r.MutualSecret, show)}
		}
		if l.Adopted {
			wl.Identity = "adopted"
		}
		for _, g := range slices.Sorted(maps.Keys(l.ALUA)) {
			wl.ALUA = append(wl.ALUA, wire.ConfigALUA{Group: g, State: l.ALUA[g]})
		}
		out.LUNs = append(out.LUNs, wl)
	}
	for _, t := range c.Targets {
		g := t.Group
		if g == 0 {
			g = target.DefaultGroup
		}
		wt := wire.ConfigTarget{IQN: t.IQN, Group: g, Port: t.Port, AllowAll: t.AllowAll,
			Initiators: append([]string{}, t.Initiators...), CHAP: chapToWire(t.CHAP, show), LUNs: []wire.ConfigMapping{},
			Portals: slices.Clone(t.Portals)}
		for _, mp := range t.LUNs {
			wt.LUNs = append(wt.LUNs, wire.ConfigMapping{LUN: mp.Number, Name: mp.LUN, ReadOnly: mp.ReadOnly, Initiators: slices.Clone(mp.Initiators)})
		}
		out.Targets = append(out.Targets, wt)
	}
	for _, p := range c.Migrations {
		out.Migrations = append(out.Migrations, wire.ConfigMigration{Source: p.Source, Target: p.Target, Vehicle: p.Vehicle,
			ConfigPairOptions: pairOptionsToWire(p.PairOptions)})
	}
	for _, ss := range c.Sessions {
		ws := wire.ConfigSession{Name: ss.Name, MaxActive: ss.MaxActive, ConfigPairOptions: pairOptionsToWire(ss.PairOptions),
			Pairs: []wire.ConfigSessionPair{}}
		for _, p := range ss.Pairs {
			wp := wire.ConfigSessionPair{Source: p.Source, Target: p.Target, Vehicle: p.Vehicle}
			if p.Options != nil {
				o := pairOptionsToWire(*p.Options)
				o.AutoSplit = false // the session's
				wp.Options = &o
			}
			ws.Pairs = append(ws.Pairs, wp)
		}
		out.Sessions = append(out.Sessions, ws)
	}
	return out
}

// pairOptionsToWire writes a pair's options as the file has them (lm's
// export already left out a start time that has passed).
func pairOptionsToWire(o lm.PairOptions) wire.ConfigPairOptions {
	w := wire.ConfigPairOptions{Speed: string(o.Speed), MaxMBps: o.MaxMBps, AutoSplit: o.AutoSplit, Verify: o.Verify, Priority: o.Priority}
	if !o.StartAt.IsZero() {
		w.StartAt = o.StartAt.UTC().Format(time.RFC3339)
	}
	for _, win := range o.Windows {
		w.Windows = append(w.Windows, win.String())
	}
	if o.MaxElapsed != 0 {
		w.MaxElapsed = o.MaxElapsed.String()
	}
	w.MaxHostLatency = lm.HostLatencyString(o.MaxHostLatency)
	return w
}

// refusals collects every refusal of a file's conversion (package
// target's rules, the wire forms), each naming its object; lm's plan adds
// its own and lm.JoinRefusals says them all.
type refusals []*lm.Refusal

func (rs *refusals) add(obj, format string, args ...any) {
	*rs = append(*rs, &lm.Refusal{Object: obj, Reason: fmt.Sprintf(format, args...), Err: lm.ErrInvalid})
}

// addErr notes err (a refusal of lm's parsers, or another error) about obj.
func (rs *refusals) addErr(obj string, err error) {
	var r *lm.Refusal
	if errors.As(err, &r) {
		*rs = append(*rs, r)
		return
	}
	rs.add(obj, "%v", err)
}

// pairOptionsFromWire reads a pair's options from the file for obj; the
// start time must be RFC 3339 (a clock time alone would mean another
// moment at each apply). Each option it cannot read is noted in rs and
// left at its default.
func pairOptionsFromWire(obj string, w wire.ConfigPairOptions, rs *refusals) lm.PairOptions {
	o := lm.PairOptions{Speed: lm.Speed(w.Speed), MaxMBps: w.MaxMBps, AutoSplit: w.AutoSplit, Verify: w.Verify, Priority: w.Priority}
	if w.StartAt != "" {
		t, err := time.Parse(time.RFC3339, w.StartAt)
		if err != nil {
			rs.add(obj, "start_at %q: want an RFC 3339 time (2026-12-24T22:00:00+01:00)", w.StartAt)
		} else {
			o.StartAt = t.UTC()
		}
	}
	if len(w.Windows) > 0 {
		ws, err := lm.ParseWindows(obj, w.Windows)
		if err != nil {
			rs.addErr(obj, err)
		} else if len(ws) > 0 {
			o.Windows = ws
		}
	}
	var err error
	if o.MaxElapsed, err = lm.ParseMaxElapsed(obj, w.MaxElapsed); err != nil {
		rs.addErr(obj, err)
	}
	if o.MaxHostLatency, err = lm.ParseHostLatency(obj, w.MaxHostLatency); err != nil {
		rs.addErr(obj, err)
	}
	return o
}

// unhide maps the wire placeholder to lm's.
func unhide(secret string) string {
	if secret == wire.SecretPlaceholder {
		return lm.SecretPlaceholder
	}
	return secret
}

func chapFromWire(c *wire.ConfigCHAP) *metavol.CHAP {
	if c == nil {
		return nil
	}
	return &metavol.CHAP{User: c.User, Secret: unhide(c.Secret), MutualUser: c.MutualUser, MutualSecret: unhide(c.MutualSecret)}
}

// configFromWire converts a file to lm's Config, checking what is package
// target's rule (ALUA group and port IDs, access state names). Every
// value it refuses is noted in the refusals it returns, and left out of
// the Config (unchanged, or the default), so that lm's plan can still
// find its own refusals of the rest.
func configFromWire(c wire.Config) (lm.Config, refusals) {
	var rs refusals
	out := lm.Config{Version: c.Version, Discovery: chapFromWire(c.DiscoveryCHAP)}
	for _, l := range c.LUNs {
		obj := lunObject(l.Name)
		cl := lm.ConfigLUN{Name: l.Name, ID: l.ID, NAA: l.NAA, Serial: l.Serial, Size: l.Size, BlockSize: l.BlockSize,
			Kind: l.Volume.Kind, Path: l.Volume.Path, Direct: l.Volume.Direct, RBD: l.Volume.RBD,
			RBDCluster: lm.RBDCluster{Conf: l.Volume.CephConf, ID: l.Volume.CephID, Keyring: l.Volume.CephKeyring}}
		switch l.Volume.Kind {
		case "", "file", "block", metavol.VolumeKindISCSI, metavol.VolumeKindRBD:
		default:
			rs.add(obj, "volume kind %q: want file, block, iscsi or rbd", l.Volume.Kind)
			cl.Kind = ""
		}
		switch l.Identity {
		case "", "own":
		case "adopted":
			cl.Adopted = true
		default:
			rs.add(obj, "identity %q: want adopted or nothing", l.Identity)
		}
		if r := l.Volume.Remote; r != nil {
			cl.Remote = &lm.ConfigRemote{URL: r.URL, CHAPUser: r.CHAPUser, CHAPSecret: unhide(r.CHAPSecret),
				MutualUser: r.MutualUser, MutualSecret: unhide(r.MutualSecret)}
		}
		groups := map[uint16]bool{}
		for _, a := range l.ALUA {
			if err := target.CheckGroupID(int(a.Group)); err != nil {
				rs.add(obj, "alua: %v", err)
				continue
			}
			st, err := target.ParseAccessState(a.State)
			if err != nil {
				rs.add(obj, "alua group %d: %v", a.Group, err)
				continue
			}
			if groups[a.Group] {
				rs.add(obj, "alua group %d is listed twice", a.Group)
				continue
			}
			groups[a.Group] = true
			if st == target.ActiveOptimized {
				continue // the default is not stored (as `alua state` does)
			}
			if cl.ALUA == nil {
				cl.ALUA = map[uint16]string{}
			}
			cl.ALUA[a.Group] = st.String()
		}
		out.LUNs = append(out.LUNs, cl)
	}
	sort.Slice(out.LUNs, func(i, j int) bool { return out.LUNs[i].Name < out.LUNs[j].Name })
	for _, t := range c.Targets {
		obj := targetObject(t.IQN)
		ct := lm.ConfigTarget{IQN: t.IQN, Group: t.Group, Port: t.Port, AllowAll: t.AllowAll, CHAP: chapFromWire(t.CHAP)}
		if t.Group != 0 {
			if err := target.CheckGroupID(int(t.Group)); err != nil {
				rs.add(obj, "%v", err)
				ct.Group = 0
			}
		}
		if t.Port != 0 {
			if err := target.CheckPortID(int(t.Port)); err != nil {
				rs.add(obj, "%v", err)
				ct.Port = 0
			}
		}
		for _, in := range t.Initiators {
			if in == wire.AllInitiators {
				ct.AllowAll = true
				continue
			}
			ct.Initiators = append(ct.Initiators, in)
		}
		for _, mp := range t.LUNs {
			ct.LUNs = append(ct.LUNs, lm.ConfigMapping{Number: mp.LUN, LUN: mp.Name, ReadOnly: mp.ReadOnly, Initiators: slices.Clone(mp.Initiators)})
		}
		ct.Portals = slices.Clone(t.Portals)
		out.Targets = append(out.Targets, ct)
	}
	for _, p := range c.Migrations {
		opts := pairOptionsFromWire(pairObject(p.Source), p.ConfigPairOptions, &rs)
		out.Migrations = append(out.Migrations, lm.ConfigPair{Source: p.Source, Target: p.Target, Vehicle: p.Vehicle, PairOptions: opts})
	}
	for _, ss := range c.Sessions {
		obj := sessionObject(ss.Name)
		opts := pairOptionsFromWire(obj, ss.ConfigPairOptions, &rs)
		cs := lm.ConfigSession{Name: ss.Name, MaxActive: ss.MaxActive, PairOptions: opts}
		for _, p := range ss.Pairs {
			sp := lm.ConfigSessionPair{Source: p.Source, Target: p.Target, Vehicle: p.Vehicle}
			if p.Options != nil {
				if p.Options.AutoSplit {
					rs.add(obj, "pair %s: auto_split is the session's: set it on the session", p.Source)
				}
				o := pairOptionsFromWire(obj, *p.Options, &rs)
				o.AutoSplit = false
				sp.Options = &o
			}
			cs.Pairs = append(cs.Pairs, sp)
		}
		out.Sessions = append(out.Sessions, cs)
	}
	return out, rs
}

func lines(cs []lm.ConfigChange) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

// ApplyConfig plans (DryRun) or applies a configuration; before an apply
// that changes something the current configuration is backed up.
func (s *Service) ApplyConfig(req wire.ApplyConfig, who string) (wire.ApplyResult, error) {
	want, refused := configFromWire(req.Config)
	opts := lm.ApplyOptions{Prune: req.Prune, LoggedIn: map[string]int{}, Who: who}
	if s.exp != nil {
		for _, si := range s.exp.Sessions() {
			opts.LoggedIn[si.Target]++
		}
	}
	plan, err := s.lm.PlanConfig(want, opts)
	if len(refused) > 0 {
		// Every refusal of the file: the conversion's, then the plan's
		// (lm plans what could be read, and changes nothing).
		var r *lm.Refusal
		switch {
		case err == nil:
		case errors.As(err, &r):
			refused = append(refused, r)
		default:
			return wire.ApplyResult{}, toWire(err, configObject)
		}
		return wire.ApplyResult{}, toWire(lm.JoinRefusals(configObject, refused), configObject)
	}
	if err != nil {
		return wire.ApplyResult{}, toWire(err, configObject)
	}
	res := wire.ApplyResult{DryRun: req.DryRun, Changes: lines(plan.Changes), Kept: lines(plan.Kept)}
	if req.DryRun || len(plan.Changes) == 0 {
		return res, nil
	}
	if res.Backup, err = s.BackupConfig(); err != nil {
		return wire.ApplyResult{}, toWire(fmt.Errorf("config apply refused: backup before the apply: %w", err), configObject)
	}
	plan, err = s.lm.ApplyConfig(want, opts)
	if err != nil {
		var ae *lm.ApplyError
		if errors.As(err, &ae) {
			we := toWire(ae.Err, configObject)
			msg := ae.Error() + " (backup of the configuration before: " + res.Backup + ")"
			return wire.ApplyResult{}, &wire.Error{Status: we.Status, Message: msg, Object: configObject, Reason: msg}
		}
		return wire.ApplyResult{}, toWire(err, configObject)
	}
	res.Changes, res.Kept = lines(plan.Changes), lines(plan.Kept)
	s.log.Info().Int("changes", len(res.Changes)).Int("kept", len(res.Kept)).Str("backup", res.Backup).Msg("configuration applied")
	return res, nil
}

func (s *Service) backupDir() string { return filepath.Join(s.lm.DataDir(), backupDirName) }

// BackupConfig writes the current configuration (with secrets) to a new
// backup file and removes all but the newest BackupsKept; it returns the
// file's path.
func (s *Service) BackupConfig() (string, error) {
	c, err := s.lm.ExportConfig()
	if err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(configToWire(c, true), "", "  ")
	if err != nil {
		return "", err
	}
	dir := s.backupDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// The name is the UTC time in ms, so names sort by time; two applies
	// in one millisecond take the next free one (never overwrite).
	now := time.Now().UTC()
	var path string
	for {
		path = filepath.Join(dir, "config-"+now.Format("20060102T150405.000Z")+".json")
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			break
		}
		now = now.Add(time.Millisecond)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", err
	}
	bs, err := s.ConfigBackups()
	if err != nil {
		return path, nil
	}
	for _, old := range bs[min(len(bs), BackupsKept):] {
		if err := os.Remove(old.Path); err != nil {
			s.log.Error().Err(err).Str("backup", old.Path).Msg("remove an old configuration backup")
		}
	}
	return path, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// ConfigBackups lists the automatic backups, newest first.
func (s *Service) ConfigBackups() ([]wire.ConfigBackup, error) {
	dir := s.backupDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return []wire.ConfigBackup{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config backups %s: %w", dir, err)
	}
	out := []wire.ConfigBackup{}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, "config-") || !strings.HasSuffix(n, ".json") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, wire.ConfigBackup{Name: n, Path: filepath.Join(dir, n), Time: fi.ModTime().UTC(), Size: fi.Size()})
	}
	// The names hold the UTC time: newest first by name.
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name })
	return out, nil
}
