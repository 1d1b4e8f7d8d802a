package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// events runs `lmtgt events -o json ARGS` and decodes its JSON lines.
func (d *Daemon) events(args ...string) []wire.Event {
	d.t.Helper()
	out := d.OK(append([]string{"events", "-o", "json"}, args...)...)
	var evs []wire.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e wire.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			d.t.Fatalf("lmtgt events -o json: line %q is not one JSON object: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// TestEventsRefusedLogin: logins refused by the ACL, by CHAP and for an
// unknown target are in the event log with the initiator, its address,
// the target and the reason; an accepted login and the admin changes
// (with who made them) are there too.
func TestEventsRefusedLogin(t *testing.T) {
	needTools(t, "iscsi-inq")
	d := StartDaemon(t, "")
	good, bad := "iqn.2026-12.org.lmtgt.test:good", "iqn.2026-12.org.lmtgt.test:intruder"
	d.OK("lun", "create", "ev1", "--size", "16MiB")
	acl := testIQN("ev1")
	d.OK("target", "create", acl)
	d.OK("target", "map", acl, "ev1")
	d.OK("target", "allow", acl, good)
	d.OK("lun", "create", "ev2", "--size", "16MiB")
	chap := d.exportLUN("ev2")
	d.OK("target", "chap", chap, "--user", "alice", "--secret", "secret-of-alice1")

	if r := runCmd(t, "", nil, "iscsi-inq", "-i", bad, d.URL(acl, 0)); r.Code == 0 {
		t.Fatalf("iscsi-inq as %s, which the ACL does not allow, succeeded: %s", bad, r)
	}
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", good, d.URL(acl, 0)); r.Code != 0 {
		t.Fatalf("iscsi-inq as the allowed %s: %s", good, r)
	}
	wrong := strings.Replace(d.URL(chap, 0), "iscsi://", "iscsi://alice%wrong-secret-123@", 1)
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", good, wrong); r.Code == 0 {
		t.Fatalf("iscsi-inq with a wrong CHAP secret succeeded: %s", r)
	}
	if r := runCmd(t, "", nil, "iscsi-inq", "-i", good, d.URL(testIQN("nosuch"), 0)); r.Code == 0 {
		t.Fatalf("iscsi-inq to an unknown target succeeded: %s", r)
	}

	find := func(evs []wire.Event, typ, target, reason string) *wire.Event {
		for i := range evs {
			e := &evs[i]
			if e.Type == typ && e.Target == target && strings.HasPrefix(e.Reason, reason) {
				return e
			}
		}
		return nil
	}
	var refused []wire.Event
	// Logins are recorded as they end, maybe after the initiator exited.
	waitFor(t, cmdTimeout, "the three refused logins and the accepted one in `lmtgt events`", func() (bool, string) {
		refused = d.events("--type", "login-refused")
		ok := d.events("--type", "login")
		return len(refused) >= 3 && len(ok) >= 1, strings.Join(eventLines(append(refused, ok...)), "; ")
	})
	if e := find(refused, "login-refused", acl, "ACL:"); e == nil || e.Initiator != bad || e.OK || !strings.HasPrefix(e.Address, "127.0.0.1:") {
		t.Fatalf("no ACL refusal of %s to %s with its address in %v", bad, acl, eventLines(refused))
	}
	if e := find(refused, "login-refused", chap, "CHAP failure:"); e == nil || e.Initiator != good {
		t.Fatalf("no CHAP refusal of %s to %s in %v", good, chap, eventLines(refused))
	}
	if e := find(refused, "login-refused", testIQN("nosuch"), "unknown target:"); e == nil {
		t.Fatalf("no unknown-target refusal in %v", eventLines(refused))
	}
	all := d.events()
	if e := find(all, "login", acl, ""); e == nil || e.Initiator != good || !e.OK {
		t.Fatalf("no accepted login of %s in %v", good, eventLines(all))
	}
	if e := find(all, "admin", chap, ""); e == nil {
		t.Fatalf("no admin event for %s in %v", chap, eventLines(all))
	}
	var created *wire.Event
	for i := range all {
		if all[i].Action == "lun create" && all[i].LUN == "ev1" {
			created = &all[i]
		}
	}
	if created == nil || !created.OK || !strings.Contains(created.Who, "uid ") {
		t.Fatalf("lun create ev1: %+v, want an admin event naming the caller's uid", created)
	}
	// A refused admin change is recorded with its reason, and changes nothing.
	d.Fail(1, []string{"ev1"}, "lun", "create", "ev1", "--size", "16MiB")
	if evs := d.events("--type", "admin", "--since", "1h"); !strings.Contains(evs[len(evs)-1].Reason, "ev1") || evs[len(evs)-1].OK {
		t.Fatalf("last admin event %+v, want the refused create with its reason", evs[len(evs)-1])
	}
	// Human output: one line per event.
	out := d.OK("events", "--type", "login-refused")
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != len(refused) || !strings.Contains(out, "REFUSED") {
		t.Fatalf("lmtgt events --type login-refused: %d lines for %d events:\n%s", n, len(refused), out)
	}
	d.Fail(2, []string{"--type", "nosuch"}, "events", "--type", "nosuch")
	d.Fail(2, []string{"--since"}, "events", "--since", "yesterday-ish")
}

