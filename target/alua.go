package target

// ALUA (asymmetric logical unit access, SPC-4 5.16), implicit only.
//
// Model: every target (IQN) is one SCSI target port with a relative target
// port identifier unique on this server (Target.RelPort) and belongs to one
// target port group (Target.Group, default 1). A LUN has an access state
// per target port group (LUN.ALUA; a group not listed is active/optimized).
// The state a command meets is the LUN's state in the group of the target
// the command came through: the snapshot precomputes it per target
// (targetView.access), and accessState is the one place that answers it.
//
// What hosts see:
//   - standard INQUIRY: TPGS = 01b (implicit ALUA only; SET TARGET PORT
//     GROUPS, MAINTENANCE OUT, stays an invalid opcode);
//   - VPD 0x83: a relative target port designator (type 4) and a target
//     port group designator (type 5) for the port the command came through,
//     right after the logical unit's designators (multipath-tools' alua
//     prioritizer reads only the first 128 bytes of the page in older
//     versions);
//   - REPORT TARGET PORT GROUPS (MAINTENANCE IN 0xA3/0x0A, both parameter
//     data formats): every group of this server holding a target that maps
//     the LUN, with the LUN's state there and the relative port IDs of those
//     targets; an imported LUN lists nothing of the remote array's groups;
//   - a media access command through a port whose state is standby,
//     unavailable or transitioning: CHECK CONDITION, NOT READY, 04h/0Bh,
//     04h/0Ch or 04h/0Ah (aluaAllowed lists what keeps working);
//   - a change that alters what REPORT TARGET PORT GROUPS returns for a LUN
//     queues ASYMMETRIC ACCESS STATE CHANGED (06h/2Ah/06h) on every I_T
//     nexus that sees the LUN; a target that moves to another group or
//     changes its port ID also queues INQUIRY DATA HAS CHANGED (3Fh/03h) on
//     its own nexuses (VPD 0x83 changed).

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

// AccessState is an ALUA asymmetric access state. Its value is the SCSI
// code reported in REPORT TARGET PORT GROUPS.
type AccessState uint8

// The access states lmtgt supports.
const (
	ActiveOptimized    AccessState = 0x0
	ActiveNonOptimized AccessState = 0x1
	Standby            AccessState = 0x2
	Unavailable        AccessState = 0x3
	Transitioning      AccessState = 0xf
)

// AccessStates lists every supported state, active/optimized first.
func AccessStates() []AccessState {
	return []AccessState{ActiveOptimized, ActiveNonOptimized, Standby, Unavailable, Transitioning}
}

// DefaultGroup is the target port group of a target that names none.
const DefaultGroup = 1

// ErrInvalidALUA is returned for an unknown state name or an out of range
// group or port ID.
var ErrInvalidALUA = errors.New("invalid ALUA setting")

func (s AccessState) String() string {
	switch s {
	case ActiveOptimized:
		return "active-optimized"
	case ActiveNonOptimized:
		return "active-nonoptimized"
	case Standby:
		return "standby"
	case Unavailable:
		return "unavailable"
	case Transitioning:
		return "transitioning"
	}
	return fmt.Sprintf("alua-state-%#x", uint8(s))
}

// Active reports whether media access is allowed in state s.
func (s AccessState) Active() bool { return s == ActiveOptimized || s == ActiveNonOptimized }

// notReady is the additional sense code of a media access command refused
// in state s (SPC-4 5.16.2.4).
func (s AccessState) notReady() asc {
	switch s {
	case Standby:
		return ascALUAStandby
	case Unavailable:
		return ascALUAUnavailable
	}
	return ascALUATransition
}

// ParseAccessState reads a state name (as String prints it; "ao", "an",
// "active", "active-non-optimized" are accepted too).
func ParseAccessState(s string) (AccessState, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "active-optimized", "active/optimized", "optimized", "active", "ao":
		return ActiveOptimized, nil
	case "active-nonoptimized", "active-non-optimized", "active/non-optimized", "nonoptimized", "non-optimized", "an":
		return ActiveNonOptimized, nil
	case "standby":
		return Standby, nil
	case "unavailable":
		return Unavailable, nil
	case "transitioning":
		return Transitioning, nil
	}
	all := AccessStates()
	names := make([]string, len(all))
	for i, st := range all {
		names[i] = st.String()
	}
	return 0, fmt.Errorf("%w: access state %q: want one of %s", ErrInvalidALUA, s, strings.Join(names, ", "))
}

