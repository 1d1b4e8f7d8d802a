package iscsi

import (
	"errors"
	"strconv"
	"strings"
)

// params are the operational parameters of one connection/session after
// login (RFC 7143 §13). Defaults are the RFC defaults.
type params struct {
	HeaderDigest bool
	DataDigest   bool
	// MaxRecvDSL is what this target accepts in one data segment (declared
	// by the target); MaxXmitDSL is what the initiator accepts (its
	// declared MaxRecvDataSegmentLength): Data-In segments never exceed it.
	MaxRecvDSL     uint32
	MaxXmitDSL     uint32
	MaxBurst       uint32
	FirstBurst     uint32
	InitialR2T     bool
	ImmediateData  bool
	MaxOutR2T      uint32
	DataPDUInOrder bool
	DataSeqInOrder bool
	Time2Wait      uint32
	Time2Retain    uint32
	ERL            uint32
	MaxConnections uint32
}

func defaultParams() params {
	return params{
		MaxRecvDSL:     8192,
		MaxXmitDSL:     8192,
		MaxBurst:       262144,
		FirstBurst:     65536,
		InitialR2T:     true,
		ImmediateData:  true,
		MaxOutR2T:      1,
		DataPDUInOrder: true,
		DataSeqInOrder: true,
		Time2Wait:      2,
		Time2Retain:    20,
		ERL:            0,
		MaxConnections: 1,
	}
}

// offer is what this target is willing to accept; negotiation never goes
// beyond it.
type offer struct {
	MaxRecvDSL uint32 // declared to the initiator
	MaxBurst   uint32
	FirstBurst uint32
	MaxOutR2T  uint32
	// digests the target accepts (None is always accepted)
	AllowDigest bool
	// InitialR2T=No and ImmediateData=Yes are offered when true.
	AllowUnsolicited bool
	Time2Wait        uint32
	Time2Retain      uint32
}

// negotiation carries per-login negotiation state.
type negotiation struct {
	p             params
	off           offer
	declaredMRDSL bool // our MaxRecvDataSegmentLength has been sent
}

// errNegotiation reports a key whose value is unacceptable in a way that
// must fail the login (RFC 7143 §6.2: 0x0207 / 0x0200).
var errNegotiation = errors.New("negotiation failed")

// keys handled by the login state machine, not by operational negotiation.
var securityKeys = map[string]bool{
	"AuthMethod": true, "CHAP_A": true, "CHAP_I": true, "CHAP_C": true,
	"CHAP_N": true, "CHAP_R": true,
}

// loginOnlyKeys are declarative keys of the first login PDU.
var leadingKeys = map[string]bool{
	"InitiatorName": true, "TargetName": true, "SessionType": true,
	"InitiatorAlias": true, "TargetAlias": true, "TargetAddress": true,
	"TargetPortalGroupTag": true,
}

func parseNum(v string, lo, hi uint64) (uint32, bool) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < lo || n > hi {
		// RFC allows hex (0x) numbers too.
		if strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X") {
			n, err = strconv.ParseUint(v[2:], 16, 32)
			if err == nil && n >= lo && n <= hi {
				return uint32(n), true
			}
		}
		return 0, false
	}
	return uint32(n), true
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func parseBool(v string) (bool, bool) {
	switch v {
	case "Yes":
		return true, true
	case "No":
		return false, true
	}
	return false, false
}