func eventLines(evs []wire.Event) []string {
	var out []string
	for _, e := range evs {
		b, _ := json.Marshal(e)
		out = append(out, string(b))
	}
	return out
}

// TestEventsFollow: `lmtgt events --follow -o json` prints the stored
// events, then each new one as it happens, one JSON object per line.
func TestEventsFollow(t *testing.T) {
	d := StartDaemon(t, "")
	d.OK("lun", "create", "f1", "--size", "8MiB")
	f := startFollow(t, d, "events", "--follow", "-o", "json")
	f.wait("stored event of lun f1", func(e wire.Event) bool { return e.Action == "lun create" && e.LUN == "f1" })
	d.OK("lun", "create", "f2", "--size", "8MiB")
	f.wait("new event of lun f2", func(e wire.Event) bool { return e.Action == "lun create" && e.LUN == "f2" })
	d.OK("lun", "delete", "f1")
	f.wait("new event of the delete of f1", func(e wire.Event) bool { return e.Action == "lun delete" && e.LUN == "f1" })
	if len(f.notices) > 0 || f.stderr.String() != "" {
		t.Errorf("events --follow: notices %q, stderr %q, want none (no restart)", f.notices, f.stderr.String())
	}
}

// follow is a running `lmtgt events --follow -o json` (killed at the end
// of the test) whose JSON lines the test reads with wait.
type follow struct {
	t       *testing.T
	cmd     *exec.Cmd
	stderr  *lockedBuffer
	lines   chan string
	exited  chan struct{}
	notices []string // the messages of its notices, in order
}

// startFollow starts `lmtgt ARGS` (events --follow -o json ...) on d.
func startFollow(t *testing.T, d *Daemon, args ...string) *follow {
	t.Helper()
	f := &follow{t: t, cmd: exec.Command(cliBin, args...), stderr: &lockedBuffer{}, lines: make(chan string), exited: make(chan struct{})}
	f.cmd.Env = append(os.Environ(), "LMTGT_ADMIN="+d.Admin)
	f.cmd.Stderr = f.stderr
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.cmd.Wait(); close(f.exited) }()
	t.Cleanup(func() {
		f.cmd.Process.Kill()
		<-f.exited
	})
	go func() {
		defer close(f.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
	}()
	return f
}

// wait reads lines until an event matches (what names it in failures).
// Every line must be one JSON object: an event, or a notice (type
// "notice", with a time and a message), which it records in f.notices.
func (f *follow) wait(what string, match func(wire.Event) bool) {
	f.t.Helper()
	deadline := time.After(cmdTimeout)
	for {
		select {
		case line, ok := <-f.lines:
			if !ok {
				f.t.Fatalf("events --follow ended before %s (%v)\nstderr:\n%s", what, f.cmd.ProcessState, f.stderr.String())
			}
			var e wire.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil || !strings.HasPrefix(line, "{") {
				f.t.Fatalf("events --follow -o json: %q is not one JSON object: %v", line, err)
			}
			if e.Type == "notice" {
				var n struct{ Message string }
				if err := json.Unmarshal([]byte(line), &n); err != nil || n.Message == "" || e.Time.IsZero() {
					f.t.Fatalf("events --follow -o json: notice %q without a time or a message (%v)", line, err)
				}
				f.notices = append(f.notices, n.Message)
				continue
			}
			if match(e) {
				return
			}
		case <-deadline:
			f.t.Fatalf("events --follow: no %s within %v\nstderr:\n%s", what, cmdTimeout, f.stderr.String())
		}
	}
}

