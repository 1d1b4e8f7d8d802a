package target

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

func TestReadWriteRoundTrip(t *testing.T) {
	for _, bs := range []uint32{512, 4096} {
		s, _ := oneLUN(t, 8<<20, bs)
		n := openNexus(t, s, "iqn.test:a", 1)
		blocks := uint64(8<<20) / uint64(bs)

		p := pattern(int(4*bs), 3)
		mustGood(t, exec(n, 0, cdb10(0x2a, 10, 4, 0), p, 0))
		for _, cdb := range [][]byte{
			cdb10(0x28, 10, 4, 0), cdb16(0x88, 10, 4, 0), cdb12(0xa8, 10, 4), cdb6(0x08, 10, 4),
		} {
			c := exec(n, 0, cdb, nil, len(p))
			mustGood(t, c)
			if !bytes.Equal(data(c), p) {
				t.Fatalf("bs %d: read %x: %s", bs, cdb[0], hexdiff(data(c), p))
			}
		}
		// WRITE(16), WRITE(12), WRITE(6) land where they say.
		for i, cdb := range [][]byte{cdb16(0x8a, 20, 1, 0), cdb12(0xaa, 21, 1), cdb6(0x0a, 22, 1)} {
			b := pattern(int(bs), byte(40+i))
			mustGood(t, exec(n, 0, cdb, b, 0))
			c := exec(n, 0, cdb10(0x28, uint32(20+i), 1, 0), nil, int(bs))
			mustGood(t, c)
			if !bytes.Equal(data(c), b) {
				t.Fatalf("bs %d: write %x did not land: %s", bs, cdb[0], hexdiff(data(c), b))
			}
		}
		// Last block works, one past is LBA OUT OF RANGE.
		mustGood(t, exec(n, 0, cdb16(0x88, blocks-1, 1, 0), nil, int(bs)))
		mustSense(t, exec(n, 0, cdb16(0x88, blocks-1, 2, 0), nil, int(2*bs)), keyIllegalRequest, ascLBAOutOfRange)
		mustSense(t, exec(n, 0, cdb16(0x8a, blocks, 1, 0), make([]byte, bs), 0), keyIllegalRequest, ascLBAOutOfRange)
		mustSense(t, exec(n, 0, cdb16(0x88, ^uint64(0), 2, 0), nil, int(2*bs)), keyIllegalRequest, ascLBAOutOfRange)
		// Zero blocks: GOOD, no data.
		c := exec(n, 0, cdb10(0x28, 0, 0, 0), nil, 0)
		mustGood(t, c)
		// Protection information is refused.
		mustSense(t, exec(n, 0, cdb10(0x28, 0, 1, 0x20), nil, int(bs)), keyIllegalRequest, ascInvalidFieldInCDB)
	}
}

func TestReadHonoursExpectedLength(t *testing.T) {
	s, _ := oneLUN(t, 1<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	p := pattern(1024, 9)
	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 2, 0), p, 0))
	// The initiator expects only 512 bytes of a 2-block read.
	c := exec(n, 0, cdb10(0x28, 0, 2, 0), nil, 512)
	mustGood(t, c)
	if c.DataInLen != 512 || !bytes.Equal(data(c), p[:512]) {
		t.Fatalf("DataInLen %d, want 512 bytes of the first block", c.DataInLen)
	}
	if !c.HasTransferLength || c.TransferLength != 1024 {
		t.Fatalf("READ transfer length %d (%v), want 1024", c.TransferLength, c.HasTransferLength)
	}
	// A write whose Data-Out is shorter than the CDB asks writes only what
	// was sent and reports the CDB's transfer length (overflow).
	short := pattern(200, 50)
	c = exec(n, 0, cdb10(0x2a, 0, 2, 0), short, 0)
	mustGood(t, c)
	if !c.HasTransferLength || c.TransferLength != 1024 {
		t.Fatalf("WRITE transfer length %d (%v), want 1024", c.TransferLength, c.HasTransferLength)
	}
	c = exec(n, 0, cdb10(0x28, 0, 2, 0), nil, 1024)
	if !bytes.Equal(data(c)[:200], short) || !bytes.Equal(data(c)[200:], p[200:]) {
		t.Fatalf("short write: %s", hexdiff(data(c), append(append([]byte{}, short...), p[200:]...)))
	}
	copy(p, short)
	// A longer Data-Out than the CDB's transfer length writes only the
	// transfer length.
	big := pattern(1024, 77)
	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 1, 0), big, 0))
	c = exec(n, 0, cdb10(0x28, 0, 2, 0), nil, 1024)
	if !bytes.Equal(data(c)[:512], big[:512]) || !bytes.Equal(data(c)[512:], p[512:]) {
		t.Fatalf("over-long Data-Out wrote past the transfer length")
	}
}

