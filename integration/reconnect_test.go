package integration

// Reconnect tests: a host keeps its I/O going across kill -9 and restart
// of the daemon (libiscsi inside qemu-io logs back in by itself), and the
// login path refuses a session it does not know (an unknown TSIH, what
// open-iscsi sends after a target restart) without falling over.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Deadlines of the reconnect tests. libiscsi retries a lost connection
// after 1, 2, 3 ... seconds and never sooner than 3 s after its previous
// reconnect, so a write issued during an outage may wait several seconds.
const (
	rcCmdTimeout       = 20 * time.Second // a qemu-io command while the target is up
	rcReconnectTimeout = 30 * time.Second // a command that waits for libiscsi to log back in
)

// rcQemu is one long-lived interactive `qemu-io -f raw -t none URL`
// fed through a stdin pipe. Unlike qio (one blocking command at a time)
// it tracks qemu-io's prompts, so a test can tell when an aio_write was
// submitted (its prompt came back) separately from when it completed
// (its "wrote" line). qemu-io flushes stdout only when it prints a prompt,
// so a completion line becomes visible after the next command returns.
type rcQemu struct {
	t          testing.TB
	url        string
	qemuIOProc     // migration_helpers_test.go
	sent       int // commands written to stdin (only the test goroutine touches it)

	mu      sync.Mutex
	prompts int      // prompts seen: command k (1-based) returned when prompts > k
	lines   []rcLine // output lines, prompts stripped
	changed chan struct{}
}

// rcLine is one output line and the command that was running when it
// was printed (the number of prompts seen before it).
type rcLine struct {
	text  string
	after int // prompts seen before this line
	at    time.Time
}

const rcPrompt = "qemu-io> "

func startRCQemu(t testing.TB, url string) *rcQemu {
	t.Helper()
	q := &rcQemu{t: t, url: url, changed: make(chan struct{})}
	q.start(t, url, []string{"-f", "raw", "-t", "none", url}, func(pr io.Reader) {
		buf := make([]byte, 64<<10)
		var pending string
		for {
			n, err := pr.Read(buf)
			if n > 0 {
				pending += string(buf[:n])
				pending = q.parse(pending)
			}
			if err != nil {
				if pending != "" {
					q.addLine(pending)
				}
				return
			}
		}
	}, q.signal)
	// qemu-io prints its first prompt once the image is open.
	q.waitPrompts(1, rcCmdTimeout, "qemu-io opened the LUN")
	return q
}

// parse takes whole prompts and lines off the front of s and returns the
// rest (a partial line or a partial prompt).
func (q *rcQemu) parse(s string) string {
	for s != "" {
		switch {
		case strings.HasPrefix(s, rcPrompt):
			q.mu.Lock()
			q.prompts++
			q.mu.Unlock()
			q.signal()
			s = s[len(rcPrompt):]
		case strings.HasPrefix(rcPrompt, s):
			return s // maybe the start of a prompt
		default:
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return s
			}
			q.addLine(s[:i])
			s = s[i+1:]
		}
	}
	return s
}

func (q *rcQemu) addLine(l string) {
	l = strings.TrimSpace(l)
	if l == "" {
		return
	}
	q.mu.Lock()
	q.lines = append(q.lines, rcLine{text: l, after: q.prompts, at: time.Now()})
	q.mu.Unlock()
	q.signal()
}

// signal wakes every waiter (a closed channel, replaced by a fresh one).
func (q *rcQemu) signal() {
	q.mu.Lock()
	close(q.changed)
	q.changed = make(chan struct{})
	q.mu.Unlock()
}

// waitUntil waits until cond (called with q.mu held) holds.
func (q *rcQemu) waitUntil(timeout time.Duration, what string, cond func() bool) {
	q.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		q.mu.Lock()
		ok, ch := cond(), q.changed
		q.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-q.exited:
			q.mu.Lock()
			ok = cond()
			q.mu.Unlock()
			if ok {
				return
			}
			q.t.Fatalf("qemu-io on %s exited while waiting for: %s\n%s", q.url, what, q.output())
		case <-deadline.C:
			q.t.Fatalf("qemu-io on %s: not reached within %v: %s\n%s", q.url, timeout, what, q.output())
		}
	}
}

