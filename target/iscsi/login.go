package iscsi

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// Login status (RFC 7143 §11.13.5), class<<8 | detail.
const (
	statusSuccess         = 0x0000
	statusInitiatorError  = 0x0200
	statusAuthFailure     = 0x0201
	statusNotAuthorized   = 0x0202 // never sent: a refused initiator gets statusNotFound
	statusNotFound        = 0x0203
	statusUnsupportedVer  = 0x0205
	statusMissingParam    = 0x0207
	statusSessionType     = 0x0209
	statusNoSession       = 0x020a
	statusInvalidInLogin  = 0x020b
	statusTargetError     = 0x0300
	statusServiceUnavail  = 0x0301
	maxLoginData          = 64 << 10 // login text accepted per login phase
	loginStageSecurity    = 0
	loginStageOperational = 1
	loginStageFFP         = 3
)

// loginError ends a login with a status.
type loginError struct {
	status uint16
	err    error
	// why is the class of the refusal reported to Options.OnLogin
	// (LoginEvent.Reason): one of the Refused* constants.
	why string
}

func (e *loginError) Error() string {
	return fmt.Sprintf("login refused (status 0x%04x): %v", e.status, e.err)
}
func (e *loginError) Unwrap() error { return e.err }

func refuse(status uint16, format string, args ...any) *loginError {
	return &loginError{status: status, err: fmt.Errorf(format, args...), why: RefusedProtocol}
}

// because sets the class of a refusal.
func (e *loginError) because(why string) *loginError {
	e.why = why
	return e
}

// loginPhase is the state of one login (RFC 7143 §6).
type loginPhase struct {
	first     bool
	stage     int // current stage (CSG of the last request)
	isid      [6]byte
	tsih      uint16
	itt       uint32
	cid       uint16
	cmdSN     uint32
	auth      Auth
	chap      *chapAuth
	authDone  bool
	authSeen  bool // AuthMethod negotiated
	neg       negotiation
	sentTPGT  bool
	textAccum []byte
}

// login runs the login phase. On success c is in full feature phase with
// its parameters, session and (for normal sessions) nexus set.
func (c *conn) login() error {
	o := c.srv.opts
	c.nc.SetReadDeadline(time.Now().Add(o.LoginTimeout))
	lp := &loginPhase{first: true}
	lp.neg = negotiation{
		p: defaultParams(),
		off: offer{
			MaxRecvDSL:       o.MaxRecvDataSegmentLength,
			MaxBurst:         o.MaxBurstLength,
			FirstBurst:       o.FirstBurstLength,
			MaxOutR2T:        o.MaxOutstandingR2T,
			AllowDigest:      !o.DisableDigests,
			AllowUnsolicited: !o.DisableUnsolicited,
			Time2Wait:        o.DefaultTime2Wait,
			Time2Retain:      o.DefaultTime2Retain,
		},
	}
	lim := pdu.Limits{MaxData: maxLoginData}
	var h header
	for {
		if err := pdu.ReadHeader(c.br, &h, lim); err != nil {
			return fmt.Errorf("login: %w", err)
		}
		if h.Opcode() != pdu.OpLoginReq {
			// RFC 7143 §6: anything else before login completes is a
			// protocol error; the connection is dropped.
			return fmt.Errorf("login: opcode 0x%02x before login completed: %w", h.Opcode(), pdu.ErrPDU)
		}
		n := h.DataLen()
		if uint32(len(lp.textAccum))+n > maxLoginData {
			return fmt.Errorf("login: text over %d bytes: %w", maxLoginData, pdu.ErrPDU)
		}
		data := make([]byte, n)
		if err := pdu.ReadData(c.br, data, false); err != nil {
			return fmt.Errorf("login: data: %w", err)
		}
		done, err := c.loginStep(lp, &h, data)
		if err != nil {
			var le *loginError
			if errors.As(err, &le) {
				c.srv.logins.failures.Add(1)
				ev := c.log.Info()
				if !c.logNamed {
					// Refused before the logger took the names.
					ev = ev.Str("initiator", c.initiator).Str("iqn", c.target)
				}
				ev.Str("status", fmt.Sprintf("0x%04x", le.status)).Err(le.err).Msg("login refused")
				c.sendLoginResp(lp, &h, 0, nil, le.status)
				c.reportLogin(false, le.why+": "+le.err.Error())
			}
			return err
		}
		if done {
			c.nc.SetReadDeadline(time.Time{})
			c.reportLogin(true, "")
			return nil
		}
	}
}

// reportLogin passes a login's outcome to Options.OnLogin.
func (c *conn) reportLogin(ok bool, reason string) {
	if f := c.srv.opts.OnLogin; f != nil {
		f(LoginEvent{Initiator: c.initiator, Address: c.remote, Target: c.target, Discovery: c.discovery, OK: ok, Reason: reason})
	}
}

