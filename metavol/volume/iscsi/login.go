package iscsi

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// Login errors, matched with errors.Is.
var (
	// ErrAuth: the target refused our credentials (login status 0x0201),
	// or it failed to prove itself in mutual CHAP.
	ErrAuth = errors.New("iscsi authentication failed")
	// ErrLoginRefused: any other login refusal (not found, not allowed...).
	ErrLoginRefused = errors.New("iscsi login refused")
	// ErrNegotiation: the target's answer broke a rule we rely on.
	ErrNegotiation = errors.New("iscsi negotiation failed")
)

// Params are the operational values of a session after login.
type Params struct {
	HeaderDigest, DataDigest bool
	// TargetMRDSL is the largest data segment we may send (the target's
	// declared MaxRecvDataSegmentLength); OurMRDSL what we accept.
	TargetMRDSL, OurMRDSL uint32
	MaxBurst, FirstBurst  uint32
	InitialR2T            bool
	ImmediateData         bool
	MaxOutR2T             uint32
	TSIH                  uint16
}

// loggedIn is a connection in the full feature phase, before its reader
// and writer start.
type loggedIn struct {
	nc                         net.Conn
	sock                       *pdu.Sock // br reads through it; the connection's writes use it
	br                         *bufio.Reader
	p                          Params
	cmdSN, maxCmdSN, expStatSN uint32
}

// loginStatusError is a login refusal with its status class and detail.
type loginStatusError struct {
	class, detail byte
}

func (e *loginStatusError) Error() string {
	return fmt.Sprintf("login status 0x%02x%02x (%s)", e.class, e.detail, loginStatusText(e.class, e.detail))
}

func (e *loginStatusError) Unwrap() error {
	if e.class == 2 && e.detail == 1 {
		return ErrAuth
	}
	return ErrLoginRefused
}

func loginStatusText(class, detail byte) string {
	switch uint16(class)<<8 | uint16(detail) {
	case 0x0101, 0x0102:
		return "target moved"
	case 0x0200:
		return "initiator error"
	case 0x0201:
		return "authentication failure"
	case 0x0202:
		return "authorization failure"
	case 0x0203:
		return "target not found"
	case 0x0204:
		return "target removed"
	case 0x0300:
		return "target error"
	case 0x0301:
		return "service unavailable"
	case 0x0302:
		return "out of resources"
	}
	return "refused"
}

// loginConn runs one login exchange on a fresh connection. discovery
// selects SessionType=Discovery (no TargetName).
type loginConn struct {
	cfg       Config
	isid      [6]byte
	discovery bool
	nc        net.Conn
	sock      *pdu.Sock
	br        *bufio.Reader
	itt       uint32
	cmdSN     uint32
	expStatSN uint32
	gotStat   bool
	tsih      uint16
	maxCmdSN  uint32
	// mutual CHAP: the challenge we sent
	mutualID        byte
	mutualChallenge []byte
}

