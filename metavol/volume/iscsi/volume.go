package iscsi

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// unmapMode is how Volume.Unmap reaches the target.
type unmapMode int32

const (
	unmapSCSI      unmapMode = iota // UNMAP: thin provisioned and reads zeros after (LBPRZ)
	unmapWriteSame                  // WRITE SAME(16) of a zero block
	unmapWrite                      // plain WRITE of zeros
)

func (m unmapMode) String() string {
	switch m {
	case unmapSCSI:
		return "unmap"
	case unmapWriteSame:
		return "write-same-zero"
	case unmapWrite:
		return "write-zero"
	}
	return fmt.Sprintf("unmapMode(%d)", int32(m))
}

// Volume is a data volume on a LUN of another iSCSI target, reached
// through lmtgt's own initiator. It implements volume.Volume.
type Volume struct {
	c         *Client
	name      string
	blockSize int64
	size      int64
	maxXfer   int64 // bytes per command (VPD B0 maximum transfer length, capped)
	// UNMAP limits (VPD B0), in blocks and descriptors.
	maxUnmapBlocks uint32
	maxUnmapDescs  uint32
	unmap          atomic.Int32 // unmapMode; falls back when the target refuses
	// lbaStatus: the LUN is thin provisioned (LBPME) and GET LBA STATUS has
	// not been refused, so NextData can skip deallocated ranges.
	lbaStatus atomic.Bool
	// dataHint is the last extent GET LBA STATUS reported mapped (start,
	// end in bytes): NextData inside it answers without a round trip
	// (the copier asks for every chunk, twice). Answering "data" from an
	// old hint is never wrong: only an UNMAP makes a mapped range a hole,
	// and a hole read as data reads zeros (Unmap resets the hint anyway,
	// to keep holes visible).
	dataHint struct {
		sync.Mutex
		start, end int64
	}
	rmw    sync.Mutex // serialises unaligned (read-modify-write) writes
	closed atomic.Bool
}

var _ volume.Volume = (*Volume)(nil)

// maxCommandBytes caps one READ/WRITE so one command never pins more than
// this much of a caller's buffer on the wire.
const maxCommandBytes = 8 << 20

// Open logs in to the LUN of an iscsi:// URL (see ParseURL) and reads its
// geometry. cfg supplies everything the URL does not carry (timeouts,
// mutual CHAP, digests); its Portal/Target/LUN/CHAP fields are ignored.
func Open(ctx context.Context, rawURL string, cfg Config, log *slog.Logger) (*Volume, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg.Portal, cfg.Target, cfg.LUN = u.Portal, u.Target, u.LUN
	cfg.CHAPUser, cfg.CHAPSecret = u.CHAPUser, u.CHAPSecret
	return OpenConfig(ctx, cfg, log)
}

// OpenConfig is Open with a Config.
func OpenConfig(ctx context.Context, cfg Config, log *slog.Logger) (*Volume, error) {
	c, err := Dial(ctx, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("open remote volume %s: %w", cfg, err)
	}
	v := &Volume{c: c, name: c.cfg.String()}
	if err := v.probe(); err != nil {
		c.Close()
		return nil, fmt.Errorf("open remote volume %s: %w", v.name, err)
	}
	return v, nil
}

