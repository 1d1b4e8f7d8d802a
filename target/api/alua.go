package api

import (
	"maps"
	"net/http"
	"sort"
	"strconv"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// ALUA routes (see package target's alua.go for the model):
//
//	GET /v1/alua[?lun=NAME]                  groups, targets, per LUN the state in each group
//	PUT /v1/alua/targets/{iqn}               {"group":N,"port":M} (either may be left out)
//	PUT /v1/alua/luns/{name}/groups/{id}     {"state":"standby"}
//
// Changes are persisted by lm (lm/alua.go: the target record; the LUN's
// "alua/" record), then applied live like every target change: sessions
// stay logged in and get the unit attentions target queues. Which IDs and
// state names are valid is package target's rule (checked here, where
// its types are), unique relative port IDs metavol's.
func (s *Server) aluaRoutes(m *http.ServeMux) {
	svc := s.svc
	v := wire.Version
	m.HandleFunc("GET "+v+"/alua", func(w http.ResponseWriter, r *http.Request) {
		lun := r.URL.Query().Get("lun")
		a, err := svc.ALUA(lun)
		obj := "alua"
		if lun != "" {
			obj = lunObject(lun)
		}
		reply(w, http.StatusOK, a, err, obj)
	})
	m.HandleFunc("PUT "+v+"/alua/targets/{iqn}", withBody(func(w http.ResponseWriter, r *http.Request, req wire.SetALUATarget) {
		iqn := r.PathValue("iqn")
		t, err := svc.SetTargetALUA(iqn, req)
		reply(w, http.StatusOK, t, err, targetObject(iqn))
	}))
	m.HandleFunc("PUT "+v+"/alua/luns/{name}/groups/{id}", withBody(func(w http.ResponseWriter, r *http.Request, req wire.SetALUAState) {
		name := r.PathValue("name")
		l, err := svc.SetLUNAccessState(name, r.PathValue("id"), req.State)
		reply(w, http.StatusOK, l, err, lunObject(name))
	}))
}

// groupStates reads a LUN's stored access states (metavol keeps the
// names; target says what they mean). A name target does not know is
// reported, not guessed.
func groupStates(stored map[uint16]string) (target.GroupStates, error) {
	if len(stored) == 0 {
		return nil, nil
	}
	g := target.GroupStates{}
	for id, name := range stored {
		st, err := target.ParseAccessState(name)
		if err != nil {
			return nil, err
		}
		g[id] = st
	}
	return g, nil
}

// ALUA shows the groups, the targets' ports and the LUNs' states (one LUN
// when lunName is set: 404 if it does not exist).
func (s *Service) ALUA(lunName string) (wire.ALUA, error) {
	c, err := s.lm.ALUA(lunName)
	if err != nil {
		return wire.ALUA{}, toWire(err, "alua")
	}
	return aluaView(c.Targets, c.LUNs, c.Access), nil
}

func targetPort(t metavol.Target) wire.ALUATarget {
	g := t.Group
	if g == 0 {
		g = target.DefaultGroup
	}
	return wire.ALUATarget{IQN: t.IQN, Group: g, Port: t.Port}
}

func aluaView(tgts []metavol.Target, luns []metavol.LUN, access map[string]map[uint16]string) wire.ALUA {
	out := wire.ALUA{Groups: []wire.ALUAGroup{}, Targets: []wire.ALUATarget{}, LUNs: []wire.ALUALUN{}}
	byGroup := map[uint16][]wire.ALUATarget{}
	// holders[lunID][group] = relative port IDs of the group's targets
	// that map the LUN.
	holders := map[string]map[uint16][]uint16{}
	for _, t := range tgts {
		tp := targetPort(t)
		out.Targets = append(out.Targets, tp)
		byGroup[tp.Group] = append(byGroup[tp.Group], tp)
		for _, m := range t.Mappings {
			if holders[m.LUNID] == nil {
				holders[m.LUNID] = map[uint16][]uint16{}
			}
			holders[m.LUNID][tp.Group] = append(holders[m.LUNID][tp.Group], tp.Port)
		}
	}
	for _, g := range sortedKeys(byGroup) {
		out.Groups = append(out.Groups, wire.ALUAGroup{ID: g, Targets: byGroup[g]})
	}
	for _, l := range luns {
		v := wire.ALUALUN{Name: l.Name, ID: l.ID, Groups: []wire.ALUALUNGroup{}}
		stored := access[l.ID]
		states, err := groupStates(stored)
		groups := map[uint16][]uint16{}
		maps.Copy(groups, holders[l.ID])
		for g := range stored {
			if _, ok := groups[g]; !ok {
				groups[g] = nil
			}
		}
		for _, g := range sortedKeys(groups) {
			ports := append([]uint16{}, groups[g]...)
			sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
			name := states.State(g).String()
			if err != nil {
				name = stored[g] // unreadable record: show what it holds
			}
			_, set := stored[g]
			v.Groups = append(v.Groups, wire.ALUALUNGroup{Group: g, State: name, Ports: ports, Set: set})
		}
		out.LUNs = append(out.LUNs, v)
	}
	return out
}

func sortedKeys[V any](m map[uint16]V) []uint16 {
	ks := make([]uint16, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}

// SetTargetALUA puts a target into a target port group and/or gives it a
// relative target port ID, live. Refused (nothing changed): an ID out of
// 1..65535 (package target's rule, checked here), neither given, an
// unknown target, a port ID another target holds (lm, metavol).
func (s *Service) SetTargetALUA(iqn string, req wire.SetALUATarget) (wire.ALUATarget, error) {
	obj := targetObject(iqn)
	var group, port *uint16
	if req.Group != nil {
		if err := target.CheckGroupID(*req.Group); err != nil {
			return wire.ALUATarget{}, invalid(obj, "%v", err)
		}
		g := uint16(*req.Group)
		group = &g
	}
	if req.Port != nil {
		if err := target.CheckPortID(*req.Port); err != nil {
			return wire.ALUATarget{}, invalid(obj, "%v", err)
		}
		p := uint16(*req.Port)
		port = &p
	}
	t, err := s.lm.SetTargetPort(iqn, group, port)
	if err != nil {
		return wire.ALUATarget{}, toWire(err, obj)
	}
	tp := targetPort(t)
	s.log.Debug().Str("iqn", iqn).Uint16("group", tp.Group).Uint16("port", tp.Port).Msg("ALUA target port changed")
	return tp, nil
}

// SetLUNAccessState sets a LUN's access state in one target port group,
// live; hosts get ASYMMETRIC ACCESS STATE CHANGED. Refused (nothing
// changed): a group ID out of 1..65535 or an unknown state (package
// target's rules, checked here), an unknown LUN (lm).
func (s *Service) SetLUNAccessState(lunName, groupID, state string) (wire.ALUALUN, error) {
	obj := lunObject(lunName)
	g, err := strconv.Atoi(groupID)
	if err != nil {
		return wire.ALUALUN{}, invalid(obj, "target port group %q: want a number 1..65535", groupID)
	}
	if err := target.CheckGroupID(g); err != nil {
		return wire.ALUALUN{}, invalid(obj, "%v", err)
	}
	st, err := target.ParseAccessState(state)
	if err != nil {
		return wire.ALUALUN{}, invalid(obj, "%v", err)
	}
	stored := st.String()
	if st == target.ActiveOptimized {
		stored = "" // a group target.GroupStates does not list is active/optimized: the default is not stored
	}
	if err := s.lm.SetLUNAccess(lunName, uint16(g), stored); err != nil {
		return wire.ALUALUN{}, toWire(err, obj)
	}
	s.log.Debug().Str("lun", lunName).Int("group", g).Str("state", st.String()).Msg("ALUA access state changed")
	a, err := s.ALUA(lunName)
	if err != nil {
		return wire.ALUALUN{}, err
	}
	return a.LUNs[0], nil
}
