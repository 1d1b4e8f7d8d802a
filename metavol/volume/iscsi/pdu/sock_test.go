package pdu

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// TestSockWritevAll: Writev writes every byte of more buffers than one
// writev(2) takes (iovMax) and more data than the socket buffers hold, so
// it goes through partial writes and EAGAIN waits; the peer reads it all
// back in order through Sock.Read, then EOF after the writer closes.
func TestSockWritevAll(t *testing.T) {
	a, b := tcpPair(t)
	wa, rb := NewSock(a), NewSock(b)
	if wa.rc == nil || rb.rc == nil {
		t.Fatal("a TCP connection must use the raw system call path")
	}
	var bufs [][]byte
	var want []byte
	for i := range 3000 {
		n := 1 + i%700
		if i%1000 == 999 {
			n = 3 << 20 // large ones fill the socket buffers
		}
		p := bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, n/3+1)[:n]
		bufs = append(bufs, p)
		want = append(want, p...)
	}
	bufs = append(bufs, nil, []byte{}) // empty buffers are skipped
	type res struct {
		n   int64
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := wa.Writev(bufs)
		a.Close()
		done <- res{n, err}
	}()
	got, err := io.ReadAll(rb)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	r := <-done
	if r.err != nil || r.n != int64(len(want)) {
		t.Fatalf("Writev = %d, %v; want %d, nil", r.n, r.err, len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not what was written (%d bytes)", len(got), len(want))
	}
	for i, v := range wa.iov[:cap(wa.iov)] {
		if v.Base != nil {
			t.Fatalf("iovec %d still references a caller's buffer", i)
		}
	}
}

// TestSockDeadlineAndClose: a read deadline and Close end a Read waiting
// for data as they end net.Conn's; a write to a connection the peer reset
// fails.
func TestSockDeadlineAndClose(t *testing.T) {
	a, b := tcpPair(t)
	s := NewSock(a)
	a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	a.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		errc <- err
	}()
	b.Write([]byte("x"))
	if err := <-errc; err != nil {
		t.Fatalf("read of one byte: %v", err)
	}
	go func() {
		_, err := s.Read(make([]byte, 10))
		errc <- err
	}()
	a.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read ended by Close: %v, want net.ErrClosed", err)
	}

	c, d := tcpPair(t)
	d.(*net.TCPConn).SetLinger(0)
	d.Close() // RST
	sc := NewSock(c)
	var err error
	for range 100 { // the first writes may still be accepted before the RST lands
		if _, err = sc.Writev([][]byte{make([]byte, 64<<10)}); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
}

// TestSockNoAllocs: a read and a writev allocate nothing (the functions
// handed to the runtime are made once per Sock).
func TestSockNoAllocs(t *testing.T) {
	a, b := tcpPair(t)
	wa, rb := NewSock(a), NewSock(b)
	out := [][]byte{make([]byte, 48), make([]byte, 4096)}
	in := make([]byte, 48+4096)
	n := testing.AllocsPerRun(200, func() {
		if _, err := wa.Writev(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rb, in); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%.1f allocations per writev and read, want 0", n)
	}
}

// TestSockPlainConn: a connection that is not a syscall.Conn (net.Pipe)
// uses its own Read and Write.
func TestSockPlainConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	s := NewSock(a)
	if s.rc != nil {
		t.Fatal("net.Pipe has no descriptor")
	}
	go NewSock(b).Writev([][]byte{[]byte("hello "), []byte("world")})
	got := make([]byte, 11)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "hello world" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// TestSockWriterParkedDeadlineClose (review): a Writev parked on EAGAIN
// (the peer reads nothing) ends at its write deadline with the bytes it
// wrote counted, and a second one parked ends at Close with net.ErrClosed;
// sockets opened right after the Close (which may get the same descriptor
// number) receive nothing from the parked writer.
func TestSockWriterParkedDeadlineClose(t *testing.T) {
	a, b := tcpPair(t)
	s := NewSock(a)
	big := bytes.Repeat([]byte{0xa5}, 16<<20) // more than both socket buffers
	a.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := s.Writev([][]byte{big[:1<<20], big[1<<20:]})
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= int64(len(big)) {
		t.Fatalf("writev past the deadline: %d bytes, %v; want a partial write and os.ErrDeadlineExceeded", n, err)
	}
	a.SetWriteDeadline(time.Time{})
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		_, err := s.Writev([][]byte{big})
		errc <- err
	}()
	<-started
	a.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writev ended by Close: %v, want net.ErrClosed", err)
	}
	// New connections (descriptor numbers reused) carry only their own bytes.
	for range 4 {
		c, d := tcpPair(t)
		if _, err := c.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		got, err := io.ReadAll(d)
		if err != nil || string(got) != "ok" {
			t.Fatalf("a connection opened after the Close received %d bytes (%v), want just \"ok\"", len(got), err)
		}
	}
	_ = b
}
