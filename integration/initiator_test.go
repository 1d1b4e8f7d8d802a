package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/tgtd"
)

// The initiator (metavol/volume/iscsi) against lmtgt itself: the real
// binary, real sessions, kill -9 and restarts.

func openRemote(t *testing.T, url string, cfg iscsivol.Config) *iscsivol.Volume {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := iscsivol.Open(ctx, url, cfg, nil)
	if err != nil {
		t.Fatalf("open %s: %v", iscsivol.Redact(url), err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func chapURL(d *Daemon, user, secret, iqn string) string {
	return fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", user, secret, d.Portal, iqn)
}

// TestInitiatorLmtgtLoginVariants: None, CHAP one-way, mutual, a wrong
// secret refused, digests on and small bursts, many commands in flight
// with the data verified against the LUN's backing file.
func TestInitiatorLmtgtLoginVariants(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("ini", "32M", 512)

	cfg := iscsivol.Config{HeaderDigest: true, DataDigest: true, RequireDigests: true,
		MaxBurstLength: 4096, FirstBurstLength: 1024, MaxRecvDataSegmentLength: 2048}
	v := openRemote(t, d.URL(iqn, 0), cfg)
	p := v.Client().Params()
	if !p.HeaderDigest || !p.DataDigest || p.MaxBurst != 4096 || p.FirstBurst != 1024 {
		t.Fatalf("negotiated %+v", p)
	}
	want := make([]byte, 16<<20)
	hammerRemote(t, v, want, 16, 25)
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	v.Close()
	got, err := os.ReadFile(d.lun("ini").VolumePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatal("backing file differs from what the initiator wrote")
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	found, err := iscsivol.Discover(dctx, iscsivol.Config{Portal: d.Portal})
	if err != nil || len(found) != 1 || found[0].Name != iqn {
		t.Fatalf("SendTargets on lmtgt: %+v %v", found, err)
	}

	d.OK("target", "chap", iqn, "--user", "ini-user", "--secret", "ini-secret-1234",
		"--mutual-user", "tgt-user", "--mutual-secret", "tgt-secret-5678")
	one := openRemote(t, chapURL(d, "ini-user", "ini-secret-1234", iqn), iscsivol.Config{})
	buf := make([]byte, 4096)
	if _, err := one.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want[:4096]) {
		t.Fatalf("read with one-way CHAP: %v", err)
	}
	one.Close()
	mutual := openRemote(t, chapURL(d, "ini-user", "ini-secret-1234", iqn),
		iscsivol.Config{MutualUser: "tgt-user", MutualSecret: "tgt-secret-5678"})
	if _, err := mutual.ReadAt(buf, 4096); err != nil || !bytes.Equal(buf, want[4096:8192]) {
		t.Fatalf("read with mutual CHAP: %v", err)
	}
	mutual.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, bad := range []struct {
		url string
		cfg iscsivol.Config
	}{
		{chapURL(d, "ini-user", "wrong-secret-99", iqn), iscsivol.Config{}},
		{d.URL(iqn, 0), iscsivol.Config{}},
		{chapURL(d, "ini-user", "ini-secret-1234", iqn), iscsivol.Config{MutualUser: "tgt-user", MutualSecret: "not-the-target"}},
	} {
		v, err := iscsivol.Open(ctx, bad.url, bad.cfg, nil)
		if err == nil {
			v.Close()
			t.Fatalf("login to %s accepted", iscsivol.Redact(bad.url))
		}
		if !errors.Is(err, iscsivol.ErrAuth) {
			t.Fatalf("login to %s: %v, want ErrAuth", iscsivol.Redact(bad.url), err)
		}
		if strings.Contains(err.Error(), "wrong-secret-99") || strings.Contains(err.Error(), "ini-secret-1234") {
			t.Fatalf("error shows a secret: %v", err)
		}
	}
}

// hammerRemote writes random blocks from workers goroutines, each in its
// own region of want, and reads every write back.
func hammerRemote(t *testing.T, v *iscsivol.Volume, want []byte, workers, per int) {
	t.Helper()
	region := int64(len(want)) / int64(workers)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 11))
			base := int64(w) * region
			for range per {
				n := min(int64(512*(1+r.IntN(256))), region)
				off := base + r.Int64N(region-n+1)/512*512
				buf := make([]byte, n)
				for i := range buf {
					buf[i] = byte(r.Uint32())
				}
				if _, err := v.WriteAt(buf, off); err != nil {
					errc <- err
					return
				}
				copy(want[off:], buf)
				got := make([]byte, n)
				if _, err := v.ReadAt(got, off); err != nil || !bytes.Equal(got, buf) {
					errc <- fmt.Errorf("read back [%d,+%d): %v", off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

// TestInitiatorLmtgtRestartUnderLoad: writers keep writing while lmtgt is
// killed (-9) and restarted on the same data dir and port; the session
// comes back, what was in flight is re-issued, no write fails, and the
// data is all there afterwards.
func TestInitiatorLmtgtRestartUnderLoad(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("load", "16M", 512)
	v := openRemote(t, d.URL(iqn, 0), iscsivol.Config{ReplacementTimeout: 60 * time.Second,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	w := tgtd.StartWriters(t, v, 8, 16, 3)
	w.WaitAcked(200, time.Minute, "writes before the kill")
	d.Restart(true)
	w.WaitAcked(w.Acked()+200, time.Minute, "writes after the restart")
	want := w.Stop()
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	st := v.Client().Stats()
	if st.Logins < 2 || st.ConnDrops < 1 {
		t.Fatalf("no reconnect seen: %+v", st)
	}
	t.Logf("stats after restart: %+v", st)
	got := make([]byte, len(want))
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("data through the initiator differs after the restart: %v", err)
	}
	file, err := os.ReadFile(d.lun("load").VolumePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file[:len(want)], want) {
		t.Fatal("backing file differs after the restart")
	}
}

// TestInitiatorReplacementTimeout: with the target gone, I/O waits for the
// replacement timeout and then fails (not before, not never); new I/O
// fails fast; when the target is back, I/O works again.
func TestInitiatorReplacementTimeout(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("gone", "8M", 512)
	const timeout = 2 * time.Second
	v := openRemote(t, d.URL(iqn, 0), iscsivol.Config{ReplacementTimeout: timeout,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		NopInterval: 200 * time.Millisecond, NopTimeout: 5 * time.Second})
	// idle: our NOP-Out pings are answered and the session stays
	waitFor(t, 20*time.Second, "two pings answered", func() (bool, string) {
		st := v.Client().Stats()
		return st.NopsOut >= 2 && v.Client().State() == iscsivol.StateUp, fmt.Sprintf("%+v", st)
	})
	if st := v.Client().Stats(); st.ConnDrops != 0 {
		t.Fatalf("session dropped while idle: %+v", st)
	}
	buf := make([]byte, 4096)
	if _, err := v.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	portal := d.Portal
	d.Kill()
	killed := time.Now()
	errc := make(chan error, 1)
	go func() { _, err := v.ReadAt(buf, 0); errc <- err }()
	var err error
	select {
	case err = <-errc:
	case <-time.After(timeout + 30*time.Second):
		t.Fatalf("read with the target gone still waiting after %v", timeout+30*time.Second)
	}
	elapsed := time.Since(killed)
	if !errors.Is(err, iscsivol.ErrSessionDown) {
		t.Fatalf("read with the target gone: %v, want ErrSessionDown", err)
	}
	if elapsed < timeout {
		t.Fatalf("read failed after %v, before the %v replacement timeout", elapsed, timeout)
	}
	if elapsed > timeout+20*time.Second {
		t.Fatalf("read failed only after %v", elapsed)
	}
	if st := v.Client().State(); st != iscsivol.StateDown {
		t.Fatalf("state %s, want down", st)
	}
	if _, err := v.ReadAt(buf, 0); !errors.Is(err, iscsivol.ErrSessionDown) {
		t.Fatalf("read while down: %v", err)
	}
	d.Start(portal)
	waitFor(t, 30*time.Second, "session back after the restart", func() (bool, string) {
		return v.Client().State() == iscsivol.StateUp, v.Client().State().String()
	})
	if _, err := v.ReadAt(buf, 0); err != nil || buf[4095] != 7 {
		t.Fatalf("read after the target came back: %v", err)
	}
}

// TestInitiatorLmtgtHolesUnmap: NextData (GET LBA STATUS) finds the written
// extents of a sparse LUN and skips the holes; Unmap leaves zeros.
func TestInitiatorLmtgtHolesUnmap(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("holes", "8M", 512)
	v := openRemote(t, d.URL(iqn, 0), iscsivol.Config{})
	blk := bytes.Repeat([]byte{0x5a}, 4096)
	for _, off := range []int64{1 << 20, 5 << 20} {
		if _, err := v.WriteAt(blk, off); err != nil {
			t.Fatal(err)
		}
	}
	var extents [][2]int64
	for off := int64(0); ; {
		s, e, err := v.NextData(off)
		if err == io.EOF {
			break
		}
		if err != nil || e <= s || s < off {
			t.Fatalf("NextData(%d) = %d, %d, %v", off, s, e, err)
		}
		extents = append(extents, [2]int64{s, e})
		off = e
	}
	covered := func(x int64) bool {
		for _, ex := range extents {
			if x >= ex[0] && x < ex[1] {
				return true
			}
		}
		return false
	}
	if !covered(1<<20) || !covered(5<<20+4095) {
		t.Fatalf("data extents %v miss a written block", extents)
	}
	if covered(3<<20) || covered(7<<20) {
		t.Fatalf("data extents %v include a hole (unmap mode %s)", extents, v.UnmapMode())
	}
	if err := v.Unmap(1<<20, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if _, err := v.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("after unmap (%s): %v", v.UnmapMode(), err)
	}
	t.Logf("extents %v, unmap mode %s", extents, v.UnmapMode())
}

// TestInitiatorLmtgtCmdSNWindow: with lmtgt's window at 8 (--queue-depth)
// and 64 callers, the initiator sends only inside [ExpCmdSN, MaxCmdSN]:
// lmtgt logs and ignores a command outside it (which would then hang and be
// aborted). Its own count of commands in flight may exceed 8 by the answers
// still on their way to it, so the test checks the target's side.
func TestInitiatorLmtgtCmdSNWindow(t *testing.T) {
	d := StartDaemon(t, "", "--queue-depth", "8")
	iqn := d.Export("window", "8M", 512)
	v := openRemote(t, d.URL(iqn, 0), iscsivol.Config{QueueDepth: 512, CommandTimeout: 5 * time.Second})
	want := make([]byte, 8<<20)
	hammerRemote(t, v, want, 64, 10)
	st := v.Client().Stats()
	if st.Aborts != 0 || st.ConnDrops != 0 || st.MaxInFlight < 8 {
		t.Fatalf("window 8: %+v", st)
	}
	if hits := d.logHas("CmdSN outside the window"); len(hits) > 0 {
		t.Fatalf("commands sent outside the window: %d, first %s", len(hits), hits[0])
	}
}
