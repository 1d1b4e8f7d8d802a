package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Schedules, priorities, run-time limits, the bandwidth budget and the
// integrity of sessions' pairs (lm/queue.go, lm/schedule.go,
// lm/sessionref.go), with the real daemon and CLI.

// dataLUN creates LUN name on a file of size bytes full of data (never a
// hole nor zeros: every byte is copied and throttled) and an empty target
// LUN name+"-new" of the same size.
func dataLUN(t *testing.T, d *Daemon, name string, size int64, fill byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{fill}, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d.OK("lun", "create", name, "--path", path)
	d.OK("lun", "create", name+"-new", "--size", fmt.Sprint(size))
}

// TestScheduleSessionStartAt: a session whose start time is ~5 s ahead is
// scheduled (every pair, with the start time shown) until then, and starts
// on time: not before the start time, and soon after it.
func TestScheduleSessionStartAt(t *testing.T) {
	d := StartDaemon(t, "")
	dataLUN(t, d, "sa", 4<<20, 0x5a)
	dataLUN(t, d, "sb", 4<<20, 0xa5)
	start := time.Now().Add(5 * time.Second).Truncate(time.Second)
	out := d.OK("session", "create", "night", "--pair", "sa:sa-new", "--pair", "sb:sb-new:generic",
		"--start-at", start.Format(time.RFC3339), "--speed", "highest")
	if !strings.Contains(out, "state scheduled") {
		t.Errorf("session create: %q", out)
	}
	var s wire.MigrationSession
	d.JSON(&s, "session", "show", "night")
	if s.State != "scheduled" || s.StartAt == nil || !s.StartAt.Equal(start) {
		t.Fatalf("session after create: state %s, start %v (want scheduled, %v)", s.State, s.StartAt, start)
	}
	for _, p := range s.Pairs {
		if p.State != "scheduled" || p.StartAt == nil || !p.StartAt.Equal(start) || p.Session != "night" {
			t.Errorf("pair %s: state %s start %v session %q", p.Source, p.State, p.StartAt, p.Session)
		}
	}
	if out := d.OK("migration", "show", "sa"); !strings.Contains(out, "start at:") || !strings.Contains(out, "scheduled") {
		t.Errorf("migration show of a scheduled pair:\n%s", out)
	}
	// Poll: scheduled strictly before the start time, synced soon after.
	var startedAt time.Time
	waitFor(t, 30*time.Second, "the scheduled session to start and sync", func() (bool, string) {
		var s wire.MigrationSession
		d.JSON(&s, "session", "show", "night")
		now := time.Now()
		if s.State != "scheduled" && startedAt.IsZero() {
			startedAt = now
		}
		for _, p := range s.Pairs {
			if p.State != "scheduled" && now.Before(start) {
				t.Fatalf("pair %s is %s at %v, before its start time %v", p.Source, p.State, now, start)
			}
		}
		return s.State == "synced", fmt.Sprintf("%s %v", s.State, s.Counts)
	})
	if late := startedAt.Sub(start); late > 10*time.Second {
		t.Errorf("the session started %v after its start time", late)
	}
	for _, src := range []string{"sa", "sb"} {
		m := d.mig(src)
		if m.DataBytes != 4<<20 {
			t.Errorf("%s: %d bytes copied, want %d", src, m.DataBytes, 4<<20)
		}
	}
	if m := d.mig("sb"); m.Vehicle != "generic" {
		t.Errorf("sb: vehicle %q, want the session pair's own choice generic", m.Vehicle)
	}
	if got := d.logHas("start time 20"); len(got) < 2 {
		t.Errorf("log: %d lines saying the start time was reached, want one per pair", len(got))
	}
	d.OK("session", "split", "night")
}

// queued pairs (of srcs) by state.
func states(d *Daemon, srcs ...string) map[string]string {
	out := map[string]string{}
	for _, s := range srcs {
		out[s] = d.mig(s).State
	}
	return out
}

