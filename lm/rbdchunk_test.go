package lm

import (
	"testing"

	"github.com/lmtgt/lmtgt/metavol"
)

// A pair with an RBD leg copies whole RBD objects (4 MiB), whatever the
// direction; file -> file keeps the server's chunk; the chunk stays a
// multiple of the region size.
func TestCopyChunkRBDLegs(t *testing.T) {
	lun := func(kind string) *lunEntry {
		return &lunEntry{vol: &dataVol{rec: metavol.Volume{Kind: kind}}}
	}
	file, rbd := lun(""), lun(metavol.VolumeKindRBD) // "": a file
	for _, c := range []struct {
		name     string
		opts     Options
		src, tgt *lunEntry
		want     int64
	}{
		{"file to file", Options{}, file, file, 1 << 20},
		{"file to rbd", Options{}, file, rbd, 4 << 20},
		{"rbd to file", Options{}, rbd, file, 4 << 20},
		{"rbd to rbd", Options{}, rbd, rbd, 4 << 20},
		{"larger server chunk kept", Options{ChunkSize: 8 << 20}, file, rbd, 8 << 20},
		{"region multiple", Options{RegionSize: 3 << 20}, file, rbd, 6 << 20},
	} {
		c.opts.fill()
		m := &Manager{opts: c.opts}
		if got := m.copyChunk(c.src, c.tgt); got != c.want {
			t.Errorf("%s: chunk %d, want %d", c.name, got, c.want)
		}
	}
}

// A pair with an RBD leg keeps rbdInFlight chunks in flight in its
// initial copy, whatever the direction; file -> file keeps the server's
// InFlight; a larger server InFlight is kept.
func TestCopyWorkersRBDLegs(t *testing.T) {
	vol := func(kind string) *dataVol { return &dataVol{rec: metavol.Volume{Kind: kind}} }
	file, rbd := vol(""), vol(metavol.VolumeKindRBD)
	for _, c := range []struct {
		name     string
		opts     Options
		src, tgt *dataVol
		want     int
	}{
		{"file to file", Options{}, file, file, 4},
		{"file to rbd", Options{}, file, rbd, rbdInFlight},
		{"rbd to file", Options{}, rbd, file, rbdInFlight},
		{"rbd to rbd", Options{}, rbd, rbd, rbdInFlight},
		{"larger server InFlight kept", Options{InFlight: 16}, file, rbd, 16},
	} {
		c.opts.fill()
		p := &pair{m: &Manager{opts: c.opts}}
		p.vols.Store(&legVols{src: c.src, tgt: c.tgt})
		if got := p.copyWorkers(); got != c.want {
			t.Errorf("%s: %d copy workers, want %d", c.name, got, c.want)
		}
	}
}
