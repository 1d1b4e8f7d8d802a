//go:build rbd

package rbd

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume/rbd/miniceph"
)

// cluster is the package's mini-ceph, started once by TestMain; nil when
// Ceph is not installed (the tests skip and say so).
var cluster *miniceph.Cluster

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if err := miniceph.Installed(); err != nil {
		fmt.Fprintln(os.Stderr, "rbd tests:", err)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "rbdt-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	c, err := miniceph.Start(dir, "memstore")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Stop()
	cluster = c
	return m.Run()
}

// testClient returns a new client of the test cluster (one librados client
// per call: two connections are two clients to Ceph).
func testClient(t testing.TB) *Cluster {
	t.Helper()
	if cluster == nil {
		t.Skip(miniceph.ErrMissing)
	}
	c, err := Connect(Config{Conf: cluster.Conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newImage creates pool rbd image name of size bytes and removes it at
// the end of the test.
func newImage(t testing.TB, c *Cluster, size int64) Ref {
	t.Helper()
	ref := Ref{Pool: "rbd", Image: fmt.Sprintf("t%d-%s", os.Getpid(), t.Name())}
	if err := c.Create(ref, size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A client of its own: c may have been blocklisted by a takeover.
		rc, err := Connect(Config{Conf: cluster.Conf})
		if err != nil {
			t.Errorf("remove %s: %v", ref, err)
			return
		}
		defer rc.Close()
		if err := rc.Remove(ref); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("remove %s: %v", ref, err)
		}
	})
	return ref
}

func open(t testing.TB, c *Cluster, ref Ref, opts OpenOptions) *Volume {
	t.Helper()
	v, err := c.Open(ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}