// dialLogin connects to cfg.Portal and logs in. It gives up at ctx's end.
func dialLogin(ctx context.Context, cfg Config, isid [6]byte, discovery bool) (*loggedIn, error) {
	d := net.Dialer{Timeout: cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", cfg.Portal)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", cfg.Portal, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	deadline := time.Now().Add(cfg.LoginTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	sock := pdu.NewSock(nc)
	l := &loginConn{cfg: cfg, isid: isid, discovery: discovery, nc: nc, sock: sock, br: bufio.NewReaderSize(sock, 64<<10), itt: 1}
	out, err := l.run()
	stop()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("login to %s at %s: %w", cfg.Target, cfg.Portal, err)
	}
	nc.SetDeadline(time.Time{})
	return out, nil
}

func (l *loginConn) run() (*loggedIn, error) {
	lead := []pdu.KV{{Key: "InitiatorName", Value: l.cfg.Initiator}}
	if l.discovery {
		lead = append(lead, pdu.KV{Key: "SessionType", Value: "Discovery"})
	} else {
		lead = append(lead, pdu.KV{Key: "SessionType", Value: "Normal"}, pdu.KV{Key: "TargetName", Value: l.cfg.Target})
	}
	if err := l.security(lead); err != nil {
		return nil, err
	}
	p, err := l.operational()
	if err != nil {
		return nil, err
	}
	p.TSIH = l.tsih
	return &loggedIn{nc: l.nc, sock: l.sock, br: l.br, p: p, cmdSN: l.cmdSN, maxCmdSN: l.maxCmdSN, expStatSN: l.expStatSN}, nil
}

// exchange sends one login request and returns the (reassembled) answer.
func (l *loginConn) exchange(csg, nsg byte, transit bool, keys []pdu.KV) (flags byte, resp []pdu.KV, err error) {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpLoginReq | pdu.FlagImmed
	b[1] = csg<<2 | nsg
	if transit {
		b[1] |= pdu.FlagFinal
	}
	copy(b[8:14], l.isid[:])
	pdu.Put16(b[14:], l.tsih)
	pdu.Put32(b[16:], l.itt)
	pdu.Put32(b[24:], l.cmdSN)
	pdu.Put32(b[28:], l.expStatSN)
	data := pdu.EncodeText(keys)
	var all []byte
	for {
		if err := writePDU(l.nc, &b, data, false, false); err != nil {
			return 0, nil, err
		}
		var h pdu.Header
		if err := pdu.ReadHeader(l.br, &h, pdu.Limits{MaxData: 65536}); err != nil {
			return 0, nil, err
		}
		seg := make([]byte, h.DataLen())
		if err := pdu.ReadData(l.br, seg, false); err != nil {
			return 0, nil, err
		}
		if h.Opcode() != pdu.OpLoginResp {
			return 0, nil, fmt.Errorf("opcode 0x%02x during login: %w", h.Opcode(), ErrNegotiation)
		}
		if class, detail := h.B[36], h.B[37]; class != 0 {
			return 0, nil, &loginStatusError{class: class, detail: detail}
		}
		if h.ITT() != l.itt {
			return 0, nil, fmt.Errorf("login answer for ITT %#x, sent %#x: %w", h.ITT(), l.itt, ErrNegotiation)
		}
		l.tsih = h.U16(14)
		l.expStatSN = h.StatSN() + 1
		l.gotStat = true
		l.cmdSN = h.ExpCmdSN()
		l.maxCmdSN = h.MaxCmdSN()
		all = append(all, seg...)
		if len(all) > 1<<20 {
			return 0, nil, fmt.Errorf("login text over 1 MiB: %w", ErrNegotiation)
		}
		if h.Flags()&pdu.FlagContinue == 0 {
			kvs, err := pdu.ParseText(all)
			if err != nil {
				return 0, nil, err
			}
			return h.Flags(), kvs, nil
		}
		// more text follows: ask for it with an empty request
		data = nil
		b[1] &^= pdu.FlagFinal
	}
}

func respTransit(flags byte, nsg byte) bool {
	return flags&pdu.FlagFinal != 0 && flags&0x03 == nsg
}

// security runs the security negotiation stage (CSG 0): AuthMethod None or
// CHAP (one-way or mutual).
func (l *loginConn) security(lead []pdu.KV) error {
	method := "None"
	if l.cfg.CHAPUser != "" {
		method = "CHAP"
	}
	keys := append(lead, pdu.KV{Key: "AuthMethod", Value: method})
	flags, resp, err := l.exchange(0, 1, method == "None", keys)
	if err != nil {
		return err
	}
	chosen, _ := pdu.Lookup(resp, "AuthMethod")
	if method == "None" {
		if chosen != "" && chosen != "None" {
			return fmt.Errorf("target wants AuthMethod=%.20s, no CHAP credentials configured: %w", chosen, ErrAuth)
		}
		for !respTransit(flags, 1) {
			if flags, _, err = l.exchange(0, 1, true, nil); err != nil {
				return err
			}
		}
		return nil
	}
	if chosen != "CHAP" {
		return fmt.Errorf("target chose AuthMethod=%.20q, CHAP required: %w", chosen, ErrAuth)
	}
	_, resp, err = l.exchange(0, 1, false, []pdu.KV{{Key: "CHAP_A", Value: pdu.CHAPMD5}})
	if err != nil {
		return err
	}
	if a, _ := pdu.Lookup(resp, "CHAP_A"); a != pdu.CHAPMD5 {
		return fmt.Errorf("target chose CHAP_A=%.20q, only MD5 (5) is supported: %w", a, ErrNegotiation)
	}
	idStr, _ := pdu.Lookup(resp, "CHAP_I")
	id, err := strconv.ParseUint(idStr, 0, 8)
	if err != nil {
		return fmt.Errorf("target CHAP_I=%.20q: %w", idStr, ErrNegotiation)
	}
	cStr, _ := pdu.Lookup(resp, "CHAP_C")
	challenge, err := pdu.DecodeCHAPBinary(cStr)
	if err != nil {
		return fmt.Errorf("target CHAP_C: %w", err)
	}
	r := pdu.CHAPResponse(byte(id), l.cfg.CHAPSecret, challenge)
	keys = []pdu.KV{{Key: "CHAP_N", Value: l.cfg.CHAPUser}, {Key: "CHAP_R", Value: pdu.EncodeHex(r[:])}}
	mutual := l.cfg.MutualUser != ""
	if mutual {
		var rnd [17]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return err
		}
		l.mutualID = rnd[0]
		l.mutualChallenge = rnd[1:]
		keys = append(keys, pdu.KV{Key: "CHAP_I", Value: strconv.Itoa(int(l.mutualID))},
			pdu.KV{Key: "CHAP_C", Value: pdu.EncodeHex(l.mutualChallenge)})
	}
	flags, resp, err = l.exchange(0, 1, true, keys)
	if err != nil {
		return err
	}
	if mutual {
		n, _ := pdu.Lookup(resp, "CHAP_N")
		rv, _ := pdu.Lookup(resp, "CHAP_R")
		got, err := pdu.DecodeCHAPBinary(rv)
		if err != nil {
			return fmt.Errorf("target's mutual CHAP_R: %w: %w", err, ErrAuth)
		}
		want := pdu.CHAPResponse(l.mutualID, l.cfg.MutualSecret, l.mutualChallenge)
		if n != l.cfg.MutualUser || subtle.ConstantTimeCompare(got, want[:]) != 1 {
			return fmt.Errorf("target failed mutual CHAP (CHAP_N=%.64q): %w", n, ErrAuth)
		}
	}
	for !respTransit(flags, 1) {
		if flags, _, err = l.exchange(0, 1, true, nil); err != nil {
			return err
		}
	}
	return nil
}

