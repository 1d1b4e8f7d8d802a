package target

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// SCSI identity of every LUN.
const (
	vendorID        = "LMTGT"
	productID       = "lmtgt LUN"
	productRev      = "0001"
	relTargetPortID = 1
	tpgt            = 1
)

// lunDev is one logical unit, keyed by LUN ID. It lives as long as the LUN
// is mapped in at least one target and keeps its reservations and its
// COMPARE AND WRITE lock across configuration and capacity changes.
type lunDev struct {
	srv *Server
	id  string
	st  atomic.Pointer[luState]
	// io makes COMPARE AND WRITE and ORWRITE atomic against every other
	// change of the LUN's blocks: commands that modify blocks (WRITE,
	// WRITE AND VERIFY, WRITE SAME, UNMAP) hold it shared, those two
	// exclusively, each for the volume call(s) only. READ and VERIFY do
	// not take it: they change nothing, and a read that runs beside any
	// write (atomic or not) may return the old or the new data anyway:
	// SCSI orders no READ against a WRITE in flight beside it.
	io    sync.RWMutex
	res   *reservations
	stats lunCounters // stats.go
}

// luState is an immutable view of a LUN's configuration with the gotgt
// logical unit that serves its mode pages; a capacity or configuration
// change builds a new one.
type luState struct {
	dev    *lunDev
	cfg    LUN
	vol    volume.Volume
	shift  uint
	bs     uint32
	blocks uint64
	gt     gotgtLU             // MODE SENSE/SELECT, SEND DIAGNOSTIC (gotgt.go)
	id     presented           // identityOf(cfg)
	lat    HostLatencyObserver // vol's, or nil (latency.go)
	quick  QuickVolume         // vol's, or nil
}

// QuickVolume is an optional Volume extension: Quick reports whether a
// buffered write completes in memory (a local file's page cache) rather
// than waiting for a device or the network. The transport runs such
// writes on the connection's reader even at queue depth (iscsi.QuickNexus).
// It must be cheap and never block.
type QuickVolume interface {
	Quick() bool
}

func newLunDev(s *Server, l LUN) (*lunDev, error) {
	d := &lunDev{srv: s, id: l.ID}
	d.stats.init()
	res, err := loadReservations(s.opts.Reservations, d)
	if err != nil {
		return nil, err
	}
	d.res = res
	if err := d.rebuild(l, true); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *lunDev) cur() *luState { return d.st.Load() }

// needsRebuild reports whether l differs from the served configuration.
func (d *lunDev) needsRebuild(l LUN) bool {
	c := d.cur().cfg
	return c.Volume != l.Volume || blockSizeOf(c) != blockSizeOf(l) ||
		c.NAA != l.NAA || c.Serial != l.Serial || c.Name != l.Name || !c.Adopted.equal(l.Adopted)
}

// sameConfig checks that a LUN ID mapped twice in one Apply is described
// the same way both times.
func (d *lunDev) sameConfig(l LUN) error {
	c := d.cur().cfg
	if c.Volume != l.Volume || blockSizeOf(c) != blockSizeOf(l) || c.NAA != l.NAA || c.Serial != l.Serial || !c.Adopted.equal(l.Adopted) {
		return fmt.Errorf("%w: lun %s mapped twice with different settings", ErrInvalidConfig, l.ID)
	}
	return nil
}

func blockSizeOf(l LUN) uint32 {
	if l.BlockSize == 0 {
		return 512
	}
	return l.BlockSize
}

// rebuild publishes a new luState for l (re-reading the volume size).
func (d *lunDev) rebuild(l LUN, _ bool) error {
	bs := blockSizeOf(l)
	shift := uint(9)
	if bs == 4096 {
		shift = 12
	}
	size := l.Volume.Size()
	if size < int64(bs) {
		return fmt.Errorf("%w: lun %s: volume of %d bytes is smaller than one block", ErrInvalidConfig, l.ID, size)
	}
	gt, err := newGotgtLU(l.ID, size, shift)
	if err != nil {
		return err
	}
	lat, _ := l.Volume.(HostLatencyObserver)
	quick, _ := l.Volume.(QuickVolume)
	d.st.Store(&luState{dev: d, cfg: l, vol: l.Volume, shift: shift, bs: bs, blocks: uint64(size) >> shift,
		gt: gt, id: identityOf(l), lat: lat, quick: quick})
	return nil
}

// allocLength decodes the allocation length of the data-in commands we
// answer (ours and the gotgt adapter's).
func allocLength(cdb []byte) int {
	switch cdb[0] {
	case 0x12, 0x1a: // INQUIRY (16-bit, bytes 3-4), MODE SENSE(6) (byte 4)
		if cdb[0] == 0x12 {
			return int(cdb[3])<<8 | int(cdb[4])
		}
		return int(cdb[4])
	case 0x03:
		return int(cdb[4])
	case 0x5a, 0x5e, 0x4d:
		return int(cdb[7])<<8 | int(cdb[8])
	case 0xa0, 0xa3:
		return int(be32(cdb[6:10]))
	case 0x9e:
		return int(be32(cdb[10:14]))
	}
	return 0
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }
func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
func be64(b []byte) uint64 { return uint64(be32(b))<<32 | uint64(be32(b[4:])) }