func (q *rcQemu) waitPrompts(n int, timeout time.Duration, what string) {
	q.t.Helper()
	q.waitUntil(timeout, what, func() bool { return q.prompts >= n })
}

// send writes one command line once the previous command returned, and
// returns its number (1-based). One line at a time: qemu-io reads stdin
// with fgets only after poll says the fd is readable, so a second line
// that arrived with the first waits in stdio's buffer until more input
// comes (a hang if the test then waits for that command).
func (q *rcQemu) send(command string) int {
	q.t.Helper()
	q.waitPrompts(q.sent+1, rcReconnectTimeout, fmt.Sprintf("command %d returned before %q", q.sent, command))
	if _, err := io.WriteString(q.in, command+"\n"); err != nil {
		q.t.Fatalf("qemu-io on %s: send %q: %v\n%s", q.url, command, err, q.output())
	}
	q.sent++
	return q.sent
}

// run sends a command and waits until it returned (its prompt is back).
func (q *rcQemu) run(command string, timeout time.Duration) int {
	q.t.Helper()
	k := q.send(command)
	q.waitPrompts(k+1, timeout, fmt.Sprintf("command %d %q returned", k, command))
	return k
}

// has reports whether a line equal to s was printed (q.mu held).
func (q *rcQemu) hasLocked(s string) bool {
	for _, l := range q.lines {
		if l.text == s {
			return true
		}
	}
	return false
}

func (q *rcQemu) has(s string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.hasLocked(s)
}

// errorLines returns the lines reporting an error or a failed check, with
// the number of the command that was running when each was printed.
func (q *rcQemu) errorLines() []rcLine {
	q.mu.Lock()
	defer q.mu.Unlock()
	var res []rcLine
	for _, l := range q.lines {
		if rcIsError(l.text) {
			res = append(res, l)
		}
	}
	return res
}

func rcIsError(line string) bool {
	l := strings.ToLower(line)
	return strings.Contains(l, "error") || strings.Contains(l, "failed") || strings.Contains(l, "abort") || strings.Contains(l, "assert")
}

// otherLines returns what qemu-io printed besides completions and their
// statistics lines (what libiscsi or QEMU said about the reconnects).
func (q *rcQemu) otherLines() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var res []string
	for _, l := range q.lines {
		switch {
		case strings.HasPrefix(l.text, "wrote "), strings.HasPrefix(l.text, "read "), rcStatsLine.MatchString(l.text):
		default:
			res = append(res, l.text)
		}
	}
	return res
}

var rcStatsLine = regexp.MustCompile(`^[0-9.]+ (bytes|KiB|MiB|GiB), \d+ ops; `)

func (q *rcQemu) output() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var b strings.Builder
	start := max(0, len(q.lines)-60)
	for _, l := range q.lines[start:] {
		fmt.Fprintf(&b, "  [cmd %d] %s\n", l.after, l.text)
	}
	return b.String()
}

// quit ends qemu-io and requires a clean exit.
func (q *rcQemu) quit() {
	q.t.Helper()
	io.WriteString(q.in, "quit\n")
	q.in.Close()
	select {
	case <-q.exited:
	case <-time.After(rcCmdTimeout):
		q.kill()
		q.t.Fatalf("qemu-io on %s did not quit within %v", q.url, rcCmdTimeout)
	}
	if code := q.cmd.ProcessState.ExitCode(); code != 0 {
		q.t.Errorf("qemu-io on %s exited with code %d\n%s", q.url, code, q.output())
	}
}

// rcWrite is one host write: [off, off+n) all bytes pat.
type rcWrite struct {
	off, n int64
	pat    byte
	aio    bool
	phase  string // when it was issued
	cmd    int    // qemu-io command number
}

func (w rcWrite) done() string { return fmt.Sprintf("wrote %d/%d bytes at offset %d", w.n, w.n, w.off) }