// probe reads capacity, block size, the block limits and provisioning.
func (v *Volume) probe() error {
	c := v.c
	// TEST UNIT READY clears power-on UAs. With AllowStandby it is left
	// out: a transitioning path answers it NOT READY, which exec retries
	// for seconds; the commands below are answered in every ALUA state,
	// and exec retries their unit attentions.
	if !c.cfg.AllowStandby {
		if _, err := c.exec(Command{CDB: make([]byte, 6)}); err != nil {
			return err
		}
	}
	inq := make([]byte, 96)
	if _, err := c.exec(Command{CDB: cdbInquiry(0, false, uint16(len(inq))), Data: inq, Read: true}); err != nil {
		return err
	}
	if pt := inq[0] & 0x1f; pt != 0 {
		return fmt.Errorf("peripheral device type 0x%02x is not a disk", pt)
	}
	rc := make([]byte, 32)
	lbpme, lbprz := false, false
	if _, err := c.exec(Command{CDB: cdbReadCapacity16(32), Data: rc, Read: true}); err == nil {
		v.blockSize = int64(binary.BigEndian.Uint32(rc[8:12]))
		v.size = (int64(binary.BigEndian.Uint64(rc[0:8])) + 1) * v.blockSize
		lbpme, lbprz = rc[14]&0x80 != 0, rc[14]&0x40 != 0
	} else if IsInvalidOpcode(err) {
		rc10 := make([]byte, 8)
		if _, err := c.exec(Command{CDB: []byte{opReadCapacity, 0, 0, 0, 0, 0, 0, 0, 0, 0}, Data: rc10, Read: true}); err != nil {
			return err
		}
		v.blockSize = int64(binary.BigEndian.Uint32(rc10[4:8]))
		v.size = (int64(binary.BigEndian.Uint32(rc10[0:4])) + 1) * v.blockSize
	} else {
		return err
	}
	if v.blockSize < 512 || v.blockSize > 65536 || v.blockSize&(v.blockSize-1) != 0 {
		return fmt.Errorf("block size %d not supported", v.blockSize)
	}
	v.maxXfer = maxCommandBytes
	v.maxUnmapBlocks, v.maxUnmapDescs = 0, 0
	lbpu := false
	pages := v.vpdPages()
	if pages[0xb0] {
		b0 := make([]byte, 64)
		if _, err := c.exec(Command{CDB: cdbInquiry(0xb0, true, 64), Data: b0, Read: true}); err == nil {
			if mt := int64(binary.BigEndian.Uint32(b0[8:12])); mt > 0 {
				v.maxXfer = min(v.maxXfer, mt*v.blockSize)
			}
			v.maxUnmapBlocks = binary.BigEndian.Uint32(b0[20:24])
			v.maxUnmapDescs = binary.BigEndian.Uint32(b0[24:28])
		}
	}
	if pages[0xb2] {
		b2 := make([]byte, 64)
		if _, err := c.exec(Command{CDB: cdbInquiry(0xb2, true, 64), Data: b2, Read: true}); err == nil {
			lbpu = b2[5]&0x80 != 0
			lbprz = lbprz || b2[5]&0x04 != 0
		}
	}
	v.lbaStatus.Store(lbpme)
	mode := unmapWriteSame
	if lbpme && lbpu && lbprz && v.maxUnmapBlocks > 0 && v.maxUnmapDescs > 0 {
		mode = unmapSCSI
	}
	v.unmap.Store(int32(mode))
	return nil
}

// vpdPages returns the set of VPD pages the LUN lists in page 0.
func (v *Volume) vpdPages() map[byte]bool {
	b := make([]byte, 255)
	out := map[byte]bool{}
	if _, err := v.c.exec(Command{CDB: cdbInquiry(0, true, 255), Data: b, Read: true}); err != nil {
		return out
	}
	n := min(int(binary.BigEndian.Uint16(b[2:4])), len(b)-4)
	for _, p := range b[4 : 4+n] {
		out[p] = true
	}
	return out
}

// Client is the volume's initiator session (state, stats, params).
func (v *Volume) Client() *Client { return v.c }

// BlockSize is the LUN's logical block size.
func (v *Volume) BlockSize() int64 { return v.blockSize }

// MaxTransfer is the largest single READ/WRITE the volume sends.
func (v *Volume) MaxTransfer() int64 { return v.maxXfer }

// UnmapMode names how Unmap reaches the target.
func (v *Volume) UnmapMode() string { return unmapMode(v.unmap.Load()).String() }

// String names the volume without secrets.
func (v *Volume) String() string { return v.name }

func (v *Volume) check(n int, off int64) error {
	if v.closed.Load() {
		return fmt.Errorf("remote volume %s: %w", v.name, volume.ErrClosed)
	}
	if off < 0 || off+int64(n) > v.size || off+int64(n) < off {
		return fmt.Errorf("remote volume %s: [%d,+%d) past %d: %w", v.name, off, n, v.size, volume.ErrOutOfRange)
	}
	return nil
}

// Size is the LUN's size when it was opened.
func (v *Volume) Size() int64 { return v.size }

// ReadAt reads len(p) bytes at off; unaligned edges are read through a
// block-aligned bounce buffer.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	if err := v.check(len(p), off); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off%v.blockSize == 0 && int64(len(p))%v.blockSize == 0 {
		if err := v.rw(false, p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	start := off / v.blockSize * v.blockSize
	end := (off + int64(len(p)) + v.blockSize - 1) / v.blockSize * v.blockSize
	buf := make([]byte, end-start)
	if err := v.rw(false, buf, start); err != nil {
		return 0, err
	}
	copy(p, buf[off-start:])
	return len(p), nil
}

