package iscsi

import "testing"

// BenchmarkQD1Read4K measures one 4 KiB READ at a time through the loopback
// backend (latency of the transport's command path).
func BenchmarkQD1Read4K(b *testing.B) {
	fb := newFileBackend(b, 16<<20)
	s := startServer(b, fb, nil)
	i := dialIni(b, addrOf(s))
	i.mustLogin(loginOpts{target: testIQN})
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		c := &icmd{cdb: read10(uint32(n%1000)*8, 8), read: true, edtl: 4096}
		if err := i.run(c); err != nil || c.status != 0 {
			b.Fatal(err, c.status)
		}
	}
}

// BenchmarkQD1Write4K is the same for WRITE with immediate data.
func BenchmarkQD1Write4K(b *testing.B) {
	fb := newFileBackend(b, 16<<20)
	s := startServer(b, fb, nil)
	i := dialIni(b, addrOf(s))
	i.mustLogin(loginOpts{target: testIQN})
	data := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		c := &icmd{cdb: write10(uint32(n%1000)*8, 8), edtl: 4096, out: data}
		if err := i.run(c); err != nil || c.status != 0 {
			b.Fatal(err, c.status)
		}
	}
}
