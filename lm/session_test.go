package lm

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSessionStateAggregate(t *testing.T) {
	v := func(s PairState) sessionPairView { return sessionPairView{State: s} }
	held := sessionPairView{State: StatePaused, Held: true}
	for _, c := range []struct {
		name   string
		paused bool
		pairs  []sessionPairView
		want   SessionState
	}{
		{"no pairs", false, nil, SessionCancelled},
		{"all queued", false, []sessionPairView{v(StateQueued), v(StateQueued)}, SessionScheduled},
		{"queued and held", false, []sessionPairView{v(StateQueued), held}, SessionScheduled},
		{"one copying", false, []sessionPairView{v(StateCopying), held, held}, SessionCopying},
		{"one synced, rest held", false, []sessionPairView{v(StateSynced), held}, SessionCopying},
		{"all synced", false, []sessionPairView{v(StateSynced), v(StateSynced)}, SessionSynced},
		{"synced and splitting", false, []sessionPairView{v(StateSynced), v(StateSplitting)}, SessionSynced},
		{"session paused", true, []sessionPairView{v(StatePaused), held}, SessionPaused},
		{"a pair paused by the admin", false, []sessionPairView{v(StateCopying), v(StatePaused)}, SessionPaused},
		{"interrupted", false, []sessionPairView{v(StateCopying), v(StateInterrupted)}, SessionPartiallyFaulty},
		{"faulty", true, []sessionPairView{v(StatePaused), v(StateFaulty)}, SessionPartiallyFaulty},
		{"all split", false, []sessionPairView{v(StateSplit), v(StateSplit)}, SessionSplit},
		{"all cancelled", false, []sessionPairView{v(StateCancelled), v(StateCancelled)}, SessionCancelled},
		{"split and cancelled", false, []sessionPairView{v(StateSplit), v(StateCancelled)}, SessionCancelled},
		{"one cancelled, rest synced", false, []sessionPairView{v(StateCancelled), v(StateSynced)}, SessionSynced},
		{"one split by hand, rest copying", false, []sessionPairView{v(StateSplit), v(StateCopying)}, SessionCopying},
	} {
		if got := aggregateState(c.paused, c.pairs); got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
	for s := SessionScheduled; s <= SessionCancelled; s++ {
		if strings.HasPrefix(s.String(), "SessionState(") {
			t.Errorf("state %d has no name", int(s))
		}
	}
	if SessionState(99).String() != "SessionState(99)" {
		t.Errorf("unknown state: %s", SessionState(99))
	}
}

// sessionLUNs makes n source LUNs (with data) and n targets; it returns
// the pair requests and the sources' models.
func sessionLUNs(e *env, prefix string, n int, size int64) ([]PairRequest, []map[int64]uint64) {
	var reqs []PairRequest
	var models []map[int64]uint64
	for i := range n {
		src := e.lun(fmt.Sprintf("%s%d", prefix, i), size)
		e.lun(fmt.Sprintf("%s%d-new", prefix, i), size)
		models = append(models, fill(e.t, e.handle(src), size, 1, uint64(i+1)))
		reqs = append(reqs, PairRequest{Source: src.Name, Target: src.Name + "-new"})
	}
	return reqs, models
}

func waitSession(e *env, name string, want SessionState, d time.Duration) SessionStatus {
	e.t.Helper()
	var st SessionStatus
	waitFor(e.t, d, "session "+name+" "+want.String(), func() bool {
		var err error
		st, err = e.m.Session(name)
		if err != nil {
			e.t.Fatalf("session %s: %v", name, err)
		}
		return st.State == want.String()
	})
	return st
}

func TestSessionCreateAllOrNothing(t *testing.T) {
	e := newEnv(t, Options{}, false)
	reqs, _ := sessionLUNs(e, "a", 2, 2*mib)
	e.lun("c0", 2*mib)
	bad := append(reqs[:1:1], PairRequest{Source: "c0", Target: "nope"}, reqs[1])
	_, err := e.m.CreateSession(SessionRequest{Name: "w1", Pairs: bad, Speed: SpeedHighest})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "pair 2 (c0 → nope) refused") ||
		!strings.Contains(err.Error(), "nope") {
		t.Fatalf("create with an unknown target LUN: got %v", err)
	}
	if ps := e.m.Pairs(); len(ps) != 0 {
		t.Fatalf("pairs left after a refused session: %+v", ps)
	}
	if _, err := e.m.Session("w1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused session exists: %v", err)
	}
	for _, c := range []struct {
		req  SessionRequest
		want string
	}{
		{SessionRequest{Name: "bad/name", Pairs: reqs}, "session name"},
		{SessionRequest{Name: "w1"}, "no pairs"},
		{SessionRequest{Name: "w1", Pairs: []PairRequest{reqs[0], {Source: "a1", Target: "a0-new"}}}, "named twice"},
		{SessionRequest{Name: "w1", Pairs: reqs, Speed: "warp"}, "speed"},
		{SessionRequest{Name: "w1", Pairs: reqs, MaxActive: -1}, "max active"},
	} {
		if _, err := e.m.CreateSession(c.req); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want ErrInvalid about %q", c.req, err, c.want)
		}
	}
	// The same LUNs make a good session now; its name is then taken.
	st, err := e.m.CreateSession(SessionRequest{Name: "w1", Pairs: reqs, Speed: SpeedHighest})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pairs) != 2 || st.Pairs[0].Source != "a0" || st.Pairs[1].Target != "a1-new" {
		t.Fatalf("session pairs: %+v", st.Pairs)
	}
	if _, err := e.m.CreateSession(SessionRequest{Name: "w1", Pairs: []PairRequest{{Source: "x", Target: "y"}}}); !errors.Is(err, ErrExists) {
		t.Fatalf("second session w1: %v", err)
	}
	waitSession(e, "w1", SessionSynced, 20*time.Second)
}

