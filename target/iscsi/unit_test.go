package iscsi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

func TestCRC32CVectors(t *testing.T) {
	if got := pdu.CRC32C([]byte("123456789")); got != 0xe3069283 {
		t.Fatalf("crc32c check value %#x", got)
	}
	// RFC 7143 Appendix B.4: 32 bytes of zeros give bytes aa 36 91 8a on
	// the wire.
	var d [4]byte
	binary.LittleEndian.PutUint32(d[:], pdu.CRC32C(make([]byte, 32)))
	if d != [4]byte{0xaa, 0x36, 0x91, 0x8a} {
		t.Fatalf("zeros digest % x", d)
	}
	ff := bytes.Repeat([]byte{0xff}, 32)
	binary.LittleEndian.PutUint32(d[:], pdu.CRC32C(ff))
	if d != [4]byte{0x43, 0xab, 0xa8, 0x62} {
		t.Fatalf("ones digest % x", d)
	}
}

func TestCHAPResponseVectors(t *testing.T) {
	// computed independently: md5(bytes([id]) + secret + challenge)
	ch := make([]byte, 16)
	for i := range ch {
		ch[i] = byte(i)
	}
	r := pdu.CHAPResponse(1, "secret", ch)
	if hex.EncodeToString(r[:]) != "740e86463bda3a4d7017d6e0fba0699d" {
		t.Fatalf("chap response %x", r)
	}
	ch2, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	r = pdu.CHAPResponse(0xab, "alicesecret12", ch2)
	if hex.EncodeToString(r[:]) != "5fef9d7aa65e1a0a9d883b2a5238cec9" {
		t.Fatalf("chap response %x", r)
	}
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"0x0aff", "0aff", true},
		{"0XAFF", "0aff", true},
		{"0bAP8=", "00ff", true},
		{"0x", "", false},
		{"0xzz", "", false},
		{"plain", "", false},
	} {
		b, err := decodeCHAPBinary(tc.in)
		if (err == nil) != tc.ok || (tc.ok && hex.EncodeToString(b) != tc.want) {
			t.Errorf("decode %q = %x, %v", tc.in, b, err)
		}
	}
}

func TestCHAPExchange(t *testing.T) {
	a := &chapAuth{cred: CHAP{User: "u", Secret: "s3cret", MutualUser: "t", MutualSecret: "tsecret"}, state: chapWaitAlg}
	if _, err := a.step([]kv{{Key: "CHAP_A", Value: "6,7"}}); !errors.Is(err, errAuth) {
		t.Fatalf("no MD5 offered: %v", err)
	}
	a.state = chapWaitAlg
	resp, err := a.step([]kv{{Key: "CHAP_A", Value: "7,5"}})
	if err != nil || a.state != chapWaitResp {
		t.Fatal(err, a.state)
	}
	m := map[string]string{}
	for _, p := range resp {
		m[p.Key] = p.Value
	}
	if m["CHAP_A"] != "5" || !strings.HasPrefix(m["CHAP_C"], "0x") || len(m["CHAP_C"]) != 2+2*chapChallengeLen {
		t.Fatalf("challenge %v", m)
	}
	good := pdu.CHAPResponse(a.id, "s3cret", a.challenge)
	// reflecting our own challenge back is refused
	_, err = a.step([]kv{{Key: "CHAP_N", Value: "u"}, {Key: "CHAP_R", Value: pdu.EncodeHex(good[:])}, {Key: "CHAP_I", Value: "3"}, {Key: "CHAP_C", Value: m["CHAP_C"]}})
	if !errors.Is(err, errAuth) {
		t.Fatalf("reflection accepted: %v", err)
	}
	resp, err = a.step([]kv{{Key: "CHAP_N", Value: "u"}, {Key: "CHAP_R", Value: pdu.EncodeHex(good[:])}, {Key: "CHAP_I", Value: "3"}, {Key: "CHAP_C", Value: "0x01020304"}})
	if err != nil || a.state != chapDone {
		t.Fatal(err)
	}
	want := pdu.CHAPResponse(3, "tsecret", []byte{1, 2, 3, 4})
	if resp[0] != (kv{Key: "CHAP_N", Value: "t"}) || resp[1] != (kv{Key: "CHAP_R", Value: pdu.EncodeHex(want[:])}) {
		t.Fatalf("mutual answer %v", resp)
	}
	if chapState(9).String() == "" || chapDone.String() != "done" {
		t.Fatal("state names")
	}
}

