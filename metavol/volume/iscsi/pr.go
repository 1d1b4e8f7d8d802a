package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// Persistent reservations (SPC-4 5.13): PERSISTENT RESERVE IN and OUT as
// an initiator sends them. lmtgt uses them to fence the old path of an
// imported LUN (it holds WRITE EXCLUSIVE on the external LUN for the life
// of a pair) and to carry the hosts' reservations over from the old array
// (docs/design.md "Fencing" and "PR carry-over").
//
// The I_T nexus a registration belongs to is (initiator port, target
// port); our initiator port is Config.Initiator with the session's ISID,
// which stays the same across reconnects (and across restarts when
// Config.ISID is set), so a registration and a reservation we hold survive
// both.

// PRType is a persistent reservation type (SPC-4 table 205); 0 is "not
// reserved".
type PRType byte

// Reservation types.
const (
	PRNone                  PRType = 0
	PRWriteExclusive        PRType = 1
	PRExclusiveAccess       PRType = 3
	PRWriteExclusiveRegs    PRType = 5
	PRExclusiveAccessRegs   PRType = 6
	PRWriteExclusiveAllRegs PRType = 7
	PRExclusiveAccessAllReg PRType = 8
)

func (t PRType) String() string {
	switch t {
	case PRNone:
		return "none"
	case PRWriteExclusive:
		return "write-exclusive"
	case PRExclusiveAccess:
		return "exclusive-access"
	case PRWriteExclusiveRegs:
		return "write-exclusive-registrants-only"
	case PRExclusiveAccessRegs:
		return "exclusive-access-registrants-only"
	case PRWriteExclusiveAllRegs:
		return "write-exclusive-all-registrants"
	case PRExclusiveAccessAllReg:
		return "exclusive-access-all-registrants"
	}
	return fmt.Sprintf("pr-type-%d", byte(t))
}

// AllRegistrants reports whether every registrant holds the reservation.
func (t PRType) AllRegistrants() bool {
	return t == PRWriteExclusiveAllRegs || t == PRExclusiveAccessAllReg
}

// PRRegistration is one registered I_T nexus of a logical unit.
type PRRegistration struct {
	Key uint64 `json:"key"`
	// InitiatorPort is the iSCSI initiator port name ("IQN,i,0xISID", or
	// the bare name) from the TransportID of READ FULL STATUS; empty when
	// the target answered READ KEYS only.
	InitiatorPort  string `json:"initiator_port,omitempty"`
	Holder         bool   `json:"holder,omitempty"`
	AllTargetPorts bool   `json:"all_target_ports,omitempty"`
	RelTargetPort  uint16 `json:"rel_target_port,omitempty"`
}

// InitiatorName is the port's iSCSI name without the ",i,0xISID" part.
func (r PRRegistration) InitiatorName() string {
	if i := strings.Index(r.InitiatorPort, ",i,"); i >= 0 {
		return r.InitiatorPort[:i]
	}
	return r.InitiatorPort
}

// PRStatus is a logical unit's persistent reservation state as read by
// ReadPRStatus.
type PRStatus struct {
	Generation uint32 `json:"generation"`
	// Full is true when it came from READ FULL STATUS (initiator ports
	// known); false when the target only has READ KEYS and READ
	// RESERVATION: then the keys and the reservation are known, but not
	// which initiator registered which key.
	Full          bool             `json:"full"`
	Registrations []PRRegistration `json:"registrations,omitempty"`
	Type          PRType           `json:"type"`
	HolderKey     uint64           `json:"holder_key,omitempty"` // not for the all-registrants types
}

// Holder is the registration holding the reservation (the first one for
// the all-registrants types), if it is known.
func (s PRStatus) Holder() (PRRegistration, bool) {
	for _, r := range s.Registrations {
		if r.Holder {
			return r, true
		}
	}
	return PRRegistration{}, false
}