func TestSessionFanOut(t *testing.T) {
	e := newEnv(t, Options{}, false)
	reqs, _ := sessionLUNs(e, "f", 2, 8*mib)
	// 1 MB/s: the copy of 8 MiB outlasts the test's steps.
	_, err := e.m.CreateSession(SessionRequest{Name: "fan", Pairs: reqs, Speed: SpeedLow, MaxMBps: 1})
	if err != nil {
		t.Fatal(err)
	}
	waitSession(e, "fan", SessionCopying, 10*time.Second)
	st, err := e.m.PauseSession("fan")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "paused" || st.Counts["paused"] != 2 || !st.Paused {
		t.Fatalf("after pause: %s %v", st.State, st.Counts)
	}
	if _, err := e.m.PauseSession("fan"); err != nil {
		t.Fatalf("pause twice: %v", err)
	}
	st, err = e.m.ResumeSession("fan")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "copying" || st.Counts["copying"] != 2 || st.Paused {
		t.Fatalf("after resume: %s %v", st.State, st.Counts)
	}
	if _, err := e.m.ResumeSession("fan"); !errors.Is(err, ErrState) {
		t.Fatalf("resume of a running session: %v", err)
	}
	hi, capNone := SpeedHigh, int64(0)
	st, err = e.m.SetSession("fan", SetRequest{Speed: &hi, MaxMBps: &capNone})
	if err != nil {
		t.Fatal(err)
	}
	if st.Speed != SpeedHigh || st.MaxMBps != 0 {
		t.Fatalf("session after set: %s %d", st.Speed, st.MaxMBps)
	}
	// Cap again so that the cancel finds the pairs copying.
	one := int64(1)
	if _, err := e.m.SetSession("fan", SetRequest{MaxMBps: &one}); err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		p, err := e.m.Pair(r.Source)
		if err != nil || p.Speed != SpeedHigh || p.MaxMBps != 1 {
			t.Fatalf("pair %s after set: %+v %v", r.Source, p, err)
		}
	}
	if err := e.m.DeleteSession("fan"); !errors.Is(err, ErrState) {
		t.Fatalf("delete of a running session: %v", err)
	}
	st, err = e.m.CancelSession("fan")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "cancelled" || st.Counts["cancelled"] != 2 {
		t.Fatalf("after cancel: %s %v", st.State, st.Counts)
	}
	if ps := e.m.Pairs(); len(ps) != 0 {
		t.Fatalf("pairs after cancel: %+v", ps)
	}
	if _, err := e.m.PauseSession("fan"); !errors.Is(err, ErrState) {
		t.Fatalf("pause of a cancelled session: %v", err)
	}
	if err := e.m.DeleteSession("fan"); err != nil {
		t.Fatal(err)
	}
	if ss := e.m.Sessions(); len(ss) != 0 {
		t.Fatalf("sessions after delete: %+v", ss)
	}
}

