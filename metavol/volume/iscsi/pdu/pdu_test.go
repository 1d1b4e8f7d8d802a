package pdu

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"testing"
)

// wire builds one PDU by hand (independently of any encoder under test).
func wire(opcode byte, data []byte, hd, dd bool) []byte {
	var b [BHSLen]byte
	b[0] = opcode
	SetDataLen(&b, uint32(len(data)))
	out := append([]byte(nil), b[:]...)
	if hd {
		out = binary.LittleEndian.AppendUint32(out, CRC32C(b[:]))
	}
	if len(data) > 0 {
		padded := append(append([]byte(nil), data...), make([]byte, PadLen(uint32(len(data))))...)
		out = append(out, padded...)
		if dd {
			out = binary.LittleEndian.AppendUint32(out, CRC32C(padded))
		}
	}
	return out
}

func TestReadHeaderAndData(t *testing.T) {
	data := []byte("hello, iscsi") // 12 bytes: no pad
	odd := []byte("odd")           // 3 bytes: 1 pad byte
	for _, d := range [][]byte{data, odd} {
		w := wire(OpTextResp, d, true, true)
		r := bytes.NewReader(w)
		var h Header
		if err := ReadHeader(r, &h, Limits{HeaderDigest: true, DataDigest: true, MaxData: 64}); err != nil {
			t.Fatal(err)
		}
		if h.Opcode() != OpTextResp || h.DataLen() != uint32(len(d)) {
			t.Fatalf("header %x len %d", h.Opcode(), h.DataLen())
		}
		got := make([]byte, h.DataLen())
		if err := ReadData(r, got, true); err != nil || !bytes.Equal(got, d) || r.Len() != 0 {
			t.Fatalf("data %q %v (left %d)", got, err, r.Len())
		}
		// a flipped data bit fails the data digest
		w[len(w)-5] ^= 1
		r = bytes.NewReader(w)
		ReadHeader(r, &h, Limits{HeaderDigest: true, DataDigest: true, MaxData: 64})
		if err := ReadData(r, got, true); !errors.Is(err, ErrPDU) {
			t.Fatalf("corrupt data accepted: %v", err)
		}
		// a flipped header bit fails the header digest
		w = wire(OpTextResp, d, true, true)
		w[3] ^= 1
		if err := ReadHeader(bytes.NewReader(w), &h, Limits{HeaderDigest: true, MaxData: 64}); !errors.Is(err, ErrPDU) {
			t.Fatalf("corrupt header accepted: %v", err)
		}
	}
	// a segment over the limit is refused before it is read
	var h Header
	if err := ReadHeader(bytes.NewReader(wire(OpDataIn, make([]byte, 100), false, false)), &h, Limits{MaxData: 99}); !errors.Is(err, ErrPDU) {
		t.Fatalf("over-long segment: %v", err)
	}
	// DiscardData skips segment, pad and digest
	w := append(wire(OpDataIn, odd, false, true), 0xAA)
	r := bytes.NewReader(w)
	ReadHeader(r, &h, Limits{MaxData: 64})
	if err := DiscardData(r, h.DataLen(), true); err != nil || r.Len() != 1 {
		t.Fatalf("discard: %v left %d", err, r.Len())
	}
}

func TestTextAndCHAP(t *testing.T) {
	kvs := []KV{{Key: "A", Value: "1"}, {Key: "B", Value: ""}}
	enc := EncodeText(kvs)
	if string(enc) != "A=1\x00B=\x00" {
		t.Fatalf("encode %q", enc)
	}
	back, err := ParseText(append(enc, 0, 0))
	if err != nil || len(back) != 2 || back[1] != kvs[1] {
		t.Fatalf("parse %v %v", back, err)
	}
	if v, ok := Lookup(back, "A"); !ok || v != "1" {
		t.Fatalf("lookup %q %v", v, ok)
	}
	for _, bad := range []string{"A=1\x00A=2", "noequals", "=x"} {
		if _, err := ParseText([]byte(bad)); !errors.Is(err, ErrText) {
			t.Errorf("ParseText(%q): %v", bad, err)
		}
	}
	want := md5.Sum(append(append([]byte{7}, "secret"...), 1, 2, 3))
	if got := CHAPResponse(7, "secret", []byte{1, 2, 3}); got != want {
		t.Fatalf("chap response %x want %x", got, want)
	}
	for in, out := range map[string]string{"0x0aff": "\x0a\xff", "0XAFF": "\x0a\xff", "0bAP8=": "\x00\xff"} {
		if b, err := DecodeCHAPBinary(in); err != nil || string(b) != out {
			t.Errorf("DecodeCHAPBinary(%q) = %x %v", in, b, err)
		}
	}
	for _, bad := range []string{"0x", "0xzz", "plain"} {
		if _, err := DecodeCHAPBinary(bad); !errors.Is(err, ErrCHAPValue) {
			t.Errorf("DecodeCHAPBinary(%q): %v", bad, err)
		}
	}
	if EncodeHex([]byte{1, 0xab}) != "0x01ab" {
		t.Fatal("EncodeHex")
	}
}

func TestParseAHS(t *testing.T) {
	var h Header
	h.B[4] = 5
	h.AHS = append([]byte{0, 17, AHSExtendedCDB, 0}, bytes.Repeat([]byte{0xee}, 16)...)
	cdb, _, _, err := h.SCSICDB()
	if err != nil || len(cdb) != 32 || cdb[31] != 0xee {
		t.Fatalf("extended cdb %x %v", cdb, err)
	}
	for _, raw := range [][]byte{{0, 0, 1, 0}, {0, 200, 1, 0}, {0, 1}} {
		if _, err := ParseAHS(raw); !errors.Is(err, ErrPDU) {
			t.Errorf("AHS % x: %v", raw, err)
		}
	}
}
