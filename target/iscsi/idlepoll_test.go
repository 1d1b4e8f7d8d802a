package iscsi

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// pollingIni starts a server with IdlePoll budget on a 1 MiB file LUN
// and logs a test initiator in.
func pollingIni(t *testing.T, budget time.Duration) (*Server, *ini, *fileBackend) {
	t.Helper()
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, func(o *Options) { o.IdlePoll = budget })
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{})
	return s, i, b
}

// wantPolls skips a test that needs polls to run: a poll needs two Ps.
func wantPolls(t *testing.T) {
	t.Helper()
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skipf("GOMAXPROCS %d: the idle poll needs two Ps", runtime.GOMAXPROCS(0))
	}
}

// pollingAfter runs a WRITE and a READ at queue depth 1 and waits for
// the reader's poll after them.
func pollingAfter(t *testing.T, s *Server, i *ini) {
	t.Helper()
	qd1(t, i, 1)
	waitFor(t, "the poll after the last command", 10*time.Second, func() bool { return s.idle.active.Load() == 1 })
}

// qd1 runs n WRITE+READ pairs one command at a time and checks the data.
func qd1(t *testing.T, i *ini, n int) {
	t.Helper()
	for k := 0; k < n; k++ {
		data := bytes.Repeat([]byte{byte(k + 1)}, 4096)
		if err := i.run(&icmd{cdb: write10(uint32(k*8), 8), edtl: 4096, out: data}); err != nil {
			t.Fatal(err)
		}
		rd := &icmd{cdb: read10(uint32(k*8), 8), read: true, edtl: 4096}
		if err := i.run(rd); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rd.in, data) {
			t.Fatalf("command pair %d: read back differs", k)
		}
	}
}

// At queue depth 1 the reader polls for the next command after each one
// (a long budget: every poll catches the next command), and stops polling
// when none is in flight.
func TestIdlePollCatchesTheNextCommand(t *testing.T) {
	wantPolls(t)
	s, i, _ := pollingIni(t, time.Minute)
	const n = 10
	for k := range n {
		// After each pair the reader polls (nothing more was sent); the
		// next pair's WRITE comes while it polls: caught.
		pollingAfter(t, s, i)
		if c := s.idle.caught.Load(); c < int64(k) {
			t.Fatalf("polls caught %d after %d pairs, want at least %d", c, k+1, k)
		}
	}
	if m := s.idle.missed.Load(); m != 0 {
		t.Fatalf("%d polls missed with a one-minute budget", m)
	}
	i.nc.Close()
	waitFor(t, "the poll of a closed connection to end", 10*time.Second, func() bool { return s.idle.active.Load() == 0 })
}

// One miss alone does not stop polling; misses in a row turn it off for
// the next 1, 3, 7, ... 63 commands; a catch starts the count again.
func TestIdlePollBackoffPolicy(t *testing.T) {
	s := &Server{opts: Options{IdlePoll: time.Millisecond}, spinMax: 1}
	c := &conn{srv: s}
	// polls runs n commands and says how many of them polled, each poll
	// ending as caught says.
	polls := func(n int, caught bool) int {
		k := 0
		for range n {
			if c.pollWanted() {
				k++
				if !c.tryPoll() {
					t.Fatal("poll refused with none active")
				}
				c.pollEnded(caught)
			}
		}
		return k
	}
	if k := polls(10, true); k != 10 {
		t.Fatalf("%d of 10 commands polled while every poll caught", k)
	}
	if k := polls(2, false); k != 2 {
		t.Fatalf("%d of 2 commands polled after a single miss, want 2", k)
	}
	// Two misses in a row: the next command skips, then polls (miss 3:
	// skip 3), ...: 1+1 polls in 2 commands, 1 in 4, 1 in 8, ...
	for _, n := range []int{2, 4, 8, 16, 32, 64, 64, 64} {
		if k := polls(n, false); k != 1 {
			t.Fatalf("%d of %d commands polled in the back-off after misses in a row, want 1", k, n)
		}
	}
	// A poll that catches resets the count: polling every command again.
	polls(64, true)
	if k := polls(5, true); k != 5 {
		t.Fatalf("%d of 5 commands polled after a catch, want 5", k)
	}
	if a := s.idle.active.Load(); a != 0 {
		t.Fatalf("%d polls left active", a)
	}
	off := &conn{srv: &Server{opts: Options{IdlePoll: -1}}}
	if off.pollWanted() {
		t.Fatal("a poll with IdlePoll < 0")
	}
}