func (w rcWrite) command() string {
	op := "write"
	if w.aio {
		op = "aio_write"
	}
	return fmt.Sprintf("%s -P %d %d %d", op, w.pat, w.off, w.n)
}

func (w rcWrite) String() string {
	return fmt.Sprintf("%s (%s, command %d)", w.command(), w.phase, w.cmd)
}

// rcSlot is the space of one write: every write has its own slot, so the
// expected content of every byte is known whatever order they land in.
const rcSlot = 512 << 10

// rcWriter hands out writes with distinct slots and patterns.
type rcWriter struct {
	q      *rcQemu
	writes []*rcWrite
}

var rcSizes = []int64{4096, 64 << 10, 256 << 10, rcSlot - 1024, 1536, 128 << 10}

func (w *rcWriter) issue(aio bool, phase string) *rcWrite {
	i := len(w.writes)
	if i >= 250 || int64(i+1)*rcSlot > 64<<20 {
		w.q.t.Fatalf("out of write slots")
	}
	wr := &rcWrite{
		off:   int64(i)*rcSlot + int64(i%3)*512,
		n:     rcSizes[i%len(rcSizes)],
		pat:   byte(1 + i),
		aio:   aio,
		phase: phase,
	}
	wr.cmd = w.q.send(wr.command())
	w.writes = append(w.writes, wr)
	return wr
}

// syncWrite issues a write and waits for its completion line.
func (w *rcWriter) syncWrite(phase string, timeout time.Duration) *rcWrite {
	w.q.t.Helper()
	wr := w.issue(false, phase)
	w.q.waitPrompts(wr.cmd+1, timeout, fmt.Sprintf("%s returned", wr))
	if !w.q.has(wr.done()) {
		w.q.t.Fatalf("%s returned without its completion line %q\n%s", wr, wr.done(), w.q.output())
	}
	return wr
}

// flush runs aio_flush (waits for every aio_write) and then requires the
// completion line of every write issued so far.
func (w *rcWriter) flush(timeout time.Duration, what string) {
	w.q.t.Helper()
	w.q.run("aio_flush", timeout)
	for _, wr := range w.writes {
		if !w.q.has(wr.done()) {
			w.q.t.Fatalf("%s: after aio_flush, %s has no completion line\n%s", what, wr, w.q.output())
		}
	}
}

// readBackCmds are read -P commands checking every write, plus a slot
// never written reading zeros.
func (w *rcWriter) readBackCmds() []string {
	var cmds []string
	for _, wr := range w.writes {
		cmds = append(cmds, fmt.Sprintf("read -P %d %d %d", wr.pat, wr.off, wr.n))
	}
	free := int64(len(w.writes)) * rcSlot
	cmds = append(cmds, fmt.Sprintf("read -P 0 %d %d", free, rcSlot))
	return cmds
}

// readBack checks every write in the same session.
func (w *rcWriter) readBack(what string) {
	w.q.t.Helper()
	for _, c := range w.readBackCmds() {
		k := w.q.run(c, rcCmdTimeout)
		w.q.mu.Lock()
		var bad []string
		ok := false
		for _, l := range w.q.lines {
			if l.after != k {
				continue
			}
			if strings.HasPrefix(l.text, "read ") {
				ok = true
			}
			if rcIsError(l.text) {
				bad = append(bad, l.text)
			}
		}
		w.q.mu.Unlock()
		if !ok || len(bad) > 0 {
			w.q.t.Fatalf("%s: %q: %v\n%s", what, c, bad, w.q.output())
		}
	}
}