// TestSchedulePriorityMaxActive: with max active 1, queued pairs start in
// priority order (then creation order); raising max active at run time
// starts the next one, lowering it sends the lowest priority copy back to
// queued; a resume while the limit is reached queues the pair and says so.
func TestSchedulePriorityMaxActive(t *testing.T) {
	d := StartDaemon(t, "", "--max-active", "1")
	const size = 32 << 20
	for i, n := range []string{"pa", "pb", "pc", "pd"} {
		dataLUN(t, d, n, size, byte(0x10+i))
	}
	// 1 MB/s: no pair finishes during the test (32 s each).
	create := func(src, prio string) {
		d.OK("migration", "create", "--source", src, "--target", src+"-new", "--speed", "low", "--max-mbps", "1", "--priority", prio)
	}
	create("pa", "low")
	waitFor(t, 20*time.Second, "pa copying", func() (bool, string) {
		st := d.mig("pa").State
		return st == "copying", st
	})
	create("pb", "low")
	create("pc", "high")
	create("pd", "5")
	want := map[string]int{"pb": 3, "pc": 1, "pd": 2}
	for src, pos := range want {
		m := d.mig(src)
		if m.State != "queued" || m.QueuePos != pos {
			t.Errorf("%s: %s at queue position %d, want queued at %d (%s)", src, m.State, m.QueuePos, pos, migString(m))
		}
	}
	if out := d.OK("migration", "show", "pb"); !strings.Contains(out, "position 3 (max active 1)") || !strings.Contains(out, "priority:") {
		t.Errorf("migration show of a queued pair:\n%s", out)
	}
	var l wire.Limits
	d.JSON(&l, "config", "show")
	if l.MaxActive != 1 || l.Active != 1 || l.Waiting != 3 {
		t.Errorf("config show: %+v", l)
	}

	// Raised: the highest priority waiting pair starts.
	d.OK("config", "set", "max-active", "2")
	waitFor(t, 20*time.Second, "pc (high) copying beside pa", func() (bool, string) {
		st := states(d, "pa", "pb", "pc", "pd")
		return st["pa"] == "copying" && st["pc"] == "copying" && st["pb"] == "queued" && st["pd"] == "queued", fmt.Sprint(st)
	})
	// Lowered: the lowest priority copy (pa) waits again; pc goes on.
	d.OK("config", "set", "max-active", "1")
	waitFor(t, 20*time.Second, "pa back to queued", func() (bool, string) {
		st := states(d, "pa", "pb", "pc", "pd")
		return st["pa"] == "queued" && st["pc"] == "copying" && st["pb"] == "queued" && st["pd"] == "queued", fmt.Sprint(st)
	})
	if m := d.mig("pa"); !strings.Contains(m.Reason, "max active lowered to 1") {
		t.Errorf("pa after max active lowered: %s", migString(m))
	}
	// Pausing pc frees its slot: pd (medium) is next, before pa and pb (low).
	d.OK("migration", "pause", "pc")
	waitFor(t, 20*time.Second, "pd copying", func() (bool, string) {
		st := states(d, "pa", "pb", "pc", "pd")
		return st["pd"] == "copying" && st["pa"] == "queued" && st["pb"] == "queued", fmt.Sprint(st)
	})
	// Resume with the limit reached: queued, and the CLI says why.
	out := d.OK("migration", "resume", "pc")
	if !strings.Contains(out, "state queued") || !strings.Contains(out, "max active 1") {
		t.Errorf("resume at the limit: %q", out)
	}
	if m := d.mig("pc"); m.State != "queued" || m.QueuePos != 1 {
		t.Errorf("pc after resume: %s (queue position %d), want queued first", m.State, m.QueuePos)
	}
	// Priority changed while queued: pb (now 9, older than pc) goes first.
	d.OK("migration", "set", "pb", "--priority", "high")
	if m := d.mig("pb"); m.QueuePos != 1 || m.PriorityName != "high" {
		t.Errorf("pb after set --priority high: position %d, priority %s", m.QueuePos, m.PriorityName)
	}
	d.Fail(2, []string{"max-active", "1 or more"}, "config", "set", "max-active", "0")
	d.Fail(2, []string{"--priority", "1 (lowest) to 9"}, "migration", "set", "pa", "--priority", "12")
	for _, src := range []string{"pa", "pb", "pc", "pd"} {
		d.OK("migration", "cancel", src)
	}
}