// WriteAt writes len(p) bytes at off. Unaligned writes are a serialised
// read-modify-write of the edge blocks.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	if err := v.check(len(p), off); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off%v.blockSize == 0 && int64(len(p))%v.blockSize == 0 {
		if err := v.rw(true, p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	v.rmw.Lock()
	defer v.rmw.Unlock()
	start := off / v.blockSize * v.blockSize
	end := (off + int64(len(p)) + v.blockSize - 1) / v.blockSize * v.blockSize
	buf := make([]byte, end-start)
	if err := v.rw(false, buf, start); err != nil {
		return 0, err
	}
	copy(buf[off-start:], p)
	if err := v.rw(true, buf, start); err != nil {
		return 0, err
	}
	return len(p), nil
}

// rw runs aligned READ(16)/WRITE(16) commands of at most maxXfer bytes
// each, all in flight at once.
func (v *Volume) rw(write bool, p []byte, off int64) error {
	op := byte(opRead16)
	if write {
		op = opWrite16
	}
	if !write && int64(len(p)) > readPiece && int64(len(p)) <= min(v.maxXfer, maxReadPieces*readPiece) {
		return v.readPieces(p, off)
	}
	if int64(len(p)) <= v.maxXfer {
		return v.rwOne(op, write, p, off)
	}
	return v.rwMany(op, write, p, off)
}

// A read larger than readPiece goes to the target as READs of readPiece
// bytes, all in flight at once (readPieces). Linux tgt moved 1.3-1.6x more
// data as 512 KiB reads at depth 16 (or 256 KiB at 32) than as 1 MiB reads
// at depth 8 (qemu-img bench, same LUN), and the pieces' Data-In arrives
// while the target still prepares the next piece: 1 MiB sequential reads
// through an imported LUN went from 0.70 to 0.96 of direct tgt (512 KiB
// pieces; 256 KiB: the same rate for 3% more CPU; 128 KiB: 0.78).
// Writes stay whole: tgt took 1 MiB writes as fast as pieces.
const (
	readPiece     = 512 << 10
	maxReadPieces = 32
)

// readPieces reads p (aligned, at most maxReadPieces pieces) as pieces in
// flight together, issued from this goroutine (no goroutine per piece and
// no allocation). A piece that did not end GOOD (or a transport error) is
// read again alone through rwOne, which owns the retry rules; every piece
// is waited for before it returns, so p is never touched afterwards.
func (v *Volume) readPieces(p []byte, off int64) error {
	c := v.c
	if c.fence.key.Load() != 0 || c.fence.reg.Load() != 0 {
		c.renewAfterLogin(opRead16)
	}
	var ts [maxReadPieces]*task
	var redo [maxReadPieces]bool
	var firstErr error
	n := 0
	for at := int64(0); at < int64(len(p)); at += readPiece {
		piece := p[at:min(at+readPiece, int64(len(p)))]
		req := request{cdb: cdbRW16(opRead16, uint64((off+at)/v.blockSize), uint32(int64(len(piece))/v.blockSize)),
			cdbLen: 16, data: piece, read: true}
		t, cn, err := c.issue(req)
		if err != nil {
			firstErr = fmt.Errorf("remote volume %s: read [%d,+%d): %w", v.name, off+at, len(piece), err)
			break
		}
		if cn != nil {
			cn.flush()
		}
		ts[n] = t
		n++
	}
	for i := range n {
		r, err := c.await(ts[i])
		redo[i] = err != nil || r.Status != statusGood || r.Underrun && r.Residual > 0 || r.Overrun
	}
	if firstErr != nil {
		return firstErr
	}
	for i := range n {
		if !redo[i] {
			continue
		}
		at := int64(i) * readPiece
		if err := v.rwOne(opRead16, false, p[at:min(at+readPiece, int64(len(p)))], off+at); err != nil {
			return err
		}
	}
	return nil
}

// rwMany is rw of more than maxXfer bytes: the pieces in flight together.
func (v *Volume) rwMany(op byte, write bool, p []byte, off int64) error {
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	for done := int64(0); done < int64(len(p)); done += v.maxXfer {
		chunk := p[done:min(done+v.maxXfer, int64(len(p)))]
		wg.Add(1)
		go func(chunk []byte, at int64) {
			defer wg.Done()
			if err := v.rwOne(op, write, chunk, at); err != nil {
				first.CompareAndSwap(nil, &err)
			}
		}(chunk, off+done)
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return *e
	}
	return nil
}