// TestReconnectLibiscsiUnderIO: a qemu-io host writes to a LUN while the
// daemon is killed with kill -9 and restarted on the same port and data
// dir, three times in one qemu-io session. libiscsi logs back in by
// itself and re-sends the commands it had not got a status for; every
// write completes, and every acknowledged write reads back, in the same
// session and in a fresh one.
func TestReconnectLibiscsiUnderIO(t *testing.T) {
	needTools(t, "qemu-io")
	start := time.Now()
	d := StartDaemon(t, "")
	iqn := d.Export("recon", "64MiB", 512)
	url := d.URL(iqn, 0)
	portal := d.Portal
	q := startRCQemu(t, url)
	w := &rcWriter{q: q}

	const rounds = 3
	for r := 1; r <= rounds; r++ {
		phase := func(p string) string { return fmt.Sprintf("round %d %s", r, p) }
		// Acknowledged writes: synchronous ones, then aio ones and a flush.
		for range 3 {
			w.syncWrite(phase("before the kill"), rcCmdTimeout)
		}
		for range 4 {
			w.issue(true, phase("before the kill (aio)"))
		}
		w.flush(rcCmdTimeout, phase("acknowledged aio writes"))

		// A burst still in flight when the daemon dies: the kill follows
		// as soon as qemu-io has submitted them.
		first := len(w.writes)
		var burst []*rcWrite
		for range 6 {
			burst = append(burst, w.issue(true, phase("in flight at the kill")))
		}
		q.waitPrompts(burst[len(burst)-1].cmd+1, rcCmdTimeout, "burst submitted")
		d.Kill()
		killed := time.Now()
		ackedAtKill := 0
		for _, wr := range burst {
			if q.has(wr.done()) {
				ackedAtKill++
			}
		}
		// Writes issued while no daemon runs: libiscsi queues them.
		for range 3 {
			w.issue(true, phase("while the daemon is down"))
		}
		q.waitPrompts(q.sent+1, rcCmdTimeout, "writes during the outage submitted")

		d.Start(portal)
		if d.Portal != portal {
			t.Fatalf("round %d: restarted on %s, want %s", r, d.Portal, portal)
		}
		restarted := time.Now()
		// Writes issued after the restart: the first one waits for
		// libiscsi's reconnect; none may fail.
		afterFrom := q.sent + 1
		w.syncWrite(phase("after the restart"), rcReconnectTimeout)
		relogin := time.Since(restarted)
		for range 2 {
			w.syncWrite(phase("after the restart"), rcCmdTimeout)
		}
		w.issue(true, phase("after the restart (aio)"))
		w.flush(rcReconnectTimeout, phase("every write of the round"))
		for _, l := range q.errorLines() {
			if l.after >= afterFrom {
				t.Fatalf("round %d: qemu-io reported an error after the restart: [cmd %d] %s\n%s", r, l.after, l.text, q.output())
			}
		}
		t.Logf("round %d: %d of %d burst writes (%d..%d) had printed their completion at the kill; the rest and 3 issued during the outage completed after the re-login, none failed; daemon down %v, first write after the restart took %v",
			r, ackedAtKill, len(burst), first, first+len(burst)-1, restarted.Sub(killed).Round(time.Millisecond), relogin.Round(time.Millisecond))
		w.readBack(phase("read back in the same session"))
	}

	if errs := q.errorLines(); len(errs) > 0 {
		var b strings.Builder
		for _, l := range errs {
			fmt.Fprintf(&b, "  [cmd %d] %s\n", l.after, l.text)
		}
		t.Errorf("qemu-io reported errors during the session (writes in flight at a kill must be retried by libiscsi, not failed):\n%s", b.String())
	}
	if other := q.otherLines(); len(other) > 0 {
		t.Logf("qemu-io/libiscsi also printed:\n  %s", strings.Join(other, "\n  "))
	}
	q.quit()

	// A fresh host sees every acknowledged write.
	r := qemuIO(t, url, w.readBackCmds()...)
	reads := 0
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(l, "read ") {
			reads++
		}
	}
	if r.Code != 0 || rcIsError(r.Stdout+r.Stderr) || reads != len(w.writes)+1 {
		t.Fatalf("fresh qemu-io read-back of %d writes (%d reads completed): %s", len(w.writes), reads, r)
	}

	// Every start of the daemon logged the host in again; none panicked.
	if hits := d.logHas("panic", "fatal error:"); len(hits) > 0 {
		t.Errorf("the daemon log shows a panic or fatal error:\n%s", hits[0])
	}
	if n := len(d.logHas(`"session logged in"`)); n < rounds+1 {
		t.Errorf("the daemon logged %d session logins over %d starts, want at least one per start", n, rounds+1)
	}
	d.Stop()
	t.Logf("%d writes, %d kill -9 rounds, %v in all", len(w.writes), rounds, time.Since(start).Round(time.Millisecond))
}

