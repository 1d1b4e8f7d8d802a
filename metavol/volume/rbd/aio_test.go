//go:build rbd

package rbd

import (
	"bytes"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

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
