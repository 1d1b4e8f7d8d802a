package iscsi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/tgtd"
)

// tgt is a Linux tgt daemon (tgtd, launched by package tgtd) with one
// target and one LUN backed by a sparse file.
type tgt struct {
	*tgtd.Daemon
	t       testing.TB
	iqn     string
	backing string
}

type tgtOpts struct {
	size    int64
	user    string // CHAP user/secret the target requires (incoming)
	secret  string
	outUser string // mutual CHAP: the target's own name/secret (outgoing)
	outSec  string
	params  map[string]string // tgtadm target parameters (MaxBurstLength...)
}

func startTgt(t testing.TB, o tgtOpts) *tgt {
	t.Helper()
	if o.size == 0 {
		o.size = 64 << 20
	}
	dir := t.TempDir()
	g := &tgt{t: t, iqn: "iqn.2026-11.org.lmtgt.test:tgt", backing: filepath.Join(dir, "lun.img")}
	f, err := os.Create(g.backing)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(o.size)
	f.Close()
	g.Daemon = tgtd.Start(t)
	g.Target(g.iqn, g.backing)
	if o.user != "" {
		g.Account(o.user, o.secret, false)
	}
	if o.outUser != "" {
		g.Account(o.outUser, o.outSec, true)
	}
	for k, v := range o.params {
		g.Adm("--op", "update", "--mode", "target", "--tid", "1", "-n", k, "-v", v)
	}
	return g
}

func (g *tgt) url(user, secret string) string {
	cred := ""
	if user != "" {
		cred = user + "%" + secret + "@"
	}
	return fmt.Sprintf("iscsi://%s%s/%s/1", cred, g.Portal, g.iqn)
}