// TestScheduleBandwidthBudget: three unthrottled copies under a server
// budget of 20 MB/s copy 20 MB/s together (within 10 % over 10 s).
func TestScheduleBandwidthBudget(t *testing.T) {
	const budget = 20 // MB/s
	d := StartDaemon(t, "", "--max-active", "3", "--max-total-mbps", fmt.Sprint(budget))
	srcs := []string{"ba", "bb", "bc"}
	for i, n := range srcs {
		dataLUN(t, d, n, 128<<20, byte(0x21+i))
	}
	var l wire.Limits
	d.JSON(&l, "config", "show")
	if l.MaxTotalMBps != budget {
		t.Fatalf("config show: %+v", l)
	}
	for _, src := range srcs {
		d.OK("migration", "create", "--source", src, "--target", src+"-new", "--speed", "highest")
	}
	total := func() (int64, time.Time) {
		var ms []wire.Migration
		d.JSON(&ms, "migration", "list")
		var n int64
		for _, m := range ms {
			if m.State != "copying" {
				t.Fatalf("pair %s is %s during the sample (the budget is too high for the sizes)", m.Source, m.State)
			}
			n += m.DataBytes
		}
		return n, time.Now()
	}
	waitFor(t, 20*time.Second, "every pair copying", func() (bool, string) {
		st := states(d, srcs...)
		return st["ba"] == "copying" && st["bb"] == "copying" && st["bc"] == "copying" && d.mig("bc").DataBytes > 0, fmt.Sprint(st)
	})
	b0, t0 := total()
	var b1 int64
	var t1 time.Time
	waitFor(t, 30*time.Second, "a 10 s sample", func() (bool, string) {
		b1, t1 = total()
		return t1.Sub(t0) >= 10*time.Second, fmt.Sprintf("%v", t1.Sub(t0))
	})
	rate := float64(b1-b0) / t1.Sub(t0).Seconds() / 1e6
	t.Logf("3 pairs under a %d MB/s budget: %.2f MB/s over %v", budget, rate, t1.Sub(t0).Round(time.Millisecond))
	if rate < budget*0.9 || rate > budget*1.1 {
		t.Errorf("total copy rate %.2f MB/s, want %d MB/s ±10%%", rate, budget)
	}
	// Lifted at run time: the copies speed up.
	d.OK("config", "set", "max-total-mbps", "0")
	for _, src := range srcs {
		d.OK("migration", "cancel", src)
	}
}

// TestScheduleSessionMemberIntegrity: a pair of a session refuses a lone
// split, cancel or resume with a message naming the session; a pair is
// named by its source, its target or its ID; --force runs the lone
// operation and the session records it.
func TestScheduleSessionMemberIntegrity(t *testing.T) {
	d := StartDaemon(t, "")
	dataLUN(t, d, "ma", 2<<20, 0x31)
	dataLUN(t, d, "mb", 2<<20, 0x32)
	d.OK("session", "create", "grp", "--pair", "ma:ma-new", "--pair", "mb:mb-new", "--speed", "highest")
	waitFor(t, 30*time.Second, "session synced", func() (bool, string) {
		var s wire.MigrationSession
		d.JSON(&s, "session", "show", "grp")
		return s.State == "synced", s.State
	})
	d.Fail(1, []string{"migration ma", "belongs to session grp", "session split grp", "--force"}, "migration", "split", "ma")
	d.Fail(1, []string{"belongs to session grp", "session cancel grp"}, "migration", "cancel", "mb-new")
	m := d.mig("ma")
	if byTarget, byID := d.mig("ma-new"), d.mig(m.ID); byTarget.ID != m.ID || byID.ID != m.ID || m.Session != "grp" {
		t.Errorf("pair by source %s, by target %s, by ID %s; session %q", m.ID, byTarget.ID, byID.ID, m.Session)
	}
	d.OK("migration", "pause", "ma") // pause is not refused
	d.Fail(1, []string{"belongs to session grp", "session resume grp"}, "migration", "resume", m.ID)
	d.OK("migration", "resume", "ma-new", "--force")
	waitFor(t, 30*time.Second, "ma synced again", func() (bool, string) {
		st := d.mig("ma").State
		return st == "synced", st
	})
	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", "mb", "--force")
	var s wire.MigrationSession
	d.JSON(&s, "session", "show", "grp")
	if len(s.Forced) != 2 || !strings.Contains(s.Forced[0], "lone resume") || !strings.Contains(s.Forced[1], "lone split") {
		t.Errorf("session forced: %q", s.Forced)
	}
	if out := d.OK("session", "show", "grp"); !strings.Contains(out, "forced:") {
		t.Errorf("session show:\n%s", out)
	}
	if st := d.mig("mb").State; st != "split" {
		t.Errorf("mb after a forced split: %s", st)
	}
	// session set: the session's limit and its pairs' priority, at run time.
	var s2 wire.MigrationSession
	d.JSON(&s2, "session", "set", "grp", "--max-active", "1", "--priority", "low")
	if s2.MaxActive != 1 || s2.PriorityName != "low" || s2.Pairs[0].PriorityName != "low" {
		t.Errorf("session set --max-active 1 --priority low: max active %d, priority %s, pair %s", s2.MaxActive, s2.PriorityName, s2.Pairs[0].PriorityName)
	}
	d.OK("session", "split", "grp")
}

