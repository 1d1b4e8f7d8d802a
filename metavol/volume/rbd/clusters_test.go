//go:build rbd

package rbd

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

// Clusters keeps one connection per configuration: a second Get of one
// configuration returns the same connection, another configuration gets
// its own, a configuration that cannot connect is not kept, Retain closes
// only the connections not kept (an image opened through one keeps
// working: it has a client of its own), and after Close Get refuses.
func TestClusters(t *testing.T) {
	if cluster == nil {
		t.Skip("ceph not installed")
	}
	var cs Clusters
	a := Config{Conf: cluster.Conf}
	b := Config{Conf: cluster.Conf, ID: "admin"} // same cluster, another configuration
	ca, err := cs.Get(a)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := cs.Get(a); err != nil || again != ca {
		t.Fatalf("second Get of %s: %p, %v; want the first connection %p", a, again, err, ca)
	}
	cb, err := cs.Get(b)
	if err != nil {
		t.Fatal(err)
	}
	if cb == ca {
		t.Fatalf("Get of %s returned the connection of %s", b, a)
	}
	bad := Config{Conf: filepath.Join(t.TempDir(), "missing.conf")}
	if _, err := cs.Get(bad); err == nil {
		t.Fatalf("Get of %s (no such file) connected", bad)
	}
	if n := len(cs.Open()); n != 2 {
		t.Fatalf("%d connections open, want 2 (the failed one is not kept): %v", n, cs.Open())
	}

	ref := newImage(t, ca, 8<<20)
	v := open(t, ca, ref, OpenOptions{Owner: "clusters-test"})
	if n := cs.Retain(map[Config]bool{b: true}); n != 1 {
		t.Fatalf("Retain closed %d connections, want 1", n)
	}
	if got := cs.Open(); len(got) != 1 || got[0] != b {
		t.Fatalf("open after Retain: %v, want only %s", got, b)
	}
	p := pattern(64<<10, 7)
	if _, err := v.WriteAt(p, 0); err != nil {
		t.Fatalf("write to an image whose admin connection was closed: %v", err)
	}
	if got := readBack(t, v, 0, len(p)); !bytes.Equal(got, p) {
		t.Fatalf("read back after Retain differs")
	}
	if ca2, err := cs.Get(a); err != nil || ca2 == ca {
		t.Fatalf("Get of %s after Retain closed it: %p, %v; want a new connection", a, ca2, err)
	}

	cs.Close()
	if _, err := cs.Get(a); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if n := len(cs.Open()); n != 0 {
		t.Fatalf("%d connections open after Close", n)
	}
}
