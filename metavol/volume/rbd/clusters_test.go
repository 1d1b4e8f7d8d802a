//go:build rbd

package rbd

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// Clusters keeps one connection per configuration: a second Use of one
// configuration returns the same connection, another configuration gets
// its own, a configuration that cannot connect is not kept, Retain
// retires only the connections not kept, a retired connection still in
// use answers until its user is done, an image opened through it keeps
// working (it has a client of its own), and after Close Use refuses.
func TestClusters(t *testing.T) {
	if cluster == nil {
		t.Skip("ceph not installed")
	}
	var cs Clusters
	a := Config{Conf: cluster.Conf}
	b := Config{Conf: cluster.Conf, ID: "admin"} // same cluster, another configuration
	ca, doneA, err := cs.Use(a)
	if err != nil {
		t.Fatal(err)
	}
	again, doneAgain, err := cs.Use(a)
	if err != nil || again != ca {
		t.Fatalf("second Use of %s: %p, %v; want the first connection %p", a, again, err, ca)
	}
	doneAgain()
	doneAgain() // twice counts once
	cb, doneB, err := cs.Use(b)
	if err != nil {
		t.Fatal(err)
	}
	doneB()
	if cb == ca {
		t.Fatalf("Use of %s returned the connection of %s", b, a)
	}
	bad := Config{Conf: filepath.Join(t.TempDir(), "missing.conf")}
	if _, _, err := cs.Use(bad); err == nil {
		t.Fatalf("Use of %s (no such file) connected", bad)
	}
	if n := len(cs.Open()); n != 2 {
		t.Fatalf("%d connections open, want 2 (the failed one is not kept): %v", n, cs.Open())
	}

	ref := newImage(t, ca, 8<<20)
	v := open(t, ca, ref, OpenOptions{Owner: "clusters-test"})
	if n := cs.Retain(map[Config]bool{b: true}); n != 1 {
		t.Fatalf("Retain retired %d connections, want 1", n)
	}
	if got := cs.Open(); len(got) != 1 || got[0] != b {
		t.Fatalf("open after Retain: %v, want only %s", got, b)
	}
	// Still in use (doneA not called): it answers.
	if st := ca.State(); !strings.HasPrefix(st, "up") {
		t.Fatalf("a retired connection still in use: state %q, want up", st)
	}
	doneA() // the last user: closed now
	p := pattern(64<<10, 7)
	if _, err := v.WriteAt(p, 0); err != nil {
		t.Fatalf("write to an image whose admin connection was closed: %v", err)
	}
	if got := readBack(t, v, 0, len(p)); !bytes.Equal(got, p) {
		t.Fatalf("read back after Retain differs")
	}
	ca2, done2, err := cs.Use(a)
	if err != nil || ca2 == ca {
		t.Fatalf("Use of %s after Retain closed it: %p, %v; want a new connection", a, ca2, err)
	}
	done2()

	cs.Close()
	if _, _, err := cs.Use(a); !errors.Is(err, ErrClosed) {
		t.Fatalf("Use after Close: %v, want ErrClosed", err)
	}
	if n := len(cs.Open()); n != 0 {
		t.Fatalf("%d connections open after Close", n)
	}
}
