package lm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

func TestParseStartAt(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	now := time.Date(2026, 12, 7, 21, 30, 0, 0, loc)
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"22:00", time.Date(2026, 12, 7, 22, 0, 0, 0, loc)},
		{"21:30", now},
		{"06:15:30", time.Date(2026, 12, 8, 6, 15, 30, 0, loc)},
		{"21:29", time.Date(2026, 12, 8, 21, 29, 0, 0, loc)},
		{"2026-12-24T22:00:00+01:00", time.Date(2026, 12, 24, 22, 0, 0, 0, loc)},
	} {
		got, err := ParseStartAt("x", c.in, now.In(time.Local))
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		// A clock time is the server's local time: compare in it.
		want := c.want
		if c.in != "" && c.in[2] == ':' {
			want = nextClock(now.In(time.Local), mustClock(t, c.in))
		}
		if !got.Equal(want) {
			t.Errorf("%q: %v, want %v", c.in, got, want)
		}
	}
	for _, bad := range []string{"24:00", "7pm", "12:60", "12:00:61", "12:00x", "2026-12-24"} {
		if _, err := ParseStartAt("x", bad, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

func mustClock(t *testing.T, s string) time.Duration {
	d, err := parseClock(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNextClockDST: the next 02:30 and 03:00 across a spring-forward day
// are wall clock times of that day (time.Date normalises the missing hour),
// never 24 hours of elapsed time added to the day before.
func TestNextClockDST(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no tz database:", err)
	}
	now := time.Date(2026, 3, 28, 23, 0, 0, 0, loc) // the night of the change
	got := nextClock(now, 3*time.Hour)
	if h, m, _ := got.Clock(); h != 3 || m != 0 || got.Day() != 29 {
		t.Errorf("next 03:00 after %v: %v", now, got)
	}
	if d := got.Sub(now); d != 3*time.Hour { // 23:00 → 03:00 is 3 h of elapsed time that night
		t.Errorf("elapsed %v, want 3h", d)
	}
}

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]int{"": 5, "low": 1, "Medium": 5, "high": 9, "1": 1, "7": 7} {
		if got, err := ParsePriority("x", in); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"0", "10", "urgent", "-1"} {
		if _, err := ParsePriority("x", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
	if PriorityName(0) != "medium" || PriorityName(9) != "high" || PriorityName(3) != "3" {
		t.Error("PriorityName")
	}
}

// TestCopyQueueOrder: free slots go by priority, then creation time, then
// ID, whatever order the pairs asked in; a lowered limit names the lowest
// priority holders.
func TestCopyQueueOrder(t *testing.T) {
	q := newCopyQueue(1)
	t0 := time.Unix(1000, 0)
	ps := map[string]*pair{}
	keys := map[string]queueKey{
		"first": {priority: 1, created: t0, id: "a"},
		"low":   {priority: 1, created: t0.Add(time.Second), id: "b"},
		"high":  {priority: 9, created: t0.Add(3 * time.Second), id: "c"},
		"old5":  {priority: 5, created: t0.Add(time.Second), id: "d"},
		"new5":  {priority: 5, created: t0.Add(2 * time.Second), id: "e"},
	}
	for n := range keys {
		ps[n] = &pair{id: keys[n].id}
	}
	ctx := context.Background()
	if !q.acquire(ctx, ps["first"], keys["first"], nil) {
		t.Fatal("first: no slot with the queue empty")
	}
	got := make(chan string, 4)
	for _, n := range []string{"low", "new5", "high", "old5"} { // asking order
		go func() {
			if q.acquire(ctx, ps[n], keys[n], nil) {
				got <- n
			}
		}()
	}
	waitFor(t, 10*time.Second, "4 waiters", func() bool { _, _, w := q.counts(); return w == 4 })
	if p := q.position(ps["high"]); p != 1 {
		t.Errorf("high: position %d", p)
	}
	if p := q.position(ps["low"]); p != 4 {
		t.Errorf("low: position %d", p)
	}
	q.release(ps["first"])
	for _, want := range []string{"high", "old5", "new5", "low"} {
		if n := <-got; n != want {
			t.Fatalf("slot went to %s, want %s", n, want)
		}
		if want != "low" {
			q.release(ps[want])
		}
	}
	// Holders low; add high and old5 with a limit of 3, then lower it to 1.
	if over := q.setLimit(3); len(over) != 0 {
		t.Fatalf("raised: %d over", len(over))
	}
	q.acquire(ctx, ps["high"], keys["high"], nil)
	q.acquire(ctx, ps["old5"], keys["old5"], nil)
	over := q.setLimit(1)
	if len(over) != 2 || over[0] != ps["low"] || over[1] != ps["old5"] {
		t.Errorf("lowered to 1: over %v", over)
	}
	if q.hasRoom() {
		t.Error("room with 3 holders and a limit of 1")
	}
	// A holder past the lowered limit that has not started copying gives
	// its slot back; the best one keeps it.
	if !q.keep(ps["high"]) || q.keep(ps["low"]) {
		t.Error("keep: high must stay, low must go")
	}
	if _, active, _ := q.counts(); active != 2 {
		t.Errorf("after low gave its slot back: %d holders", active)
	}
}

// TestScheduledPairStartsAfterRestart: a pair created with a start time
// ahead is scheduled (host writes still reach both legs) and stays so
// across a restart; once its start time has passed while lmtgt was down,
// it starts at open and syncs with every byte.
func TestScheduledPairStartsAfterRestart(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 4 << 20
	src := e.lun("src", size)
	e.lun("dst", size)
	model := fill(t, e.handle(src), size, 1, 1)
	at := time.Now().Add(time.Hour)
	st, err := e.m.CreatePair(PairRequest{Source: "src", Target: "dst", Speed: SpeedHighest, StartAt: at, Priority: PriorityHigh})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "scheduled" || !st.StartAt.Equal(at.UTC().Round(0)) || st.Priority != PriorityHigh {
		t.Fatalf("created: %+v", st)
	}
	if err := e.m.Resume("src"); !errors.Is(err, ErrState) {
		t.Errorf("resume of a scheduled pair: %v", err)
	}
	e.reopen()
	if st := e.waitState("src", StateScheduled, time.Second); st.CopiedBytes != 0 {
		t.Errorf("after restart: %+v", st)
	}
	// The start time passes while lmtgt is down.
	e.close()
	if err := e.db0Update(func(tx *metavol.Tx) error {
		ps, err := tx.Pairs()
		if err != nil {
			return err
		}
		ps[0].StartAt = time.Now().Add(-time.Minute).UTC()
		return tx.PutPair(ps[0])
	}); err != nil {
		t.Fatal(err)
	}
	e.open()
	st = e.waitState("src", StateSynced, 20*time.Second)
	if st.DataBytes != size {
		t.Errorf("synced: %d bytes copied, want %d", st.DataBytes, size)
	}
	if _, err := e.m.Split([]string{"src"}, time.Second); err != nil {
		t.Fatal(err)
	}
	checkModel(t, "src after the split", e.handle(src), size, model)
}

// db0Update runs fn in a transaction of the meta volume while the
// Manager is closed.
func (e *env) db0Update(fn func(tx *metavol.Tx) error) error {
	db, err := metavol.Open(e.metaDir, metavol.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(fn)
}

func TestWindows(t *testing.T) {
	ws, err := ParseWindows("x", []string{"22:00-06:00=highest", "06:00-22:00=low,max-mbps=20", "12:00:30-12:00:40=high"})
	if err != nil {
		t.Fatal(err)
	}
	if got := windowStrings(ws); got[0] != "22:00-06:00=highest" || got[1] != "06:00-22:00=low,max-mbps=20" || got[2] != "12:00:30-12:00:40=high" {
		t.Errorf("round trip: %q", got)
	}
	day := func(h, m, s int) time.Time { return time.Date(2026, 12, 7, h, m, s, 0, time.Local) }
	for _, c := range []struct {
		at   time.Time
		in   int
		next time.Time
	}{
		{day(23, 0, 0), 0, day(6, 0, 0).AddDate(0, 0, 1)}, // wraps midnight
		{day(1, 0, 0), 0, day(6, 0, 0)},
		{day(6, 0, 0), 1, day(12, 0, 30)},                 // the end is exclusive, the start inclusive
		{day(12, 0, 35), 1, day(12, 0, 40)},               // the first listed wins
		{day(21, 59, 59), 1, day(22, 0, 0)},               // one second before the boundary
		{day(22, 0, 0), 0, day(6, 0, 0).AddDate(0, 0, 1)}, // at it
	} {
		in, next := windowAt(ws, c.at)
		if in != c.in || !next.Equal(c.next) {
			t.Errorf("%v: window %d next %v; want %d, %v", c.at, in, next, c.in, c.next)
		}
	}
	if in, next := windowAt(nil, day(1, 0, 0)); in != -1 || !next.IsZero() {
		t.Errorf("no windows: %d %v", in, next)
	}
	all, _ := ParseWindows("x", []string{"00:00-00:00=medium"})
	if in, next := windowAt(all, day(3, 0, 0)); in != 0 || !next.IsZero() {
		t.Errorf("all day: %d %v", in, next)
	}
	for _, bad := range []string{"22:00=high", "22:00-06:00", "22:00-06:00=fast", "22:00-06:00=low,max=3", "25:00-06:00=low", "22:00-06:00=low,max-mbps=-1"} {
		if _, err := ParseWindow("x", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
	if none, err := ParseWindows("x", []string{"none"}); err != nil || none == nil || len(none) != 0 {
		t.Errorf("none: %v %v", none, err)
	}
}

// TestMaxElapsedPauses: a pair pauses once its copy ran MaxElapsed, with
// the reason; resume is refused until set removes the limit.
func TestMaxElapsedPauses(t *testing.T) {
	e := newEnv(t, Options{}, false)
	const size = 8 << 20
	src := e.lun("src", size)
	e.lun("dst", size)
	fill(t, e.handle(src), size, 1, 1)
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "dst", MaxMBps: 1, MaxElapsed: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	st := e.waitState("src", StatePaused, 20*time.Second)
	if st.Reason != "max elapsed 300ms reached" || st.CopyElapsed < 300*time.Millisecond || st.CopiedBytes == size {
		t.Errorf("paused: %+v", st)
	}
	if err := e.m.Resume("src"); !errors.Is(err, ErrState) {
		t.Errorf("resume at max elapsed: %v", err)
	}
	e.reopen() // the copying time survives a restart
	if st := e.waitState("src", StatePaused, time.Second); st.CopyElapsed < 300*time.Millisecond {
		t.Errorf("after restart: elapsed %v", st.CopyElapsed)
	}
	zero, unlimited := time.Duration(0), int64(0)
	if _, err := e.m.Set("src", SetRequest{MaxElapsed: &zero, MaxMBps: &unlimited}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Resume("src"); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 20*time.Second)
}

// TestSessionSetMaxActive: session set max active, raised, starts held
// pairs; lowered, holds the last copying ones again.
func TestSessionSetMaxActive(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 10}, false)
	reqs, _ := sessionLUNs(e, "s", 3, 8<<20)
	if _, err := e.m.CreateSession(SessionRequest{Name: "w", Pairs: reqs, MaxMBps: 1, MaxActive: 1}); err != nil {
		t.Fatal(err)
	}
	count := func(st SessionStatus) (copying, held int) {
		for _, p := range st.Pairs {
			switch {
			case p.State == "copying":
				copying++
			case p.State == "paused" && strings.HasPrefix(p.Reason, "waiting for"):
				held++
			}
		}
		return
	}
	waitFor(t, 10*time.Second, "1 copying, 2 held", func() bool {
		st, _ := e.m.Session("w")
		c, h := count(st)
		return c == 1 && h == 2
	})
	three, one := 3, 1
	if _, err := e.m.SetSession("w", SetRequest{MaxActive: &three}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "3 copying", func() bool {
		st, _ := e.m.Session("w")
		c, _ := count(st)
		return c == 3 && st.MaxActive == 3
	})
	if _, err := e.m.SetSession("w", SetRequest{MaxActive: &one}); err != nil {
		t.Fatal(err)
	}
	st, _ := e.m.Session("w")
	if c, h := count(st); c != 1 || h != 2 || st.Pairs[0].State != "copying" {
		t.Errorf("lowered to 1: %d copying, %d held: %+v", c, h, st.Pairs)
	}
	if _, err := e.m.CancelSession("w"); err != nil {
		t.Fatal(err)
	}
}