// A poll that misses ends (the host sent nothing more within the
// budget), and polling goes on after it (the back-off's rules are
// TestIdlePollBackoffPolicy's).
func TestIdlePollMisses(t *testing.T) {
	wantPolls(t)
	s, i, _ := pollingIni(t, 20*time.Millisecond)
	qd1(t, i, 1)
	waitFor(t, "a poll to miss", 10*time.Second, func() bool { return s.idle.missed.Load() >= 1 })
	qd1(t, i, 1)
	waitFor(t, "a second poll to miss", 10*time.Second, func() bool { return s.idle.missed.Load() >= 2 })
	waitFor(t, "no poll active", 10*time.Second, func() bool { return s.idle.active.Load() == 0 })
}

// No more than the limit poll at once (a test's spinMax; half the Ps
// otherwise, none with one); IdlePoll < 0 never polls.
func TestIdlePollLimits(t *testing.T) {
	s := &Server{opts: Options{IdlePoll: time.Minute}, spinMax: 1}
	c1, c2 := &conn{srv: s}, &conn{srv: s}
	if !c1.tryPoll() {
		t.Fatal("the first poll was refused")
	}
	if c2.tryPoll() {
		t.Fatal("a second poll beside the first with a limit of 1")
	}
	c1.pollEnded(true)
	if !c2.tryPoll() {
		t.Fatal("a poll refused after the first ended")
	}
	c2.pollEnded(true)
	if a, r := s.idle.active.Load(), s.idle.refused.Load(); a != 0 || r != 1 {
		t.Fatalf("active %d, refused %d; want 0 and 1", a, r)
	}
	s.spinMax = 0
	if want := int32(runtime.GOMAXPROCS(0) / 2); s.pollMax() != want {
		t.Fatalf("pollMax %d with %d Ps, want %d", s.pollMax(), runtime.GOMAXPROCS(0), want)
	}

	b := newFileBackend(t, 1<<20)
	off := startServer(t, b, func(o *Options) { o.IdlePoll = -1 })
	i3 := dialIni(t, addrOf(off))
	i3.mustLogin(loginOpts{})
	qd1(t, i3, 3)
	if n := off.idle.caught.Load() + off.idle.missed.Load() + off.idle.refused.Load() + off.idle.othersActive.Load(); n != 0 {
		t.Fatalf("%d polls with IdlePoll < 0", n)
	}
}

// No poll starts while another connection receives PDUs (counted
// others_active); polls are back a couple of milliseconds after it
// stops.
func TestIdlePollNotWhileOthersActive(t *testing.T) {
	wantPolls(t)
	s, i, _ := pollingIni(t, time.Minute)
	other := &conn{srv: s} // another connection receiving PDUs
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			other.noteActivity(time.Now())
			time.Sleep(50 * time.Microsecond)
		}
	}()
	qd1(t, i, 2)
	waitFor(t, "a poll held back", 10*time.Second, func() bool { return s.idle.othersActive.Load() > 0 })
	close(stop)
	<-stopped
	if n := s.idle.caught.Load() + s.idle.missed.Load(); n != 0 {
		t.Fatalf("%d polls while another connection was active", n)
	}
	last := other.seenEpoch
	waitFor(t, "two quiet activity epochs", 10*time.Second, func() bool {
		return time.Now().UnixNano()/int64(activityEpoch) > last+2
	})
	qd1(t, i, 2)
	waitFor(t, "a poll", 10*time.Second, func() bool { return s.idle.caught.Load()+int64(s.idle.active.Load()) > 0 })
}

// The activity count: one connection alone is not "others"; a second one
// in this epoch or the one before is; an idle epoch between forgets.
func TestActivityEpochs(t *testing.T) {
	s := &Server{}
	a, b := &conn{srv: s}, &conn{srv: s}
	t0 := time.Unix(1000, 0)
	a.noteActivity(t0)
	a.noteActivity(t0.Add(activityEpoch / 2))
	if a.othersActive() {
		t.Fatal("a connection alone sees others")
	}
	b.noteActivity(t0.Add(activityEpoch / 2))
	if !a.othersActive() {
		t.Fatal("a second connection in the same epoch is not seen")
	}
	a.noteActivity(t0.Add(activityEpoch)) // the next epoch: b was in the one before
	if !a.othersActive() {
		t.Fatal("a connection of the epoch before is not seen")
	}
	a.noteActivity(t0.Add(3 * activityEpoch)) // an idle epoch between
	if a.othersActive() {
		t.Fatal("a connection two epochs old is still seen")
	}
}