func (v *Volume) rwOne(op byte, write bool, p []byte, off int64) error {
	r, err := v.c.execReq(request{cdb: cdbRW16(op, uint64(off/v.blockSize), uint32(int64(len(p))/v.blockSize)),
		cdbLen: 16, data: p, read: !write, write: write})
	if err != nil {
		return fmt.Errorf("remote volume %s: %s [%d,+%d): %w", v.name, rwName(write), off, len(p), err)
	}
	if r.Underrun && r.Residual > 0 || r.Overrun {
		return fmt.Errorf("remote volume %s: %s [%d,+%d): residual %d bytes", v.name, rwName(write), off, len(p), r.Residual)
	}
	return nil
}

func rwName(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// Unmap deallocates [off, off+length) so that it reads back as zeros:
// UNMAP when the LUN is thin provisioned and guarantees zeros after it
// (LBPME, LBPU and LBPRZ), otherwise WRITE SAME(16) of a zero block, and if
// the target refuses that, plain writes of zeros. Partial edge blocks are
// zeroed with WriteAt.
func (v *Volume) Unmap(off, length int64) error {
	if err := v.check(0, off); err != nil {
		return err
	}
	if length < 0 || off+length > v.size {
		return fmt.Errorf("remote volume %s: unmap [%d,+%d) past %d: %w", v.name, off, length, v.size, volume.ErrOutOfRange)
	}
	v.dataHint.Lock()
	v.dataHint.start, v.dataHint.end = 0, 0
	v.dataHint.Unlock()
	end := off + length
	aStart := (off + v.blockSize - 1) / v.blockSize * v.blockSize
	aEnd := end / v.blockSize * v.blockSize
	if aStart >= aEnd {
		return v.zero(off, end)
	}
	if err := v.zero(off, aStart); err != nil {
		return err
	}
	if err := v.zero(aEnd, end); err != nil {
		return err
	}
	for {
		mode := unmapMode(v.unmap.Load())
		var err error
		switch mode {
		case unmapSCSI:
			err = v.unmapSCSI(aStart, aEnd)
		case unmapWriteSame:
			err = v.writeSame(aStart, aEnd)
		default:
			return v.zero(aStart, aEnd)
		}
		if err != nil && IsInvalidOpcode(err) {
			v.c.log.Info("remote volume: unmap mode refused, falling back", "mode", mode, "err", err)
			v.unmap.CompareAndSwap(int32(mode), int32(mode+1))
			continue
		}
		if err != nil {
			return fmt.Errorf("remote volume %s: unmap [%d,+%d): %w", v.name, off, length, err)
		}
		return nil
	}
}

// zero writes zeros over [from, to) (any alignment) in bounded chunks.
func (v *Volume) zero(from, to int64) error {
	if from >= to {
		return nil
	}
	chunk := min(to-from, 1<<20)
	z := make([]byte, chunk)
	for at := from; at < to; at += chunk {
		n := min(chunk, to-at)
		if _, err := v.WriteAt(z[:n], at); err != nil {
			return err
		}
	}
	return nil
}

func (v *Volume) unmapSCSI(from, to int64) error {
	blocks := uint64(to-from) / uint64(v.blockSize)
	lba := uint64(from) / uint64(v.blockSize)
	per := uint64(min(v.maxUnmapBlocks, 1<<22))
	descs := int(min(v.maxUnmapDescs, 64))
	for blocks > 0 {
		param := make([]byte, 8, 8+16*descs)
		n := 0
		for ; n < descs && blocks > 0; n++ {
			c := min(blocks, per)
			var d [16]byte
			binary.BigEndian.PutUint64(d[0:], lba)
			binary.BigEndian.PutUint32(d[8:], uint32(c))
			param = append(param, d[:]...)
			lba += c
			blocks -= c
		}
		binary.BigEndian.PutUint16(param[0:], uint16(len(param)-2))
		binary.BigEndian.PutUint16(param[2:], uint16(16*n))
		cdb := make([]byte, 10)
		cdb[0] = opUnmap
		binary.BigEndian.PutUint16(cdb[7:], uint16(len(param)))
		if _, err := v.c.exec(Command{CDB: cdb, Data: param, Write: true}); err != nil {
			return err
		}
	}
	return nil
}

func (v *Volume) writeSame(from, to int64) error {
	z := make([]byte, v.blockSize)
	lba := uint64(from) / uint64(v.blockSize)
	blocks := uint64(to-from) / uint64(v.blockSize)
	per := uint64(max(v.maxXfer/v.blockSize, 1)) * 16 // WRITE SAME moves one block on the wire
	for blocks > 0 {
		n := min(blocks, per, 0xffff)
		if _, err := v.c.execReq(request{cdb: cdbRW16(opWriteSame16, lba, uint32(n)), cdbLen: 16, data: z, write: true}); err != nil {
			return err
		}
		lba += n
		blocks -= n
	}
	return nil
}

// Sync makes completed writes durable on the target (SYNCHRONIZE CACHE 16,
// or 10 when 16 is refused).
func (v *Volume) Sync() error {
	if v.closed.Load() {
		return fmt.Errorf("remote volume %s: %w", v.name, volume.ErrClosed)
	}
	cdb := make([]byte, 16)
	cdb[0] = opSync16
	_, err := v.c.exec(Command{CDB: cdb})
	if err != nil && IsInvalidOpcode(err) {
		_, err = v.c.exec(Command{CDB: []byte{opSync10, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	}
	if err != nil {
		return fmt.Errorf("remote volume %s: sync: %w", v.name, err)
	}
	return nil
}

// Close logs out of the target. It does not delete anything.
func (v *Volume) Close() error {
	if v.closed.Swap(true) {
		return nil
	}
	return v.c.Close()
}

// NextData returns [start, end), the first extent at or after off that may
// hold data, clipped to Size, or io.EOF when none does (the same contract
// as volume.File.NextData), so a copier can skip holes. It asks GET LBA
// STATUS when the LUN is thin provisioned; otherwise (or when the target
// refuses the command) the whole rest of the volume counts as data.
func (v *Volume) NextData(off int64) (start, end int64, err error) {
	if v.closed.Load() {
		return 0, 0, fmt.Errorf("remote volume %s: %w", v.name, volume.ErrClosed)
	}
	if off < 0 {
		return 0, 0, fmt.Errorf("remote volume %s: next data at negative offset %d: %w", v.name, off, volume.ErrOutOfRange)
	}
	if off >= v.size {
		return 0, 0, io.EOF
	}
	if !v.lbaStatus.Load() {
		return off, v.size, nil
	}
	v.dataHint.Lock()
	hs, he := v.dataHint.start, v.dataHint.end
	v.dataHint.Unlock()
	if off >= hs && off < he {
		return off, he, nil
	}
	start, end, err = v.lbaStatusNext(off)
	if err == nil {
		v.dataHint.Lock()
		v.dataHint.start, v.dataHint.end = start, end
		v.dataHint.Unlock()
	}
	return start, end, err
}

// lbaStatusNext is NextData by GET LBA STATUS.
func (v *Volume) lbaStatusNext(off int64) (start, end int64, err error) {
	const descs = 64
	buf := make([]byte, 8+16*descs)
	lba := uint64(off / v.blockSize)
	last := uint64(v.size / v.blockSize)
	for lba < last {
		cdb := make([]byte, 16)
		cdb[0], cdb[1] = 0x9e, 0x12 // SERVICE ACTION IN(16): GET LBA STATUS
		binary.BigEndian.PutUint64(cdb[2:], lba)
		binary.BigEndian.PutUint32(cdb[10:], uint32(len(buf)))
		clear(buf)
		_, err := v.c.exec(Command{CDB: cdb, Data: buf, Read: true})
		if IsInvalidOpcode(err) {
			v.lbaStatus.Store(false)
			return off, v.size, nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("remote volume %s: get lba status at %d: %w", v.name, lba, err)
		}
		n := min((int(binary.BigEndian.Uint32(buf[0:4]))-4)/16, descs)
		if n <= 0 {
			return off, v.size, nil
		}
		var dStart, dEnd uint64
		found := false
		next := lba
		for i := range n {
			d := buf[8+16*i:]
			s, cnt, st := binary.BigEndian.Uint64(d[0:8]), uint64(binary.BigEndian.Uint32(d[8:12])), d[12]&0x0f
			e := s + cnt
			if cnt == 0 || e <= lba {
				continue
			}
			s = max(s, lba)
			next = max(next, e)
			if st == 1 { // deallocated
				if found {
					break
				}
				continue
			}
			if !found {
				dStart, dEnd, found = s, e, true
			} else if s == dEnd {
				dEnd = e
			} else {
				break
			}
		}
		if found {
			start = max(off, int64(dStart)*v.blockSize)
			return start, min(int64(dEnd)*v.blockSize, v.size), nil
		}
		if next <= lba {
			return off, v.size, nil // no progress: do not loop
		}
		lba = next
	}
	return 0, 0, io.EOF
}