func TestLUNCoding(t *testing.T) {
	for _, tc := range []struct {
		b [8]byte
		n uint64
	}{
		{[8]byte{0, 0}, 0},
		{[8]byte{0, 5}, 5},
		{[8]byte{0, 255}, 255},
		{[8]byte{0x40, 0x01}, 1},
		{[8]byte{0x41, 0x00}, 256},
		{[8]byte{0x7f, 0xff}, 16383},
		{[8]byte{0x01, 0x05}, badLUN},             // peripheral, bus 1
		{[8]byte{0, 1, 0, 1}, badLUN},             // second level
		{[8]byte{0xc1, 0x01}, badLUN},             // extended (W-LUN)
		{[8]byte{0x80, 0x01, 0, 0, 0, 0}, badLUN}, // logical unit addressing
	} {
		if got := DecodeLUN(tc.b); got != tc.n {
			t.Errorf("DecodeLUN(% x) = %d, want %d", tc.b, got, tc.n)
		}
	}
	for _, n := range []uint64{0, 1, 255, 256, 1000, 16383} {
		if got := DecodeLUN(EncodeLUN(n)); got != n {
			t.Errorf("round trip %d -> %d", n, got)
		}
	}
	if DecodeLUN(EncodeLUN(1<<14)) != badLUN {
		t.Error("LUN 16384 encodable")
	}
}

func TestTextParse(t *testing.T) {
	kvs, err := pdu.ParseText([]byte("A=1\x00B=two\x00\x00\x00"))
	if err != nil || len(kvs) != 2 || kvs[1] != (kv{Key: "B", Value: "two"}) {
		t.Fatal(kvs, err)
	}
	for _, bad := range []string{"A=1\x00A=2\x00", "noequals\x00", "=v\x00", strings.Repeat("k", 64) + "=v\x00", "K=" + strings.Repeat("v", pdu.MaxValueLen+1)} {
		if _, err := pdu.ParseText([]byte(bad)); !errors.Is(err, pdu.ErrText) {
			t.Errorf("%.30q accepted", bad)
		}
	}
	if got := pdu.EncodeText([]kv{{Key: "A", Value: "1"}, {Key: "B", Value: ""}}); string(got) != "A=1\x00B=\x00" {
		t.Fatalf("encode %q", got)
	}
}

func testOffer() offer {
	return offer{MaxRecvDSL: 262144, MaxBurst: 1 << 20, FirstBurst: 256 << 10, MaxOutR2T: 8,
		AllowDigest: true, AllowUnsolicited: true, Time2Wait: 2}
}

