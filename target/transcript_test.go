package target

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden from the current code")

// TestCommandTranscript runs a fixed list of commands of every family
// through Execute on a 512-byte and a 4096-byte LUN and compares status,
// sense, data-in and transfer length byte for byte with
// testdata/commands.golden. The golden file was written by the code that
// still translated every command into gotgt's api.SCSICommand; the SCSI
// layer's own command type must answer exactly the same.
func TestCommandTranscript(t *testing.T) {
	var out strings.Builder
	run := func(name string, nx iscsi.Nexus, lun uint64, cdb, dout []byte, in int) {
		t.Helper()
		c := exec(nx, lun, cdb, dout, in)
		fmt.Fprintf(&out, "%-28s cdb=%x status=%02x", name, cdb, c.Status)
		if len(c.Sense) > 0 {
			fmt.Fprintf(&out, " sense=%x", c.Sense)
		}
		if c.HasTransferLength {
			fmt.Fprintf(&out, " tl=%d", c.TransferLength)
		}
		fmt.Fprintf(&out, " in=%d:%x\n", c.DataInLen, data(c))
	}
	for _, bs := range []uint32{512, 4096} {
		s, _ := oneLUN(t, 8<<20, bs)
		n := openNexus(t, s, "iqn.test:transcript", 1)
		other := openNexus(t, s, "iqn.test:other", 2)
		fmt.Fprintf(&out, "== block size %d\n", bs)
		blk := int(bs)
		// The first command of each nexus reports nothing pending.
		run("tur", n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		run("tur other", other, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		run("inquiry std 255", n, 0, inquiryCDB(false, 0, 255), nil, 255)
		run("inquiry std 36", n, 0, inquiryCDB(false, 0, 36), nil, 36)
		run("inquiry std 5", n, 0, inquiryCDB(false, 0, 5), nil, 5)
		run("inquiry std page!=0", n, 0, inquiryCDB(false, 0x80, 255), nil, 255)
		run("inquiry cmddt", n, 0, []byte{0x12, 2, 0, 0, 255, 0}, nil, 255)
		for _, pg := range []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2, 0xb3} {
			run(fmt.Sprintf("vpd %02x", pg), n, 0, inquiryCDB(true, pg, 512), nil, 512)
		}
		run("vpd 83 short", n, 0, inquiryCDB(true, 0x83, 10), nil, 10)
		for _, ms := range []struct {
			name string
			cdb  []byte
			in   int
		}{
			{"mode sense6 all", []byte{0x1a, 0, 0x3f, 0, 255, 0}, 255},
			{"mode sense6 all dbd", []byte{0x1a, 0x08, 0x3f, 0, 255, 0}, 255},
			{"mode sense6 all short", []byte{0x1a, 0, 0x3f, 0, 12, 0}, 12},
			{"mode sense6 caching", []byte{0x1a, 0, 0x08, 0, 255, 0}, 255},
			{"mode sense6 control", []byte{0x1a, 0, 0x0a, 0, 255, 0}, 255},
			{"mode sense6 changeable", []byte{0x1a, 0, 0x40 | 0x3f, 0, 255, 0}, 255},
			{"mode sense6 saved", []byte{0x1a, 0, 0xc0 | 0x3f, 0, 255, 0}, 255},
			{"mode sense6 bad page", []byte{0x1a, 0, 0x2b, 0, 255, 0}, 255},
			{"mode sense10 all", []byte{0x5a, 0, 0x3f, 0, 0, 0, 0, 0x04, 0, 0}, 1024},
			{"mode sense10 caching dbd", []byte{0x5a, 0x08, 0x08, 0, 0, 0, 0, 0x01, 0, 0}, 256},
		} {
			run(ms.name, n, 0, ms.cdb, nil, ms.in)
		}
		run("mode select6", n, 0, []byte{0x15, 0x10, 0, 0, 0, 0}, nil, 0)
		run("mode select10", n, 0, []byte{0x55, 0x10, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0)
		run("send diag selftest", n, 0, []byte{0x1d, 0x04, 0, 0, 0, 0}, nil, 0)
		run("send diag no selftest", n, 0, []byte{0x1d, 0, 0, 0, 0, 0}, nil, 0)
		run("read capacity10", n, 0, []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)
		run("read capacity16", n, 0, rc16CDB(32), nil, 32)
		run("read capacity16 short", n, 0, rc16CDB(12), nil, 12)
		run("sai bad sa", n, 0, []byte{0x9e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil, 32)
		run("report luns", n, 0, reportLUNsCDB(64), nil, 64)
		run("report luns short alloc", n, 0, reportLUNsCDB(8), nil, 8)
		run("report luns bad select", n, 0, []byte{0xa0, 0, 0x07, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil, 64)
		run("request sense", n, 0, []byte{0x03, 0, 0, 0, 252, 0}, nil, 252)
		run("rsoc all", n, 0, []byte{0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, nil, 4096)
		run("rsoc all rctd", n, 0, []byte{0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, nil, 4096)
		run("rsoc one read10", n, 0, []byte{0xa3, 0x0c, 0x01, 0x28, 0, 0, 0, 0, 0x01, 0, 0, 0}, nil, 256)
		run("rsoc one sa prin", n, 0, []byte{0xa3, 0x0c, 0x02, 0x5e, 0, 1, 0, 0, 0x01, 0, 0, 0}, nil, 256)
		run("rsoc bad opts", n, 0, []byte{0xa3, 0x0c, 0x07, 0, 0, 0, 0, 0, 0x01, 0, 0, 0}, nil, 256)
		run("maintenance in bad sa", n, 0, []byte{0xa3, 0x05, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0}, nil, 256)
		run("start stop", n, 0, []byte{0x1b, 0, 0, 0, 1, 0}, nil, 0)
		run("prevent", n, 0, []byte{0x1e, 0, 0, 0, 1, 0}, nil, 0)
		run("format unit", n, 0, []byte{0x04, 0, 0, 0, 0, 0}, nil, 0)
		run("format unit fmtdata", n, 0, []byte{0x04, 0x10, 0, 0, 0, 0}, nil, 0)
		run("read defect 10", n, 0, []byte{0x37, 0, 0x18, 0, 0, 0, 0, 0, 8, 0}, nil, 8)
		run("read defect 12", n, 0, []byte{0xb7, 0x18, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}, nil, 8)
		run("unknown opcode", n, 0, []byte{0xc0, 0, 0, 0, 0, 0}, nil, 0)
		run("empty-ish opcode 0x3c", n, 0, []byte{0x3c, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0)

		// Data path.
		p := pattern(2*blk, 3)
		run("write10", n, 0, cdb10(0x2a, 2, 2, 0), p, 0)
		run("write10 fua", n, 0, cdb10(0x2a, 2, 2, 0x08), p, 0)
		run("write10 short data", n, 0, cdb10(0x2a, 4, 2, 0), p[:blk], 0)
		run("write10 wrprotect", n, 0, cdb10(0x2a, 2, 2, 0x20), p, 0)
		run("write10 out of range", n, 0, cdb10(0x2a, uint32(8<<20/blk)-1, 2, 0), p, 0)
		run("write6", n, 0, cdb6(0x0a, 6, 1), p[:blk], 0)
		run("write12", n, 0, cdb12(0xaa, 7, 1), p[:blk], 0)
		run("write16", n, 0, cdb16(0x8a, 8, 1, 0), p[:blk], 0)
		run("write verify10", n, 0, cdb10(0x2e, 9, 1, 0), p[:blk], 0)
		run("read10", n, 0, cdb10(0x28, 2, 2, 0), nil, 2*blk)
		run("read10 short buffer", n, 0, cdb10(0x28, 2, 2, 0), nil, blk)
		run("read6", n, 0, cdb6(0x08, 6, 1), nil, blk)
		run("read6 zero means 256", n, 0, cdb6(0x08, 0, 0), nil, 0)
		run("read12", n, 0, cdb12(0xa8, 7, 1), nil, blk)
		run("read16", n, 0, cdb16(0x88, 8, 1, 0), nil, blk)
		run("read16 rdprotect", n, 0, cdb16(0x88, 8, 1, 0x20), nil, blk)
		run("read16 out of range", n, 0, cdb16(0x88, 1<<40, 1, 0), nil, blk)
		run("read10 zero blocks", n, 0, cdb10(0x28, 2, 0, 0), nil, 0)
		run("verify10 bytchk0", n, 0, cdb10(0x2f, 2, 2, 0), nil, 0)
		run("verify10 bytchk1 match", n, 0, cdb10(0x2f, 2, 2, 0x02), p, 0)
		pp := append([]byte(nil), p...)
		pp[blk+5] ^= 1
		run("verify10 bytchk1 miscompare", n, 0, cdb10(0x2f, 2, 2, 0x02), pp, 0)
		run("verify16 bytchk3", n, 0, cdb16(0x8f, 20, 2, 0x06), make([]byte, blk), 0)
		run("verify10 bytchk2", n, 0, cdb10(0x2f, 2, 2, 0x04), p, 0)
		run("prefetch10", n, 0, cdb10(0x34, 2, 2, 0), nil, 0)
		run("prefetch16 out of range", n, 0, cdb16(0x90, 1<<40, 1, 0), nil, 0)
		run("sync cache10", n, 0, cdb10(0x35, 0, 0, 0), nil, 0)
		run("sync cache16", n, 0, cdb16(0x91, 0, 0, 0), nil, 0)
		run("write same10", n, 0, cdb10(0x41, 30, 3, 0), p[:blk], 0)
		run("read after write same", n, 0, cdb10(0x28, 30, 3, 0), nil, 3*blk)
		run("write same16 unmap", n, 0, cdb16(0x93, 30, 2, 0x08), p[:blk], 0)
		run("read after ws unmap", n, 0, cdb10(0x28, 30, 3, 0), nil, 3*blk)
		run("write same16 ndob", n, 0, cdb16(0x93, 40, 2, 0x01), nil, 0)
		run("write same10 ndob", n, 0, cdb10(0x41, 40, 2, 0x01), nil, 0)
		run("write same10 wrong len", n, 0, cdb10(0x41, 40, 2, 0), p, 0)
		run("write same16 too long", n, 0, cdb16(0x93, 0, 0x10000, 0x08), p[:blk], 0)
		run("unmap", n, 0, unmapCDB(24), unmapParams([2]uint64{2, 1}), 0)
		run("unmap plen 0", n, 0, unmapCDB(0), nil, 0)
		run("unmap plen short", n, 0, unmapCDB(4), []byte{0, 0, 0, 0}, 0)
		run("unmap out of range", n, 0, unmapCDB(24), unmapParams([2]uint64{1 << 40, 1}), 0)
		run("unmap anchor", n, 0, append([]byte{0x42, 1}, unmapCDB(24)[2:]...), unmapParams([2]uint64{2, 1}), 0)
		run("read after unmap", n, 0, cdb10(0x28, 2, 2, 0), nil, 2*blk)
		cur := make([]byte, blk)
		copy(cur, p[blk:])
		caw := append(append([]byte(nil), cur...), pattern(blk, 9)...)
		run("caw match", n, 0, cawCDB(3, 1), caw, 0)
		run("caw miscompare", n, 0, cawCDB(3, 1), caw, 0)
		run("caw wrong len", n, 0, cawCDB(3, 1), caw[:blk], 0)
		run("caw too many blocks", n, 0, cawCDB(3, 255), caw, 0)
		run("caw zero blocks", n, 0, cawCDB(3, 0), nil, 0)
		run("read after caw", n, 0, cdb10(0x28, 3, 1, 0), nil, blk)
		run("orwrite", n, 0, cdb16(0x8b, 3, 1, 0), pattern(blk, 0x40), 0)
		run("read after orwrite", n, 0, cdb10(0x28, 3, 1, 0), nil, blk)
		run("get lba status", n, 0, lbaStatusCDB(0, 256), nil, 256)
		run("get lba status short", n, 0, lbaStatusCDB(0, 4), nil, 4)
		run("get lba status oor", n, 0, lbaStatusCDB(1<<40, 256), nil, 256)

		// Reservations (SPC-2 and persistent) seen from two nexuses.
		run("reserve6", n, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
		run("read other reserved", other, 0, cdb10(0x28, 2, 1, 0), nil, blk)
		run("inquiry other reserved", other, 0, inquiryCDB(false, 0, 36), nil, 36)
		run("release6 other", other, 0, []byte{0x17, 0, 0, 0, 0, 0}, nil, 0)
		run("release6", n, 0, []byte{0x17, 0, 0, 0, 0, 0}, nil, 0)
		reg, prm := proutCDB(0x00, 0)
		run("pr register", n, 0, reg, prm(0, 0xabc), 0)
		run("pr register other", other, 0, reg, prm(0, 0xdef), 0)
		res, _ := proutCDB(0x01, prExclusiveAccess)
		run("pr reserve ea", n, 0, res, prm(0xabc, 0), 0)
		run("pr read keys", n, 0, prinCDB(0, 64), nil, 64)
		run("pr read keys short", n, 0, prinCDB(0, 12), nil, 12)
		run("pr read reservation", n, 0, prinCDB(1, 64), nil, 64)
		run("pr report caps", n, 0, prinCDB(2, 64), nil, 64)
		run("pr read full status", n, 0, prinCDB(3, 512), nil, 512)
		run("pr in bad sa", n, 0, prinCDB(7, 64), nil, 64)
		run("write other conflict", other, 0, cdb10(0x2a, 2, 1, 0), p[:blk], 0)
		run("read other conflict", other, 0, cdb10(0x28, 2, 1, 0), nil, blk)
		run("reserve6 with pr", other, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
		pre, _ := proutCDB(0x04, prWriteExclusive)
		run("pr preempt", other, 0, pre, prm(0xdef, 0xabc), 0)
		run("ua after preempt", n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		run("request sense after ua", n, 0, []byte{0x03, 0, 0, 0, 252, 0}, nil, 252)
		rel, _ := proutCDB(0x02, prWriteExclusive)
		run("pr release", other, 0, rel, prm(0xdef, 0), 0)
		clr, _ := proutCDB(0x03, 0)
		run("pr clear", other, 0, clr, prm(0xdef, 0), 0)
		mv, _ := proutCDB(0x07, 0)
		run("pr register and move", other, 0, mv, prm(0xdef, 0), 0)
		short := append([]byte(nil), reg...)
		binary.BigEndian.PutUint32(short[5:], 8)
		run("pr register bad plen", other, 0, short, prm(0, 1)[:8], 0)

		// LUN numbers that are not mapped.
		run("nolun inquiry", n, 5, inquiryCDB(false, 0, 96), nil, 96)
		run("nolun inquiry vpd", n, 5, inquiryCDB(true, 0x80, 96), nil, 96)
		run("nolun report luns", n, 5, reportLUNsCDB(64), nil, 64)
		run("nolun request sense", n, 5, []byte{0x03, 0, 0, 0, 252, 0}, nil, 252)
		run("nolun read", n, 5, cdb10(0x28, 0, 1, 0), nil, blk)
		run("nolun tur", n, 5, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		run("empty cdb", n, 0, []byte{}, nil, 0)
	}

	// Identity corner cases: a LUN without NAA and serial (both derived
	// from its ID), and an adopted identity whose names overflow their
	// standard INQUIRY fields.
	fmt.Fprintf(&out, "== identity\n")
	plain := LUN{Number: 0, ID: "L-plain", Volume: newTestVolume(t, "plain", 1<<20)}
	adopted := testLUN("L-adopted", 1, newTestVolume(t, "adopted", 1<<20), 512)
	adopted.Adopted = &Identity{Vendor: "VENDORLONG", Product: "A-PRODUCT-NAME-OVER-16", Revision: "12345",
		Designators: []byte{0x01, 0x03, 0x00, 0x08, 0x60, 1, 2, 3, 4, 5, 6, 7}}
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{plain, adopted}})
	n := openNexus(t, s, "iqn.test:identity", 1)
	for lun := uint64(0); lun < 2; lun++ {
		run(fmt.Sprintf("lun %d inquiry std", lun), n, lun, inquiryCDB(false, 0, 255), nil, 255)
		run(fmt.Sprintf("lun %d vpd 80", lun), n, lun, inquiryCDB(true, 0x80, 255), nil, 255)
		run(fmt.Sprintf("lun %d vpd 83", lun), n, lun, inquiryCDB(true, 0x83, 512), nil, 512)
		run(fmt.Sprintf("lun %d mode sense6 all", lun), n, lun, []byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
	}

	golden := filepath.Join("testdata", "commands.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read %s (run with -update to create it): %v", golden, err)
	}
	if got := out.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("line %d differs:\n got  %s\n want %s", i+1, g, w)
			}
		}
	}
}