func TestFUAAndSyncCacheReachVolumeSync(t *testing.T) {
	v := newTestVolume(t, "fua", 1<<20)
	sc := &syncCounter{Volume: v}
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("F", 0, sc, 512)}})
	n := openNexus(t, s, "iqn.test:a", 1)
	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 1, 0), make([]byte, 512), 0))
	if got := sc.syncs.Load(); got != 0 {
		t.Fatalf("plain write synced %d times", got)
	}
	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 1, 0x08), make([]byte, 512), 0))
	if got := sc.syncs.Load(); got != 1 {
		t.Fatalf("FUA write: %d syncs, want 1", got)
	}
	mustGood(t, exec(n, 0, cdb10(0x35, 0, 0, 0), nil, 0))
	mustGood(t, exec(n, 0, cdb16(0x91, 0, 0, 0), nil, 0))
	if got := sc.syncs.Load(); got != 3 {
		t.Fatalf("SYNCHRONIZE CACHE: %d syncs, want 3", got)
	}
	mustSense(t, exec(n, 0, cdb16(0x91, 1<<40, 1, 0), nil, 0), keyIllegalRequest, ascLBAOutOfRange)
}

func TestWriteSame(t *testing.T) {
	s, v := oneLUN(t, 64<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	blk := pattern(512, 5)
	mustGood(t, exec(n, 0, cdb10(0x41, 100, 16, 0), blk, 0))
	c := exec(n, 0, cdb10(0x28, 100, 16, 0), nil, 16*512)
	mustGood(t, c)
	for i := 0; i < 16; i++ {
		if !bytes.Equal(data(c)[i*512:(i+1)*512], blk) {
			t.Fatalf("WRITE SAME(10): block %d differs", i)
		}
	}
	// Wrong Data-Out size is refused.
	mustSense(t, exec(n, 0, cdb10(0x41, 0, 1, 0), make([]byte, 1024), 0), keyIllegalRequest, ascInvalidFieldInCDB)
	mustSense(t, exec(n, 0, cdb16(0x93, 1<<30, 1, 0), blk, 0), keyIllegalRequest, ascLBAOutOfRange)

	// Allocate 4 MiB, then WRITE SAME(16) with UNMAP and a zero block
	// deallocates it and it reads back as zeros.
	chunk := pattern(1<<20, 1)
	for i := 0; i < 4; i++ {
		mustGood(t, exec(n, 0, cdb16(0x8a, uint64(i*2048), 2048, 0), chunk, 0))
	}
	mustGood(t, exec(n, 0, cdb10(0x35, 0, 0, 0), nil, 0))
	before := allocatedBytes(t, v.Path())
	mustGood(t, exec(n, 0, cdb16(0x93, 0, 8192, 0x08), make([]byte, 512), 0))
	if c := exec(n, 0, cdb16(0x93, 0, 8192, 0x08), make([]byte, 512), 0); c.TransferLength != 512 && c.HasTransferLength {
		t.Fatalf("WRITE SAME transfer length %d", c.TransferLength)
	}
	after := allocatedBytes(t, v.Path())
	if after > before-(4<<20)+(64<<10) {
		t.Fatalf("WRITE SAME+UNMAP did not deallocate: %d -> %d bytes allocated", before, after)
	}
	c = exec(n, 0, cdb16(0x88, 0, 2048, 0), nil, 1<<20)
	mustGood(t, c)
	if !volume.IsZero(data(c)) {
		t.Fatal("unmapped range does not read back as zeros")
	}
	// NDOB (no Data-Out) with UNMAP.
	mustGood(t, exec(n, 0, cdb16(0x8a, 50, 1, 0), blk, 0))
	mustGood(t, exec(n, 0, cdb16(0x93, 50, 1, 0x09), nil, 0))
	c = exec(n, 0, cdb10(0x28, 50, 1, 0), nil, 512)
	if !volume.IsZero(data(c)) {
		t.Fatal("NDOB WRITE SAME left data")
	}
	// UNMAP bit with non-zero data still deallocates (reads zeros).
	mustGood(t, exec(n, 0, cdb16(0x8a, 60, 1, 0), blk, 0))
	mustGood(t, exec(n, 0, cdb16(0x93, 60, 2, 0x08), blk, 0))
	c = exec(n, 0, cdb10(0x28, 60, 2, 0), nil, 1024)
	if !volume.IsZero(data(c)) {
		t.Fatal("WRITE SAME UNMAP with data did not deallocate")
	}
	// Above MAXIMUM WRITE SAME LENGTH: refused.
	mustSense(t, exec(n, 0, cdb16(0x93, 0, maxWriteSameBlocks+1, 0x08), blk, 0), keyIllegalRequest, ascInvalidFieldInCDB)
}

func TestUnmapDeallocatesAndReadsZeros(t *testing.T) {
	s, v := oneLUN(t, 16<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	chunk := pattern(1<<20, 2)
	for i := 0; i < 8; i++ {
		mustGood(t, exec(n, 0, cdb16(0x8a, uint64(i*2048), 2048, 0), chunk, 0))
	}
	mustGood(t, exec(n, 0, cdb10(0x35, 0, 0, 0), nil, 0))
	before := allocatedBytes(t, v.Path())

	// GET LBA STATUS: mapped at 0.
	c := exec(n, 0, lbaStatusCDB(0, 1024), nil, 1024)
	mustGood(t, c)
	if d := data(c); len(d) < 24 || d[20] != 0 {
		t.Fatalf("GET LBA STATUS before unmap: %x", d)
	}

	p := unmapParams([2]uint64{0, 4096}, [2]uint64{8192, 2048})
	mustGood(t, exec(n, 0, unmapCDB(len(p)), p, 0))
	after := allocatedBytes(t, v.Path())
	if after > before-(3<<20) {
		t.Fatalf("UNMAP did not deallocate 3 MiB: %d -> %d", before, after)
	}
	c = exec(n, 0, cdb16(0x88, 0, 4096, 0), nil, 2<<20)
	mustGood(t, c)
	if !volume.IsZero(data(c)) {
		t.Fatal("unmapped blocks do not read zeros")
	}
	c = exec(n, 0, cdb16(0x88, 4096, 1, 0), nil, 512)
	if !bytes.Equal(data(c), chunk[:512]) {
		t.Fatal("UNMAP touched a block outside its descriptors")
	}

	// GET LBA STATUS: deallocated [0,4096), mapped from 4096.
	c = exec(n, 0, lbaStatusCDB(0, 1024), nil, 1024)
	mustGood(t, c)
	d := data(c)
	if len(d) < 40 {
		t.Fatalf("GET LBA STATUS: short answer %x", d)
	}
	if lba, cnt, st := binary.BigEndian.Uint64(d[8:]), binary.BigEndian.Uint32(d[16:]), d[20]; lba != 0 || cnt != 4096 || st != 1 {
		t.Fatalf("first descriptor lba %d count %d status %d, want 0/4096/deallocated", lba, cnt, st)
	}
	if lba, st := binary.BigEndian.Uint64(d[24:]), d[36]; lba != 4096 || st != 0 {
		t.Fatalf("second descriptor lba %d status %d, want 4096/mapped", lba, st)
	}
	mustSense(t, exec(n, 0, lbaStatusCDB(1<<40, 64), nil, 64), keyIllegalRequest, ascLBAOutOfRange)

	// Out-of-range descriptors are refused before anything is unmapped.
	p = unmapParams([2]uint64{4096, 1}, [2]uint64{1 << 30, 1})
	mustSense(t, exec(n, 0, unmapCDB(len(p)), p, 0), keyIllegalRequest, ascLBAOutOfRange)
	c = exec(n, 0, cdb16(0x88, 4096, 1, 0), nil, 512)
	if !bytes.Equal(data(c), chunk[:512]) {
		t.Fatal("refused UNMAP still unmapped")
	}
	// Empty parameter list: no-op.
	mustGood(t, exec(n, 0, unmapCDB(0), nil, 0))
}

func TestCompareAndWrite(t *testing.T) {
	s, _ := oneLUN(t, 1<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	old := pattern(1024, 1)
	mustGood(t, exec(n, 0, cdb10(0x2a, 4, 2, 0), old, 0))
	nw := pattern(1024, 99)
	mustGood(t, exec(n, 0, cawCDB(4, 2), append(append([]byte{}, old...), nw...), 0))
	c := exec(n, 0, cdb10(0x28, 4, 2, 0), nil, 1024)
	if !bytes.Equal(data(c), nw) {
		t.Fatal("COMPARE AND WRITE did not write")
	}
	// Miscompare at byte 700: nothing written, offset reported.
	wrong := append([]byte{}, nw...)
	wrong[700] ^= 0xff
	c = exec(n, 0, cawCDB(4, 2), append(wrong, old...), 0)
	mustSense(t, c, keyMiscompare, ascMiscompareDuringVerify)
	if c.Sense[0]&0x80 == 0 || binary.BigEndian.Uint32(c.Sense[3:7]) != 700 {
		t.Fatalf("miscompare sense %x: want VALID and INFORMATION 700", c.Sense)
	}
	c = exec(n, 0, cdb10(0x28, 4, 2, 0), nil, 1024)
	if !bytes.Equal(data(c), nw) {
		t.Fatal("miscompared COMPARE AND WRITE wrote")
	}
	mustSense(t, exec(n, 0, cawCDB(4, 2), make([]byte, 1024), 0), keyIllegalRequest, ascInvalidFieldInCDB)
}

// TestCompareAndWriteAtomic increments a counter with COMPARE AND WRITE
// from many goroutines while others write neighbouring blocks: every
// successful CAW must count exactly once.
func TestCompareAndWriteAtomic(t *testing.T) {
	s, _ := oneLUN(t, 1<<20, 512)
	const workers, perWorker = 4, 40
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 2; w++ {
		n := openNexus(t, s, "iqn.test:w", byte(10+w))
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := pattern(512, byte(w))
			for {
				select {
				case <-stop:
					return
				default:
				}
				exec(n, 0, cdb10(0x2a, 1, 1, 0), b, 0)
			}
		}()
	}
	var cw sync.WaitGroup
	errs := make(chan string, workers)
	for w := 0; w < workers; w++ {
		n := openNexus(t, s, "iqn.test:c", byte(20+w))
		cw.Add(1)
		go func() {
			defer cw.Done()
			for done := 0; done < perWorker; {
				c := exec(n, 0, cdb10(0x28, 0, 1, 0), nil, 512)
				if c.Status != statusGood {
					errs <- "read failed"
					return
				}
				cur := append([]byte{}, data(c)...)
				next := make([]byte, 512)
				binary.BigEndian.PutUint64(next, binary.BigEndian.Uint64(cur)+1)
				c = exec(n, 0, cawCDB(0, 1), append(cur, next...), 0)
				switch {
				case c.Status == statusGood:
					done++
				case c.Status == statusCheckCondition && c.Sense[2] == keyMiscompare:
				default:
					errs <- "unexpected CAW status"
					return
				}
			}
		}()
	}
	cw.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	n := openNexus(t, s, "iqn.test:check", 99)
	c := exec(n, 0, cdb10(0x28, 0, 1, 0), nil, 512)
	if got := binary.BigEndian.Uint64(data(c)); got != workers*perWorker {
		t.Fatalf("counter %d after %d successful COMPARE AND WRITEs", got, workers*perWorker)
	}
}

func TestVerifyAndPrefetch(t *testing.T) {
	s, _ := oneLUN(t, 1<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	p := pattern(1024, 4)
	mustGood(t, exec(n, 0, cdb10(0x2a, 8, 2, 0), p, 0))
	mustGood(t, exec(n, 0, cdb10(0x2f, 8, 2, 0x02), p, 0)) // BYTCHK=01
	bad := append([]byte{}, p...)
	bad[600] ^= 1
	c := exec(n, 0, cdb10(0x2f, 8, 2, 0x02), bad, 0)
	mustSense(t, c, keyMiscompare, ascMiscompareDuringVerify)
	mustGood(t, exec(n, 0, cdb10(0x2f, 8, 2, 0), nil, 0))
	mustSense(t, exec(n, 0, cdb10(0x2f, 4000, 2, 0), nil, 0), keyIllegalRequest, ascLBAOutOfRange)
	mustGood(t, exec(n, 0, cdb10(0x34, 0, 8, 0), nil, 0))
	mustSense(t, exec(n, 0, cdb16(0x90, 2048, 1, 0), nil, 0), keyIllegalRequest, ascLBAOutOfRange)
	// ORWRITE ORs the Data-Out into the blocks.
	a, b := make([]byte, 1024), make([]byte, 1024)
	for i := range a {
		a[i], b[i] = 0xa5, 0x5a
	}
	mustGood(t, exec(n, 0, cdb10(0x2a, 100, 2, 0), make([]byte, 1024), 0))
	mustGood(t, exec(n, 0, cdb16(0x8b, 100, 2, 0), a, 0))
	mustGood(t, exec(n, 0, cdb16(0x8b, 100, 2, 0), b, 0))
	c = exec(n, 0, cdb10(0x28, 100, 2, 0), nil, 1024)
	for _, x := range data(c) {
		if x != 0xff {
			t.Fatalf("ORWRITE result %#x, want 0xff", x)
		}
	}
	mustSense(t, exec(n, 0, cdb16(0x8b, 2048, 1, 0), a[:512], 0), keyIllegalRequest, ascLBAOutOfRange)
}

func TestPanicBecomesHardwareError(t *testing.T) {
	v := newTestVolume(t, "p", 1<<20)
	pv := &panicky{Volume: v}
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("P", 0, pv, 512)}})
	n := openNexus(t, s, "iqn.test:a", 1)
	pv.armed.Store(true)
	mustSense(t, exec(n, 0, cdb10(0x28, 0, 1, 0), nil, 512), keyHardwareError, ascInternalTargetFailure)
	pv.armed.Store(false)
	mustGood(t, exec(n, 0, cdb10(0x28, 0, 1, 0), nil, 512))
}