func TestNegotiation(t *testing.T) {
	n := &negotiation{p: defaultParams(), off: testOffer()}
	resp, err := n.operational([]kv{
		{Key: "HeaderDigest", Value: "CRC32C,None"}, {Key: "DataDigest", Value: "None,CRC32C"},
		{Key: "MaxRecvDataSegmentLength", Value: "65536"}, {Key: "MaxBurstLength", Value: "16776192"},
		{Key: "FirstBurstLength", Value: "8192"}, {Key: "InitialR2T", Value: "No"}, {Key: "ImmediateData", Value: "Yes"},
		{Key: "MaxOutstandingR2T", Value: "32"}, {Key: "ErrorRecoveryLevel", Value: "2"}, {Key: "MaxConnections", Value: "8"},
		{Key: "DefaultTime2Wait", Value: "0"}, {Key: "DefaultTime2Retain", Value: "20"}, {Key: "DataPDUInOrder", Value: "No"},
		{Key: "DataSequenceInOrder", Value: "No"}, {Key: "IFMarker", Value: "No"}, {Key: "OFMarkInt", Value: "1~65535"},
		{Key: "X-com.example.Foo", Value: "1"}, {Key: "MaxBurstLength2", Value: "1"}, {Key: "InitiatorName", Value: "iqn.x"},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, p := range resp {
		if _, dup := m[p.Key]; dup {
			t.Fatalf("key %s answered twice", p.Key)
		}
		m[p.Key] = p.Value
	}
	want := map[string]string{
		"HeaderDigest": "CRC32C", "DataDigest": "None", "MaxRecvDataSegmentLength": "262144",
		"MaxBurstLength": "1048576", "FirstBurstLength": "8192", "InitialR2T": "No",
		"ImmediateData": "Yes", "MaxOutstandingR2T": "8", "ErrorRecoveryLevel": "0",
		"MaxConnections": "1", "DefaultTime2Wait": "2", "DefaultTime2Retain": "0",
		"DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes", "IFMarker": "No",
		"OFMarkInt": "Irrelevant", "X-com.example.Foo": "NotUnderstood", "MaxBurstLength2": "NotUnderstood",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	if _, ok := m["InitiatorName"]; ok {
		t.Error("leading key answered by operational negotiation")
	}
	p := n.p
	if !p.HeaderDigest || p.DataDigest || p.MaxXmitDSL != 65536 || p.MaxRecvDSL != 262144 ||
		p.MaxBurst != 1<<20 || p.FirstBurst != 8192 || p.InitialR2T || !p.ImmediateData || p.MaxOutR2T != 8 {
		t.Fatalf("params %+v", p)
	}
	// bad values are rejected, not fatal
	n2 := &negotiation{p: defaultParams(), off: testOffer()}
	resp, _ = n2.operational([]kv{{Key: "MaxRecvDataSegmentLength", Value: "100"}, {Key: "InitialR2T", Value: "maybe"},
		{Key: "HeaderDigest", Value: "MD5"}, {Key: "MaxBurstLength", Value: "0x100000"}}, false)
	m = map[string]string{}
	for _, p := range resp {
		m[p.Key] = p.Value
	}
	if m["InitialR2T"] != "Reject" || m["HeaderDigest"] != "Reject" || m["MaxBurstLength"] != "1048576" {
		t.Fatalf("answers %v", m)
	}
	if n2.p.MaxXmitDSL != 8192 {
		t.Fatalf("invalid MaxRecvDataSegmentLength changed the limit to %d", n2.p.MaxXmitDSL)
	}
	// FirstBurstLength never exceeds MaxBurstLength
	n3 := &negotiation{p: defaultParams(), off: testOffer()}
	n3.operational([]kv{{Key: "MaxBurstLength", Value: "4096"}, {Key: "FirstBurstLength", Value: "65536"}}, false)
	if n3.p.FirstBurst != 4096 {
		t.Fatalf("first burst %d over max burst 4096", n3.p.FirstBurst)
	}
	// no digests when disabled, no unsolicited data when disabled
	off := testOffer()
	off.AllowDigest, off.AllowUnsolicited = false, false
	n4 := &negotiation{p: defaultParams(), off: off}
	resp, _ = n4.operational([]kv{{Key: "HeaderDigest", Value: "CRC32C"}, {Key: "InitialR2T", Value: "No"}, {Key: "ImmediateData", Value: "Yes"}}, false)
	if resp[0].Value != "Reject" || resp[1].Value != "Yes" || resp[2].Value != "No" {
		t.Fatalf("answers %v", resp)
	}
}

func TestPDUFraming(t *testing.T) {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpSCSICmd | pdu.FlagImmed
	b[1] = pdu.FlagFinal | pdu.FlagWrite
	b[4] = 2 // 8 bytes of AHS
	pdu.SetDataLen(&b, 5)
	pdu.Put32(b[16:], 0x1234)
	copy(b[32:], []byte{0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0})
	ahs := []byte{0, 5, pdu.AHSBidiReadLen, 0, 0, 0, 0x10, 0}
	var wire bytes.Buffer
	wire.Write(b[:])
	wire.Write(ahs)
	hd := crc32Update(pdu.CRC32C(b[:]), ahs)
	binary.Write(&wire, binary.LittleEndian, hd)
	wire.Write([]byte("hello\x00\x00\x00"))
	binary.Write(&wire, binary.LittleEndian, pdu.CRC32C([]byte("hello\x00\x00\x00")))
	var h header
	r := bytes.NewReader(wire.Bytes())
	if err := pdu.ReadHeader(r, &h, pdu.Limits{HeaderDigest: true, DataDigest: true, MaxData: 8192}); err != nil {
		t.Fatal(err)
	}
	if h.Opcode() != pdu.OpSCSICmd || !h.Immediate() || h.ITT() != 0x1234 || h.DataLen() != 5 {
		t.Fatalf("header fields op %#x imm %v itt %#x len %d", h.Opcode(), h.Immediate(), h.ITT(), h.DataLen())
	}
	cdb, bidi, has, err := h.SCSICDB()
	if err != nil || !has || bidi != 0x1000 || cdb[0] != 0x2a {
		t.Fatalf("cdb %x bidi %d %v %v", cdb, bidi, has, err)
	}
	data := make([]byte, 5)
	if err := pdu.ReadData(r, data, true); err != nil || string(data) != "hello" {
		t.Fatalf("data %q %v", data, err)
	}
	// a flipped header bit fails the header digest
	bad := append([]byte(nil), wire.Bytes()...)
	bad[17] ^= 1
	if err := pdu.ReadHeader(bytes.NewReader(bad), &h, pdu.Limits{HeaderDigest: true, MaxData: 8192}); !errors.Is(err, pdu.ErrPDU) {
		t.Fatalf("corrupt header: %v", err)
	}
	// segment longer than negotiated
	if err := pdu.ReadHeader(bytes.NewReader(wire.Bytes()), &h, pdu.Limits{HeaderDigest: true, MaxData: 4}); !errors.Is(err, pdu.ErrPDU) {
		t.Fatalf("long segment: %v", err)
	}
	// truncated header
	if err := pdu.ReadHeader(bytes.NewReader(wire.Bytes()[:30]), &h, pdu.Limits{}); err == nil {
		t.Fatal("truncated header accepted")
	}
	// extended CDB AHS
	var e header
	e.B[4] = 5
	e.AHS = []byte{0, 17, pdu.AHSExtendedCDB, 0}
	e.AHS = append(e.AHS, bytes.Repeat([]byte{0xee}, 16)...)
	cdb, _, _, err = e.SCSICDB()
	if err != nil || len(cdb) != 32 || cdb[31] != 0xee {
		t.Fatalf("extended cdb %x %v", cdb, err)
	}
	for _, raw := range [][]byte{{0, 0, 1, 0}, {0, 200, 1, 0}, {0, 1}} {
		if _, err := pdu.ParseAHS(raw); err == nil {
			t.Errorf("AHS % x accepted", raw)
		}
	}
}

func TestBufPool(t *testing.T) {
	p := newBufPool(1 << 20)
	for _, n := range []int{0, 1, 4096, 4097, 65536, 1 << 20, 3 << 20} {
		b := p.get(n)
		if len(*b) != n {
			t.Fatalf("get(%d) len %d", n, len(*b))
		}
		p.put(b)
	}
	b := p.get(5000)
	if cap(*b) != 8192 {
		t.Fatalf("class of 5000 = %d", cap(*b))
	}
}

func TestStateNames(t *testing.T) {
	for _, s := range []interface{ String() string }{stateLogin, stateFullFeature, stateClosing, stateClosed, connState(42),
		taskReceiving, taskRunning, taskResponding, taskDone, taskState(42)} {
		if s.String() == "" {
			t.Fatal("empty state name")
		}
	}
}