// operational runs the operational negotiation stage (CSG 1 -> FFP) and
// computes the session's Params from the target's answers.
func (l *loginConn) operational() (Params, error) {
	c := l.cfg
	digest := func(on bool) string {
		if on {
			return "CRC32C,None"
		}
		return "None"
	}
	yn := func(b bool) string {
		if b {
			return "Yes"
		}
		return "No"
	}
	var keys []pdu.KV
	if l.discovery {
		keys = []pdu.KV{
			{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
			{Key: "MaxRecvDataSegmentLength", Value: strconv.FormatUint(uint64(c.MaxRecvDataSegmentLength), 10)},
		}
	} else {
		keys = []pdu.KV{
			{Key: "HeaderDigest", Value: digest(c.HeaderDigest)},
			{Key: "DataDigest", Value: digest(c.DataDigest)},
			{Key: "MaxRecvDataSegmentLength", Value: strconv.FormatUint(uint64(c.MaxRecvDataSegmentLength), 10)},
			{Key: "MaxBurstLength", Value: strconv.FormatUint(uint64(c.MaxBurstLength), 10)},
			{Key: "FirstBurstLength", Value: strconv.FormatUint(uint64(c.FirstBurstLength), 10)},
			{Key: "InitialR2T", Value: yn(c.InitialR2T)},
			{Key: "ImmediateData", Value: yn(!c.NoImmediateData)},
			{Key: "MaxOutstandingR2T", Value: "1"},
			{Key: "MaxConnections", Value: "1"},
			{Key: "ErrorRecoveryLevel", Value: "0"},
			{Key: "DefaultTime2Wait", Value: "2"},
			{Key: "DefaultTime2Retain", Value: "0"},
			{Key: "DataPDUInOrder", Value: "Yes"},
			{Key: "DataSequenceInOrder", Value: "Yes"},
			{Key: "IFMarker", Value: "No"},
			{Key: "OFMarker", Value: "No"},
		}
	}
	// RFC 7143 defaults for keys the target does not answer.
	p := Params{TargetMRDSL: 8192, OurMRDSL: c.MaxRecvDataSegmentLength, MaxBurst: 262144, FirstBurst: 65536,
		InitialR2T: true, ImmediateData: true, MaxOutR2T: 1}
	answered := map[string]string{}
	offered := map[string]bool{}
	for _, k := range keys {
		offered[k.Key] = true
	}
	send := keys
	for range 8 {
		flags, resp, err := l.exchange(1, 3, true, send)
		if err != nil {
			return p, err
		}
		send = nil
		for _, kv := range resp {
			if offered[kv.Key] || kv.Key == "MaxRecvDataSegmentLength" || kv.Key == "TargetAlias" ||
				kv.Key == "TargetPortalGroupTag" || kv.Key == "TargetAddress" {
				answered[kv.Key] = kv.Value
				continue
			}
			// A key the target offers first: accept its value when it is a
			// plain one, refuse what we do not know.
			v := kv.Value
			if strings.HasPrefix(kv.Key, "X-") || strings.HasPrefix(kv.Key, "X#") {
				v = "NotUnderstood"
			}
			send = append(send, pdu.KV{Key: kv.Key, Value: v})
			offered[kv.Key] = true
			answered[kv.Key] = kv.Value
		}
		if respTransit(flags, 3) && len(send) == 0 {
			return l.params(p, answered)
		}
	}
	return p, fmt.Errorf("operational negotiation did not finish in 8 exchanges: %w", ErrNegotiation)
}

func (l *loginConn) params(p Params, a map[string]string) (Params, error) {
	c := l.cfg
	num := func(k string, dst *uint32, lo, hi uint32) error {
		v, ok := a[k]
		if !ok {
			return nil
		}
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil || uint32(n) < lo || uint32(n) > hi {
			return fmt.Errorf("%s=%.20q: %w", k, v, ErrNegotiation)
		}
		*dst = uint32(n)
		return nil
	}
	boolean := func(k string, dst *bool) error {
		v, ok := a[k]
		if !ok {
			return nil
		}
		switch v {
		case "Yes":
			*dst = true
		case "No":
			*dst = false
		default:
			return fmt.Errorf("%s=%.20q: %w", k, v, ErrNegotiation)
		}
		return nil
	}
	for _, err := range []error{
		num("MaxRecvDataSegmentLength", &p.TargetMRDSL, 512, 1<<24-1),
		num("MaxBurstLength", &p.MaxBurst, 512, c.MaxBurstLength),
		num("FirstBurstLength", &p.FirstBurst, 512, c.FirstBurstLength),
		num("MaxOutstandingR2T", &p.MaxOutR2T, 1, 1),
		boolean("InitialR2T", &p.InitialR2T),
		boolean("ImmediateData", &p.ImmediateData),
	} {
		if err != nil {
			return p, err
		}
	}
	if l.discovery {
		return p, nil
	}
	if c.InitialR2T && !p.InitialR2T {
		return p, fmt.Errorf("InitialR2T=No, Yes was offered: %w", ErrNegotiation)
	}
	if c.NoImmediateData && p.ImmediateData {
		return p, fmt.Errorf("ImmediateData=Yes, No was offered: %w", ErrNegotiation)
	}
	if _, ok := a["ImmediateData"]; !ok {
		p.ImmediateData = false // unanswered: be conservative
	}
	if p.FirstBurst > p.MaxBurst {
		return p, fmt.Errorf("FirstBurstLength %d over MaxBurstLength %d: %w", p.FirstBurst, p.MaxBurst, ErrNegotiation)
	}
	for _, d := range []struct {
		key  string
		want bool
		dst  *bool
	}{{"HeaderDigest", c.HeaderDigest, &p.HeaderDigest}, {"DataDigest", c.DataDigest, &p.DataDigest}} {
		switch a[d.key] {
		case "CRC32C":
			if !d.want {
				return p, fmt.Errorf("%s=CRC32C, None was offered: %w", d.key, ErrNegotiation)
			}
			*d.dst = true
		case "None", "":
			if d.want && c.RequireDigests {
				return p, fmt.Errorf("%s=None, CRC32C is required: %w", d.key, ErrNegotiation)
			}
		default:
			return p, fmt.Errorf("%s=%.20q: %w", d.key, a[d.key], ErrNegotiation)
		}
	}
	return p, nil
}

// writePDU writes one PDU (BHS, header digest, data, padding, data digest)
// with one write. Used during login only; the full feature phase goes
// through the connection's writer.
func writePDU(nc net.Conn, b *[pdu.BHSLen]byte, data []byte, hd, dd bool) error {
	bufs := encodePDU(b, data, hd, dd)
	_, err := bufs.WriteTo(nc)
	return err
}

// encodePDU renders a PDU as buffers for one writev: the header (with its
// digest), the data (not copied) and the padding (with the data digest).
func encodePDU(b *[pdu.BHSLen]byte, data []byte, hd, dd bool) net.Buffers {
	pdu.SetDataLen(b, uint32(len(data)))
	head := make([]byte, pdu.BHSLen, pdu.BHSLen+pdu.DigestLen)
	copy(head, b[:])
	if hd {
		head = appendLE32(head, pdu.CRC32C(head))
	}
	if len(data) == 0 {
		return net.Buffers{head}
	}
	pad := pdu.PadLen(uint32(len(data)))
	tail := make([]byte, pad, pad+pdu.DigestLen)
	if dd {
		tail = appendLE32(tail, pdu.CRC32CUpdate(pdu.CRC32C(data), tail[:pad]))
	}
	if len(tail) == 0 {
		return net.Buffers{head, data}
	}
	return net.Buffers{head, data, tail}
}

func appendLE32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}
