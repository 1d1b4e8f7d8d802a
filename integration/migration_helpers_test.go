package integration

// Helpers of the live-migration end-to-end tests (migration_*_test.go):
// the pair and LUN views of the CLI, a long-lived qemu-io host process fed
// one command at a time, and a block model of what the hosts wrote so a
// test can tell which writes a LUN image holds.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// mBlock is the unit the host model writes: every write covers whole
// 64 KiB blocks with one byte pattern, so every block of a LUN is uniform.
const mBlock = 64 << 10

// Deadlines of the migration tests.
const (
	syncTimeout  = 90 * time.Second // a small LUN reaches synced
	ioTimeout    = 60 * time.Second // one qemu-io command answers
	stateTimeout = 60 * time.Second // a pair reaches some other state
)

// migString is the one-line summary of a pair (`migration show SRC -o
// json`, wire.Migration) in failure messages.
func migString(s wire.Migration) string {
	return fmt.Sprintf("state=%s reason=%q done=%d/%d cursor=%d data=%d recopied=%d dcl=%d vehicle=%s pause=%.3fms",
		s.State, s.Reason, s.DoneBytes, s.TotalBytes, s.CursorBytes, s.DataBytes, s.RecopiedBytes, s.DCLBytes, s.Vehicle, s.SplitPauseMS)
}

// migTry shows the pair of source LUN src; ok is false when the command
// failed (no such pair: split, cancelled or never created).
func (d *Daemon) migTry(src string) (wire.Migration, result, bool) {
	d.t.Helper()
	r := d.Run("migration", "show", src, "-o", "json")
	var s wire.Migration
	if r.Code != 0 {
		return s, r, false
	}
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		d.t.Fatalf("migration show %s -o json: %v\n%s", src, err, r.Stdout)
	}
	return s, r, true
}

// mig shows the pair of source LUN src and fails the test if it has none.
func (d *Daemon) mig(src string) wire.Migration {
	d.t.Helper()
	s, r, ok := d.migTry(src)
	if !ok {
		d.t.Fatalf("migration show %s: %s", src, r)
	}
	return s
}

// lun is `lun show NAME -o json`.
func (d *Daemon) lun(name string) wire.LUN {
	d.t.Helper()
	var l wire.LUN
	d.JSON(&l, "lun", "show", name)
	return l
}

// waitMig polls the pair of src until its state is one of want. It fails
// at once on a final state that is not wanted (faulty, cancelled), so a
// broken pair does not cost the whole deadline.
func (d *Daemon) waitMig(src string, timeout time.Duration, want ...string) wire.Migration {
	d.t.Helper()
	var last wire.Migration
	waitFor(d.t, timeout, fmt.Sprintf("pair %s in state %v", src, want), func() (bool, string) {
		s, r, ok := d.migTry(src)
		if !ok {
			return false, "no pair: " + strings.TrimSpace(r.Stderr)
		}
		last = s
		for _, w := range want {
			if s.State == w {
				return true, ""
			}
		}
		if s.State == "faulty" || s.State == "cancelled" {
			d.t.Fatalf("pair %s went %s while waiting for %v: %s", src, s.State, want, migString(s))
		}
		return false, migString(s)
	})
	return last
}

// vpd returns what `iscsi-inq -e 1 -c PAGE URL` prints.
func vpd(t testing.TB, url string, page int) string {
	t.Helper()
	out := tool(t, "iscsi-inq", "-e", "1", "-c", fmt.Sprint(page), url)
	if strings.TrimSpace(out) == "" {
		t.Fatalf("iscsi-inq -c %d %s printed nothing", page, url)
	}
	return out
}

// logHas reports the lines of the daemon's logs (every start) that
// contain any of the strings.
func (d *Daemon) logHas(subs ...string) []string {
	d.mu.Lock()
	logs := append([]string(nil), d.logs...)
	d.mu.Unlock()
	var hits []string
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		for _, line := range strings.Split(string(b), "\n") {
			for _, s := range subs {
				if strings.Contains(line, s) {
					hits = append(hits, line)
					break
				}
			}
		}
	}
	return hits
}