// operational negotiates the operational keys in req (RFC 7143 §13) and
// returns the response pairs. Security and leading keys are skipped (the
// caller handles them). Unknown keys answer NotUnderstood; bad values answer
// Reject. discovery restricts the keys that make sense.
func (n *negotiation) operational(req []kv, discovery bool) ([]kv, error) {
	var resp []kv
	add := func(k, v string) { resp = append(resp, kv{Key: k, Value: v}) }
	for _, p := range req {
		k, v := p.Key, p.Value
		if securityKeys[k] || leadingKeys[k] {
			continue
		}
		switch k {
		case "HeaderDigest", "DataDigest":
			choice := ""
			for _, c := range strings.Split(v, ",") {
				if c == "None" || (c == "CRC32C" && n.off.AllowDigest) {
					choice = c
					break
				}
			}
			if choice == "" {
				add(k, "Reject")
				continue
			}
			if k == "HeaderDigest" {
				n.p.HeaderDigest = choice == "CRC32C"
			} else {
				n.p.DataDigest = choice == "CRC32C"
			}
			add(k, choice)
		case "MaxRecvDataSegmentLength":
			x, ok := parseNum(v, 512, 1<<24-1)
			if !ok {
				// Declarative: an invalid value leaves the default
				// (8192); the key is still answered once, below.
				continue
			}
			n.p.MaxXmitDSL = x
			// declarative: ours goes out below.
		case "MaxBurstLength", "FirstBurstLength":
			x, ok := parseNum(v, 512, 1<<24-1)
			if !ok {
				add(k, "Reject")
				continue
			}
			if discovery {
				add(k, "Irrelevant")
				continue
			}
			lim := n.off.MaxBurst
			if k == "FirstBurstLength" {
				lim = n.off.FirstBurst
			}
			x = min(x, lim)
			if k == "MaxBurstLength" {
				n.p.MaxBurst = x
			} else {
				n.p.FirstBurst = x
			}
			add(k, strconv.FormatUint(uint64(x), 10))
		case "InitialR2T", "ImmediateData", "DataPDUInOrder", "DataSequenceInOrder":
			b, ok := parseBool(v)
			if !ok {
				add(k, "Reject")
				continue
			}
			if discovery {
				add(k, "Irrelevant")
				continue
			}
			switch k {
			case "InitialR2T": // OR
				b = b || !n.off.AllowUnsolicited
				n.p.InitialR2T = b
			case "ImmediateData": // AND
				b = b && n.off.AllowUnsolicited
				n.p.ImmediateData = b
			case "DataPDUInOrder": // OR: this target always wants order
				b = true
				n.p.DataPDUInOrder = b
			case "DataSequenceInOrder":
				b = true
				n.p.DataSeqInOrder = b
			}
			add(k, yesNo(b))
		case "MaxOutstandingR2T":
			x, ok := parseNum(v, 1, 65535)
			if !ok {
				add(k, "Reject")
				continue
			}
			if discovery {
				add(k, "Irrelevant")
				continue
			}
			x = min(x, n.off.MaxOutR2T)
			n.p.MaxOutR2T = x
			add(k, strconv.FormatUint(uint64(x), 10))
		case "DefaultTime2Wait":
			x, ok := parseNum(v, 0, 3600)
			if !ok {
				add(k, "Reject")
				continue
			}
			x = max(x, n.off.Time2Wait)
			n.p.Time2Wait = x
			add(k, strconv.FormatUint(uint64(x), 10))
		case "DefaultTime2Retain":
			x, ok := parseNum(v, 0, 3600)
			if !ok {
				add(k, "Reject")
				continue
			}
			x = min(x, n.off.Time2Retain)
			n.p.Time2Retain = x
			add(k, strconv.FormatUint(uint64(x), 10))
		case "ErrorRecoveryLevel":
			if _, ok := parseNum(v, 0, 2); !ok {
				add(k, "Reject")
				continue
			}
			n.p.ERL = 0
			add(k, "0")
		case "MaxConnections":
			if _, ok := parseNum(v, 1, 65535); !ok {
				add(k, "Reject")
				continue
			}
			n.p.MaxConnections = 1
			add(k, "1")
		case "IFMarker", "OFMarker":
			add(k, "No")
		case "IFMarkInt", "OFMarkInt":
			add(k, "Irrelevant")
		case "TaskReporting":
			add(k, "RFC3720")
		default:
			add(k, "NotUnderstood")
		}
	}
	if !n.declaredMRDSL {
		n.declaredMRDSL = true
		n.p.MaxRecvDSL = n.off.MaxRecvDSL
		add("MaxRecvDataSegmentLength", strconv.FormatUint(uint64(n.p.MaxRecvDSL), 10))
	}
	// RFC 7143 §13.14: FirstBurstLength must not exceed MaxBurstLength.
	if n.p.FirstBurst > n.p.MaxBurst {
		n.p.FirstBurst = n.p.MaxBurst
		for i := range resp {
			if resp[i].Key == "FirstBurstLength" {
				resp[i].Value = strconv.FormatUint(uint64(n.p.FirstBurst), 10)
			}
		}
	}
	return resp, nil
}
