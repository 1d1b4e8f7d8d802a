package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestDryRunEstimate: a dry run of a 10 GiB sparse LUN holding 1 GiB
// reports 1 GiB to copy and an estimate within a factor of 2 of the real
// copy's duration at a 50 MB/s cap (about 21 s); it creates nothing, it
// refuses what the real create refuses, with the same message, and the
// real pair keeps the estimate and shows it beside the actual duration.
func TestDryRunEstimate(t *testing.T) {
	if testing.Short() {
		t.Skip("copies 1 GiB at 50 MB/s (about 21 s)")
	}
	const (
		size = 10 << 30
		data = 1 << 30
	)
	d := StartDaemon(t, "")
	dir, err := os.MkdirTemp("", "lmtgt-est-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
	for i := int64(0); i < data>>20; i++ { // 1 MiB of data every 10 MiB
		if _, err := f.WriteAt(chunk, i*10<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d.OK("lun", "create", "src", "--path", src)
	d.OK("lun", "create", "dst", "--size", "10GiB")
	d.OK("lun", "create", "small", "--size", "1GiB")

	// What the real create refuses, the dry run refuses with the same words.
	real := d.Fail(1, []string{"smaller than the source"}, "migration", "create", "--source", "src", "--target", "small")
	dry := d.Fail(1, []string{"smaller than the source"}, "migration", "create", "--source", "src", "--target", "small", "--dry-run")
	if real.Stderr != dry.Stderr {
		t.Errorf("dry run refused with %q, the real create with %q", dry.Stderr, real.Stderr)
	}

	var est wire.Migration
	d.JSON(&est, "migration", "create", "--source", "src", "--target", "dst", "--speed", "highest", "--max-mbps", "50", "--dry-run")
	text := d.OK("migration", "create", "--source", "src", "--target", "dst", "--speed", "highest", "--max-mbps", "50", "--dry-run")
	t.Logf("dry run:\n%s", text)
	if !est.DryRun || est.Estimate == nil {
		t.Fatalf("dry run answered no estimate: %+v", est)
	}
	e := *est.Estimate
	if e.Bytes != data || e.TotalBytes != size {
		t.Errorf("dry run: %d of %d bytes to copy, want %d of %d", e.Bytes, e.TotalBytes, data, size)
	}
	if e.Vehicle == "" || e.RateBps != 50_000_000 || e.ReadBps <= 0 {
		t.Errorf("dry run: vehicle %q rate %d read %d: want a vehicle, 50 MB/s and a measured read rate", e.Vehicle, e.RateBps, e.ReadBps)
	}
	for _, w := range []string{"1 GiB of 10 GiB", "estimate", "max_mbps"} {
		if !strings.Contains(text, w) {
			t.Errorf("dry run output does not say %q:\n%s", w, text)
		}
	}
	var sess wire.MigrationSession
	d.JSON(&sess, "session", "create", "wave", "--pair", "src:dst", "--speed", "highest", "--max-mbps", "50", "--dry-run")
	stext := d.OK("session", "create", "wave", "--pair", "src:dst", "--speed", "highest", "--max-mbps", "50", "--dry-run")
	t.Logf("session dry run:\n%s", stext)
	if !sess.DryRun || sess.EstimateBytes != data || len(sess.Pairs) != 1 || sess.Pairs[0].Estimate == nil ||
		sess.EstimateSeconds != sess.Pairs[0].Estimate.Seconds {
		t.Errorf("session dry run: %+v", sess)
	}
	if !strings.Contains(stext, "dry run: session wave") || !strings.Contains(stext, "1 GiB of 10 GiB") {
		t.Errorf("session dry run output:\n%s", stext)
	}
	if out := d.OK("migration", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("a dry run created something: %s", out)
	}
	if out := d.OK("session", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("a session dry run created something: %s", out)
	}

	start := time.Now()
	d.OK("migration", "create", "--source", "src", "--target", "dst", "--speed", "highest", "--max-mbps", "50")
	st := d.waitMig("src", 3*time.Minute, "synced")
	took := time.Since(start)
	ratio := e.Seconds / took.Seconds()
	t.Logf("estimate %.1f s, real copy %.1f s (ratio %.2f); pair: estimate %.1f s, actual %.1f s",
		e.Seconds, took.Seconds(), ratio, st.EstimateSeconds, st.ActualSeconds)
	if ratio < 0.5 || ratio > 2 {
		t.Errorf("estimate %.1f s is not within a factor of 2 of the real %.1f s", e.Seconds, took.Seconds())
	}
	if st.CopiedBytes != data || st.SkippedBytes != size-data {
		t.Errorf("copied %d skipped %d, want %d and %d", st.CopiedBytes, st.SkippedBytes, data, size-data)
	}
	if st.EstimateSeconds <= 0 || st.EstimateBytes != data || st.ActualSeconds <= 0 || st.ActualSeconds > took.Seconds()+1 {
		t.Errorf("the pair keeps estimate %.1f s for %d bytes, actual %.1f s (copy took %.1f s)", st.EstimateSeconds, st.EstimateBytes, st.ActualSeconds, took.Seconds())
	}
	show := d.OK("migration", "show", "src")
	if !strings.Contains(show, "estimate:") || !strings.Contains(show, " for 1 GiB, actual ") {
		t.Errorf("show does not put the estimate beside the actual duration:\n%s", show)
	}
}

// TestDryRunWindows: the CLI's dry run reads --window and --start-at: a
// window in force all day that halves the cap doubles the estimate, the
// start time an hour ahead is waited for first (text and -o json), for a
// pair and a session.
func TestDryRunWindows(t *testing.T) {
	d := StartDaemon(t, "")
	src := filepath.Join(t.TempDir(), "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 8<<20), 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d.OK("lun", "create", "src", "--path", src)
	d.OK("lun", "create", "dst", "--size", "64M")
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	args := []string{"--source", "src", "--target", "dst", "--speed", "highest", "--max-mbps", "10", "--dry-run"}
	sched := []string{"--window", "00:00-00:00=low,max-mbps=5", "--start-at", start.Format(time.RFC3339)}
	var plain, win wire.Migration
	d.JSON(&plain, append([]string{"migration", "create"}, args...)...)
	d.JSON(&win, append(append([]string{"migration", "create"}, args...), sched...)...)
	p, w := plain.Estimate, win.Estimate
	if p == nil || w == nil || p.Bytes != 8<<20 || w.RateBps != 5_000_000 || w.Seconds != 2*p.Seconds || p.Seconds == 0 {
		t.Fatalf("estimates %+v and with the window %+v: want 8 MiB, the rate halved, the duration doubled", p, w)
	}
	if p.WaitSeconds != 0 || w.WaitSeconds < 3500 || w.WaitSeconds > 3600 || !w.Start.Equal(start) || w.Finish == nil ||
		!w.Finish.Equal(start.Add(time.Duration(w.Seconds*float64(time.Second)))) {
		t.Fatalf("start: without the start time %+v, with it %+v: want an hour waited first", p, w)
	}
	text := d.OK(append(append([]string{"migration", "create"}, args...), sched...)...)
	t.Logf("dry run:\n%s", text)
	at := "(at " + start.Local().Format(time.RFC3339) + "), done "
	for _, want := range []string{"window 00:00-00:00=low,max-mbps=5: max_mbps 5.0 MB/s", at} {
		if !strings.Contains(text, want) {
			t.Errorf("dry run output does not say %q:\n%s", want, text)
		}
	}
	var sess wire.MigrationSession
	d.JSON(&sess, append([]string{"session", "create", "wave", "--pair", "src:dst", "--speed", "highest", "--max-mbps", "10", "--dry-run"}, sched...)...)
	if sess.EstimateSeconds != w.Seconds || sess.EstimateWaitSeconds < 3500 || sess.EstimateWaitSeconds > 3600 {
		t.Fatalf("session dry run: estimate %.1f s after %.0f s, want %.1f s after about an hour", sess.EstimateSeconds, sess.EstimateWaitSeconds, w.Seconds)
	}
	stext := d.OK(append([]string{"session", "create", "wave", "--pair", "src:dst", "--speed", "highest", "--max-mbps", "10", "--dry-run"}, sched...)...)
	if !strings.Contains(stext, "start:") || !strings.Contains(stext, "(at ") {
		t.Errorf("session dry run output does not say when it starts:\n%s", stext)
	}
}
