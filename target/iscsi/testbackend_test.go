package iscsi

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

const (
	testIQN   = "iqn.2024-01.org.lmtgt:test"
	testBlock = 512
)

// fileBackend is a loopback Backend storing one LUN (LUN 0) in a real
// sparse temp file. It implements just enough SCSI for libiscsi and QEMU.
type fileBackend struct {
	f *os.File
	// vol is the same file as a data volume: READs offered FileOK are
	// answered with a reference into it (zero-copy), unless noFileRefs.
	vol        atomic.Pointer[volume.File]
	noFileRefs atomic.Bool
	size       int64
	targets    []string

	mu        sync.Mutex
	allow     map[string]bool // nil: everyone
	chap      *CHAP
	discChap  *CHAP
	tmfs      []TMFunction
	openNexus atomic.Int32
	// hook, when set, runs at the start of every Execute (tests that need
	// a command to stay busy).
	hook func(c *Command)
	// quick: what the nexus answers to Quick (rtc.go); quickAsked counts
	// the questions.
	quick      atomic.Bool
	quickAsked atomic.Int32
}

func newFileBackend(t testing.TB, size int64) *fileBackend {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lun0.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	vol, err := volume.Open(path, volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	b := &fileBackend{f: f, size: size, targets: []string{testIQN}}
	b.vol.Store(vol)
	return b
}

func (b *fileBackend) Targets(initiator string) []TargetInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []TargetInfo
	for _, n := range b.targets {
		if b.allow == nil || b.allow[initiator] {
			out = append(out, TargetInfo{Name: n})
		}
	}
	return out
}

func (b *fileBackend) Login(target, initiator string) (Auth, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	found := false
	for _, n := range b.targets {
		found = found || n == target
	}
	if !found {
		return Auth{}, ErrTargetNotFound
	}
	if b.allow != nil && !b.allow[initiator] {
		return Auth{}, ErrNotAuthorized
	}
	return Auth{CHAP: b.chap}, nil
}

func (b *fileBackend) DiscoveryAuth(string) Auth {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Auth{CHAP: b.discChap}
}

func (b *fileBackend) OpenNexus(NexusInfo) (Nexus, error) {
	b.openNexus.Add(1)
	return &fileNexus{b: b}, nil
}

func (b *fileBackend) tmfLog() []TMFunction {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]TMFunction(nil), b.tmfs...)
}

type fileNexus struct {
	b      *fileBackend
	closed atomic.Bool
}

func (n *fileNexus) Quick(lun uint64) bool {
	n.b.quickAsked.Add(1)
	return n.b.quick.Load()
}

func (n *fileNexus) Close() {
	if n.closed.CompareAndSwap(false, true) {
		n.b.openNexus.Add(-1)
	}
}

func (n *fileNexus) TaskManagement(fn TMFunction, lun uint64) TMFResponse {
	n.b.mu.Lock()
	n.b.tmfs = append(n.b.tmfs, fn)
	n.b.mu.Unlock()
	return TMFComplete
}

func checkCond(c *Command, key, asc, ascq byte) {
	c.Status = 0x02
	c.Sense = fixedSense(key, asc, ascq)
	c.DataInLen = 0
}

// reply copies data into DataIn, recording the length the command wanted.
func reply(c *Command, data []byte, alloc int) {
	want := min(len(data), alloc)
	c.TransferLength, c.HasTransferLength = uint32(want), true
	c.DataInLen = copy(c.DataIn, data[:want])
}