// errQIOGone: the qemu-io process exited (or was killed) before it
// answered the command.
var errQIOGone = errors.New("qemu-io exited")

// qio is one long-lived `qemu-io -f raw -t none URL` host process that
// takes one command at a time on its standard input. A command counts as
// done (for a write: acknowledged by the target) when qemu-io printed its
// completion line.
type qio struct {
	t    testing.TB
	name string
	url  string
	qemuIOProc

	mu     sync.Mutex
	lines  []string      // every output line, prompts stripped
	notify chan struct{} // a new line or EOF (capacity 1)
	failed []string      // lines reporting an I/O error
}

// startQIO starts qemu-io on url. The process is killed at the end of
// the test if still running.
func startQIO(t testing.TB, name, url string) *qio {
	t.Helper()
	return startQIOArgs(t, name, url, "-f", "raw", "-t", "none", url)
}

// startQIOArgs starts qemu-io with args (url names the image in messages).
func startQIOArgs(t testing.TB, name, url string, args ...string) *qio {
	t.Helper()
	q := &qio{t: t, name: name, url: url, notify: make(chan struct{}, 1)}
	q.start(t, url, args, func(pr io.Reader) {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			for strings.HasPrefix(line, "qemu-io> ") {
				line = strings.TrimPrefix(line, "qemu-io> ")
			}
			line = strings.TrimSpace(strings.TrimPrefix(line, "qemu-io>"))
			if line == "" {
				continue
			}
			q.mu.Lock()
			q.lines = append(q.lines, line)
			if isQIOError(line) {
				q.failed = append(q.failed, line)
			}
			q.mu.Unlock()
			q.wake()
		}
	}, q.wake)
	return q
}

// wake tells a waiter that a line came or the process ended.
func (q *qio) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// qemuIOProc is an interactive qemu-io process fed through a stdin pipe,
// the part qio and rcQemu (reconnect_test.go) share: they differ in how
// they read its output.
type qemuIOProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	exited chan struct{} // closed once the process is reaped and its output read
}

// start starts qemu-io with args (url names the image in messages).
// read gets its output (stdout and stderr) on a goroutine the process
// owns, until EOF; once the process is gone and read returned, exited
// closes and ended runs. The process is killed at the end of the test if
// still running.
func (p *qemuIOProc) start(t testing.TB, url string, args []string, read func(io.Reader), ended func()) {
	t.Helper()
	p.exited = make(chan struct{})
	cmd := exec.Command("qemu-io", args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu-io %s: %v", url, err)
	}
	pw.Close()
	p.cmd, p.in = cmd, in
	readDone := make(chan struct{})
	go func() { // owned by p: ends at EOF of the pipe, after the process is gone
		defer close(readDone)
		defer pr.Close()
		read(pr)
	}()
	go func() { // owned by p: reaps the process
		cmd.Wait()
		<-readDone
		close(p.exited)
		ended()
	}()
	t.Cleanup(p.kill)
}

// kill ends the process (if it still runs) and waits until it is reaped.
func (p *qemuIOProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.exited
}

func isQIOError(line string) bool {
	l := strings.ToLower(line)
	return strings.Contains(l, "failed") || strings.Contains(l, "error") || strings.Contains(l, "reconnect")
}