// TestReadsDoNotWaitForAtomicWrites: the LUN's write lock (lunDev.io,
// exclusive in COMPARE AND WRITE and ORWRITE) orders modifications only.
// READ and VERIFY change nothing, so they must not queue behind it; a
// WRITE must.
func TestReadsDoNotWaitForAtomicWrites(t *testing.T) {
	s, _ := oneLUN(t, 1<<20, 512)
	n := openNexus(t, s, "iqn.test:r", 1)
	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 1, 0), pattern(512, 1), 0))
	s.mu.Lock()
	d := s.devs["L0"]
	s.mu.Unlock()

	d.io.Lock() // what a long COMPARE AND WRITE holds
	wrote := make(chan *iscsi.Command, 1)
	go func() { wrote <- exec(n, 0, cdb10(0x2a, 1, 1, 0), pattern(512, 2), 0) }()
	for _, tc := range []struct {
		name string
		cdb  []byte
		out  []byte
		in   int
	}{
		{"read", cdb10(0x28, 0, 1, 0), nil, 512},
		{"verify bytchk 1", cdb10(0x2f, 0, 1, 0x02), pattern(512, 1), 0},
	} {
		done := make(chan *iscsi.Command, 1)
		go func() { done <- exec(n, 0, tc.cdb, tc.out, tc.in) }()
		select {
		case c := <-done:
			mustGood(t, c)
		case <-time.After(30 * time.Second):
			d.io.Unlock()
			t.Fatalf("%s still waiting for the LUN's write lock after 30 s", tc.name)
		}
	}
	select {
	case c := <-wrote:
		t.Fatalf("WRITE completed (status 0x%02x) while the write lock was held exclusively", c.Status)
	default:
	}
	d.io.Unlock()
	mustGood(t, <-wrote)
}