// fastCfg keeps the timers short enough for tests that wait on them.
func fastCfg() Config {
	return Config{ReplacementTimeout: 10 * time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
}

func openT(t testing.TB, url string, cfg Config) *Volume {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := Open(ctx, url, cfg, nil)
	if err != nil {
		t.Fatalf("open %s: %v", Redact(url), err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// hammer writes random data at random aligned and unaligned offsets from
// many goroutines (disjoint regions per goroutine), reads it back through
// the volume and returns the expected image of the first span bytes.
func hammer(t testing.TB, v *Volume, workers, perWorker int, span int64) []byte {
	t.Helper()
	want := make([]byte, span)
	region := span / int64(workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			base := int64(w) * region
			for range perWorker {
				n := int64(512 * (1 + r.IntN(128)))
				if r.IntN(4) == 0 {
					n += int64(r.IntN(511))
				}
				n = min(n, region)
				off := base + r.Int64N(region-n+1)
				if r.IntN(2) == 0 {
					off = off / 512 * 512
				}
				buf := make([]byte, n)
				for i := range buf {
					buf[i] = byte(r.Uint32())
				}
				if _, err := v.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
				copy(want[off:], buf)
				got := make([]byte, n)
				if _, err := v.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, buf) {
					errs <- fmt.Errorf("read back [%d,+%d) differs", off, n)
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
	return want
}

func checkBacking(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(want)], want) {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("backing file %s differs at byte %d", path, i)
			}
		}
	}
}

func TestTgtLogin(t *testing.T) {
	g := startTgt(t, tgtOpts{user: "alice", secret: "alicesecret12", outUser: "tgtname", outSec: "targetsecret1"})
	cases := []struct {
		name    string
		user    string
		secret  string
		mutual  bool
		wantErr error
	}{
		{"chap", "alice", "alicesecret12", false, nil},
		{"mutual", "alice", "alicesecret12", true, nil},
		{"wrong-secret", "alice", "wrongsecret12", false, ErrAuth},
		{"none-refused", "", "", false, ErrAuth},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fastCfg()
			if tc.mutual {
				cfg.MutualUser, cfg.MutualSecret = "tgtname", "targetsecret1"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			v, err := Open(ctx, g.url(tc.user, tc.secret), cfg, nil)
			if tc.wantErr != nil {
				if err == nil {
					v.Close()
					t.Fatalf("login with %s accepted", tc.name)
				}
				if !errorsIs(err, tc.wantErr) {
					t.Fatalf("login error %v, want %v", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), tc.secret) && tc.secret != "" {
					t.Fatalf("error shows the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if v.Size() != 64<<20 || v.BlockSize() != 512 {
				t.Fatalf("size %d block %d", v.Size(), v.BlockSize())
			}
			buf := bytes.Repeat([]byte(tc.name), 1000)
			if _, err := v.WriteAt(buf, 4096); err != nil {
				t.Fatal(err)
			}
			if err := v.Sync(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(buf))
			if _, err := v.ReadAt(got, 4096); err != nil || !bytes.Equal(got, buf) {
				t.Fatalf("read back: %v", err)
			}
		})
	}
	// mutual CHAP with the wrong target secret: we refuse the target
	cfg := fastCfg()
	cfg.MutualUser, cfg.MutualSecret = "tgtname", "notthetargets"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if v, err := Open(ctx, g.url("alice", "alicesecret12"), cfg, nil); err == nil {
		v.Close()
		t.Fatal("target with the wrong mutual secret accepted")
	} else if !errorsIs(err, ErrAuth) {
		t.Fatalf("mutual failure: %v", err)
	}
}

// TestTgtDigestsSmallBursts runs many commands in flight with CRC32C
// digests and tiny burst/segment sizes, so every write is split into
// immediate data, unsolicited Data-Out (InitialR2T=No) and R2T sequences.
func TestTgtDigestsSmallBursts(t *testing.T) {
	for _, initialR2T := range []string{"Yes", "No"} {
		t.Run("InitialR2T="+initialR2T, func(t *testing.T) {
			g := startTgt(t, tgtOpts{size: 16 << 20, params: map[string]string{
				"HeaderDigest": "CRC32C", "DataDigest": "CRC32C",
				"MaxBurstLength": "8192", "FirstBurstLength": "2048", "MaxRecvDataSegmentLength": "1024",
				"InitialR2T": initialR2T,
			}})
			cfg := fastCfg()
			cfg.HeaderDigest, cfg.DataDigest, cfg.RequireDigests = true, true, true
			cfg.MaxRecvDataSegmentLength = 4096
			v := openT(t, g.url("", ""), cfg)
			p := v.Client().Params()
			if !p.HeaderDigest || !p.DataDigest || p.MaxBurst != 8192 || p.FirstBurst != 2048 || p.TargetMRDSL != 1024 ||
				p.InitialR2T != (initialR2T == "Yes") {
				t.Fatalf("negotiated %+v", p)
			}
			want := hammer(t, v, 16, 20, 8<<20)
			if err := v.Sync(); err != nil {
				t.Fatal(err)
			}
			checkBacking(t, g.backing, want)
			if s := v.Client().Stats(); s.MaxInFlight < 2 {
				t.Fatalf("never more than %d command in flight", s.MaxInFlight)
			}
		})
	}
}

func TestTgtLargeIOUnmap(t *testing.T) {
	g := startTgt(t, tgtOpts{size: 64 << 20})
	v := openT(t, g.url("", ""), fastCfg())
	big := make([]byte, 20<<20+4096)
	for i := range big {
		big[i] = byte(i*7 + i>>12)
	}
	if _, err := v.WriteAt(big, 1<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(big))
	if _, err := v.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("large read back: %v", err)
	}
	// unaligned unmap in the middle reads back as zeros
	if err := v.Unmap(1<<20+1000, 3<<20+77); err != nil {
		t.Fatal(err)
	}
	clear(big[1000 : 1000+3<<20+77])
	if _, err := v.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("after unmap (%s): %v", v.UnmapMode(), err)
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 1<<20+len(big))
	copy(want[1<<20:], big)
	checkBacking(t, g.backing, want)
	if _, err := v.ReadAt(got[:1024], v.Size()-512); err == nil {
		t.Fatal("read past the end accepted")
	}
}

// TestTgtNopIn: tgt pings every second (nop_interval) and the client
// answers; the client pings the idle target too (NopInterval) and tgt
// answers; the session stays up and I/O keeps working.
func TestTgtNopIn(t *testing.T) {
	g := startTgt(t, tgtOpts{size: 8 << 20, params: map[string]string{"nop_interval": "1", "nop_count": "3"}})
	cfg := fastCfg()
	cfg.NopInterval, cfg.NopTimeout = 300*time.Millisecond, 5*time.Second
	v := openT(t, g.url("", ""), cfg)
	if !poll(20*time.Second, func() bool { st := v.Client().Stats(); return st.NopsIn >= 2 && st.NopsOut >= 2 }) {
		t.Fatalf("no target NOP-In answered within 20s: %+v", v.Client().Stats())
	}
	buf := make([]byte, 4096)
	if _, err := v.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if s := v.Client().Stats(); s.ConnDrops != 0 || s.Logins != 1 {
		t.Fatalf("session was dropped: %+v", s)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func TestTgtDiscovery(t *testing.T) {
	g := startTgt(t, tgtOpts{size: 8 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts, err := Discover(ctx, Config{Portal: g.Portal})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Name != g.iqn || len(ts[0].Addresses) == 0 || !strings.HasPrefix(ts[0].Addresses[0], g.Portal) {
		t.Fatalf("SendTargets: %+v", ts)
	}
}

// TestTgtRestartUnderLoad: tgtd is killed (-9) and started again on the
// same portal and backing file while writers run; no write fails, the
// session comes back (tgt's power-on UNIT ATTENTION is retried) and the
// backing file holds every acknowledged write.
func TestTgtRestartUnderLoad(t *testing.T) {
	g := startTgt(t, tgtOpts{size: 8 << 20})
	v := openT(t, g.url("", ""), fastCfg())
	w := tgtd.StartWriters(t, v, 8, 8, 5)
	w.WaitAcked(100, time.Minute, "writes before the kill")
	g.Kill(10 * time.Second)
	g.Restart()
	g.Target(g.iqn, g.backing)
	w.WaitAcked(w.Acked()+100, time.Minute, "writes after the restart")
	want := w.Stop()
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := v.Client().Stats(); st.Logins < 2 || st.ConnDrops < 1 {
		t.Fatalf("no reconnect seen: %+v", st)
	}
	checkBacking(t, g.backing, want)
}