// do sends one command and waits for a line starting with done. A line
// reporting an error fails the command (for reads, after the completion
// line, so the next command starts in step).
func (q *qio) do(command, done string) error {
	q.mu.Lock()
	pos := len(q.lines)
	q.mu.Unlock()
	if _, err := io.WriteString(q.in, command+"\n"); err != nil {
		return fmt.Errorf("%s: %q: %w (%v)", q.name, command, errQIOGone, err)
	}
	deadline := time.NewTimer(ioTimeout)
	defer deadline.Stop()
	var bad string
	for {
		q.mu.Lock()
		lines := q.lines[pos:]
		pos = len(q.lines)
		q.mu.Unlock()
		for _, l := range lines {
			switch {
			case strings.HasPrefix(l, done):
				if bad != "" {
					return fmt.Errorf("%s: %q: %s", q.name, command, bad)
				}
				return nil
			case strings.HasPrefix(l, "Pattern verification failed"):
				bad = l
			case isQIOError(l):
				return fmt.Errorf("%s: %q: %s", q.name, command, l)
			}
		}
		select {
		case <-q.notify:
		case <-q.exited:
			q.mu.Lock()
			more := len(q.lines) > pos
			q.mu.Unlock()
			if !more {
				return fmt.Errorf("%s: %q: %w", q.name, command, errQIOGone)
			}
		case <-deadline.C:
			return fmt.Errorf("%s: %q: no answer within %v", q.name, command, ioTimeout)
		}
	}
}

// write writes pattern pat over [off, off+n).
func (q *qio) write(off, n int64, pat byte) error {
	return q.do(fmt.Sprintf("write -P %d %d %d", pat, off, n), fmt.Sprintf("wrote %d/%d bytes at offset %d", n, n, off))
}

// read reads [off, off+n) and checks every byte is pat.
func (q *qio) read(off, n int64, pat byte) error {
	return q.do(fmt.Sprintf("read -P %d %d %d", pat, off, n), fmt.Sprintf("read %d/%d bytes at offset %d", n, n, off))
}

// close ends qemu-io with quit and requires a clean exit without errors.
func (q *qio) close() {
	q.t.Helper()
	io.WriteString(q.in, "quit\n")
	q.in.Close()
	select {
	case <-q.exited:
	case <-time.After(ioTimeout):
		q.kill()
		q.t.Fatalf("%s: qemu-io did not quit within %v", q.name, ioTimeout)
	}
	if f := q.errors(); len(f) > 0 {
		q.t.Errorf("%s: qemu-io on %s reported errors:\n%s", q.name, q.url, strings.Join(f, "\n"))
	}
}

// kill kills qemu-io (kill -9) and waits until its output is drained.
// errors returns the output lines that reported an I/O error.
func (q *qio) errors() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.failed...)
}

// hostWrite is one write of the model: count blocks from block of LUN lun,
// all bytes pat.
type hostWrite struct {
	lun, block, count int
	pat               byte
	issued, acked     time.Time // acked zero: no completion seen
	err               error
}

func (w hostWrite) String() string {
	return fmt.Sprintf("lun%d blocks [%d,+%d) pattern %d", w.lun, w.block, w.count, w.pat)
}

// stream is a serial host: one write at a time, each waiting for its
// acknowledgement, over a fixed set of blocks (disjoint from every other
// stream's), on one qemu-io per LUN. Its goroutine is started by
// runStream and ended by stop.
type stream struct {
	name   string
	qs     []*qio
	blocks [][2]int // (lun, block) the stream may write

	stopc chan struct{}
	done  chan struct{}

	mu  sync.Mutex
	ws  []hostWrite
	seq int
}

// runStream starts a stream writing random blocks of its set with a new
// pattern each time (1..255, never 0 so a write is never all zeros), until
// stop or the first error.
// evenOddBlocks splits the nblocks blocks of one LUN (LUN index 0) into
// the even and the odd ones: two host streams over disjoint block sets.
func evenOddBlocks(nblocks int) (even, odd [][2]int) {
	for b := 0; b < nblocks; b++ {
		if b%2 == 0 {
			even = append(even, [2]int{0, b})
		} else {
			odd = append(odd, [2]int{0, b})
		}
	}
	return even, odd
}