// HolderName names the reservation holder for a message: its key and, when
// known, its initiator port.
func (s PRStatus) HolderName() string {
	if s.Type == PRNone {
		return "nobody"
	}
	if h, ok := s.Holder(); ok && h.InitiatorPort != "" {
		return fmt.Sprintf("key 0x%x (initiator %s)", h.Key, h.InitiatorPort)
	}
	return fmt.Sprintf("key 0x%x", s.HolderKey)
}

// IsReservationConflict reports whether err is a RESERVATION CONFLICT
// status.
func IsReservationConflict(err error) bool {
	var se *SCSIError
	return errors.As(err, &se) && se.Status == statusResConflict
}

const (
	opPRIn  = 0x5e
	opPROut = 0x5f

	prInReadKeys        = 0x00
	prInReadReservation = 0x01
	prInReadFullStatus  = 0x03

	prOutRegister         = 0x00
	prOutReserve          = 0x01
	prOutRelease          = 0x02
	prOutClear            = 0x03
	prOutPreempt          = 0x04
	prOutRegisterIgnore   = 0x06
	prInAllocation        = 8192
	prOutParameterListLen = 24
)

func cdbPRIn(sa byte, alloc uint16) []byte {
	b := make([]byte, 10)
	b[0] = opPRIn
	b[1] = sa
	binary.BigEndian.PutUint16(b[7:], alloc)
	return b
}

func (c *Client) prIn(sa byte) ([]byte, error) {
	buf := make([]byte, prInAllocation)
	r, err := c.exec(Command{CDB: cdbPRIn(sa, uint16(len(buf))), Data: buf, Read: true})
	if err != nil {
		return nil, err
	}
	n := len(buf) - int(r.Residual)
	if !r.Underrun || n < 0 {
		n = len(buf)
	}
	return buf[:n], nil
}

// ReadPRStatus reads the logical unit's registrations and reservation:
// READ FULL STATUS when the target has it, else READ KEYS and READ
// RESERVATION (Full false: the initiator ports are then unknown).
func (c *Client) ReadPRStatus() (PRStatus, error) {
	b, err := c.prIn(prInReadFullStatus)
	if err == nil {
		return parseFullStatus(b)
	}
	if !IsInvalidOpcode(err) {
		return PRStatus{}, fmt.Errorf("persistent reserve in, read full status: %w", err)
	}
	keys, err := c.prIn(prInReadKeys)
	if err != nil {
		return PRStatus{}, fmt.Errorf("persistent reserve in, read keys: %w", err)
	}
	res, err := c.prIn(prInReadReservation)
	if err != nil {
		return PRStatus{}, fmt.Errorf("persistent reserve in, read reservation: %w", err)
	}
	return parseKeysReservation(keys, res)
}

func parseFullStatus(b []byte) (PRStatus, error) {
	if len(b) < 8 {
		return PRStatus{}, fmt.Errorf("read full status: %d bytes, want at least 8", len(b))
	}
	s := PRStatus{Full: true, Generation: binary.BigEndian.Uint32(b)}
	n := min(int(binary.BigEndian.Uint32(b[4:])), len(b)-8)
	body := b[8 : 8+n]
	for len(body) >= 24 {
		tl := int(binary.BigEndian.Uint32(body[20:]))
		if 24+tl > len(body) {
			break
		}
		r := PRRegistration{
			Key:            binary.BigEndian.Uint64(body),
			Holder:         body[12]&0x01 != 0,
			AllTargetPorts: body[12]&0x02 != 0,
			RelTargetPort:  binary.BigEndian.Uint16(body[18:]),
			InitiatorPort:  transportIDName(body[24 : 24+tl]),
		}
		if r.Holder {
			s.Type = PRType(body[13] & 0x0f)
			if !s.Type.AllRegistrants() {
				s.HolderKey = r.Key
			}
		}
		s.Registrations = append(s.Registrations, r)
		body = body[24+tl:]
	}
	return s, nil
}