// CheckGroupID checks a target port group ID (1..65535).
func CheckGroupID(id int) error {
	if id < 1 || id > 0xffff {
		return fmt.Errorf("%w: target port group %d: want 1..65535", ErrInvalidALUA, id)
	}
	return nil
}

// CheckPortID checks a relative target port identifier (1..65535).
func CheckPortID(id int) error {
	if id < 1 || id > 0xffff {
		return fmt.Errorf("%w: relative target port ID %d: want 1..65535", ErrInvalidALUA, id)
	}
	return nil
}

// GroupStates is a LUN's access state by target port group ID. A group
// that is not listed is active/optimized.
type GroupStates map[uint16]AccessState

// State is the LUN's state in group.
func (g GroupStates) State(group uint16) AccessState {
	if s, ok := g[group]; ok {
		return s
	}
	return ActiveOptimized
}

func (g GroupStates) equal(o GroupStates) bool {
	for k, v := range g {
		if o.State(k) != v {
			return false
		}
	}
	for k, v := range o {
		if g.State(k) != v {
			return false
		}
	}
	return true
}

// aluaView is the ALUA part of a snapshot.
type aluaView struct {
	// states of each LUN that has a non-default one, by LUN ID.
	states map[string]GroupStates
	// holders are the targets that map each LUN, in IQN order.
	holders map[string][]*targetView
}

// validateALUA checks the ports and groups of a configuration: no two
// targets share a relative port ID, a LUN mapped in several targets has
// the same states everywhere, and every state is a known one.
func validateALUA(targets []Target) error {
	ports := map[uint16]string{}
	states := map[string]GroupStates{}
	for _, t := range targets {
		if t.RelPort != 0 {
			if other, ok := ports[t.RelPort]; ok {
				return fmt.Errorf("%w: targets %s and %s have the same relative target port ID %d", ErrInvalidConfig, other, t.IQN, t.RelPort)
			}
			ports[t.RelPort] = t.IQN
		}
		for _, l := range t.LUNs {
			for g, s := range l.ALUA {
				if g == 0 {
					return fmt.Errorf("%w: lun %s: access state for target port group 0", ErrInvalidConfig, l.ID)
				}
				if !knownState(s) {
					return fmt.Errorf("%w: lun %s: unknown access state %#x in group %d", ErrInvalidConfig, l.ID, uint8(s), g)
				}
			}
			if prev, ok := states[l.ID]; ok && !prev.equal(l.ALUA) {
				return fmt.Errorf("%w: lun %s mapped twice with different ALUA states", ErrInvalidConfig, l.ID)
			}
			states[l.ID] = l.ALUA
		}
	}
	return nil
}

func knownState(s AccessState) bool {
	for _, k := range AccessStates() {
		if s == k {
			return true
		}
	}
	return false
}

// portsOf returns each target's group and relative port ID. A target
// without a port ID (callers that do not configure ALUA, tests) gets the
// lowest ID no other target uses, in IQN order; without a group it is in
// DefaultGroup. lmtgt serve always passes the IDs stored in the meta
// volume.
func portsOf(targets []Target) map[string][2]uint16 {
	used := map[uint16]bool{}
	for _, t := range targets {
		if t.RelPort != 0 {
			used[t.RelPort] = true
		}
	}
	order := make([]int, len(targets))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return targets[order[a]].IQN < targets[order[b]].IQN })
	out := map[string][2]uint16{}
	next := uint16(1)
	for _, i := range order {
		t := targets[i]
		g, p := t.Group, t.RelPort
		if g == 0 {
			g = DefaultGroup
		}
		if p == 0 {
			for used[next] && next < 0xffff {
				next++
			}
			p = next
			used[p] = true
		}
		out[t.IQN] = [2]uint16{g, p}
	}
	return out
}