func runStream(name string, seed int64, qs []*qio, blocks [][2]int, firstPat int) *stream {
	s := &stream{name: name, qs: qs, blocks: blocks, stopc: make(chan struct{}), done: make(chan struct{}), seq: firstPat}
	rng := rand.New(rand.NewSource(seed))
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stopc:
				return
			default:
			}
			b := s.blocks[rng.Intn(len(s.blocks))]
			s.mu.Lock()
			pat := byte(s.seq%255 + 1)
			s.seq++
			w := hostWrite{lun: b[0], block: b[1], count: 1, pat: pat, issued: time.Now()}
			s.ws = append(s.ws, w)
			i := len(s.ws) - 1
			s.mu.Unlock()
			err := s.qs[b[0]].write(int64(b[1])*mBlock, mBlock, pat)
			now := time.Now()
			s.mu.Lock()
			if err == nil {
				s.ws[i].acked = now
			} else {
				s.ws[i].err = err
			}
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

// stop ends the stream's goroutine (after its current write) and returns
// its writes.
func (s *stream) stop() []hostWrite {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	<-s.done
	return s.writes()
}

func (s *stream) writes() []hostWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hostWrite(nil), s.ws...)
}

// acked counts the stream's acknowledged writes.
func (s *stream) acked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, w := range s.ws {
		if !w.acked.IsZero() {
			n++
		}
	}
	return n
}

// firstErr is the first write error of the stream (it stops there).
func (s *stream) firstErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.ws {
		if w.err != nil {
			return fmt.Errorf("stream %s: %s: %w", s.name, w, w.err)
		}
	}
	return nil
}

// waitAcked waits until the stream has n more acknowledged writes than now
// (so the host is really writing during what the test does next).
func (s *stream) waitAcked(t testing.TB, n int, what string) {
	t.Helper()
	target := s.acked() + n
	waitFor(t, ioTimeout, fmt.Sprintf("stream %s: %d more acknowledged writes %s", s.name, n, what), func() (bool, string) {
		if err := s.firstErr(); err != nil {
			t.Fatalf("host write failed %s: %v", what, err)
		}
		a := s.acked()
		return a >= target, fmt.Sprintf("%d acknowledged", a)
	})
}

// image is a LUN's content as one value per 64 KiB block: the byte every
// byte of the block holds, or -1 when the block is not uniform.
type image []int

func blocksOf(b []byte) image {
	img := make(image, (len(b)+mBlock-1)/mBlock)
	for i := range img {
		blk := b[i*mBlock : min((i+1)*mBlock, len(b))]
		v := int(blk[0])
		for _, c := range blk {
			if int(c) != v {
				v = -1
				break
			}
		}
		img[i] = v
	}
	return img
}

// readImage reads a whole LUN through iSCSI (qemu-img convert) into a
// model image.
func readImage(t testing.TB, url string) image {
	t.Helper()
	f := filepath.Join(t.TempDir(), "read.img")
	tool(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, f)
	return fileImage(t, f)
}

// fileImage reads a raw file into a model image.
func fileImage(t testing.TB, path string) image {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return blocksOf(b)
}

// apply applies writes (acknowledged or not, as given) to the images.
func apply(imgs []image, ws []hostWrite) {
	for _, w := range ws {
		for b := w.block; b < w.block+w.count; b++ {
			imgs[w.lun][b] = int(w.pat)
		}
	}
}

func cloneImages(imgs []image) []image {
	out := make([]image, len(imgs))
	for i, im := range imgs {
		out[i] = append(image(nil), im...)
	}
	return out
}

