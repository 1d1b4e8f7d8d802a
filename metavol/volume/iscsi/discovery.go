package iscsi

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// DiscoveredTarget is one target a portal announced with SendTargets.
type DiscoveredTarget struct {
	Name      string
	Addresses []string // "host:port,tpgt"
}

// Discover opens a discovery session on cfg.Portal (with cfg's CHAP
// credentials, if any), asks SendTargets=All and logs out.
func Discover(ctx context.Context, cfg Config) ([]DiscoveredTarget, error) {
	cfg.Target = "discovery"
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var isid [6]byte
	isid[0] = 0x80
	li, err := dialLogin(ctx, cfg, isid, true)
	if err != nil {
		return nil, err
	}
	defer li.nc.Close()
	stop := context.AfterFunc(ctx, func() { li.nc.Close() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		li.nc.SetDeadline(d)
	}
	var all []byte
	ttt := uint32(pdu.ReservedTag)
	data := pdu.EncodeText([]pdu.KV{{Key: "SendTargets", Value: "All"}})
	cmdSN, expStatSN := li.cmdSN, li.expStatSN
	for range 1024 {
		var b [pdu.BHSLen]byte
		b[0] = pdu.OpTextReq | pdu.FlagImmed
		b[1] = pdu.FlagFinal
		pdu.Put32(b[16:], 1)
		pdu.Put32(b[20:], ttt)
		pdu.Put32(b[24:], cmdSN)
		pdu.Put32(b[28:], expStatSN)
		if err := writePDU(li.nc, &b, data, li.p.HeaderDigest, li.p.DataDigest); err != nil {
			return nil, fmt.Errorf("discovery on %s: %w", cfg.Portal, err)
		}
		var h pdu.Header
		if err := pdu.ReadHeader(li.br, &h, pdu.Limits{MaxData: max(li.p.OurMRDSL, 8192)}); err != nil {
			return nil, fmt.Errorf("discovery on %s: %w", cfg.Portal, err)
		}
		seg := make([]byte, h.DataLen())
		if err := pdu.ReadData(li.br, seg, li.p.DataDigest); err != nil {
			return nil, fmt.Errorf("discovery on %s: %w", cfg.Portal, err)
		}
		if h.Opcode() != pdu.OpTextResp {
			return nil, fmt.Errorf("discovery on %s: opcode 0x%02x in answer to SendTargets: %w", cfg.Portal, h.Opcode(), ErrProtocol)
		}
		expStatSN = h.StatSN() + 1
		all = append(all, seg...)
		if len(all) > 1<<20 {
			return nil, fmt.Errorf("discovery on %s: answer over 1 MiB: %w", cfg.Portal, ErrProtocol)
		}
		if h.Flags()&pdu.FlagContinue == 0 {
			// polite logout; the answer does not matter
			var lo [pdu.BHSLen]byte
			lo[0] = pdu.OpLogoutReq | pdu.FlagImmed
			lo[1] = pdu.FlagFinal
			pdu.Put32(lo[16:], 2)
			pdu.Put32(lo[24:], cmdSN)
			pdu.Put32(lo[28:], expStatSN)
			writePDU(li.nc, &lo, nil, li.p.HeaderDigest, li.p.DataDigest)
			return parseSendTargets(all)
		}
		ttt, data = h.TTT(), nil
	}
	return nil, fmt.Errorf("discovery on %s: answer never ended: %w", cfg.Portal, ErrProtocol)
}

// parseSendTargets reads TargetName=... followed by its TargetAddress=...
// lines (keys repeat, so pdu.ParseText does not apply).
func parseSendTargets(b []byte) ([]DiscoveredTarget, error) {
	var out []DiscoveredTarget
	for _, item := range bytes.Split(b, []byte{0}) {
		if len(item) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(item), "=")
		if !ok {
			return nil, fmt.Errorf("SendTargets item %.40q: %w", item, pdu.ErrText)
		}
		switch k {
		case "TargetName":
			out = append(out, DiscoveredTarget{Name: v})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, fmt.Errorf("TargetAddress before any TargetName: %w", pdu.ErrText)
			}
			out[len(out)-1].Addresses = append(out[len(out)-1].Addresses, v)
		}
	}
	return out, nil
}
