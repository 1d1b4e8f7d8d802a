//go:build rbd

package rbd

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

const (
	mib     = 1 << 20
	objSize = 4 * mib // rbd's default object size (order 22)
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i/512)
	}
	return b
}

func readBack(t *testing.T, v *Volume, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := v.ReadAt(b, off); err != nil {
		t.Fatalf("read [%d,+%d): %v", off, n, err)
	}
	return b
}

// Writes read back; Unmap of a part of an object and of a whole object
// reads back as zeros (the partial one too: rbd_discard would have left
// it); the bounds are checked; Sync flushes.
func TestRBDReadWriteUnmap(t *testing.T) {
	c := testClient(t)
	v := open(t, c, newImage(t, c, 16*mib), OpenOptions{Owner: "test"})
	if v.Size() != 16*mib {
		t.Fatalf("size %d, want %d", v.Size(), 16*mib)
	}
	data := pattern(12*mib, 1)
	if _, err := v.WriteAt(data, 1*mib); err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, v, 1*mib, len(data)); !bytes.Equal(got, data) {
		t.Fatal("read back differs from what was written")
	}
	// 4 KiB inside the first object, then the whole second object [4,8) MiB.
	if err := v.Unmap(2*mib+512, 4096); err != nil {
		t.Fatal(err)
	}
	if err := v.Unmap(objSize, objSize); err != nil {
		t.Fatal(err)
	}
	copy(data[1*mib+512:], make([]byte, 4096))
	copy(data[objSize-1*mib:], make([]byte, objSize))
	if got := readBack(t, v, 1*mib, len(data)); !bytes.Equal(got, data) {
		for i := range got {
			if got[i] != data[i] {
				t.Fatalf("after unmap: first difference at %d: %d, want %d", 1*mib+i, got[i], data[i])
			}
		}
	}
	// Not in whole 512-byte blocks: written with zeros.
	if err := v.Unmap(9*mib+100, 1000); err != nil {
		t.Fatal(err)
	}
	copy(data[8*mib+100:], make([]byte, 1000))
	if got := readBack(t, v, 1*mib, len(data)); !bytes.Equal(got, data) {
		t.Fatal("after an unaligned unmap the image differs from the expected one")
	}
	if _, err := v.WriteAt(make([]byte, 512), 16*mib-256); !errors.Is(err, volume.ErrOutOfRange) {
		t.Fatalf("write past the end: %v, want ErrOutOfRange", err)
	}
	if _, err := v.ReadAt(make([]byte, 512), 16*mib); !errors.Is(err, volume.ErrOutOfRange) {
		t.Fatalf("read past the end: %v, want ErrOutOfRange", err)
	}
}

// NextData reports only allocated objects, from rbd diff: nothing on a new
// image, the object written, and not an object unmapped whole.
func TestRBDNextData(t *testing.T) {
	c := testClient(t)
	v := open(t, c, newImage(t, c, 64*mib), OpenOptions{Owner: "test"})
	if s, e, err := v.NextData(0); err != io.EOF {
		t.Fatalf("new image: NextData = [%d,%d) %v, want io.EOF", s, e, err)
	}
	if _, err := v.WriteAt(pattern(4096, 7), 20*mib+8192); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(pattern(4096, 9), 40*mib); err != nil {
		t.Fatal(err)
	}
	s, e, err := v.NextData(0)
	if err != nil || s != 20*mib || e != 24*mib {
		t.Fatalf("NextData(0) = [%d,%d) %v, want [%d,%d)", s, e, err, 20*mib, 24*mib)
	}
	s, e, err = v.NextData(22 * mib)
	if err != nil || s != 22*mib || e != 24*mib {
		t.Fatalf("NextData(22 MiB) = [%d,%d) %v, want [%d,%d)", s, e, err, 22*mib, 24*mib)
	}
	s, e, err = v.NextData(24 * mib)
	if err != nil || s != 40*mib || e != 44*mib {
		t.Fatalf("NextData(24 MiB) = [%d,%d) %v, want [%d,%d)", s, e, err, 40*mib, 44*mib)
	}
	if err := v.Unmap(40*mib, objSize); err != nil {
		t.Fatal(err)
	}
	if s, e, err := v.NextData(24 * mib); err != io.EOF {
		t.Fatalf("after unmapping the object: NextData = [%d,%d) %v, want io.EOF", s, e, err)
	}
	if _, _, err := v.NextData(64 * mib); err != io.EOF {
		t.Fatalf("NextData at the end: %v, want io.EOF", err)
	}
}