// diffImages describes the first few blocks where got differs from want.
func diffImages(want, got []image) string {
	var sb strings.Builder
	n := 0
	for l := range want {
		if len(got[l]) != len(want[l]) {
			fmt.Fprintf(&sb, "lun%d: %d blocks, want %d\n", l, len(got[l]), len(want[l]))
			n++
			continue
		}
		for b := range want[l] {
			if want[l][b] != got[l][b] {
				if n < 8 {
					fmt.Fprintf(&sb, "lun%d block %d (offset %d): got %d, want %d\n", l, b, int64(b)*mBlock, got[l][b], want[l][b])
				}
				n++
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d blocks differ:\n%s", n, sb.String())
}

// cutOf finds how many of a stream's writes (ws, in order) the images
// hold on the stream's blocks: some k such that base + ws[:k] equals got
// on those blocks, with k between the writes acknowledged before from and
// the writes issued before to. A serial stream across several LUNs thus
// proves that they were all switched at one point in its order.
func cutOf(base, got []image, blocks [][2]int, ws []hostWrite, from, to time.Time) (int, error) {
	lo, hi := 0, 0
	for i, w := range ws {
		if !w.acked.IsZero() && w.acked.Before(from) && lo == i {
			lo = i + 1
		}
		if w.issued.Before(to) {
			hi = i + 1
		}
	}
	cur := cloneImages(base)
	apply(cur, ws[:lo])
	match := func() string {
		for _, b := range blocks {
			if cur[b[0]][b[1]] != got[b[0]][b[1]] {
				return fmt.Sprintf("lun%d block %d: got %d, want %d", b[0], b[1], got[b[0]][b[1]], cur[b[0]][b[1]])
			}
		}
		return ""
	}
	var first string
	for k := lo; ; k++ {
		m := match()
		if m == "" {
			return k, nil
		}
		if first == "" {
			first = m
		}
		if k >= hi {
			break
		}
		apply(cur, ws[k:k+1])
	}
	return -1, fmt.Errorf("no prefix of the %d writes between %d (acknowledged before the split began) and %d (issued before it ended) explains the image; at %d: %s", len(ws), lo, hi, lo, first)
}

// writeRef writes a model image as a sparse raw file of size bytes.
func writeRef(t testing.TB, path string, img image, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for b, v := range img {
		if v == 0 {
			continue
		}
		if v < 0 {
			t.Fatalf("writeRef: block %d is not uniform", b)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte(v)}, mBlock), int64(b)*mBlock); err != nil {
			t.Fatal(err)
		}
	}
}

// compareRef checks with `qemu-img compare` that a LUN (or file) equals
// the model image.
func compareRef(t testing.TB, what, url string, img image, size int64) {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref.img")
	writeRef(t, ref, img, size)
	r := runCmd(t, "", nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, url)
	if r.Code != 0 {
		got := readImage(t, url)
		t.Fatalf("qemu-img compare: %s differs from the expected image (%s)\n%s", what, strings.TrimSpace(r.Stdout+r.Stderr), diffImages([]image{img}, []image{got}))
	}
}

// compareFiles checks with `qemu-img compare` that two raw files are equal.
func compareFiles(t testing.TB, what, a, b string) {
	t.Helper()
	r := runCmd(t, "", nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", a, b)
	if r.Code != 0 {
		t.Fatalf("qemu-img compare %s: %s and %s differ: %s\n%s", what, a, b, strings.TrimSpace(r.Stdout+r.Stderr),
			diffImages([]image{fileImage(t, a)}, []image{fileImage(t, b)}))
	}
}

// prefill writes pattern pat over blocks [from, to) of a LUN in large
// writes and records it in img.
func prefill(t testing.TB, q *qio, img image, from, to int, pat byte) {
	t.Helper()
	const step = 64 // blocks = 4 MiB per write
	for b := from; b < to; b += step {
		n := min(step, to-b)
		if err := q.write(int64(b)*mBlock, int64(n)*mBlock, pat); err != nil {
			t.Fatalf("prefill: %v", err)
		}
		for i := b; i < b+n; i++ {
			img[i] = int(pat)
		}
	}
}

// noDrops fails the test if the daemon logged a dropped iSCSI connection
// or a session reinstatement (a host session that did not stay up).
func (d *Daemon) noDrops(t testing.TB) {
	t.Helper()
	if hits := d.logHas("connection dropped", "dropping connection", "reinstating session"); len(hits) > 0 {
		t.Errorf("the daemon logged %d dropped connections / reinstated sessions, e.g.:\n%s", len(hits), hits[0])
	}
}
