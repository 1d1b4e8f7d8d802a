package target

import (
	"path/filepath"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

func volumeForBench(b *testing.B) (*volume.File, error) {
	v, err := volume.Create(filepath.Join(b.TempDir(), "bench"), 16<<20, volume.Options{})
	if err == nil {
		b.Cleanup(func() { _ = v.Close() })
	}
	return v, err
}

func iscsiNexusInfo() iscsi.NexusInfo {
	return iscsi.NexusInfo{Target: testIQN, Initiator: "iqn.bench", ISID: [6]byte{1}}
}
