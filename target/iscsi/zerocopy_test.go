package iscsi

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// zcKeys are the default operational keys with the given
// MaxRecvDataSegmentLength, MaxBurstLength and digests.
func zcKeys(mrdsl, burst int, hd, dd bool) []kv {
	keys := dropKey(dropKey(dropKey(dropKey(defaultKeys(), "MaxRecvDataSegmentLength"), "MaxBurstLength"), "HeaderDigest"), "DataDigest")
	dig := func(on bool) string {
		if on {
			return "CRC32C"
		}
		return "None"
	}
	return append(keys, kv{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(mrdsl)},
		kv{Key: "MaxBurstLength", Value: strconv.Itoa(burst)},
		kv{Key: "HeaderDigest", Value: dig(hd)}, kv{Key: "DataDigest", Value: dig(dd)})
}

// TestZeroCopyDataIn reads sizes around the zero-copy threshold and the
// segment and burst boundaries, with and without digests, and checks the
// bytes against the file and that sendfile was used exactly when it may
// be (the counter): never with a data digest, segments smaller than
// zeroCopyMinSeg or reads smaller than zeroCopyMin.
func TestZeroCopyDataIn(t *testing.T) {
	const size = 8 << 20
	b := newFileBackend(t, size)
	data := pattern(size, 13)
	if _, err := b.f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, b, nil)
	s.zeroCopy = true
	cases := []struct {
		mrdsl, burst int
		hd, dd       bool
	}{
		{262144, 1 << 20, false, false},
		{65536, 262144, true, false},
		{16384, 1 << 20, false, false},
		{8192, 65536, false, false},   // segments too small: copy
		{262144, 1 << 20, true, true}, // data digest: copy
		{131072, 196608, false, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("mrdsl%d-burst%d-hd%v-dd%v", tc.mrdsl, tc.burst, tc.hd, tc.dd), func(t *testing.T) {
			i := dialIni(t, addrOf(s))
			i.mustLogin(loginOpts{keys: zcKeys(tc.mrdsl, tc.burst, tc.hd, tc.dd)})
			if i.hd != tc.hd || i.dd != tc.dd {
				t.Fatalf("digests negotiated hd=%v dd=%v", i.hd, i.dd)
			}
			var sizes []int
			for _, base := range []int{zeroCopyMin, tc.mrdsl, tc.burst, 1 << 20, 2 << 20} {
				sizes = append(sizes, base-512, base, base+512)
			}
			for k, n := range sizes {
				if n <= 0 {
					continue
				}
				lba := uint32(k*7) % 64 // unaligned to pages as well
				before := s.ZeroCopyStats()
				r := i.readBlocks(lba, n/testBlock)
				off := int(lba) * testBlock
				if !bytes.Equal(r.in, data[off:off+n]) {
					t.Fatalf("read of %d bytes at %d differs from the file", n, off)
				}
				if r.maxSeg > tc.mrdsl {
					t.Fatalf("Data-In segment of %d bytes, initiator accepts %d", r.maxSeg, tc.mrdsl)
				}
				want := uint64(0)
				if n >= zeroCopyMin && !tc.dd && tc.mrdsl >= zeroCopyMinSeg {
					want = 1
				}
				after := s.ZeroCopyStats()
				if got := after.Reads - before.Reads; got != want {
					t.Fatalf("read of %d bytes: %d zero-copy sends, want %d", n, got, want)
				}
				if want == 1 && after.Bytes-before.Bytes != uint64(n) {
					t.Fatalf("read of %d bytes: zero-copy bytes %d", n, after.Bytes-before.Bytes)
				}
			}
		})
	}
	if refs := b.vol.Load().Refs(); refs != 0 {
		t.Fatalf("%d file references still out after every read answered", refs)
	}
}

