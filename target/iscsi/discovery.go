package iscsi

import (
	"net"
	"strings"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// maxTextRequest bounds a text request accumulated over C-bit PDUs.
const maxTextRequest = 64 << 10

// text answers a Text Request: SendTargets in discovery and normal
// sessions; other keys are NotUnderstood. Long answers go out in pieces
// (C bit, RFC 7143 §11.11) as the initiator asks for them.
func (c *conn) text(h *header, data []byte, queued bool) error {
	data, err := c.segment(h, data, queued)
	if err != nil {
		return err
	}
	itt := h.ITT()
	if ttt := h.TTT(); ttt != pdu.ReservedTag {
		if ttt != c.textTTT || c.textResp == nil {
			return c.reject(h, pdu.RejectInvalidPDUField)
		}
		return c.sendTextChunk(h, itt)
	}
	c.textResp = nil
	if h.Flags()&pdu.FlagContinue != 0 {
		if len(c.textBuf)+len(data) > maxTextRequest {
			c.textBuf = nil
			return c.reject(h, pdu.RejectProtocolError)
		}
		c.textBuf = append(c.textBuf, data...)
		c.textTTT = c.newTTT()
		c.textResp = []byte{}
		return c.sendText(h, itt, nil, 0, c.textTTT)
	}
	if len(c.textBuf) > 0 {
		data = append(c.textBuf, data...)
		c.textBuf = nil
	}
	keys, err := pdu.ParseText(data)
	if err != nil {
		return c.reject(h, pdu.RejectProtocolError)
	}
	var out []kv
	for _, k := range keys {
		if k.Key != "SendTargets" {
			out = append(out, kv{Key: k.Key, Value: "NotUnderstood"})
			continue
		}
		out = append(out, c.sendTargets(k.Value)...)
	}
	c.textResp = pdu.EncodeText(out)
	c.textTTT = c.newTTT()
	return c.sendTextChunk(h, itt)
}

// sendTargets builds the SendTargets answer for value (All, a target name,
// or empty for the session's own target). In a normal session only the
// session's own target is ever named.
func (c *conn) sendTargets(value string) []kv {
	var all []TargetInfo
	for _, t := range c.srv.opts.Backend.Targets(c.initiator) {
		if c.onPortal(t.Name) { // a portal lists only the targets served on it
			all = append(all, t)
		}
	}
	var pick []TargetInfo
	switch {
	case value == "All":
		pick = all
	case value == "" && !c.discovery:
		for _, t := range all {
			if t.Name == c.target {
				pick = append(pick, t)
			}
		}
	case value != "" && strings.Contains(value, "."): // a target name (iqn./eui./naa.)
		for _, t := range all {
			if t.Name == value {
				pick = append(pick, t)
			}
		}
		if len(pick) == 0 {
			return []kv{{Key: "SendTargets", Value: "Reject"}}
		}
	default:
		return []kv{{Key: "SendTargets", Value: "Reject"}}
	}
	if !c.discovery {
		// A normal session answers only about its own target (RFC 7143
		// appendix C): listing the others would let anyone with access to
		// one target skip the discovery session's authentication.
		own := pick[:0:0]
		for _, t := range pick {
			if t.Name == c.target {
				own = append(own, t)
			}
		}
		if len(own) == 0 {
			return []kv{{Key: "SendTargets", Value: "Reject"}}
		}
		pick = own
	}
	var out []kv
	for _, t := range pick {
		out = append(out, kv{Key: "TargetName", Value: t.Name})
		if len(t.Portals) == 0 {
			out = append(out, kv{Key: "TargetAddress", Value: c.portalFor()})
		}
		for _, p := range t.Portals {
			if unspecifiedPortal(p) {
				p = c.portalFor()
			}
			out = append(out, kv{Key: "TargetAddress", Value: p})
		}
	}
	return out
}

// sendTextChunk sends the next piece of c.textResp.
func (c *conn) sendTextChunk(h *header, itt uint32) error {
	n := min(len(c.textResp), int(c.p.MaxXmitDSL))
	chunk := c.textResp[:n]
	rest := c.textResp[n:]
	if len(rest) == 0 {
		c.textResp = nil
		return c.sendText(h, itt, chunk, pdu.FlagFinal, pdu.ReservedTag)
	}
	c.textResp = rest
	return c.sendText(h, itt, chunk, pdu.FlagContinue, c.textTTT)
}

func (c *conn) sendText(h *header, itt uint32, data []byte, flags byte, ttt uint32) error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpTextResp
	b[1] = flags
	copy(b[8:16], h.B[8:16])
	pdu.Put32(b[16:], itt)
	pdu.Put32(b[20:], ttt)
	return c.send(outPDU{hdr: b, data: data, stat: statTake})
}

// unspecifiedPortal reports whether a TargetAddress value "host:port,tpgt"
// has an unspecified host (a wildcard listener): the initiator must get
// the address it reached instead.
func unspecifiedPortal(p string) bool {
	if i := strings.LastIndexByte(p, ','); i >= 0 {
		p = p[:i]
	}
	host, _, err := net.SplitHostPort(p)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