// Many writers and readers at once on one volume, each on its own range.
func TestRBDConcurrentIO(t *testing.T) {
	c := testClient(t)
	v := open(t, c, newImage(t, c, 32*mib), OpenOptions{Owner: "test"})
	const n, size = 32, 256 << 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pattern(size, byte(i))
			off := int64(i) * 1 * mib
			for range 4 {
				if _, err := v.WriteAt(p, off); err != nil {
					errs <- err
					return
				}
				got := make([]byte, size)
				if _, err := v.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, p) {
					errs <- errors.New("read back differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Resize grows the image; the new space reads as zeros and a reopen sees
// the new size.
func TestRBDResize(t *testing.T) {
	c := testClient(t)
	ref := newImage(t, c, 8*mib)
	v, err := c.Open(ref, OpenOptions{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Resize(24 * mib); err != nil {
		t.Fatal(err)
	}
	if v.Size() != 24*mib {
		t.Fatalf("size %d after resize, want %d", v.Size(), 24*mib)
	}
	if got := readBack(t, v, 20*mib, 4096); !volume.IsZero(got) {
		t.Fatal("grown space does not read as zeros")
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v = open(t, c, ref, OpenOptions{Owner: "test"})
	if v.Size() != 24*mib {
		t.Fatalf("size %d after reopen, want %d", v.Size(), 24*mib)
	}
}

// A second client (another lmtgt) is refused an image the first holds,
// with the holder named; Takeover breaks the first one's lock (Ceph
// blocklists it: its writes fail) and takes the image.
func TestRBDExclusiveLockAndTakeover(t *testing.T) {
	a, b := testClient(t), testClient(t)
	ref := newImage(t, a, 8*mib)
	va, err := a.Open(ref, OpenOptions{Owner: "server-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer va.Close()
	if _, err := va.WriteAt(pattern(4096, 1), 0); err != nil {
		t.Fatal(err)
	}
	_, err = b.Open(ref, OpenOptions{Owner: "server-b"})
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want a *LockedError", err)
	}
	if le.Holder == "" || le.Owner != "server-a" || !strings.Contains(err.Error(), le.Holder) || !strings.Contains(err.Error(), "server-a") {
		t.Fatalf("refusal names holder %q owner %q (%v), want the client's address and server-a", le.Holder, le.Owner, err)
	}
	if got := va.LockState(); got != "held" {
		t.Fatalf("first holder's lock state %q after the refusal, want held", got)
	}
	vb, err := b.Open(ref, OpenOptions{Owner: "server-b", Takeover: true})
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	defer vb.Close()
	if got := readBack(t, vb, 0, 4096); !bytes.Equal(got, pattern(4096, 1)) {
		t.Fatal("data written by the first holder not there after the takeover")
	}
	if _, err := vb.WriteAt(pattern(4096, 2), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := va.WriteAt(pattern(4096, 3), 8192); !errors.Is(err, volume.ErrOffline) {
		t.Fatalf("the old holder's write after the takeover: %v, want an error wrapping volume.ErrOffline (blocklisted)", err)
	}
	if got := vb.LockState(); got != "held" {
		t.Fatalf("new holder's lock state %q, want held", got)
	}
	if got := va.LockState(); !strings.HasPrefix(got, "lost: this client is blocklisted") {
		t.Fatalf("old holder's lock state %q, want lost (blocklisted)", got)
	}
}

// A lock left by a client whose recorded owner is ours (our own process
// before kill -9) is taken without Takeover.
func TestRBDOwnStaleLock(t *testing.T) {
	a, b := testClient(t), testClient(t)
	ref := newImage(t, a, 8*mib)
	va, err := a.Open(ref, OpenOptions{Owner: "vol-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer va.Close()
	vb, err := b.Open(ref, OpenOptions{Owner: "vol-1"})
	if err != nil {
		t.Fatalf("reopen by the same owner: %v", err)
	}
	defer vb.Close()
	if _, err := vb.WriteAt(pattern(512, 4), 0); err != nil {
		t.Fatal(err)
	}
}

// An image without the exclusive-lock feature is refused and left as it
// was; a missing image or pool is ErrNotFound; Create refuses an
// existing image.
func TestRBDRefusals(t *testing.T) {
	c := testClient(t)
	ref := Ref{Pool: "rbd", Image: "nolock-" + t.Name()}
	if _, err := cluster.Tool("rbd", "create", "--size", "8M", "--image-feature", "layering", ref.String()); err != nil {
		t.Fatal(err)
	}
	defer c.Remove(ref)
	if _, err := c.Open(ref, OpenOptions{}); !errors.Is(err, ErrNoLockFeature) {
		t.Fatalf("open without exclusive-lock: %v, want ErrNoLockFeature", err)
	}
	if _, err := c.Open(Ref{Pool: "rbd", Image: "missing"}, OpenOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open a missing image: %v, want ErrNotFound", err)
	}
	if _, err := c.Open(Ref{Pool: "nopool", Image: "x"}, OpenOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open in a missing pool: %v, want ErrNotFound", err)
	}
	if err := c.Create(ref, 8*mib); !errors.Is(err, ErrExists) {
		t.Fatalf("create an existing image: %v, want ErrExists", err)
	}
}

// State answers from the monitors, and again from its cache.
func TestRBDClusterState(t *testing.T) {
	c := testClient(t)
	for range 2 {
		if s := c.State(); !strings.HasPrefix(s, "up, fsid ") {
			t.Fatalf("State() = %q, want up, fsid ...", s)
		}
	}
}
