package target

import (
	"path/filepath"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// benchNexus is a server with one 16 MiB LUN (512-byte blocks) on a
// sparse file and an open nexus to it, for the hot-path benchmarks.
func benchNexus(b *testing.B) iscsi.Nexus {
	b.Helper()
	s, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	v, err := volume.Create(filepath.Join(b.TempDir(), "bench"), 16<<20, volume.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = v.Close() })
	if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("B", 0, v, 512)}}}); err != nil {
		b.Fatal(err)
	}
	nx, err := s.OpenNexus(iscsi.NexusInfo{Target: testIQN, Initiator: "iqn.bench", ISID: [6]byte{1}})
	if err != nil {
		b.Fatal(err)
	}
	return nx
}