// pairHistory returns the history of the pairs of src.
func (d *Daemon) pairHistory(src string) []wire.PairHistory {
	d.t.Helper()
	var hs []wire.PairHistory
	d.JSON(&hs, "migration", "history", src)
	return hs
}

func steps(h wire.PairHistory) string {
	var s []string
	for _, e := range h.Entries {
		s = append(s, e.To)
	}
	return strings.Join(s, ",")
}

// TestMigrationHistory: a migration paused, resumed and split lists each
// transition with its time and cause; the history survives a kill -9 and
// a clean restart; a cancelled pair appears in it and `migration show`
// says cancelled; a session keeps its own timeline.
func TestMigrationHistory(t *testing.T) {
	d := StartDaemon(t, "")
	for _, n := range []string{"ma", "mb", "mc", "sa", "sb"} {
		d.OK("lun", "create", n, "--size", "32MiB")
	}
	start := time.Now()
	d.OK("migration", "create", "--source", "ma", "--target", "mb", "--speed", "highest")
	d.waitMig("ma", stateTimeout, "synced")
	d.OK("migration", "pause", "ma")
	d.OK("migration", "resume", "ma")
	d.waitMig("ma", stateTimeout, "synced")
	d.OK("migration", "split", "ma")

	const want = "queued,copying,synced,paused,copying,synced,splitting,split"
	check := func(what string) {
		t.Helper()
		hs := d.pairHistory("ma")
		if len(hs) == 0 {
			t.Fatalf("%s: no history of ma", what)
		}
		h := hs[0]
		if got := steps(h); got != want || h.Source != "ma" || h.Target != "mb" {
			t.Fatalf("%s: history of ma: %s → %s %s, want %s", what, h.Source, h.Target, got, want)
		}
		prev := start.Add(-time.Second)
		for _, e := range h.Entries {
			if e.Time.Before(prev) || e.Time.After(time.Now()) {
				t.Fatalf("%s: entry %+v out of order (previous %v)", what, e, prev)
			}
			prev = e.Time
		}
		if p := h.Entries[3]; p.Who != "admin" || p.Reason != "paused by admin" {
			t.Fatalf("%s: pause entry %+v, want its cause", what, p)
		}
		if f := h.Final; f == nil || f.State != "split" || f.SplitPauseMS <= 0 || f.DurationS <= 0 {
			t.Fatalf("%s: final figures %+v", what, f)
		}
	}
	waitFor(t, cmdTimeout, "the split's pause in the history", func() (bool, string) {
		hs := d.pairHistory("ma")
		return len(hs) == 1 && hs[0].Final != nil && hs[0].Final.SplitPauseMS > 0, steps(hs[0])
	})
	check("after the split")
	d.Restart(true)
	check("after kill -9")

	// A cancelled pair.
	d.OK("migration", "create", "--source", "ma", "--target", "mc", "--speed", "low")
	d.OK("migration", "cancel", "ma")
	if st := d.mig("ma"); st.State != "cancelled" || st.Target != "mc" {
		t.Fatalf("migration show ma after the cancel: %s target %s, want the cancelled pair to mc", migString(st), st.Target)
	}
	d.Restart(false)
	check("after a clean restart")
	hs := d.pairHistory("ma")
	if len(hs) != 2 || hs[1].Target != "mc" || hs[1].Final == nil || hs[1].Final.State != "cancelled" || hs[1].State != "cancelled" {
		t.Fatalf("history of ma after the cancel and a restart: %s", eventsJSON(hs))
	}
	if st := d.mig("ma"); st.State != "cancelled" || st.Target != "mc" {
		t.Fatalf("migration show ma after a restart: %s target %s, want cancelled", migString(st), st.Target)
	}
	if out := d.OK("migration", "history", "ma"); !strings.Contains(out, "synced → paused: paused by admin (admin)") || !strings.Contains(out, "cancelled") {
		t.Fatalf("migration history ma:\n%s", out)
	}
	var all []wire.PairHistory
	d.JSON(&all, "migration", "history")
	if len(all) != 2 {
		t.Fatalf("migration history (all): %d pairs, want 2", len(all))
	}
	d.Fail(1, []string{"nosuch"}, "migration", "history", "nosuch")

	// A session: its own entries and its pairs' timelines.
	d.OK("session", "create", "s1", "--pair", "sa:sb", "--speed", "highest")
	d.waitMig("sa", stateTimeout, "synced")
	d.OK("session", "pause", "s1")
	d.OK("session", "resume", "s1")
	d.OK("session", "cancel", "s1")
	var sh wire.SessionHistory
	waitFor(t, cmdTimeout, "the session's cancel in its history", func() (bool, string) {
		d.JSON(&sh, "session", "history", "s1")
		var ev []string
		for _, e := range sh.Entries {
			ev = append(ev, e.Event)
		}
		return strings.Join(ev, ",") == "created,paused,resumed,cancelled", strings.Join(ev, ",")
	})
	if len(sh.Pairs) != 1 || sh.Pairs[0].Source != "sa" || !strings.Contains(steps(sh.Pairs[0]), "paused,copying") || sh.Pairs[0].State != "cancelled" {
		t.Fatalf("session history s1 pairs: %s", eventsJSON(sh.Pairs))
	}
}

func eventsJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestEventsFollowAcrossRestart: `lmtgt events --follow` outlives a
// restart of the daemon (clean stop, then kill -9): it says that the server
// went away, waits for it, and goes on with the events recorded after it is
// back, each printed once. With -o json every line it prints is a JSON
// object, the notices too (type "notice", among the events on stdout: they
// were plain text on stderr), and stderr stays empty.
func TestEventsFollowAcrossRestart(t *testing.T) {
	d := StartDaemon(t, "")
	d.OK("lun", "create", "r0", "--size", "8MiB")
	f := startFollow(t, d, "events", "--follow", "-o", "json", "--type", "admin")
	seen := map[string]int{}
	wait := func(lun string) {
		t.Helper()
		f.wait("the event of lun "+lun, func(e wire.Event) bool {
			if e.Action != "lun create" {
				return false
			}
			if seen[e.LUN]++; seen[e.LUN] > 1 {
				t.Fatalf("event of lun %s printed twice", e.LUN)
			}
			return e.LUN == lun
		})
	}
	wait("r0")
	for i, kill := range []bool{false, true} {
		d.Restart(kill)
		lun := fmt.Sprintf("r%d", i+1)
		d.OK("lun", "create", lun, "--size", "8MiB")
		wait(lun)
	}
	// Each restart: one "went away", then one "is back" before the
	// events recorded after it.
	var away, back int
	for _, m := range f.notices {
		switch {
		case strings.HasPrefix(m, "the server went away") && away == back:
			away++
		case m == "the server is back" && back < away:
			back++
		default:
			t.Errorf("events --follow -o json: notice %q out of place in %q", m, f.notices)
		}
	}
	if away != 2 || back != 2 {
		t.Errorf("events --follow -o json: notices %q, want went away and is back for each of the 2 restarts", f.notices)
	}
	if f.stderr.String() != "" {
		t.Errorf("events --follow -o json wrote on stderr (not JSON):\n%s", f.stderr.String())
	}
	select {
	case <-f.exited:
		t.Fatalf("events --follow exited (%v)", f.cmd.ProcessState)
	default:
	}
	f.cmd.Process.Signal(os.Interrupt)
	select {
	case <-f.exited:
		if code := f.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("events --follow exited %d on an interrupt, want 0", code)
		}
	case <-time.After(cmdTimeout):
		t.Fatal("events --follow did not end on an interrupt")
	}
}
