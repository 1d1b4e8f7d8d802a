//go:build rbd

package rbd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/metavol/volume/rbd/miniceph"
)

// 64 goroutines at once on one volume, 4 KiB writes interleaved block by
// block (neighbours share objects), each read back and checked while the
// others write, then the whole image checked. The I/O is asynchronous: no
// OS thread waits in librbd per command, so the 64 commands in flight
// must not make the Go runtime start a thread each (with blocking
// rbd_read/rbd_write it starts about one per caller).
func TestRBDManyInFlight(t *testing.T) {
	c := testClient(t)
	const workers, per, bs = 64, 32, 4096
	size := int64(workers * per * bs)
	v := open(t, c, newImage(t, c, size), OpenOptions{Owner: "test"})
	block := func(w, i int) int64 { return int64(i*workers+w) * bs }
	threads := pprof.Lookup("threadcreate")
	before := threads.Count()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range per {
				p := pattern(bs, byte(w*per+i))
				if _, err := v.WriteAt(p, block(w, i)); err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				got := make([]byte, bs)
				if _, err := v.ReadAt(got, block(w, i)); err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				if !bytes.Equal(got, p) {
					errs <- fmt.Errorf("worker %d: block %d reads back differently", w, i)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := threads.Count() - before
	t.Logf("%d OS threads started for %d concurrent callers", n, workers)
	if n >= workers/2 {
		t.Errorf("%d OS threads started for %d concurrent callers: I/O is blocking a thread per command", n, workers)
	}
	// The whole image in one read: every block is its writer's pattern.
	all := readBack(t, v, 0, int(size))
	for w := range workers {
		for i := range per {
			if !bytes.Equal(all[block(w, i):block(w, i)+bs], pattern(bs, byte(w*per+i))) {
				t.Fatalf("block %d of worker %d differs in the full read", i, w)
			}
		}
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
}

// With the OSD stopped, commands in flight fail after the operation
// timeout (they do not hang) and Close still works; once the OSD is back
// a new open reads what was written before. Bluestore, so the data
// survives the OSD restart; a cluster of its own, so the other tests keep
// theirs.
func TestRBDAsyncOSDDown(t *testing.T) {
	if err := miniceph.Installed(); err != nil {
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "rbdo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mc, err := miniceph.Start(dir, "bluestore")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Stop() })
	const timeout = 3 * time.Second
	c, err := Connect(Config{Conf: mc.Conf, OpTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ref := Ref{Pool: "rbd", Image: "osddown"}
	if err := c.Create(ref, 16*mib); err != nil {
		t.Fatal(err)
	}
	v, err := c.Open(ref, OpenOptions{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(mib, 7)
	if _, err := v.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := mc.StopOSD(); err != nil {
		t.Fatal(err)
	}
	const n = 16
	done := make(chan error, n)
	for i := range n {
		go func() {
			p := make([]byte, 64<<10)
			var err error
			if i%2 == 0 {
				_, err = v.WriteAt(p, int64(i)*mib)
			} else {
				// Where data was written: the object map answers
				// reads of absent objects without an OSD.
				_, err = v.ReadAt(p, int64(i)*int64(len(p)))
			}
			done <- err
		}()
	}
	// Each fails after the timeout; a generous deadline, so that a hang
	// (a completion never delivered) is told apart from a slow machine.
	deadline := time.After(20 * timeout)
	for range n {
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("an I/O succeeded with the OSD stopped")
			}
			t.Logf("OSD down: %v", err)
		case <-deadline:
			t.Fatalf("I/O still in flight %v after the OSD stopped (the op timeout is %v)", 20*timeout, timeout)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- v.Close() }()
	if err := mc.StartOSD(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		t.Logf("close: %v", err)
	case <-time.After(20 * timeout):
		t.Fatal("Close hangs after the OSD came back")
	}
	// The write that failed may or may not have reached the OSD; what was
	// synced before is there. Open again (our own stale lock is broken).
	var v2 *Volume
	waitOpen := time.Now().Add(20 * timeout)
	for {
		v2, err = c.Open(ref, OpenOptions{Owner: "test"})
		if err == nil || time.Now().After(waitOpen) {
			break
		}
	}
	if err != nil {
		t.Fatalf("open after the OSD came back: %v", err)
	}
	defer v2.Close()
	got := make([]byte, mib)
	if _, err := v2.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data written before the OSD stopped differs after it came back")
	}
	if _, err := v2.WriteAt(want, 8*mib); err != nil {
		t.Fatalf("write after the OSD came back: %v", err)
	}
}

// The librados options each volume's client runs with (ceph.go connect).
// No writeback cache: acknowledged writes survive a kill -9. Submission
// in the caller's thread (rbd_non_blocking_aio=false: no hand-off to
// librbd's dispatch thread). Zero-copy writes stay off: with
// rbd_disable_zero_copy_writes=false the write of a client whose lock was
// taken over (blocklisted) never completes, where it must fail with
// volume.ErrOffline (TestRBDExclusiveLockAndTakeover hangs there): librbd
// holds the completion until the messenger lets go of the caller's
// buffer, which a fenced client's messenger keeps. Measured in issue 10:
// zero-copy cut a 1 MiB write's CPU by ~13%; not worth a write that hangs.
func TestRBDClientOptions(t *testing.T) {
	c := testClient(t)
	v := open(t, c, newImage(t, c, 4*mib), OpenOptions{Owner: "test"})
	for opt, want := range map[string]string{
		"rbd_cache":                    "false",
		"rbd_disable_zero_copy_writes": "true",
		"rbd_non_blocking_aio":         "false",
	} {
		got, err := v.conn.GetConfigOption(opt)
		if err != nil {
			t.Fatalf("option %s: %v", opt, err)
		}
		if got != want {
			t.Errorf("option %s = %q, want %q", opt, got, want)
		}
	}
}

// A read or write alone in flight runs direct (rbd_read/rbd_write in the
// caller's thread); with others in flight it is asynchronous. Serial I/O,
// bursts of concurrent I/O and serial I/O again, every block checked: both
// paths carry data, the count of I/O in flight returns to zero after a
// burst (serial I/O runs direct again), and a direct write of a client
// whose lock was taken over fails with ErrOffline (TestRBDExclusiveLock-
// AndTakeover); Close meanwhile is TestRBDCloseDuringIO.
func TestRBDDirectAndAsync(t *testing.T) {
	c := testClient(t)
	const blocks, bs = 256, 4096
	v := open(t, c, newImage(t, c, blocks*bs), OpenOptions{Owner: "test"})
	check := func(i int, seed byte) error {
		got := make([]byte, bs)
		if _, err := v.ReadAt(got, int64(i)*bs); err != nil {
			return fmt.Errorf("block %d: %w", i, err)
		}
		if !bytes.Equal(got, pattern(bs, seed)) {
			return fmt.Errorf("block %d reads back differently", i)
		}
		return nil
	}
	serial := func(seed byte) {
		t.Helper()
		d0 := v.img.direct.Load()
		for i := range blocks {
			if _, err := v.WriteAt(pattern(bs, seed+byte(i)), int64(i)*bs); err != nil {
				t.Fatalf("serial write of block %d: %v", i, err)
			}
			if err := check(i, seed+byte(i)); err != nil {
				t.Fatalf("serial: %v", err)
			}
		}
		if d := v.img.direct.Load() - d0; d < 2*blocks {
			t.Fatalf("%d of %d serial reads and writes ran direct, want all (I/O in flight: %d)", d, 2*blocks, v.img.inflight.Load())
		}
	}
	serial(1)
	const workers = 16
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		start := make(chan struct{})
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := w; i < blocks; i += workers {
					seed := byte(round*50 + i)
					if _, err := v.WriteAt(pattern(bs, seed), int64(i)*bs); err != nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
						return
					}
					if err := check(i, seed); err != nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
						return
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := v.img.inflight.Load(); n != 0 {
			t.Fatalf("after burst %d: %d reads and writes counted in flight, want 0", round, n)
		}
		serial(byte(round*50 + 7))
	}
	all := readBack(t, v, 0, blocks*bs)
	for i := range blocks {
		if !bytes.Equal(all[i*bs:(i+1)*bs], pattern(bs, byte(2*50+7)+byte(i))) {
			t.Fatalf("block %d differs in the full read", i)
		}
	}
}

// Close while reads and writes are in flight, direct and asynchronous:
// every call ends (done, or refused with volume.ErrClosed once Close has
// begun), Close returns, and a new open reads what each goroutine last
// wrote successfully.
func TestRBDCloseDuringIO(t *testing.T) {
	c := testClient(t)
	const workers, bs = 8, 4096
	ref := newImage(t, c, workers*bs)
	for round := range 3 {
		v, err := c.Open(ref, OpenOptions{Owner: "test"})
		if err != nil {
			t.Fatal(err)
		}
		// round 0: one writer (direct); then several (mostly asynchronous)
		n := 1 + round*(workers-1)/2
		last := make([]int, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		var started sync.WaitGroup
		for w := range n {
			wg.Add(1)
			started.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; ; i++ {
					if _, err := v.WriteAt(pattern(bs, byte(round*40+w*4+i%4)), int64(w)*bs); err != nil {
						if !errors.Is(err, volume.ErrClosed) {
							errs <- fmt.Errorf("worker %d write %d: %w", w, i, err)
						}
						if i == 1 {
							started.Done()
						}
						return
					}
					last[w] = i
					if i == 1 {
						started.Done()
					}
					if _, err := v.ReadAt(make([]byte, bs), int64(w)*bs); err != nil && !errors.Is(err, volume.ErrClosed) {
						errs <- fmt.Errorf("worker %d read %d: %w", w, i, err)
						return
					}
				}
			}()
		}
		started.Wait() // every worker has written once: I/O is under way
		if err := v.Close(); err != nil {
			t.Fatalf("round %d: Close during I/O: %v", round, err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		if n := v.img.inflight.Load(); n != 0 {
			t.Fatalf("round %d: %d reads and writes counted in flight after Close, want 0", round, n)
		}
		v2 := open(t, c, ref, OpenOptions{Owner: "test"})
		for w := range n {
			if got := readBack(t, v2, int64(w)*bs, bs); !bytes.Equal(got, pattern(bs, byte(round*40+w*4+last[w]%4))) {
				t.Fatalf("round %d: worker %d's last acknowledged write (%d) not what a new open reads", round, w, last[w])
			}
		}
		if err := v2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
