package target

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gostor/gotgt/pkg/api"
	"github.com/gostor/gotgt/pkg/scsi"

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
	// io orders data access: reads and writes hold it shared, COMPARE AND
	// WRITE exclusively (atomic against every other write).
	io    sync.RWMutex
	res   *reservations
	stats lunCounters // stats.go
}

// luState is an immutable view of a LUN's configuration with its gotgt
// logical unit; a capacity or configuration change builds a new one.
type luState struct {
	dev    *lunDev
	cfg    LUN
	vol    volume.Volume
	shift  uint
	bs     uint32
	blocks uint64
	lu     *api.SCSILu
	id     presented // identityOf(cfg)
}

func newLunDev(s *Server, l LUN) (*lunDev, error) {
	d := &lunDev{srv: s, id: l.ID}
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
	id := identityOf(l)
	lu, err := newGotgtLU(l.ID, l.Volume, shift, id)
	if err != nil {
		return err
	}
	st := &luState{dev: d, cfg: l, vol: l.Volume, shift: shift, bs: bs, blocks: uint64(size) >> shift, lu: lu, id: id}
	st.install()
	d.st.Store(st)
	return nil
}

// install puts our handlers into the LU's gotgt op table. It runs before
// the luState is published, so no command sees a half-filled table.
func (st *luState) install() {
	ops := opTable(st.lu)
	set := func(fn api.CommandFunc, codes ...byte) {
		for _, op := range codes {
			ops[op] = scsi.NewSCSIDeviceOperation(fn, nil, 0)
		}
	}
	illegal := func(_ int, cmd *api.SCSICommand) api.SAMStat {
		return checkCondition(cmd, keyIllegalRequest, ascInvalidOpcode)
	}
	for i := range ops {
		ops[i] = scsi.NewSCSIDeviceOperation(illegal, nil, 0)
	}
	// gotgt's own emulation, kept where it is right.
	set(st.testUnitReady, 0x00) // gotgt's, or NOT READY while offline
	set(wrapNoData(scsi.SBCModeSelect), 0x15, 0x55)
	set(wrapNoData(scsi.SPCSendDiagnostics), 0x1d)
	set(st.gotgtDataIn(scsi.SBCModeSense, modeSenseLen), 0x1a, 0x5a)

	// Our handlers.
	set(st.read, 0x08, 0x28, 0xa8, 0x88)
	set(st.write, 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e)
	set(st.verify, 0x2f, 0xaf, 0x8f)
	set(st.prefetch, 0x34, 0x90)
	set(st.syncCache, 0x35, 0x91)
	set(st.writeSame, 0x41, 0x93)
	set(st.unmap, 0x42)
	set(st.compareAndWrite, 0x89)
	set(st.orWrite, 0x8b) // ours: gotgt's ORWRITE dereferences a nil buffer
	set(st.readCapacity10, 0x25)
	set(st.serviceActionIn16, 0x9e)
	set(st.inquiry, 0x12)
	set(st.reportLUNs, 0xa0)
	set(st.requestSense, 0x03)
	set(st.startStop, 0x1b)
	set(st.preventAllow, 0x1e)
	set(st.formatUnit, 0x04)
	set(st.reserve, 0x16, 0x56)
	set(st.release, 0x17, 0x57)
	set(st.persistentReserveIn, 0x5e)
	set(st.persistentReserveOut, 0x5f)
	set(st.maintenanceIn, 0xa3)
	set(st.readDefectData, 0x37, 0xb7)

	// gotgt's luPerformCommand boxes the op-table entry into an interface
	// on every call (a heap allocation per command); index the same
	// per-LU table directly instead.
	st.lu.PerformCommand = func(host int, cmd *api.SCSICommand) api.SAMStat {
		return ops[cmd.SCB[0]].CommandPerformFunc(host, cmd)
	}
}

// ---- helpers shared by the handlers ----

// checkCondition sets fixed-format sense on cmd.
func checkCondition(cmd *api.SCSICommand, key byte, code asc) api.SAMStat {
	return checkConditionInfo(cmd, key, code, 0, false)
}