func TestSessionMaxActiveOne(t *testing.T) {
	e := newEnv(t, Options{MaxActive: 4}, false)
	reqs, models := sessionLUNs(e, "q", 3, 4*mib)
	var mu sync.Mutex
	var violation string
	seen := map[string]bool{}
	var order []string
	e.m.hooks.beforeJob = func(p *pair, _ job) {
		copying := 0
		e.m.mu.Lock()
		for _, q := range e.m.mu.pairs {
			if q.getState() == StateCopying {
				copying++
			}
		}
		e.m.mu.Unlock()
		mu.Lock()
		if !seen[p.name()] {
			order = append(order, p.name())
		}
		seen[p.name()] = true
		if copying > 1 && violation == "" {
			violation = fmt.Sprintf("%d pairs copying while %s copies", copying, p.name())
		}
		mu.Unlock()
	}
	st, err := e.m.CreateSession(SessionRequest{Name: "one", Pairs: reqs, Speed: SpeedHighest, MaxActive: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.MaxActive != 1 || len(st.Pairs) != 3 {
		t.Fatalf("created: %+v", st)
	}
	waitSession(e, "one", SessionSynced, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if violation != "" {
		t.Fatal(violation)
	}
	if strings.Join(order, ",") != "q0,q1,q2" {
		t.Fatalf("pairs copied in the order %v, want q0,q1,q2", order)
	}
	if _, err := e.m.SplitSession("one", time.Second); err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		l := lunRecord(e.t, e.db, r.Source)
		checkModel(t, r.Source+" after the split", e.handle(l), 4*mib, models[i])
	}
	if st := waitSession(e, "one", SessionSplit, time.Second); st.Counts["split"] != 3 {
		t.Fatalf("after split: %v", st.Counts)
	}
}

func TestSessionAutoSplitOnce(t *testing.T) {
	e := newEnv(t, Options{}, false)
	reqs, models := sessionLUNs(e, "s", 3, 3*mib)
	before := map[string]string{}
	for _, r := range reqs {
		before[r.Source] = lunRecord(e.t, e.db, r.Source).VolumeID
		before[r.Target] = lunRecord(e.t, e.db, r.Target).VolumeID
	}
	var commits atomic.Int32
	e.m.hooks.splitCommitted = func() { commits.Add(1) }
	if _, err := e.m.CreateSession(SessionRequest{Name: "auto", Pairs: reqs, Speed: SpeedHighest, AutoSplit: true}); err != nil {
		t.Fatal(err)
	}
	st := waitSession(e, "auto", SessionSplit, 30*time.Second)
	// The measured pause is recorded on the pairs just after the swap.
	waitFor(t, 5*time.Second, "the split pause on every pair", func() bool {
		st, _ = e.m.Session("auto")
		for _, p := range st.Pairs {
			if p.SplitPauseMS <= 0 || p.SplitPauseMS != st.Pairs[0].SplitPauseMS {
				return false
			}
		}
		return true
	})
	if n := commits.Load(); n != 1 {
		t.Fatalf("%d split transactions, want 1", n)
	}
	pause := st.Pairs[0].SplitPauseMS
	for i, p := range st.Pairs {
		if p.State != "split" || p.SplitPauseMS != pause || pause <= 0 {
			t.Fatalf("pair %d after the auto-split: %s, pause %v (first %v)", i, p.State, p.SplitPauseMS, pause)
		}
		r := reqs[i]
		l := lunRecord(e.t, e.db, r.Source)
		if l.VolumeID != before[r.Target] || lunRecord(e.t, e.db, r.Target).VolumeID != before[r.Source] {
			t.Fatalf("%s: volumes not swapped", r.Source)
		}
		checkModel(t, r.Source+" after the auto-split", e.handle(l), 3*mib, models[i])
	}
	if err := e.m.DeleteSession("auto"); err != nil {
		t.Fatal(err)
	}
}

func TestSessionSurvivesRestart(t *testing.T) {
	e := newEnv(t, Options{}, false)
	reqs, models := sessionLUNs(e, "r", 3, 4*mib)
	if _, err := e.m.CreateSession(SessionRequest{Name: "keep", Pairs: reqs, Speed: SpeedLow, MaxMBps: 1,
		MaxActive: 2, AutoSplit: true}); err != nil {
		t.Fatal(err)
	}
	waitSession(e, "keep", SessionCopying, 10*time.Second)
	if _, err := e.m.PauseSession("keep"); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	st, err := e.m.Session("keep")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "paused" || len(st.Pairs) != 3 || st.MaxActive != 2 || !st.AutoSplit || st.MaxMBps != 1 {
		t.Fatalf("after restart: %+v", st)
	}
	hi := SpeedHighest
	noCap := int64(0)
	if _, err := e.m.SetSession("keep", SetRequest{Speed: &hi, MaxMBps: &noCap}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.ResumeSession("keep"); err != nil {
		t.Fatal(err)
	}
	waitSession(e, "keep", SessionSplit, 30*time.Second)
	for i, r := range reqs {
		checkModel(t, r.Source+" after restart and auto-split", e.handle(lunRecord(e.t, e.db, r.Source)), 4*mib, models[i])
	}
	e.reopen()
	if st, err := e.m.Session("keep"); err != nil || st.State != "split" {
		t.Fatalf("split session after a second restart: %+v %v", st, err)
	}
}
