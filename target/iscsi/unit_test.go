package iscsi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestCRC32CVectors(t *testing.T) {
	if got := crc32c([]byte("123456789")); got != 0xe3069283 {
		t.Fatalf("crc32c check value %#x", got)
	}
	// RFC 7143 Appendix B.4: 32 bytes of zeros give bytes aa 36 91 8a on
	// the wire.
	var d [4]byte
	binary.LittleEndian.PutUint32(d[:], crc32c(make([]byte, 32)))
	if d != [4]byte{0xaa, 0x36, 0x91, 0x8a} {
		t.Fatalf("zeros digest % x", d)
	}
	ff := bytes.Repeat([]byte{0xff}, 32)
	binary.LittleEndian.PutUint32(d[:], crc32c(ff))
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
	r := chapResponse(1, "secret", ch)
	if hex.EncodeToString(r[:]) != "740e86463bda3a4d7017d6e0fba0699d" {
		t.Fatalf("chap response %x", r)
	}
	ch2, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	r = chapResponse(0xab, "alicesecret12", ch2)
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
	if _, err := a.step([]kv{{"CHAP_A", "6,7"}}); !errors.Is(err, errAuth) {
		t.Fatalf("no MD5 offered: %v", err)
	}
	a.state = chapWaitAlg
	resp, err := a.step([]kv{{"CHAP_A", "7,5"}})
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
	good := chapResponse(a.id, "s3cret", a.challenge)
	// reflecting our own challenge back is refused
	_, err = a.step([]kv{{"CHAP_N", "u"}, {"CHAP_R", encodeHex(good[:])}, {"CHAP_I", "3"}, {"CHAP_C", m["CHAP_C"]}})
	if !errors.Is(err, errAuth) {
		t.Fatalf("reflection accepted: %v", err)
	}
	resp, err = a.step([]kv{{"CHAP_N", "u"}, {"CHAP_R", encodeHex(good[:])}, {"CHAP_I", "3"}, {"CHAP_C", "0x01020304"}})
	if err != nil || a.state != chapDone {
		t.Fatal(err)
	}
	want := chapResponse(3, "tsecret", []byte{1, 2, 3, 4})
	if resp[0] != (kv{"CHAP_N", "t"}) || resp[1] != (kv{"CHAP_R", encodeHex(want[:])}) {
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
	kvs, err := parseText([]byte("A=1\x00B=two\x00\x00\x00"))
	if err != nil || len(kvs) != 2 || kvs[1] != (kv{"B", "two"}) {
		t.Fatal(kvs, err)
	}
	for _, bad := range []string{"A=1\x00A=2\x00", "noequals\x00", "=v\x00", strings.Repeat("k", 64) + "=v\x00", "K=" + strings.Repeat("v", maxValueLen+1)} {
		if _, err := parseText([]byte(bad)); !errors.Is(err, errText) {
			t.Errorf("%.30q accepted", bad)
		}
	}
	if got := encodeText([]kv{{"A", "1"}, {"B", ""}}); string(got) != "A=1\x00B=\x00" {
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
		{"HeaderDigest", "CRC32C,None"}, {"DataDigest", "None,CRC32C"},
		{"MaxRecvDataSegmentLength", "65536"}, {"MaxBurstLength", "16776192"},
		{"FirstBurstLength", "8192"}, {"InitialR2T", "No"}, {"ImmediateData", "Yes"},
		{"MaxOutstandingR2T", "32"}, {"ErrorRecoveryLevel", "2"}, {"MaxConnections", "8"},
		{"DefaultTime2Wait", "0"}, {"DefaultTime2Retain", "20"}, {"DataPDUInOrder", "No"},
		{"DataSequenceInOrder", "No"}, {"IFMarker", "No"}, {"OFMarkInt", "1~65535"},
		{"X-com.example.Foo", "1"}, {"MaxBurstLength2", "1"}, {"InitiatorName", "iqn.x"},
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
	resp, _ = n2.operational([]kv{{"MaxRecvDataSegmentLength", "100"}, {"InitialR2T", "maybe"},
		{"HeaderDigest", "MD5"}, {"MaxBurstLength", "0x100000"}}, false)
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
	n3.operational([]kv{{"MaxBurstLength", "4096"}, {"FirstBurstLength", "65536"}}, false)
	if n3.p.FirstBurst != 4096 {
		t.Fatalf("first burst %d over max burst 4096", n3.p.FirstBurst)
	}
	// no digests when disabled, no unsolicited data when disabled
	off := testOffer()
	off.AllowDigest, off.AllowUnsolicited = false, false
	n4 := &negotiation{p: defaultParams(), off: off}
	resp, _ = n4.operational([]kv{{"HeaderDigest", "CRC32C"}, {"InitialR2T", "No"}, {"ImmediateData", "Yes"}}, false)
	if resp[0].Value != "Reject" || resp[1].Value != "Yes" || resp[2].Value != "No" {
		t.Fatalf("answers %v", resp)
	}
}

func TestPDUFraming(t *testing.T) {
	var b [bhsLen]byte
	b[0] = opSCSICmd | flagImmed
	b[1] = flagFinal | flagWrite
	b[4] = 2 // 8 bytes of AHS
	setDataLen(&b, 5)
	put32(b[16:], 0x1234)
	copy(b[32:], []byte{0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0})
	ahs := []byte{0, 5, ahsBidiReadLen, 0, 0, 0, 0x10, 0}
	var wire bytes.Buffer
	wire.Write(b[:])
	wire.Write(ahs)
	hd := crc32Update(crc32c(b[:]), ahs)
	binary.Write(&wire, binary.LittleEndian, hd)
	wire.Write([]byte("hello\x00\x00\x00"))
	binary.Write(&wire, binary.LittleEndian, crc32c([]byte("hello\x00\x00\x00")))
	var h header
	r := bytes.NewReader(wire.Bytes())
	if err := readHeader(r, &h, pduLimits{headerDigest: true, dataDigest: true, maxData: 8192}); err != nil {
		t.Fatal(err)
	}
	if h.opcode() != opSCSICmd || !h.immediate() || h.itt() != 0x1234 || h.dataLen() != 5 {
		t.Fatalf("header fields op %#x imm %v itt %#x len %d", h.opcode(), h.immediate(), h.itt(), h.dataLen())
	}
	cdb, bidi, has, err := h.scsiCDB()
	if err != nil || !has || bidi != 0x1000 || cdb[0] != 0x2a {
		t.Fatalf("cdb %x bidi %d %v %v", cdb, bidi, has, err)
	}
	data := make([]byte, 5)
	if err := readData(r, data, true); err != nil || string(data) != "hello" {
		t.Fatalf("data %q %v", data, err)
	}
	// a flipped header bit fails the header digest
	bad := append([]byte(nil), wire.Bytes()...)
	bad[17] ^= 1
	if err := readHeader(bytes.NewReader(bad), &h, pduLimits{headerDigest: true, maxData: 8192}); !errors.Is(err, errPDU) {
		t.Fatalf("corrupt header: %v", err)
	}
	// segment longer than negotiated
	if err := readHeader(bytes.NewReader(wire.Bytes()), &h, pduLimits{headerDigest: true, maxData: 4}); !errors.Is(err, errPDU) {
		t.Fatalf("long segment: %v", err)
	}
	// truncated header
	if err := readHeader(bytes.NewReader(wire.Bytes()[:30]), &h, pduLimits{}); err == nil {
		t.Fatal("truncated header accepted")
	}
	// extended CDB AHS
	var e header
	e.b[4] = 5
	e.ahs = []byte{0, 17, ahsExtendedCDB, 0}
	e.ahs = append(e.ahs, bytes.Repeat([]byte{0xee}, 16)...)
	cdb, _, _, err = e.scsiCDB()
	if err != nil || len(cdb) != 32 || cdb[31] != 0xee {
		t.Fatalf("extended cdb %x %v", cdb, err)
	}
	for _, raw := range [][]byte{{0, 0, 1, 0}, {0, 200, 1, 0}, {0, 1}} {
		if _, err := parseAHS(raw); err == nil {
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
