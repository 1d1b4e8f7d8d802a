package iscsi

import (
	"bytes"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// FuzzParsePDU feeds arbitrary bytes to the PDU reader as one stream: BHS,
// AHS (extended CDB, bidirectional length), digests and data segments. It
// must never panic, never allocate beyond the limits and always stop.
func FuzzParsePDU(f *testing.F) {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpSCSICmd
	b[1] = pdu.FlagFinal | pdu.FlagWrite
	pdu.SetDataLen(&b, 4)
	f.Add(append(append([]byte{}, b[:]...), 1, 2, 3, 4))
	b[4] = 5
	ext := append([]byte{0, 17, pdu.AHSExtendedCDB, 0}, bytes.Repeat([]byte{7}, 16)...)
	f.Add(append(append(append([]byte{}, b[:]...), ext...), 1, 2, 3, 4))
	f.Add(bytes.Repeat([]byte{0xff}, 100))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		digests := len(in) > 0 && in[0]&0x80 != 0
		lim := pdu.Limits{HeaderDigest: digests, DataDigest: digests, MaxData: 8192}
		r := bytes.NewReader(in)
		var h header
		for pdus := 0; pdus < 64; pdus++ {
			if err := pdu.ReadHeader(r, &h, lim); err != nil {
				return
			}
			if len(h.AHS) > pdu.MaxAHSBytes || h.DataLen() > lim.MaxData {
				t.Fatalf("limits not enforced: ahs %d data %d", len(h.AHS), h.DataLen())
			}
			cdb, _, _, err := h.SCSICDB()
			if err == nil && len(cdb) < 16 {
				t.Fatalf("cdb of %d bytes", len(cdb))
			}
			_ = DecodeLUN(h.LUNField())
			data := make([]byte, h.DataLen())
			if err := pdu.ReadData(r, data, lim.DataDigest); err != nil {
				return
			}
			if h.Opcode() == pdu.OpLoginReq || h.Opcode() == pdu.OpTextReq {
				pdu.ParseText(data)
			}
		}
	})
}

// FuzzLoginNegotiation feeds arbitrary login text to key parsing,
// operational negotiation and the CHAP state machine, checking that the
// result stays inside what the target offered.
func FuzzLoginNegotiation(f *testing.F) {
	f.Add([]byte("HeaderDigest=CRC32C,None\x00MaxRecvDataSegmentLength=65536\x00MaxBurstLength=262144\x00FirstBurstLength=65536\x00InitialR2T=No\x00"))
	f.Add([]byte("AuthMethod=CHAP,None\x00CHAP_A=5\x00"))
	f.Add([]byte("CHAP_N=u\x00CHAP_R=0x00112233\x00CHAP_I=1\x00CHAP_C=0bAAEC\x00"))
	f.Add([]byte("X=1\x00X=2\x00"))
	f.Add([]byte("MaxBurstLength=0x200\x00FirstBurstLength=99999999\x00MaxOutstandingR2T=0\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		keys, err := pdu.ParseText(in)
		if err != nil {
			return
		}
		for _, disc := range []bool{false, true} {
			off := testOffer()
			n := &negotiation{p: defaultParams(), off: off}
			resp, err := n.operational(keys, disc)
			if err != nil {
				continue
			}
			seen := map[string]bool{}
			for _, p := range resp {
				if seen[p.Key] {
					t.Fatalf("key %s answered twice", p.Key)
				}
				seen[p.Key] = true
			}
			p := n.p
			if p.MaxBurst > max(off.MaxBurst, 262144) || p.FirstBurst > p.MaxBurst ||
				p.MaxXmitDSL < 512 || p.MaxXmitDSL >= 1<<24 || p.MaxOutR2T < 1 || p.MaxOutR2T > max(off.MaxOutR2T, 1) ||
				p.ERL != 0 || p.MaxConnections != 1 || !p.DataPDUInOrder || !p.DataSeqInOrder {
				t.Fatalf("negotiated %+v from %q", p, in)
			}
			if len(pdu.EncodeText(resp)) == 0 {
				t.Fatal("no response text")
			}
		}
		a := &chapAuth{cred: CHAP{User: "u", Secret: "s", MutualUser: "m", MutualSecret: "ms"}, state: chapWaitAlg}
		for i := 0; i < 3 && a.state != chapDone; i++ {
			if _, err := a.step(keys); err != nil {
				break
			}
		}
	})
}