// loginStep handles one login request; done reports the move to full
// feature phase (the final response has been sent).
func (c *conn) loginStep(lp *loginPhase, h *header, data []byte) (bool, error) {
	flags := h.Flags()
	transit := flags&pdu.FlagFinal != 0
	cont := flags&pdu.FlagContinue != 0
	csg := int(flags>>2) & 3
	nsg := int(flags) & 3
	if lp.first {
		lp.first = false
		copy(lp.isid[:], h.B[8:14])
		lp.tsih = h.U16(14)
		lp.itt = h.ITT()
		lp.cid = h.U16(20)
		lp.cmdSN = h.CmdSN()
		c.wmu.Lock()
		c.w.statSN = h.ExpStatSN()
		c.statNext.Store(c.w.statSN)
		c.wmu.Unlock()
		if h.B[3] > 0 { // VersionMin
			return false, refuse(statusUnsupportedVer, "version min %d", h.B[3])
		}
		lp.stage = csg
	} else {
		if copyISID(h) != lp.isid || h.U16(14) != lp.tsih {
			return false, refuse(statusInitiatorError, "ISID/TSIH changed during login")
		}
		lp.itt = h.ITT()
		lp.cmdSN = h.CmdSN()
	}
	if cont {
		if transit {
			return false, refuse(statusInitiatorError, "C and T both set")
		}
		lp.textAccum = append(lp.textAccum, data...)
		return false, c.sendLoginResp(lp, h, flagsFor(csg, 0, false), nil, statusSuccess)
	}
	if len(lp.textAccum) > 0 {
		data = append(lp.textAccum, data...)
		lp.textAccum = nil
	}
	keys, err := pdu.ParseText(data)
	if err != nil {
		return false, refuse(statusInitiatorError, "login text: %v", err)
	}
	if csg != loginStageSecurity && csg != loginStageOperational {
		return false, refuse(statusInitiatorError, "CSG %d", csg)
	}
	if csg < lp.stage {
		return false, refuse(statusInitiatorError, "CSG went back from %d to %d", lp.stage, csg)
	}
	if transit && (nsg <= csg || nsg == 2) {
		return false, refuse(statusInitiatorError, "transit from stage %d to %d", csg, nsg)
	}
	lp.stage = csg

	var resp []kv
	if c.initiator == "" {
		r, err := c.loginLeading(lp, keys)
		if err != nil {
			return false, err
		}
		resp = append(resp, r...)
	}
	if !c.discovery && !lp.sentTPGT {
		lp.sentTPGT = true
		resp = append(resp, kv{Key: "TargetPortalGroupTag", Value: strconv.Itoa(int(c.srv.opts.TPGT))})
	}

	if csg == loginStageSecurity {
		r, err := c.loginSecurity(lp, keys)
		if err != nil {
			return false, err
		}
		resp = append(resp, r...)
		if transit && !lp.authDone && lp.chap == nil {
			return false, refuse(statusAuthFailure, "security stage left without authentication").because(RefusedCHAP)
		}
	} else if !lp.authDone {
		if lp.auth.CHAP != nil {
			return false, refuse(statusAuthFailure, "operational stage without CHAP").because(RefusedCHAP)
		}
		lp.authDone = true
	}
	if csg == loginStageOperational || hasOperational(keys) {
		r, err := lp.neg.operational(keys, c.discovery)
		if err != nil {
			return false, refuse(statusInitiatorError, "%v", err)
		}
		if csg != loginStageOperational {
			// our declaration goes out in the operational stage
			r = dropKey(r, "MaxRecvDataSegmentLength")
			lp.neg.declaredMRDSL = false
		}
		resp = append(resp, r...)
	}

	// Transit only when the initiator asks and security is complete.
	tOK := transit && lp.authDone
	if tOK && nsg == loginStageFFP {
		if err := c.enterFFP(lp); err != nil {
			return false, err
		}
		if err := c.sendLoginResp(lp, h, flagsFor(csg, nsg, true), resp, statusSuccess); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, c.sendLoginResp(lp, h, flagsFor(csg, nsg, tOK), resp, statusSuccess)
}

func copyISID(h *header) [6]byte { return [6]byte(h.B[8:14]) }

func flagsFor(csg, nsg int, transit bool) byte {
	f := byte(csg << 2)
	if transit {
		f |= pdu.FlagFinal | byte(nsg)
	}
	return f
}

func hasOperational(keys []kv) bool {
	for _, k := range keys {
		if !securityKeys[k.Key] && !leadingKeys[k.Key] {
			return true
		}
	}
	return false
}

func dropKey(pairs []kv, key string) []kv {
	out := pairs[:0]
	for _, p := range pairs {
		if p.Key != key {
			out = append(out, p)
		}
	}
	return out
}

// loginLeading handles the keys of the first login request: who is
// logging in to what, and how it must authenticate.
func (c *conn) loginLeading(lp *loginPhase, keys []kv) ([]kv, error) {
	name, ok := pdu.Lookup(keys, "InitiatorName")
	if !ok || name == "" {
		return nil, refuse(statusMissingParam, "no InitiatorName")
	}
	c.initiator = name
	c.isid = lp.isid
	st, _ := pdu.Lookup(keys, "SessionType")
	switch st {
	case "", "Normal":
		tn, ok := pdu.Lookup(keys, "TargetName")
		if !ok || tn == "" {
			return nil, refuse(statusMissingParam, "no TargetName")
		}
		c.target = tn
		auth, err := c.srv.opts.Backend.Login(tn, name)
		switch {
		case errors.Is(err, ErrTargetNotFound):
			return nil, refuse(statusNotFound, "target %s: %v", tn, err).because(RefusedUnknownTarget)
		case errors.Is(err, ErrNotAuthorized):
			// The same answer as an unknown target: an initiator the ACL
			// refuses cannot tell which IQNs exist (docs/design.md).
			return nil, refuse(statusNotFound, "initiator %s to %s: %v", name, tn, err).because(RefusedACL)
		case err != nil:
			return nil, refuse(statusTargetError, "target %s: %v", tn, err).because(RefusedTargetError)
		}
		if !c.onPortal(tn) {
			// Not served on this portal: the same answer as an unknown
			// target.
			return nil, refuse(statusNotFound, "target %s is not served on portal %s", tn, c.portal)
		}
		lp.auth = auth
	case "Discovery":
		c.discovery = true
		lp.auth = c.srv.opts.Backend.DiscoveryAuth(name)
	default:
		return nil, refuse(statusSessionType, "SessionType=%.32s", st)
	}
	c.log = c.log.With().Str("initiator", name).Str("iqn", c.target).Logger()
	c.logNamed = true
	if lp.tsih != 0 && c.srv.lookupTSIH(lp.tsih) == nil {
		return nil, refuse(statusNoSession, "TSIH %d unknown", lp.tsih)
	}
	return nil, nil
}

// loginSecurity runs the security negotiation stage (AuthMethod, CHAP).
func (c *conn) loginSecurity(lp *loginPhase, keys []kv) ([]kv, error) {
	var resp []kv
	if m, ok := pdu.Lookup(keys, "AuthMethod"); ok && !lp.authSeen {
		lp.authSeen = true
		want := "None"
		if lp.auth.CHAP != nil {
			want = "CHAP"
		}
		found := false
		for _, x := range splitList(m) {
			if x == want {
				found = true
			}
		}
		if !found {
			return nil, refuse(statusAuthFailure, "AuthMethod=%.64s does not offer %s", m, want).because(RefusedCHAP)
		}
		if want == "CHAP" {
			if locked, until := c.srv.authLimit.locked(c.remote, c.initiator, credKey(c.target, lp.auth.CHAP.User)); locked {
				return nil, refuse(statusAuthFailure, "too many failed CHAP logins from %s, as %s or to this target's CHAP user: refused until %s",
					c.remote, c.initiator, until.Format(time.RFC3339)).because(RefusedRateLimited)
			}
		}
		resp = append(resp, kv{Key: "AuthMethod", Value: want})
		if want == "None" {
			lp.authDone = true
		} else {
			lp.chap = &chapAuth{cred: *lp.auth.CHAP, state: chapWaitAlg}
		}
	}
	if lp.chap != nil && lp.chap.state != chapDone {
		r, err := lp.chap.step(keys)
		if err != nil {
			c.srv.authLimit.failed(c.remote, c.initiator, credKey(c.target, lp.chap.cred.User))
			return nil, &loginError{status: statusAuthFailure, err: err, why: RefusedCHAP}
		}
		resp = append(resp, r...)
		if lp.chap.state == chapDone {
			c.srv.authLimit.succeeded(c.remote, c.initiator)
			lp.authDone = true
		}
	}
	if !lp.authSeen && lp.auth.CHAP == nil {
		// The initiator may skip AuthMethod when it wants None.
		lp.authDone = true
	}
	return resp, nil
}

func splitList(v string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(v); i++ {
		if i == len(v) || v[i] == ',' {
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return out
}

// enterFFP registers the session (reinstating an old one), opens the nexus
// and fixes the connection's parameters.
func (c *conn) enterFFP(lp *loginPhase) error {
	key := sessionKey{initiator: c.initiator, isid: lp.isid, target: c.target}
	ss, old, err := c.srv.register(key, lp.tsih, c)
	switch {
	case errors.Is(err, errNoSession):
		return refuse(statusNoSession, "TSIH %d unknown for this initiator", lp.tsih)
	case errors.Is(err, errShuttingDown):
		return refuse(statusServiceUnavail, "%v", err)
	case err != nil:
		return refuse(statusTargetError, "%v", err)
	}
	c.sess = ss
	c.log = c.log.With().Uint16("tsih", ss.tsih).Logger()
	if old != nil && old != c {
		c.log.Info().Msg("reinstating session: closing the old connection")
		old.closeNow()
		t := time.NewTimer(c.srv.opts.LoginTimeout)
		defer t.Stop()
		select {
		case <-old.done:
		case <-t.C:
			return refuse(statusTargetError, "old session did not close")
		}
	}
	if !c.discovery {
		nx, err := c.srv.opts.Backend.OpenNexus(NexusInfo{
			Target: c.target, Initiator: c.initiator, ISID: lp.isid,
			TSIH: ss.tsih, TPGT: c.srv.opts.TPGT,
		})
		if err != nil {
			return refuse(statusTargetError, "open nexus: %v", err)
		}
		c.nexus = nx
		ss.nexus = nx
	}
	c.p = lp.neg.p
	if !lp.neg.declaredMRDSL {
		c.p.MaxRecvDSL = 8192
	}
	c.lim = pdu.Limits{HeaderDigest: c.p.HeaderDigest, DataDigest: c.p.DataDigest, MaxData: c.p.MaxRecvDSL}
	lp.tsih = ss.tsih
	c.mu.Lock()
	c.mu.expCmdSN = lp.cmdSN
	c.mu.maxCmdSN = lp.cmdSN - 1
	c.windowLocked()
	c.mu.Unlock()
	c.lastRecv.Store(time.Now().UnixNano())
	c.log.Info().Bool("discovery", c.discovery).
		Uint32("max_xmit", c.p.MaxXmitDSL).Uint32("max_recv", c.p.MaxRecvDSL).
		Uint32("max_burst", c.p.MaxBurst).Uint32("first_burst", c.p.FirstBurst).
		Bool("initial_r2t", c.p.InitialR2T).Bool("immediate_data", c.p.ImmediateData).
		Bool("header_digest", c.p.HeaderDigest).Bool("data_digest", c.p.DataDigest).
		Msg("session logged in")
	return nil
}

// sendLoginResp writes one login response. Login responses are written
// before digests apply (digests start after the final login response).
func (c *conn) sendLoginResp(lp *loginPhase, req *header, flags byte, keys []kv, status uint16) error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpLoginResp
	if status == statusSuccess {
		b[1] = flags
	} else {
		b[1] = byte(int(req.Flags()>>2)&3) << 2
	}
	copy(b[8:14], req.B[8:14])
	if status == statusSuccess && flags&pdu.FlagFinal != 0 && flags&3 == loginStageFFP {
		pdu.Put16(b[14:], lp.tsih)
	} else {
		pdu.Put16(b[14:], req.U16(14))
	}
	pdu.Put32(b[16:], req.ITT())
	c.wmu.Lock()
	pdu.Put32(b[24:], c.w.statSN)
	c.w.statSN++
	c.statNext.Store(c.w.statSN)
	c.wmu.Unlock()
	pdu.Put32(b[28:], req.CmdSN())
	pdu.Put32(b[32:], req.CmdSN()+uint32(c.srv.opts.QueueDepth)-1)
	b[36] = byte(status >> 8)
	b[37] = byte(status)
	var data []byte
	if status == statusSuccess {
		data = pdu.EncodeText(keys)
	}
	saved := c.lim
	c.lim = pdu.Limits{}
	err := c.send(outPDU{hdr: b, data: data, stat: statNone})
	c.lim = saved
	return err
}

// portalFor renders the address a discovery answer advertises when the
// backend gives none: the local address this connection came in on.
// onPortal reports whether target may be reached on the portal c came in
// on (always, unless the Backend is a PortalFilter that says no).
func (c *conn) onPortal(target string) bool {
	pf, ok := c.srv.opts.Backend.(PortalFilter)
	return !ok || pf.OnPortal(target, c.portal)
}

func (c *conn) portalFor() string {
	a := c.nc.LocalAddr().String()
	if ta, ok := c.nc.LocalAddr().(*net.TCPAddr); ok {
		a = net.JoinHostPort(ta.IP.String(), strconv.Itoa(ta.Port))
	}
	return a + "," + strconv.Itoa(int(c.srv.opts.TPGT))
}
