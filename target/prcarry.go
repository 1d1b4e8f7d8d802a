package target

import (
	"encoding/json"
	"fmt"
	"strings"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
)

// PR carry-over (docs/design.md "PR carry-over"): the persistent
// reservations hosts registered on the old array travel to the LUN that
// imports it, installed before lmtgt serves I/O on it (at lun import) and
// installed again at migration create (the re-sync step of a handover).
//
// A registration on the old array belongs to an I_T nexus (host initiator
// port, old array's target port). lmtgt's target ports are others, so a
// carried registration is installed as an all-target-ports registration
// of that initiator: its nexus key is "<initiator port>|*" and it matches
// every I_T nexus of that initiator name on any of this server's targets
// (the ISID is not compared: open-iscsi may pick another ISID for the
// session to lmtgt). A registration the host makes directly on lmtgt
// (an exact nexus key) wins over a carried one. A re-sync replaces what
// was carried before and keeps what hosts registered here.

// carriedSuffix ends the nexus key of a carried registration.
const carriedSuffix = "|*"

// initiatorName is the iSCSI name of a nexus key or initiator port
// ("IQN,i,0xISID|target" → "IQN").
func initiatorName(key string) string {
	key = initiatorPort(key)
	if i := strings.Index(key, ",i,"); i >= 0 {
		return key[:i]
	}
	return key
}

func carried(key string) bool { return strings.HasSuffix(key, carriedSuffix) }

// matchNexus reports whether a registration or holder key reg covers the
// I_T nexus key nexus: the same key, or a carried key of the same
// initiator name (either way round).
func matchNexus(reg, nexus string) bool {
	if reg == nexus {
		return true
	}
	if carried(reg) != carried(nexus) {
		return initiatorName(reg) == initiatorName(nexus)
	}
	return false
}

// CarryPRs installs the persistent reservation state read from an
// external LUN (st) into the reservations of LUN lunID, leaving out the
// registrations with key skip (lmtgt's own fence key, 0 for none). It
// needs READ FULL STATUS data (st.Full): without the initiator ports a key
// cannot be given to anybody, and nothing is installed (the hosts must
// register again through lmtgt; the error says so).
func (s *Server) CarryPRs(lunID string, st iscsivol.PRStatus, skip uint64) error {
	if !st.Full {
		if len(st.Registrations) == 0 {
			return nil
		}
		return fmt.Errorf("lun %s: the old array reports %d registration(s) without their initiators (no READ FULL STATUS): none carried over",
			lunID, len(st.Registrations))
	}
	s.mu.Lock()
	d := s.devs[lunID]
	s.mu.Unlock()
	if d != nil { // served now: change it under its lock
		r := d.res
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.commitLocked(mergeCarried(r.pr.clone(), st, skip))
	}
	store := s.opts.Reservations
	if store == nil {
		return fmt.Errorf("lun %s: no reservation store to carry reservations into", lunID)
	}
	var cur prState
	b, err := store.LoadReservations(lunID)
	if err != nil {
		return fmt.Errorf("lun %s: load reservations: %w", lunID, err)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &cur); err != nil {
			return fmt.Errorf("lun %s: decode reservations: %w", lunID, err)
		}
	}
	next := mergeCarried(cur, st, skip)
	if b, err = json.Marshal(&next); err != nil {
		return fmt.Errorf("lun %s: encode reservations: %w", lunID, err)
	}
	if err := store.SaveReservations(lunID, b); err != nil {
		return fmt.Errorf("lun %s: save reservations: %w", lunID, err)
	}
	return nil
}

// mergeCarried is cur with the carried registrations and reservation
// replaced by those of st.
func mergeCarried(cur prState, st iscsivol.PRStatus, skip uint64) prState {
	next := cur
	next.Registrants = nil
	for _, r := range cur.Registrants {
		if !carried(r.Nexus) {
			next.Registrants = append(next.Registrants, r)
		}
	}
	if next.Type != prNone && !next.Type.allRegistrants() && carried(next.Holder) {
		next.Type, next.Holder = prNone, ""
	}
	here := func(name string) bool {
		for _, r := range next.Registrants {
			if initiatorName(r.Nexus) == name {
				return true
			}
		}
		return false
	}
	for _, reg := range st.Registrations {
		if reg.InitiatorPort == "" || reg.Key == skip {
			continue
		}
		key := reg.InitiatorPort + carriedSuffix
		if here(reg.InitiatorName()) {
			continue // registered here directly: that one counts
		}
		next.Registrants = append(next.Registrants, registrant{Nexus: key, Key: reg.Key})
		if reg.Holder && next.Type == prNone && prType(st.Type).valid() {
			next.Type = prType(st.Type)
			if !next.Type.allRegistrants() {
				next.Holder = key
			}
		}
	}
	if next.Type.allRegistrants() && len(next.Registrants) == 0 {
		next.Type = prNone
	}
	next.Generation = max(cur.Generation, st.Generation) + 1
	return next
}