// rateOver samples the pair's transferred bytes until at least d passed
// and returns the rate in MB/s.
func rateOver(t *testing.T, d *Daemon, src string, dur time.Duration) float64 {
	t.Helper()
	b0, t0 := d.mig(src).DataBytes, time.Now()
	var b1 int64
	var t1 time.Time
	waitFor(t, dur+20*time.Second, fmt.Sprintf("a %v sample of %s", dur, src), func() (bool, string) {
		m := d.mig(src)
		if m.State != "copying" {
			t.Fatalf("%s is %s during the sample", src, migString(m))
		}
		b1, t1 = m.DataBytes, time.Now()
		return t1.Sub(t0) >= dur, t1.Sub(t0).String()
	})
	return float64(b1-b0) / t1.Sub(t0).Seconds() / 1e6
}

// TestScheduleWindowChangesRate: a daily window (given to the second)
// that starts a few seconds ahead changes the measured copy rate at its
// boundary, and show says which window applies and until when.
func TestScheduleWindowChangesRate(t *testing.T) {
	d := StartDaemon(t, "")
	dataLUN(t, d, "wa", 96<<20, 0x77)
	d.OK("migration", "create", "--source", "wa", "--target", "wa-new", "--speed", "low", "--max-mbps", "2")
	waitFor(t, 20*time.Second, "wa copying", func() (bool, string) {
		m := d.mig("wa")
		return m.State == "copying" && m.DataBytes > 0, migString(m)
	})
	from := time.Now().Add(6 * time.Second).Truncate(time.Second)
	to := from.Add(time.Hour)
	win := from.Format("15:04:05") + "-" + to.Format("15:04:05") + "=low,max-mbps=8"
	d.OK("migration", "set", "wa", "--window", win)
	m := d.mig("wa")
	if m.Window != "" || m.WindowUntil == nil || !m.WindowUntil.Equal(from) || len(m.Windows) != 1 || m.Windows[0] != win {
		t.Fatalf("before the window: window %q until %v, windows %q (want none until %v, [%s])", m.Window, m.WindowUntil, m.Windows, from, win)
	}
	if out := d.OK("migration", "show", "wa"); !strings.Contains(out, "none (own speed) until "+from.Format("15:04:05")) {
		t.Errorf("migration show before the window:\n%s", out)
	}
	before := rateOver(t, d, "wa", time.Until(from)-time.Second)
	waitFor(t, 70*time.Second, "the window in force", func() (bool, string) {
		m := d.mig("wa")
		return m.Window == win && m.LimitBps == 8_000_000, fmt.Sprintf("window %q limit %d", m.Window, m.LimitBps)
	})
	if time.Now().Before(from) {
		t.Fatalf("the window applies at %v, before its start %v", time.Now(), from)
	}
	after := rateOver(t, d, "wa", 4*time.Second)
	t.Logf("copy rate %.2f MB/s before the window (cap 2), %.2f MB/s in it (cap 8)", before, after)
	if before > 2*1.3 || after < 2*before*1.5 {
		t.Errorf("rate before %.2f MB/s, in the window %.2f MB/s: want about 2 and 8 (at least 3x)", before, after)
	}
	if out := d.OK("migration", "show", "wa"); !strings.Contains(out, "window now:") || !strings.Contains(out, win+" until "+to.Format("15:04:05")) {
		t.Errorf("migration show in the window:\n%s", out)
	}
	d.OK("migration", "set", "wa", "--window", "none")
	if m := d.mig("wa"); m.Window != "" || len(m.Windows) != 0 || m.LimitBps != 2_000_000 {
		t.Errorf("windows removed: %q %q limit %d", m.Window, m.Windows, m.LimitBps)
	}
	d.OK("migration", "cancel", "wa")
}

// TestScheduleMaxElapsed: after --max-elapsed of copying the pair pauses
// and says why; resume is refused until the limit is raised or removed.
func TestScheduleMaxElapsed(t *testing.T) {
	d := StartDaemon(t, "")
	dataLUN(t, d, "ea", 32<<20, 0x44)
	d.OK("migration", "create", "--source", "ea", "--target", "ea-new", "--speed", "low", "--max-mbps", "1", "--max-elapsed", "2s")
	m := d.waitMig("ea", 30*time.Second, "paused")
	if m.Reason != "max elapsed 2s reached" || m.MaxElapsed != "2s" || m.CopyElapsedSeconds < 2 || m.CopiedBytes >= 32<<20 {
		t.Errorf("after max elapsed: %s (max %s, elapsed %.1fs)", migString(m), m.MaxElapsed, m.CopyElapsedSeconds)
	}
	d.Fail(1, []string{"migration ea", "max elapsed 2s reached", "--max-elapsed"}, "migration", "resume", "ea")
	d.OK("migration", "set", "ea", "--max-elapsed", "0", "--max-mbps", "0", "--speed", "highest")
	d.OK("migration", "resume", "ea")
	d.waitMig("ea", 30*time.Second, "synced")
	d.OK("migration", "split", "ea")
}
