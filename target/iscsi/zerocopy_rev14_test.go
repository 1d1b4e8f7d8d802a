package iscsi

import (
	"bytes"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// TestZeroCopyTruncatedFile: a READ answered with a file reference whose
// file was truncated behind the volume's back (the volume still believes
// its old size) must drop the connection after the short Data-In: never
// a GOOD status, never a PDU with a wrong data length followed by more.
func TestZeroCopyTruncatedFile(t *testing.T) {
	const size = 8 << 20
	b := newFileBackend(t, size)
	data := pattern(size, 5)
	if _, err := b.f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, b, nil)
	s.zeroCopy = true
	i := dialIni(t, addrOf(s))
	i.nc.SetDeadline(time.Now().Add(time.Minute))
	i.mustLogin(loginOpts{})
	const cut = 1<<20 + 1536 // mid-segment, not page aligned
	if err := b.f.Truncate(cut); err != nil {
		t.Fatal(err)
	}
	const n = 4 << 20
	c := &icmd{cdb: read10(0, n/testBlock), read: true, edtl: n}
	if err := i.sendCmd(c); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		p, err := i.read()
		if err != nil {
			break // dropped: what must happen
		}
		if p.h.Opcode() != pdu.OpDataIn {
			t.Fatalf("opcode %#x after %d bytes, want Data-In or the connection dropped", p.h.Opcode(), len(got))
		}
		if len(got)+len(p.data) > cut && p.h.Flags()&0x01 != 0 {
			t.Fatalf("status %#x after %d bytes of a file of %d", p.h.B[3], len(got)+len(p.data), cut)
		}
		got = append(got, p.data...)
		if p.h.Flags()&0x01 != 0 {
			t.Fatalf("READ completed with status %#x (%d bytes) from a file cut at %d", p.h.B[3], len(got), cut)
		}
	}
	if len(got) > cut || !bytes.Equal(got, data[:len(got)]) {
		t.Fatalf("received %d bytes, not a prefix of the file's %d", len(got), cut)
	}
	vol := b.vol.Load()
	waitFor(t, "the reference of the failed send to be released", 30*time.Second, func() bool { return vol.Refs() == 0 })
	if z := s.ZeroCopyStats(); z.Reads != 1 {
		t.Fatalf("zero-copy stats %+v: the READ was not sent with sendfile", z)
	}
}