func (n *fileNexus) Execute(c *Command) {
	b := n.b
	b.mu.Lock()
	hook := b.hook
	b.mu.Unlock()
	if hook != nil {
		hook(c)
	}
	cdb := c.CDB
	if c.LUN != 0 {
		if cdb[0] == 0x12 { // INQUIRY to a missing LUN
			d := make([]byte, 36)
			d[0] = 0x7f
			reply(c, d, int(binary.BigEndian.Uint16(cdb[3:5])))
			return
		}
		checkCond(c, 0x05, 0x25, 0x00)
		return
	}
	blocks := b.size / testBlock
	switch cdb[0] {
	case 0x00: // TEST UNIT READY
	case 0x12: // INQUIRY
		alloc := int(binary.BigEndian.Uint16(cdb[3:5]))
		if cdb[1]&1 == 0 {
			d := make([]byte, 36)
			d[2], d[3], d[4] = 5, 2, 31
			copy(d[8:], "LMTGT   TESTDISK        0001")
			reply(c, d, alloc)
			return
		}
		switch cdb[2] {
		case 0x00:
			reply(c, []byte{0, 0, 0, 3, 0x00, 0x80, 0x83}, alloc)
		case 0x80:
			reply(c, append([]byte{0, 0x80, 0, 8}, "SERIAL01"...), alloc)
		case 0x83:
			d := []byte{0, 0x83, 0, 12, 0x01, 0x03, 0, 8, 0x60, 1, 2, 3, 4, 5, 6, 7}
			reply(c, d, alloc)
		default:
			checkCond(c, 0x05, 0x24, 0x00)
		}
	case 0x25: // READ CAPACITY(10)
		d := make([]byte, 8)
		binary.BigEndian.PutUint32(d[0:], uint32(blocks-1))
		binary.BigEndian.PutUint32(d[4:], testBlock)
		reply(c, d, 8)
	case 0x9e: // SERVICE ACTION IN(16)
		if cdb[1]&0x1f != 0x10 {
			checkCond(c, 0x05, 0x24, 0x00)
			return
		}
		d := make([]byte, 32)
		binary.BigEndian.PutUint64(d[0:], uint64(blocks-1))
		binary.BigEndian.PutUint32(d[8:], testBlock)
		reply(c, d, int(binary.BigEndian.Uint32(cdb[10:14])))
	case 0xa0: // REPORT LUNS
		d := make([]byte, 16)
		binary.BigEndian.PutUint32(d[0:], 8)
		reply(c, d, int(binary.BigEndian.Uint32(cdb[6:10])))
	case 0x1a: // MODE SENSE(6)
		reply(c, []byte{3, 0, 0, 0}, int(cdb[4]))
	case 0x5a: // MODE SENSE(10)
		reply(c, []byte{0, 6, 0, 0, 0, 0, 0, 0}, int(binary.BigEndian.Uint16(cdb[7:9])))
	case 0x35, 0x91: // SYNCHRONIZE CACHE
		if err := b.f.Sync(); err != nil {
			checkCond(c, 0x03, 0x0c, 0x00)
		}
	case 0x28, 0x88, 0x2a, 0x8a: // READ/WRITE (10/16)
		var lba uint64
		var nblk uint32
		if cdb[0] == 0x28 || cdb[0] == 0x2a {
			lba = uint64(binary.BigEndian.Uint32(cdb[2:6]))
			nblk = uint32(binary.BigEndian.Uint16(cdb[7:9]))
		} else {
			lba = binary.BigEndian.Uint64(cdb[2:10])
			nblk = binary.BigEndian.Uint32(cdb[10:14])
		}
		if lba+uint64(nblk) > uint64(blocks) {
			checkCond(c, 0x05, 0x21, 0x00)
			return
		}
		bytes := int(nblk) * testBlock
		c.TransferLength, c.HasTransferLength = uint32(bytes), true
		off := int64(lba) * testBlock
		if cdb[0] == 0x28 || cdb[0] == 0x88 {
			n := min(bytes, len(c.DataIn))
			if vol := b.vol.Load(); c.FileOK && vol != nil && !b.noFileRefs.Load() {
				ref, err := vol.ReadRef(off, int64(n))
				if err != nil {
					checkCond(c, 0x03, 0x11, 0x00)
					return
				}
				c.DataInFile = FileData{Fd: ref.Fd, Off: ref.Off, Len: ref.Len, Owner: ref.Owner}
				c.DataInLen = n
				return
			}
			if _, err := b.f.ReadAt(c.DataIn[:n], off); err != nil {
				checkCond(c, 0x03, 0x11, 0x00)
				return
			}
			c.DataInLen = n
			return
		}
		n := min(bytes, len(c.DataOut))
		if _, err := b.f.WriteAt(c.DataOut[:n], off); err != nil {
			checkCond(c, 0x03, 0x0c, 0x00)
		}
	default:
		checkCond(c, 0x05, 0x20, 0x00)
	}
}

// startServer runs a Server on 127.0.0.1:0 with backend b.
func startServer(t testing.TB, b Backend, mod func(*Options)) *Server {
	t.Helper()
	o := Options{
		Portals: []string{"127.0.0.1:0"},
		Backend: b,
		Log:     zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}
	if os.Getenv("LMTGT_TEST_DEBUG") != "" {
		o.Log = o.Log.Level(zerolog.DebugLevel)
	}
	if mod != nil {
		mod(&o)
	}
	s, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

func addrOf(s *Server) string { return s.Addrs()[0].String() }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var _ net.Addr = (*net.TCPAddr)(nil)

// meeting returns a hook that keeps each command with opcode op inside
// Execute until a second one is inside too (at most 10 s, the deadline of
// a serial run), and a count of the commands that met another there.
func meeting(op byte) (hook func(*Command), met func() int) {
	var mu sync.Mutex
	inside, n := 0, 0
	both := make(chan struct{})
	hook = func(c *Command) {
		if c.CDB[0] != op {
			return
		}
		mu.Lock()
		inside++
		if inside == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
			mu.Lock()
			n++
			mu.Unlock()
		case <-time.After(10 * time.Second):
		}
	}
	met = func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	return hook, met
}
