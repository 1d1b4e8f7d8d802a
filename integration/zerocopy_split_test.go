package integration

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallProxy forwards TCP connections to a portal; once a connection has
// forwarded limit bytes from the portal to the client it stops reading
// the portal's side until resume is closed (an initiator that is slow to
// read its socket: the target's Data-In stays in the socket buffers).
type stallProxy struct {
	ln      net.Listener
	target  string
	limit   int64
	resume  chan struct{}
	stalled atomic.Bool
	wg      sync.WaitGroup
}

func newStallProxy(t *testing.T, target string, limit int64) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, limit: limit, resume: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(u, c); u.Close() }()
			go func() { defer p.wg.Done(); p.down(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case <-p.resume:
		default:
			close(p.resume)
		}
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) down(c, u net.Conn) {
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		want := int64(len(buf))
		if !p.stalled.Load() || sent < p.limit {
			if r := p.limit - sent; r > 0 && r < want {
				want = r
			}
		}
		if sent >= p.limit {
			p.stalled.Store(true)
			<-p.resume
		}
		n, err := u.Read(buf[:want])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
		}
		if err != nil {
			return
		}
	}
}

// TestZeroCopyReadAcrossSplit: a large READ of LUN zcs whose Data-In is
// still in the socket (the host reads it slowly: well within the
// NopTimeout) while zcs is migrated and split must return zcs's bytes,
// not what is written afterwards to the other LUN of the pair (which the
// split gives zcs's old volume). It failed with zero-copy Data-In on in
// the daemon (branch zc): the sendfile'd pages (and the descriptor the
// READ held) were the old source file's, which the target LUN writes
// after the split; zero-copy is off in the daemon since.
func TestZeroCopyReadAcrossSplit(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "", "--metrics", "127.0.0.1:0")
	addr := metricsAddr(t, d)
	iqn := d.Export("zcs", "8MiB", 512)
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0xaa 0 8M")
	d.OK("lun", "create", "zcs-dst", "--size", "8MiB", "--block-size", "512")

	px := newStallProxy(t, d.Portal, 64<<10)
	done := make(chan result, 1)
	go func() {
		done <- qemuIO(t, "iscsi://"+px.ln.Addr().String()+"/"+iqn+"/0", "read -P 0xaa 0 2M")
	}()
	waitFor(t, 20*time.Second, "the 2 MiB READ answered, its Data-In stalled in the socket", func() (bool, string) {
		return px.stalled.Load(), ""
	})
	if r := scrape(t, addr)["lmtgt_iscsi_zero_copy_reads_total"]; r != 0 {
		t.Fatalf("%v zero-copy READs: zero-copy Data-In is off in the daemon", r)
	}

	// While the host has not read the READ's data yet: migrate, split,
	// and write the target LUN (now on zc's old file).
	d.OK("migration", "create", "--source", "zcs", "--target", "zcs-dst", "--speed", "highest", "--auto-split")
	d.waitMig("zcs", 20*time.Second, "split")
	dst := d.exportLUN("zcs-dst")
	qemuIOOK(t, d.URL(dst, 0), "write -P 0x55 0 8M")

	close(px.resume)
	r := <-done
	out := r.Stdout + r.Stderr
	if r.Code != 0 || strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("READ of zcs across its split returned bytes of the other LUN (written after the split):\n%s", r)
	}
}
