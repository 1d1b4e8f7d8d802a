package target

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// prType is a persistent reservation type (SPC-4 table 205).
type prType uint8

const (
	prNone                  prType = 0
	prWriteExclusive        prType = 1
	prExclusiveAccess       prType = 3
	prWriteExclusiveRegs    prType = 5
	prExclusiveAccessRegs   prType = 6
	prWriteExclusiveAllReg  prType = 7
	prExclusiveAccessAllReg prType = 8
)

func (t prType) String() string {
	switch t {
	case prNone:
		return "none"
	case prWriteExclusive:
		return "write-exclusive"
	case prExclusiveAccess:
		return "exclusive-access"
	case prWriteExclusiveRegs:
		return "write-exclusive-registrants-only"
	case prExclusiveAccessRegs:
		return "exclusive-access-registrants-only"
	case prWriteExclusiveAllReg:
		return "write-exclusive-all-registrants"
	case prExclusiveAccessAllReg:
		return "exclusive-access-all-registrants"
	}
	return fmt.Sprintf("pr-type-%d", uint8(t))
}

func (t prType) valid() bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRegs, prExclusiveAccessRegs,
		prWriteExclusiveAllReg, prExclusiveAccessAllReg:
		return true
	}
	return false
}

func (t prType) allRegistrants() bool {
	return t == prWriteExclusiveAllReg || t == prExclusiveAccessAllReg
}

// registrantsAccess: registered non-holders have full access.
func (t prType) registrantsAccess() bool {
	return t == prWriteExclusiveRegs || t == prExclusiveAccessRegs || t.allRegistrants()
}

// exclusiveAccess: non-holders may not even read.
func (t prType) exclusiveAccess() bool {
	return t == prExclusiveAccess || t == prExclusiveAccessRegs || t == prExclusiveAccessAllReg
}

// registrant is one registered I_T nexus.
type registrant struct {
	Nexus string `json:"nexus"` // I_T nexus key: initiator port "|" target name
	Key   uint64 `json:"key"`
}

// prState is the persistent part of a LUN's reservations (stored as JSON
// through the ReservationStore).
type prState struct {
	Generation  uint32       `json:"generation"`
	Registrants []registrant `json:"registrants,omitempty"`
	Type        prType       `json:"type,omitempty"`   // prNone: not reserved
	Holder      string       `json:"holder,omitempty"` // nexus key (not for all-registrants types)
	APTPL       bool         `json:"aptpl,omitempty"`
}

func (p *prState) clone() prState {
	c := *p
	c.Registrants = append([]registrant(nil), p.Registrants...)
	return c
}

func (p *prState) find(nexus string) int {
	for i, r := range p.Registrants {
		if r.Nexus == nexus {
			return i
		}
	}
	for i, r := range p.Registrants { // carried over (prcarry.go)
		if matchNexus(r.Nexus, nexus) {
			return i
		}
	}
	return -1
}

func (p *prState) isHolder(nexus string) bool {
	if p.Type == prNone {
		return false
	}
	if p.Type.allRegistrants() {
		return p.find(nexus) >= 0
	}
	return matchNexus(p.Holder, nexus)
}

// remove unregisters nexus; a reservation it held alone goes with it.
// It reports whether a reservation was released.
func (p *prState) remove(nexus string) (released bool) {
	i := p.find(nexus)
	if i < 0 {
		return false
	}
	nexus = p.Registrants[i].Nexus // a carried one may cover the caller's
	p.Registrants = append(p.Registrants[:i], p.Registrants[i+1:]...)
	if p.Type == prNone {
		return false
	}
	if p.Type.allRegistrants() {
		if len(p.Registrants) == 0 {
			p.Type, p.Holder = prNone, ""
			return true
		}
		return false
	}
	if matchNexus(p.Holder, nexus) {
		p.Type, p.Holder = prNone, ""
		return true
	}
	return false
}

// reservations is the reservation state of one logical unit: persistent
// reservations (SPC-4) and SPC-2 RESERVE/RELEASE.
type reservations struct {
	dev   *lunDev
	store ReservationStore
	// active is true while any reservation exists: without one no command
	// can conflict and the data path skips mu.
	active atomic.Bool
	mu     sync.Mutex
	pr     prState
	spc2   string // nexus key holding an SPC-2 reservation, "" if none
}

func loadReservations(store ReservationStore, d *lunDev) (*reservations, error) {
	r := &reservations{dev: d, store: store}
	if store == nil {
		return r, nil
	}
	b, err := store.LoadReservations(d.id)
	if err != nil {
		return nil, fmt.Errorf("lun %s: load reservations: %w", d.id, err)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r.pr); err != nil {
			return nil, fmt.Errorf("lun %s: decode reservations: %w", d.id, err)
		}
	}
	r.updateActiveLocked()
	return r, nil
}