// buildALUA fills the ALUA part of a new snapshot: per LUN its states and
// holders, and per target the states of its LUNs that are not
// active/optimized.
func (sn *snapshot) buildALUA(targets []Target) {
	sn.alua = aluaView{states: map[string]GroupStates{}, holders: map[string][]*targetView{}}
	for _, t := range targets {
		for _, l := range t.LUNs {
			if len(l.ALUA) > 0 {
				sn.alua.states[l.ID] = l.ALUA
			}
		}
	}
	for _, iqn := range sn.order {
		tv := sn.targets[iqn]
		for _, num := range tv.numbers {
			id := tv.luns[num].id
			sn.alua.holders[id] = append(sn.alua.holders[id], tv)
			if s := sn.alua.states[id].State(tv.group); s != ActiveOptimized {
				if tv.access == nil {
					tv.access = map[string]AccessState{}
				}
				tv.access[id] = s
			}
		}
	}
}

// accessState is the state LUN lunID has on target tv's port: the one
// rule every command goes through (Execute).
func (tv *targetView) accessState(lunID string) AccessState {
	if len(tv.access) == 0 {
		return ActiveOptimized
	}
	return tv.access[lunID] // absent: ActiveOptimized (0)
}

// aluaAllowed reports whether a command may run on a port whose state for
// the LUN is not active: the commands that do not touch the medium (SPC-4
// 5.16.2.4.4 for standby, plus READ CAPACITY, which hosts need to size a
// standby path). The same set applies in standby, unavailable and
// transitioning, so that persistent reservations can still be read and
// moved through every port (handover).
func aluaAllowed(cdb []byte) bool {
	switch cdb[0] {
	case 0x12, // INQUIRY
		0xa0,       // REPORT LUNS
		0x03,       // REQUEST SENSE
		0xa3,       // MAINTENANCE IN: REPORT TARGET PORT GROUPS, REPORT SUPPORTED OPCODES, ...
		0xa4,       // MAINTENANCE OUT (unsupported: the opcode error tells the truth)
		0x5e, 0x5f, // PERSISTENT RESERVE IN/OUT
		0x1a, 0x5a, // MODE SENSE(6/10)
		0x15, 0x55, // MODE SELECT(6/10)
		0x4d, 0x4c, // LOG SENSE, LOG SELECT
		0x1c, 0x1d, // RECEIVE DIAGNOSTIC RESULTS, SEND DIAGNOSTIC
		0x3c, 0x3b, // READ BUFFER, WRITE BUFFER
		0x25: // READ CAPACITY(10)
		return true
	case 0x9e: // SERVICE ACTION IN(16): READ CAPACITY(16) only
		return len(cdb) > 1 && cdb[1]&0x1f == 0x10
	}
	return false
}

// aluaGate is Execute's ALUA step, after unit attentions and before
// reservation conflicts: through a port where the LUN's state is not
// active it refuses media access with NOT READY, and it answers REPORT
// TARGET PORT GROUPS from the snapshot sn. It reports whether it answered
// the command.
func (n *nexus) aluaGate(c *iscsi.Command, sn *snapshot, tv *targetView, dev *lunDev) bool {
	if st := tv.accessState(dev.id); !st.Active() && !aluaAllowed(c.CDB) {
		n.fail(c, keyNotReady, st.notReady())
		return true
	}
	if c.CDB[0] == 0xa3 && len(c.CDB) > 1 && c.CDB[1]&0x1f == 0x0a {
		n.reportTargetPortGroups(c, sn, dev)
		return true
	}
	return false
}

// rtpgDescriptors builds the target port group descriptors REPORT TARGET
// PORT GROUPS returns for LUN lunID: one per group that holds a target
// mapping the LUN, by group ID, each with the relative port IDs of those
// targets.
func (sn *snapshot) rtpgDescriptors(lunID string) []byte {
	ports := map[uint16][]uint16{}
	for _, tv := range sn.alua.holders[lunID] {
		ports[tv.group] = append(ports[tv.group], tv.port)
	}
	groups := make([]int, 0, len(ports))
	for g := range ports {
		groups = append(groups, int(g))
	}
	sort.Ints(groups)
	states := sn.alua.states[lunID]
	var b []byte
	for _, gi := range groups {
		g := uint16(gi)
		ps := ports[g]
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		d := make([]byte, 8+4*len(ps))
		d[0] = byte(states.State(g))            // PREF 0, ASYMMETRIC ACCESS STATE
		d[1] = 0x80 | 0x08 | 0x04 | 0x02 | 0x01 // T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP
		put16(d[2:], g)
		d[7] = byte(len(ps)) // TARGET PORT COUNT
		for i, p := range ps {
			put16(d[8+4*i+2:], p)
		}
		b = append(b, d...)
	}
	return b
}