// Login PDU fields (RFC 7143 §11.12, §11.13).
const (
	rcOpLoginReq  = 0x03
	rcOpLoginResp = 0x23
	rcImmediate   = 0x40
	rcTransit     = 0x80
	rcCSGSecurity = 0 << 2
	rcNSGFFP      = 3
)

// rcLoginResp is the part of a Login Response the tests look at.
type rcLoginResp struct {
	opcode        byte
	flags         byte
	tsih          uint16
	class, detail byte
	keys          string
}

// rcLogin opens a TCP connection to portal and sends one Login Request
// with isid, tsih and the text keys; it returns the response and the
// connection (the caller closes it).
func rcLogin(t testing.TB, portal string, isid [6]byte, tsih uint16, flags byte, keys ...string) (rcLoginResp, net.Conn) {
	t.Helper()
	var data []byte
	for _, k := range keys {
		data = append(data, k...)
		data = append(data, 0)
	}
	pdu := make([]byte, 48, 48+len(data)+3)
	pdu[0] = rcImmediate | rcOpLoginReq
	pdu[1] = flags
	// Version-max and Version-min 0; no AHS.
	pdu[5], pdu[6], pdu[7] = byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	copy(pdu[8:14], isid[:])
	binary.BigEndian.PutUint16(pdu[14:16], tsih)
	binary.BigEndian.PutUint32(pdu[16:20], 0x1000) // ITT
	// CID 0; CmdSN 1; ExpStatSN 0.
	binary.BigEndian.PutUint32(pdu[24:28], 1)
	pdu = append(pdu, data...)
	for len(pdu)%4 != 0 {
		pdu = append(pdu, 0)
	}

	c, err := net.DialTimeout("tcp", portal, rcCmdTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", portal, err)
	}
	c.SetDeadline(time.Now().Add(rcCmdTimeout))
	if _, err := c.Write(pdu); err != nil {
		c.Close()
		t.Fatalf("send login request: %v", err)
	}
	var h [48]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		c.Close()
		t.Fatalf("read login response header (TSIH %d): %v", tsih, err)
	}
	dlen := int(h[5])<<16 | int(h[6])<<8 | int(h[7])
	body := make([]byte, (dlen+3)&^3)
	if _, err := io.ReadFull(c, body); err != nil {
		c.Close()
		t.Fatalf("read login response data (%d bytes): %v", dlen, err)
	}
	c.SetDeadline(time.Time{})
	return rcLoginResp{
		opcode: h[0] & 0x3f,
		flags:  h[1],
		tsih:   binary.BigEndian.Uint16(h[14:16]),
		class:  h[36],
		detail: h[37],
		keys:   strings.ReplaceAll(string(body[:dlen]), "\x00", " "),
	}, c
}