func (r *reservations) updateActiveLocked() {
	r.active.Store(r.spc2 != "" || r.pr.Type != prNone)
}

// commitLocked persists next and makes it current.
func (r *reservations) commitLocked(next prState) error {
	if r.store != nil {
		b, err := json.Marshal(&next)
		if err != nil {
			return fmt.Errorf("lun %s: encode reservations: %w", r.dev.id, err)
		}
		if err := r.store.SaveReservations(r.dev.id, b); err != nil {
			return fmt.Errorf("lun %s: save reservations: %w", r.dev.id, err)
		}
	}
	r.pr = next
	r.updateActiveLocked()
	return nil
}

// access classes for the reservation conflict check.
type access uint8

const (
	accessAllowed access = iota // never conflicts (INQUIRY, REPORT LUNS, ...)
	accessRead                  // conflicts with exclusive-access types only
	accessWrite                 // conflicts with every type
)

func classify(cdb []byte) access {
	switch cdb[0] {
	case 0x12, 0xa0, 0x03, 0x25, 0x5e, 0x5f, 0x16, 0x17, 0x56, 0x57, 0x4d, 0xa3, 0x00,
		0x84: // RECEIVE COPY RESULTS
		return accessAllowed
	case 0x9e:
		if cdb[1]&0x1f == 0x10 { // READ CAPACITY(16)
			return accessAllowed
		}
		return accessRead
	case 0x08, 0x28, 0xa8, 0x88, 0x2f, 0xaf, 0x8f, 0x34, 0x90, 0x1a, 0x5a, 0x3c, 0x1c, 0x37, 0xb7:
		return accessRead
	case 0x1e:
		if cdb[4]&0x03 == 0 { // ALLOW
			return accessAllowed
		}
	}
	return accessWrite
}

// conflict reports whether cdb from the I_T nexus conflicts with a
// reservation (SPC-4 5.13.1 and the SBC-3 command tables).
func (r *reservations) conflict(nexus string, cdb []byte) bool {
	if !r.active.Load() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spc2 != "" && r.spc2 != nexus {
		switch cdb[0] {
		case 0x12, 0xa0, 0x03, 0x17, 0x57:
			return false
		}
		return true
	}
	p := &r.pr
	if p.Type == prNone || p.isHolder(nexus) {
		return false
	}
	acc := classify(cdb)
	if acc == accessAllowed {
		return false
	}
	if p.Type.registrantsAccess() && p.find(nexus) >= 0 {
		return false
	}
	if acc == accessRead && !p.Type.exclusiveAccess() {
		return false
	}
	return true
}

// releaseSPC2 drops an SPC-2 reservation held by nexus (I_T nexus loss).
func (r *reservations) releaseSPC2(nexus string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spc2 == nexus {
		r.spc2 = ""
		r.updateActiveLocked()
	}
}

// resetSPC2 drops the SPC-2 reservation (logical unit reset).
func (r *reservations) resetSPC2() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spc2 = ""
	r.updateActiveLocked()
}

// initiatorPort is the "IQN,i,0xISID" part of a nexus key.
func initiatorPort(nexus string) string {
	if i := strings.LastIndexByte(nexus, '|'); i >= 0 {
		return nexus[:i]
	}
	return nexus
}

// reserve serves RESERVE(6) and RESERVE(10) (SPC-2).
func (st *luState) reserve(c *Cmd) samStatus {
	if c.CDB[0] == 0x56 && c.CDB[1]&0x12 != 0 { // third-party / long ID
		return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
	}
	r := st.dev.res
	nexus := c.nexus.key
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pr.Registrants) > 0 || r.pr.Type != prNone {
		return statusReservationConflict
	}
	if r.spc2 != "" && r.spc2 != nexus {
		return statusReservationConflict
	}
	r.spc2 = nexus
	r.updateActiveLocked()
	return c.produced(0)
}

// release serves RELEASE(6) and RELEASE(10) (SPC-2): only the holder's
// release has an effect; anyone else's is a no-op.
func (st *luState) release(c *Cmd) samStatus {
	r := st.dev.res
	r.releaseSPC2(c.nexus.key)
	return c.produced(0)
}