// reportTargetPortGroups answers REPORT TARGET PORT GROUPS for dev from
// the current snapshot (Execute dispatches it before the LU's op table).
func (n *nexus) reportTargetPortGroups(c *iscsi.Command, sn *snapshot, dev *lunDev) {
	cdb := c.CDB
	if len(cdb) < 12 {
		n.failSense(c, withFieldPointer(buildSense(keyIllegalRequest, ascInvalidFieldInCDB, 0, false), 0))
		return
	}
	desc := sn.rtpgDescriptors(dev.id)
	var data []byte
	switch cdb[1] >> 5 { // PARAMETER DATA FORMAT
	case 0: // length only
		data = make([]byte, 4, 4+len(desc))
	case 1: // extended header
		data = make([]byte, 8, 8+len(desc))
		data[4] = 0x10 // FORMAT TYPE 001b; IMPLICIT TRANSITION TIME 0: unspecified
	default:
		n.failSense(c, withFieldPointer(buildSense(keyIllegalRequest, ascInvalidFieldInCDB, 0, false), 1))
		return
	}
	data = append(data, desc...)
	put32(data, uint32(len(data)-4))
	alloc := int(be32(cdb[6:10]))
	if alloc > len(data) {
		alloc = len(data)
	}
	c.TransferLength, c.HasTransferLength = uint32(alloc), true
	c.DataInLen = copy(c.DataIn[:cap(c.DataIn)], data[:alloc])
}

func (n *nexus) failSense(c *iscsi.Command, sense []byte) {
	c.Status = statusCheckCondition
	c.Sense = sense
	c.DataInLen = 0
}

// aluaChangeUAs queues the unit attentions of an ALUA change between the
// old and the new snapshot (called by apply with s.mu held): ASYMMETRIC
// ACCESS STATE CHANGED on every nexus that sees a LUN whose REPORT TARGET
// PORT GROUPS data changed, INQUIRY DATA HAS CHANGED on the nexuses of a
// target whose group or port ID changed.
func (s *Server) aluaChangeUAs(old, sn *snapshot) {
	changed := map[string]bool{}
	lunChanged := func(id string) bool {
		c, ok := changed[id]
		if !ok {
			c = !bytes.Equal(old.rtpgDescriptors(id), sn.rtpgDescriptors(id))
			changed[id] = c
		}
		return c
	}
	for n := range s.nexuses {
		nt, ot := sn.targets[n.info.Target], old.targets[n.info.Target]
		if nt == nil {
			continue
		}
		portMoved := ot != nil && (ot.group != nt.group || ot.port != nt.port)
		for _, num := range nt.numbers {
			d := nt.luns[num]
			if ot == nil || ot.luns[num] != d {
				continue // a new mapping: REPORTED LUNS DATA HAS CHANGED covers it
			}
			if portMoved {
				n.addUA(d.id, ascInquiryDataChanged)
			}
			if lunChanged(d.id) {
				n.addUA(d.id, ascAsymmetricAccessChanged)
			}
		}
	}
}

// relPortOfNexus is the relative target port ID of the target an I_T
// nexus key ("initiator port|target IQN") names, for PERSISTENT RESERVE
// IN READ FULL STATUS; a target no longer configured reports its old
// default, 1.
func (s *Server) relPortOfNexus(key string) uint16 {
	iqn := key
	if i := strings.LastIndexByte(key, '|'); i >= 0 {
		iqn = key[i+1:]
	}
	if tv := s.snap.Load().targets[iqn]; tv != nil {
		return tv.port
	}
	return relTargetPortID
}