// rcAlive reports whether the daemon process is still running.
func (d *Daemon) rcAlive() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// TestReconnectSessionReinstatement: the same initiator logs in again
// across a kill -9 and restart; a login naming a session the daemon does
// not have (a nonzero TSIH it never gave out, one it gave to another
// initiator session, one from before the restart) is refused with an
// initiator-error status (class 2), and the daemon stays up and serving.
func TestReconnectSessionReinstatement(t *testing.T) {
	needTools(t, "iscsi-inq", "iscsi-ls")
	d := StartDaemon(t, "")
	iqn := d.Export("reinst", "8MiB", 512)
	url := d.URL(iqn, 0)
	host := "iqn.2026-11.org.lmtgt.test:reinst-host"
	raw := "iqn.2026-11.org.lmtgt.test:raw-host"

	inq := func(when string) {
		t.Helper()
		if r := runCmd(t, "", nil, "iscsi-inq", "-i", host, url); r.Code != 0 || !strings.Contains(r.Stdout, "Peripheral") && !strings.Contains(r.Stdout, "Vendor") {
			t.Fatalf("%s: iscsi-inq -i %s: %s", when, host, r)
		}
		ls := runCmd(t, "", nil, "iscsi-ls", "-i", host, "-s", "iscsi://"+d.Portal)
		if ls.Code != 0 || !strings.Contains(ls.Stdout, "Target:"+iqn) || !strings.Contains(ls.Stdout, "Lun:0") {
			t.Fatalf("%s: iscsi-ls -i %s: %s", when, host, ls)
		}
	}
	inq("before the kill")

	keys := []string{"InitiatorName=" + raw, "TargetName=" + iqn, "SessionType=Normal", "AuthMethod=None"}
	isidA := [6]byte{0x80, 0x12, 0x34, 0x56, 0x00, 0x01}
	isidB := [6]byte{0x80, 0x12, 0x34, 0x56, 0x00, 0x02}

	// Control: the same hand-made PDU with TSIH 0 is a good login, so the
	// refusals below are about the TSIH and nothing else.
	ok, connA := rcLogin(t, d.Portal, isidA, 0, rcTransit|rcCSGSecurity|rcNSGFFP, keys...)
	if ok.opcode != rcOpLoginResp || ok.class != 0 || ok.tsih == 0 {
		t.Fatalf("login with TSIH 0: opcode %#x status %d/%#x TSIH %d keys %q, want a login response, status 0, a TSIH", ok.opcode, ok.class, ok.detail, ok.tsih, ok.keys)
	}
	if ok.flags&rcTransit == 0 || ok.flags&3 != rcNSGFFP {
		t.Fatalf("login with TSIH 0: flags %#x, want T=1 and NSG=3 (full feature phase)", ok.flags)
	}
	oldTSIH := ok.tsih
	t.Logf("control login: TSIH %d, keys %q", ok.tsih, ok.keys)

	refused := func(what string, isid [6]byte, tsih uint16) {
		t.Helper()
		resp, c := rcLogin(t, d.Portal, isid, tsih, rcTransit|rcCSGSecurity|rcNSGFFP, keys...)
		defer c.Close()
		if resp.opcode != rcOpLoginResp || resp.class != 2 {
			t.Errorf("%s (TSIH %d): opcode %#x status class %d detail %#x, want a login response (0x23) with class 2 (initiator error)", what, tsih, resp.opcode, resp.class, resp.detail)
		} else if resp.detail != 0x0a {
			t.Errorf("%s (TSIH %d): status detail %#x, want 0x0a (session does not exist)", what, tsih, resp.detail)
		}
		// After a reject the target closes the connection (RFC 7143 §11.13.5).
		c.SetReadDeadline(time.Now().Add(rcCmdTimeout))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: the connection stays open after the login reject (%d more bytes)", what, n)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the connection is still open %v after the login reject", what, rcCmdTimeout)
		}
		if !d.rcAlive() {
			t.Fatalf("%s: the daemon died", what)
		}
	}
	refused("a TSIH never given out", isidB, oldTSIH+1000)
	refused("another session's TSIH with a different ISID", isidB, oldTSIH)
	connA.Close()

	d.Restart(true)
	inq("after kill -9 and restart")
	// What open-iscsi sends after a target restart: its old ISID and TSIH.
	refused("the TSIH of a session from before the restart", isidA, oldTSIH)
	refused("a TSIH never given out, after the restart", isidA, 0xfffe)
	inq("after the refused logins")

	// And the daemon took all of it without a crash.
	if hits := d.logHas("panic", "fatal error:"); len(hits) > 0 {
		t.Errorf("the daemon log shows a panic:\n%s", hits[0])
	}
	if hits := d.logHas("TSIH"); len(hits) == 0 {
		t.Logf("the daemon did not log the refused TSIH logins")
	}
	d.Stop()
}