func checkConditionInfo(cmd *api.SCSICommand, key byte, code asc, info uint32, valid bool) api.SAMStat {
	s := buildSense(key, code, info, valid)
	cmd.SenseBuffer = &api.SenseBuffer{Buffer: s, Length: uint32(len(s))}
	cmd.InSDBBuffer.Resid = 0
	return api.SAMStatCheckCondition
}

// stateTransferLength marks cmd.TL as set by our handler: the number of
// bytes the CDB itself asks to move (for residual reporting).
const stateTransferLength api.SCSICommandState = 0x4c4d // "LM"

// setTransferLength records the CDB's transfer length (bytes).
func setTransferLength(cmd *api.SCSICommand, n uint64) {
	if n > 0xffffffff {
		n = 0xffffffff
	}
	cmd.TL = uint32(n)
	cmd.State = stateTransferLength
}

// invalidCDBField reports INVALID FIELD IN CDB pointing at byte field.
func invalidCDBField(cmd *api.SCSICommand, field uint16) api.SAMStat {
	s := withFieldPointer(buildSense(keyIllegalRequest, ascInvalidFieldInCDB, 0, false), field)
	cmd.SenseBuffer = &api.SenseBuffer{Buffer: s, Length: uint32(len(s))}
	cmd.InSDBBuffer.Resid = 0
	return api.SAMStatCheckCondition
}

// produced records n bytes of data-in (our convention: InSDBBuffer.Resid
// carries the bytes produced; Execute turns it into DataInLen).
func produced(cmd *api.SCSICommand, n int) api.SAMStat {
	if n > len(cmd.InSDBBuffer.Buffer) {
		n = len(cmd.InSDBBuffer.Buffer)
	}
	if n < 0 {
		n = 0
	}
	cmd.InSDBBuffer.Resid = uint32(n)
	return api.SAMStatGood
}

// respond copies data into the data-in buffer, truncated to alloc.
func respond(cmd *api.SCSICommand, data []byte, alloc int) api.SAMStat {
	if len(data) > alloc {
		data = data[:alloc]
	}
	setTransferLength(cmd, uint64(len(data)))
	n := copy(cmd.InSDBBuffer.Buffer, data)
	return produced(cmd, n)
}

// wrapNoData runs a gotgt handler that produces no data-in.
func wrapNoData(fn api.CommandFunc) api.CommandFunc {
	return func(host int, cmd *api.SCSICommand) api.SAMStat {
		r := fn(host, cmd)
		cmd.InSDBBuffer.Resid = 0
		return r
	}
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// gotgtDataIn runs a gotgt data-in handler against a scratch buffer (gotgt
// indexes its buffer freely) and copies what it produced, as told by
// lengthOf, truncated to the allocation length, into the data-in buffer.
func (st *luState) gotgtDataIn(fn api.CommandFunc, lengthOf func(cdb, data []byte) int) api.CommandFunc {
	return func(host int, cmd *api.SCSICommand) api.SAMStat {
		bp := scratchPool.Get().(*[]byte)
		defer scratchPool.Put(bp)
		scratch := *bp
		clear(scratch)
		out := cmd.InSDBBuffer
		tmp := api.SCSIDataBuffer{Buffer: scratch, Length: uint32(len(scratch))}
		cmd.InSDBBuffer = &tmp
		r := fn(host, cmd)
		cmd.InSDBBuffer = out
		if r.Stat != statusGood {
			out.Resid = 0
			return r
		}
		n := lengthOf(cmd.SCB, scratch)
		if a := allocLength(cmd.SCB); n > a {
			n = a
		}
		if n > len(scratch) {
			n = len(scratch)
		}
		return respond(cmd, scratch[:n], n)
	}
}

// modeSenseLen is the length of MODE SENSE(6/10) parameter data.
func modeSenseLen(cdb, data []byte) int {
	if cdb[0] == 0x1a {
		return int(data[0]) + 1
	}
	return int(data[0])<<8 | int(data[1]) + 2
}

// allocLength decodes the allocation length of the data-in commands we
// answer through gotgtDataIn or our own code.
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

var zero64 [64]byte