// TestZeroCopyFallback: a backend that answers FileOK with a copy (a
// remote volume, a LUN in a migration) is served from the buffer.
func TestZeroCopyFallback(t *testing.T) {
	b := newFileBackend(t, 4<<20)
	data := pattern(1<<20, 17)
	if _, err := b.f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	b.noFileRefs.Store(true)
	s := startServer(t, b, nil)
	s.zeroCopy = true
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	r := i.readBlocks(0, len(data)/testBlock)
	if !bytes.Equal(r.in, data) {
		t.Fatal("read differs from the file")
	}
	if z := s.ZeroCopyStats(); z.Reads != 0 || z.Copied != 1 {
		t.Fatalf("zero-copy stats %+v, want 0 reads and 1 copied", z)
	}
}

// fdTarget is what /proc/self/fd/fd names ("" when it is not open).
func fdTarget(fd int) string {
	s, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return ""
	}
	return s
}

// TestZeroCopyLifetime closes the volume while a zero-copy send is blocked
// on a full socket (the initiator does not read): Close returns at once,
// the descriptor stays open (files opened meanwhile cannot take its
// number), no Data-In buffer is held from the budget during the send, the
// initiator then receives exactly the file's bytes, and the descriptor is
// closed once the send is done.
func TestZeroCopyLifetime(t *testing.T) {
	const n = 16 << 20
	b := newFileBackend(t, n+(1<<20))
	data := pattern(n, 21)
	if _, err := b.f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	vol := b.vol.Load()
	path := vol.Path()
	s := startServer(t, b, func(o *Options) { o.NopInterval = -1; o.NopTimeout = time.Minute })
	s.zeroCopy = true
	i := dialIni(t, addrOf(s))
	i.nc.SetDeadline(time.Now().Add(2 * time.Minute))
	i.mustLogin(loginOpts{})
	// A small receive window: 16 MiB cannot sit in the socket buffers.
	if err := i.nc.(*net.TCPConn).SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	c := &icmd{cdb: read10(0, n/testBlock), read: true, edtl: n}
	if err := i.sendCmd(c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the READ to hold a file reference", 30*time.Second, func() bool { return vol.Refs() == 1 })
	fd := int(vol.Fd())
	closed := make(chan error, 1)
	go func() { closed <- vol.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("volume Close waited for a blocked zero-copy send")
	}
	if got := fdTarget(fd); got != path {
		t.Fatalf("fd %d names %q after Close with a send in flight, want %s", fd, got, path)
	}
	// Files opened now must not get the descriptor's number.
	decoy := filepath.Join(t.TempDir(), "decoy")
	if err := os.WriteFile(decoy, bytes.Repeat([]byte{0xee}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		f, err := os.Open(decoy)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if int(f.Fd()) == fd {
			t.Fatalf("a new file took fd %d of a volume whose bytes are being sent", fd)
		}
	}
	if u := s.budget.stats().Used; u != 0 {
		t.Fatalf("%d bytes of the buffer budget held by a zero-copy send, want 0", u)
	}
	if vol.Refs() != 1 {
		t.Fatalf("%d references, want the blocked send's 1", vol.Refs())
	}
	// Now read everything.
	var got []byte
	for {
		p, err := i.read()
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		if p.h.Opcode() != pdu.OpDataIn {
			t.Fatalf("opcode %#x, want Data-In", p.h.Opcode())
		}
		got = append(got, p.data...)
		if p.h.Flags()&0x01 != 0 {
			if st := p.h.B[3]; st != 0 {
				t.Fatalf("status %#x", st)
			}
			break
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the initiator received other bytes than the file's")
	}
	waitFor(t, "the reference to be released", 30*time.Second, func() bool { return vol.Refs() == 0 })
	if got := fdTarget(fd); got == path {
		t.Fatalf("fd %d still open on %s after the send", fd, path)
	}
	if z := s.ZeroCopyStats(); z.Reads != 1 || z.Bytes != n {
		t.Fatalf("zero-copy stats %+v", z)
	}
}