// persistentReserveIn serves PERSISTENT RESERVE IN.
func (st *luState) persistentReserveIn(c *Cmd) samStatus {
	r := st.dev.res
	alloc := allocLength(c.CDB)
	r.mu.Lock()
	p := r.pr.clone()
	r.mu.Unlock()

	var out []byte
	switch c.CDB[1] & 0x1f {
	case 0x00: // READ KEYS
		out = make([]byte, 8, 8+8*len(p.Registrants))
		put32(out, p.Generation)
		put32(out[4:], uint32(8*len(p.Registrants)))
		for _, reg := range p.Registrants {
			var k [8]byte
			put64(k[:], reg.Key)
			out = append(out, k[:]...)
		}
	case 0x01: // READ RESERVATION
		out = make([]byte, 8)
		put32(out, p.Generation)
		if p.Type != prNone {
			put32(out[4:], 16)
			d := make([]byte, 16)
			if !p.Type.allRegistrants() {
				if i := p.find(p.Holder); i >= 0 {
					put64(d, p.Registrants[i].Key)
				}
			}
			d[13] = byte(p.Type) // scope 0 (LU) | type
			out = append(out, d...)
		}
	case 0x02: // REPORT CAPABILITIES
		out = make([]byte, 8)
		put16(out, 8)
		out[2] = 0x10 | 0x04 | 0x01 // CRH, ATP_C, PTPL_C
		out[3] = 0x80               // TMV
		if p.APTPL {
			out[3] |= 0x01 // PTPL_A
		}
		out[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02 // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
		out[5] = 0x01                             // EX_AC_AR
	case 0x03: // READ FULL STATUS
		out = make([]byte, 8)
		put32(out, p.Generation)
		for _, reg := range p.Registrants {
			tid := transportID(initiatorPort(reg.Nexus))
			d := make([]byte, 24, 24+len(tid))
			put64(d, reg.Key)
			if p.isHolder(reg.Nexus) {
				d[12] = 0x01 // R_HOLDER
				d[13] = byte(p.Type)
			}
			if carried(reg.Nexus) {
				d[12] |= 0x02 // ALL_TG_PT (prcarry.go)
			}
			put16(d[18:], st.dev.srv.relPortOfNexus(reg.Nexus)) // alua.go
			put32(d[20:], uint32(len(tid)))
			out = append(out, append(d, tid...)...)
		}
		put32(out[4:], uint32(len(out)-8))
	default:
		return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
	}
	return c.respond(out, alloc)
}

// transportID builds an iSCSI TransportID (format 01b: port name with
// ISID) padded to a multiple of 4.
func transportID(port string) []byte {
	n := len(port) + 1
	n = (n + 3) &^ 3
	if n < 20 {
		n = 20
	}
	b := make([]byte, 4+n)
	b[0] = 0x40 | 0x05
	put16(b[2:], uint16(n))
	copy(b[4:], port)
	return b
}

// persistentReserveOut serves PERSISTENT RESERVE OUT (SPC-4 5.13).
func (st *luState) persistentReserveOut(c *Cmd) samStatus {
	cdb := c.CDB
	sa := cdb[1] & 0x1f
	scope := cdb[2] >> 4
	typ := prType(cdb[2] & 0x0f)
	plen := int(be32(cdb[5:9]))
	if sa == 0x07 { // REGISTER AND MOVE: not supported
		return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
	}
	if sa > 0x06 {
		return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
	}
	if plen != 24 {
		return c.fail(keyIllegalRequest, ascParameterListLength)
	}
	prm := c.Out
	if len(prm) < 24 {
		return c.fail(keyIllegalRequest, ascParameterListLength)
	}
	key, saKey := be64(prm[0:8]), be64(prm[8:16])
	flags := prm[20]
	if flags&0x08 != 0 { // SPEC_I_PT: not supported
		return c.fail(keyIllegalRequest, ascInvalidFieldInParams)
	}
	nexus := c.nexus.key
	r := st.dev.res

	r.mu.Lock()
	cur := &r.pr
	next := cur.clone()
	var uas []pendingUA
	status := func() samStatus {
		me := cur.find(nexus)
		switch sa {
		case 0x00, 0x06: // REGISTER, REGISTER AND IGNORE EXISTING KEY
			if me < 0 {
				if sa == 0x00 && key != 0 {
					return statusReservationConflict
				}
				if saKey == 0 {
					return statusGood
				}
				next.Registrants = append(next.Registrants, registrant{Nexus: nexus, Key: saKey})
			} else {
				if sa == 0x00 && key != cur.Registrants[me].Key {
					return statusReservationConflict
				}
				if saKey == 0 {
					wasType := next.Type
					if next.remove(nexus) && (wasType == prWriteExclusiveRegs || wasType == prExclusiveAccessRegs) {
						uas = append(uas, pendingUA{others(next.Registrants, nexus), ascReservationsReleased})
					}
				} else {
					next.Registrants[me].Key = saKey
				}
			}
			next.APTPL = flags&0x01 != 0
			next.Generation++
		case 0x01: // RESERVE
			if me < 0 || key != cur.Registrants[me].Key {
				return statusReservationConflict
			}
			if scope != 0 || !typ.valid() {
				return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
			}
			if cur.Type != prNone {
				if cur.isHolder(nexus) && cur.Type == typ {
					return statusGood
				}
				return statusReservationConflict
			}
			next.Type = typ
			next.Holder = ""
			if !typ.allRegistrants() {
				next.Holder = nexus
			}
		case 0x02: // RELEASE
			if me < 0 || key != cur.Registrants[me].Key {
				return statusReservationConflict
			}
			if cur.Type == prNone || !cur.isHolder(nexus) {
				return statusGood
			}
			if scope != 0 || typ != cur.Type {
				return c.fail(keyIllegalRequest, ascInvalidReleaseOfPR)
			}
			if cur.Type != prWriteExclusive && cur.Type != prExclusiveAccess {
				uas = append(uas, pendingUA{others(cur.Registrants, nexus), ascReservationsReleased})
			}
			next.Type, next.Holder = prNone, ""
		case 0x03: // CLEAR
			if me < 0 || key != cur.Registrants[me].Key {
				return statusReservationConflict
			}
			uas = append(uas, pendingUA{others(cur.Registrants, nexus), ascReservationsPreempted})
			next.Registrants = nil
			next.Type, next.Holder = prNone, ""
			next.Generation++
		case 0x04, 0x05: // PREEMPT, PREEMPT AND ABORT
			if me < 0 || key != cur.Registrants[me].Key {
				return statusReservationConflict
			}
			if cur.Type != prNone && (scope != 0 || !typ.valid()) {
				return c.fail(keyIllegalRequest, ascInvalidFieldInCDB)
			}
			removed := map[string]bool{}
			removeKey := func(k uint64) {
				for _, reg := range cur.Registrants {
					if reg.Key == k && reg.Nexus != nexus {
						removed[reg.Nexus] = true
					}
				}
			}
			switch {
			case cur.Type == prNone || (cur.Type.allRegistrants() && saKey != 0) ||
				(!cur.Type.allRegistrants() && saKey != holderKey(cur)):
				// Preempt registrations only.
				if saKey == 0 {
					return c.fail(keyIllegalRequest, ascInvalidFieldInParams)
				}
				found := false
				for _, reg := range cur.Registrants {
					if reg.Key == saKey {
						found = true
					}
				}
				if !found {
					return statusReservationConflict
				}
				removeKey(saKey)
			case cur.Type.allRegistrants(): // saKey == 0: preempt everybody else
				for _, reg := range cur.Registrants {
					if reg.Nexus != nexus {
						removed[reg.Nexus] = true
					}
				}
				next.Type, next.Holder = typ, ""
				if !typ.allRegistrants() {
					next.Holder = nexus
				}
			default: // saKey is the holder's key: take the reservation over
				removeKey(saKey)
				if cur.Type != typ {
					uas = append(uas, pendingUA{othersExcept(cur.Registrants, nexus, removed), ascReservationsReleased})
				}
				next.Type, next.Holder = typ, ""
				if !typ.allRegistrants() {
					next.Holder = nexus
				}
			}
			kept := next.Registrants[:0]
			for _, reg := range next.Registrants {
				if !removed[reg.Nexus] {
					kept = append(kept, reg)
				}
			}
			next.Registrants = kept
			if next.Type != prNone && !next.Type.allRegistrants() && next.find(next.Holder) < 0 {
				next.Type, next.Holder = prNone, ""
			}
			uas = append(uas, pendingUA{removed, ascRegistrationsPreempted})
			next.Generation++
		}
		if err := r.commitLocked(next); err != nil {
			st.dev.srv.log.Error().Err(err).Msg("persistent reservation")
			uas = nil
			return c.fail(keyHardwareError, ascInternalTargetFailure)
		}
		return statusGood
	}()
	r.mu.Unlock()
	for _, u := range uas {
		st.dev.srv.raiseUAFor(st.dev, u.code, u.keys)
	}
	if status == statusGood {
		return c.produced(0)
	}
	return status
}

type pendingUA struct {
	keys map[string]bool
	code asc
}

func holderKey(p *prState) uint64 {
	if i := p.find(p.Holder); i >= 0 {
		return p.Registrants[i].Key
	}
	return 0
}

func others(regs []registrant, self string) map[string]bool {
	m := map[string]bool{}
	for _, r := range regs {
		if r.Nexus != self {
			m[r.Nexus] = true
		}
	}
	return m
}

func othersExcept(regs []registrant, self string, skip map[string]bool) map[string]bool {
	m := others(regs, self)
	for k := range skip {
		delete(m, k)
	}
	return m
}