// transportIDName is the iSCSI name (and ",i,0xISID" for format 01b) of
// an iSCSI TransportID (SPC-4 7.6.4.6); "" for another protocol.
func transportIDName(t []byte) string {
	if len(t) < 4 || t[0]&0x0f != 0x05 {
		return ""
	}
	name := t[4:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	// Format 00b is the name alone; 01b is "name,i,0xISID" in one string.
	return string(name)
}

func parseKeysReservation(keys, res []byte) (PRStatus, error) {
	if len(keys) < 8 || len(res) < 8 {
		return PRStatus{}, fmt.Errorf("read keys/reservation: short answer (%d/%d bytes)", len(keys), len(res))
	}
	s := PRStatus{Generation: binary.BigEndian.Uint32(keys)}
	n := min(int(binary.BigEndian.Uint32(keys[4:])), len(keys)-8)
	for k := keys[8 : 8+n]; len(k) >= 8; k = k[8:] {
		s.Registrations = append(s.Registrations, PRRegistration{Key: binary.BigEndian.Uint64(k)})
	}
	if binary.BigEndian.Uint32(res[4:]) >= 16 && len(res) >= 24 {
		s.Type = PRType(res[8+13] & 0x0f)
		key := binary.BigEndian.Uint64(res[8:])
		if !s.Type.AllRegistrants() {
			s.HolderKey = key
		}
		for i := range s.Registrations {
			if s.Type.AllRegistrants() || s.Registrations[i].Key == key {
				s.Registrations[i].Holder = true
				if !s.Type.AllRegistrants() {
					break // one holder; others may share the key
				}
			}
		}
	}
	return s, nil
}

func (c *Client) prOut(sa byte, t PRType, key, saKey uint64) error {
	cdb := make([]byte, 10)
	cdb[0] = opPROut
	cdb[1] = sa
	cdb[2] = byte(t) & 0x0f // scope 0: logical unit
	binary.BigEndian.PutUint32(cdb[5:], prOutParameterListLen)
	p := make([]byte, prOutParameterListLen)
	binary.BigEndian.PutUint64(p, key)
	binary.BigEndian.PutUint64(p[8:], saKey)
	_, err := c.exec(Command{CDB: cdb, Data: p, Write: true})
	return err
}

// PRRegister registers newKey for our I_T nexus, ignoring any key it
// had (REGISTER AND IGNORE EXISTING KEY); newKey 0 unregisters.
func (c *Client) PRRegister(newKey uint64) error {
	if err := c.prOut(prOutRegisterIgnore, PRNone, 0, newKey); err != nil {
		return fmt.Errorf("persistent reserve out, register: %w", err)
	}
	return nil
}

// PRReserve takes a reservation of type t with our registered key.
func (c *Client) PRReserve(key uint64, t PRType) error {
	if err := c.prOut(prOutReserve, t, key, 0); err != nil {
		return fmt.Errorf("persistent reserve out, reserve %s: %w", t, err)
	}
	return nil
}

// PRRelease releases a reservation of type t that we hold.
func (c *Client) PRRelease(key uint64, t PRType) error {
	if err := c.prOut(prOutRelease, t, key, 0); err != nil {
		return fmt.Errorf("persistent reserve out, release %s: %w", t, err)
	}
	return nil
}

// PRPreempt removes the registrations of victim and, when victim holds
// the reservation, takes it over as type t.
func (c *Client) PRPreempt(key, victim uint64, t PRType) error {
	if err := c.prOut(prOutPreempt, t, key, victim); err != nil {
		return fmt.Errorf("persistent reserve out, preempt key 0x%x: %w", victim, err)
	}
	return nil
}

// PRClear removes every registration and the reservation.
func (c *Client) PRClear(key uint64) error {
	if err := c.prOut(prOutClear, PRNone, key, 0); err != nil {
		return fmt.Errorf("persistent reserve out, clear: %w", err)
	}
	return nil
}

// fenceState is the write-exclusive reservation a Client keeps on its LUN
// (SetFenceKey). mu serializes re-takes and is held across their PR
// commands on purpose (the one lock here held across I/O): a command that
// needs the fence waits until it is taken again rather than being sent
// without it. gen counts re-takes so that many commands that met the same
// conflict re-take it once.
type fenceState struct {
	key atomic.Uint64 // the fence: a WRITE EXCLUSIVE reservation held with it
	reg atomic.Uint64 // a registration kept (for access under a registrants-only reservation)
	// lost says why the last re-take failed (nil: not lost).
	lost atomic.Pointer[string]
	// logins is the session count (Client.stats.logins) when the fence or
	// registration was last taken: a new session (the target may have
	// restarted and forgotten it) makes exec take it again first.
	logins atomic.Int64
	mu     sync.Mutex
	gen    uint64
}

// renewAfterLogin takes the fence (or registration) again before the
// first command of a new session: a target that restarted forgets
// persistent reservations (Linux tgt keeps them in memory only), and a
// forgotten fence would never show as a conflict. PR commands skip it.
func (c *Client) renewAfterLogin(op byte) {
	if op == opPRIn || op == opPROut {
		return
	}
	n := c.stats.logins.Load()
	if c.fence.logins.Load() == n {
		return
	}
	c.fence.mu.Lock()
	defer c.fence.mu.Unlock()
	if c.fence.logins.Load() == n {
		return
	}
	key, reg := c.fence.key.Load(), c.fence.reg.Load()
	switch {
	case key != 0:
		if _, err := c.TakeFence(key, false); err != nil {
			c.log.Warn("fence could not be taken again after a new session", "err", err)
			s := err.Error()
			c.fence.lost.Store(&s)
		} else {
			c.fence.lost.Store(nil)
			c.log.Info("fence taken again after a new session")
		}
	case reg != 0:
		if err := c.PRRegister(reg); err != nil {
			c.log.Warn("registration could not be renewed after a new session", "err", err)
		}
	}
	c.fence.logins.Store(n)
}

// FenceLost says why the client could not re-take its fence after a
// RESERVATION CONFLICT ("" while it holds it, as far as it knows).
func (c *Client) FenceLost() string {
	if p := c.fence.lost.Load(); p != nil {
		return *p
	}
	return ""
}

// SetRegistrationKey makes the client keep key registered on its LUN (0:
// none): after a RESERVATION CONFLICT (a target that ties registrations to
// the session) it registers again and sends the command once more. A
// registrant may write under the "registrants only" and "all registrants"
// reservation types that clusters use.
func (c *Client) SetRegistrationKey(key uint64) {
	c.fence.logins.Store(c.stats.logins.Load())
	c.fence.reg.Store(key)
}

// SetFenceKey makes the client keep a WRITE EXCLUSIVE reservation with key
// on its LUN (0: none). A target may tie a reservation to a session rather
// than to the initiator port (Linux tgt does: a new session, even with the
// same ISID, is a new I_T nexus), so after a reconnect our own writes can
// meet RESERVATION CONFLICT from our own reservation. Then the client
// re-takes it (TakeFence without preempting anybody else) and sends the
// command again, once. If another key holds the reservation the conflict
// stands: the fence is lost, and the command fails. After a new session
// (a reconnect: the target may have restarted and forgotten it) the
// first command takes the fence again before it is sent.
func (c *Client) SetFenceKey(key uint64) {
	c.fence.logins.Store(c.stats.logins.Load())
	c.fence.key.Store(key)
}

// FenceKey is the key set by SetFenceKey.
func (c *Client) FenceKey() uint64 { return c.fence.key.Load() }

// refence re-takes our fence after a RESERVATION CONFLICT of a command
// with opcode op; it reports whether the command should be sent again.
func (c *Client) refence(op byte) bool {
	key, reg := c.fence.key.Load(), c.fence.reg.Load()
	if (key == 0 && reg == 0) || op == opPRIn || op == opPROut {
		return false
	}
	gen := func() uint64 {
		c.fence.mu.Lock()
		defer c.fence.mu.Unlock()
		return c.fence.gen
	}()
	c.fence.mu.Lock()
	defer c.fence.mu.Unlock()
	if c.fence.gen != gen {
		return true // another command re-took it meanwhile
	}
	if key == 0 {
		if err := c.PRRegister(reg); err != nil {
			c.log.Warn("registration could not be renewed", "err", err)
			return false
		}
		c.fence.gen++
		c.log.Info("registered again after a reservation conflict")
		return true
	}
	if _, err := c.TakeFence(key, false); err != nil {
		c.log.Warn("fence could not be re-taken", "err", err)
		s := err.Error()
		c.fence.lost.Store(&s)
		return false
	}
	c.fence.lost.Store(nil)
	c.fence.gen++
	c.log.Info("fence re-taken after a reservation conflict on our own I_T nexus")
	return true
}

// ErrFenceHeld says another initiator holds a reservation on the LUN.
var ErrFenceHeld = errors.New("the LUN is reserved by another initiator")

// TakeFence registers key for our I_T nexus and makes it hold a WRITE
// EXCLUSIVE reservation: reserving when there is none, re-taking it when
// it is held with our own key (from an earlier session), and, when another
// key holds one, preempting that key if preempt is set, else failing with
// ErrFenceHeld naming the holder (and unregistering key again unless it
// is the key kept by SetRegistrationKey: nothing changed).
// It returns the status read before it acted. A target without
// persistent reservations fails with an error IsInvalidOpcode matches.
func (c *Client) TakeFence(key uint64, preempt bool) (PRStatus, error) {
	if err := c.PRRegister(key); err != nil {
		return PRStatus{}, err
	}
	st, err := c.ReadPRStatus()
	if err != nil {
		return st, err
	}
	switch {
	case st.Type == PRNone:
		err = c.PRReserve(key, PRWriteExclusive)
	case st.Type == PRWriteExclusive && st.HolderKey == key:
		err = c.PRPreempt(key, key, PRWriteExclusive)
	case preempt:
		// The holder's key (0 for an all-registrants type preempts every
		// other registrant).
		err = c.PRPreempt(key, st.HolderKey, PRWriteExclusive)
	case c.fence.reg.Load() == key: // registered before (SetRegistrationKey): stays so
		return st, fmt.Errorf("%w: %s holds a %s reservation", ErrFenceHeld, st.HolderName(), st.Type)
	default:
		if uerr := c.PRRegister(0); uerr != nil {
			return st, fmt.Errorf("%w: %s holds a %s reservation (and unregistering our key 0x%x failed: %v)",
				ErrFenceHeld, st.HolderName(), st.Type, key, uerr)
		}
		return st, fmt.Errorf("%w: %s holds a %s reservation", ErrFenceHeld, st.HolderName(), st.Type)
	}
	return st, err
}

// ReleaseFence releases our WRITE EXCLUSIVE reservation and, with
// unregister, our registration too; the client stops keeping the fence
// (and, with unregister, the registration).
func (c *Client) ReleaseFence(key uint64, unregister bool) error {
	c.SetFenceKey(0)
	// Hold it on this I_T nexus first: a RELEASE from a nexus that is not
	// the holder is a no-op, and the old one (an earlier session) would
	// keep it.
	if _, err := c.TakeFence(key, false); err != nil && !errors.Is(err, ErrFenceHeld) {
		return err
	} else if err == nil {
		if err := c.PRRelease(key, PRWriteExclusive); err != nil {
			return err
		}
	}
	if !unregister {
		return nil
	}
	c.SetRegistrationKey(0)
	return c.PRRegister(0)
}
