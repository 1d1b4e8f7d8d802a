// Command pcio is the host side of scripts/vm-powercut.sh: it writes
// patterns to a LUN through qemu-io (libiscsi), journals what was issued,
// acknowledged and made durable, and checks a dump of the LUN against that
// journal after a power cut.
//
//	pcio init  -sectors N -state STATE -image IMG
//	pcio write -url URL -state STATE -journal J -seed S [-hot N] [-flush-every N] [-fua-one-in N]
//	pcio check -state STATE -image IMG [-journal J] [-new-state OUT]
//
// The LUN is seen as 512-byte sectors; every write covers 1 to 8 whole
// 4 KiB blocks and fills them with one byte pattern (qemu-io `write -P`).
// STATE holds one byte per sector: what the sector held, verified, when
// the journal began (init fills sector s with 1 + s%251, so a region the
// migration never copied reads as zeros and fails the check). Within one
// journal a sector never gets the same pattern twice, nor its starting
// byte, so the byte a sector holds names the write that put it there.
//
// The durability contract checked is SCSI's with a volatile write cache
// (lmtgt reports WCE=1 in the caching mode page): a write is durable once
// it was acknowledged with FUA, or acknowledged before a SYNCHRONIZE CACHE
// (qemu-io `flush`) that then returned GOOD. After a cut every sector must
// hold the pattern of its last durable write (its starting byte when none)
// or of a later write that was issued (acknowledged or not); never an
// older one (an acknowledged write lost) and never anything else (garbage).
// A write that was not durable may have reached some sectors and not others
// (SCSI gives no atomicity across blocks): each sector is judged alone, and
// blocks holding two patterns are only counted ("torn").
//
// The journal is a text file, one event per line, written (unbuffered)
// when the event happens:
//
//	I SEQ SECTOR COUNT PATTERN FUA   write issued (COUNT sectors)
//	A SEQ                            write acknowledged
//	E SEQ MESSAGE                    write failed
//	F SEQ                            flush issued; SEQ: last acknowledged write
//	D SEQ                            that flush returned GOOD
//	X SEQ MESSAGE                    that flush failed
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

const (
	sectorSize      = 512
	blockSectors    = 8 // a write unit: one 4 KiB block
	maxWriteBlocks  = 8
	firstPattern    = 1
	patternsPerByte = 256
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pcio init|write|check [flags] (see the package doc)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "init":
		err = initCmd(os.Args[2:])
	case "write":
		err = writeCmd(os.Args[2:])
	case "check":
		err = checkCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (init, write, check)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pcio:", err)
		var ce checkError
		if errors.As(err, &ce) {
			os.Exit(1)
		}
		os.Exit(2)
	}
}

// startByte is the byte init puts in sector s.
func startByte(s int) byte { return byte(1 + s%251) }

func initCmd(args []string) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	sectors := fs.Int("sectors", 0, "LUN size in 512-byte sectors (a multiple of 8)")
	state := fs.String("state", "", "state file to write")
	image := fs.String("image", "", "image file to write (the LUN's initial content)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sectors <= 0 || *sectors%blockSectors != 0 || *state == "" || *image == "" {
		return errors.New("init: -sectors (a positive multiple of 8), -state and -image are required")
	}
	st := make([]byte, *sectors)
	for s := range st {
		st[s] = startByte(s)
	}
	if err := os.WriteFile(*state, st, 0o644); err != nil {
		return fmt.Errorf("init: state %s: %w", *state, err)
	}
	f, err := os.Create(*image)
	if err != nil {
		return fmt.Errorf("init: image %s: %w", *image, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, sectorSize)
	for _, b := range st {
		for i := range buf {
			buf[i] = b
		}
		if _, err := w.Write(buf); err != nil {
			f.Close()
			return fmt.Errorf("init: image %s: %w", *image, err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("init: image %s: %w", *image, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("init: image %s: %w", *image, err)
	}
	return nil
}

// ---------------------------------------------------------------- writer

// patternSet is a set of byte patterns.
type patternSet [patternsPerByte / 64]uint64

func (p *patternSet) has(b byte) bool { return p[b/64]&(1<<(b%64)) != 0 }
func (p *patternSet) add(b byte)      { p[b/64] |= 1 << (b % 64) }

// journal appends events to the journal file, one write(2) per line, so a
// line is in the file as soon as the event happened.
type journal struct{ f *os.File }

func (j journal) event(format string, a ...any) error {
	if _, err := fmt.Fprintf(j.f, format+"\n", a...); err != nil {
		return fmt.Errorf("journal %s: %w", j.f.Name(), err)
	}
	return nil
}

const prompt = "qemu-io> "

// qemuIO is one qemu-io process reading commands from a pipe. qemu-io
// reads its input through a stdio buffer, so a command sent before the
// previous one finished may wait unread: send one command at a time and
// wait for the prompt that follows it (the only sign a flush gives).
type qemuIO struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	log io.Writer
}

func startQemuIO(url string, log io.Writer) (*qemuIO, error) {
	// -t none: cache.direct=on, cache.writeback=on. The default
	// (writethrough) would flush after every write and make every
	// acknowledged write durable, which tests nothing.
	cmd := exec.Command("qemu-io", "-f", "raw", "-t", "none", url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("qemu-io %s: %w", url, err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("qemu-io %s: %w", url, err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("qemu-io %s: %w", url, err)
	}
	pw.Close()
	q := &qemuIO{cmd: cmd, in: in, out: bufio.NewReader(pr), log: log}
	lines, err := q.untilPrompt()
	if err != nil {
		return nil, fmt.Errorf("qemu-io %s: %w (%s)", url, err, strings.Join(lines, "; "))
	}
	for _, l := range lines {
		fmt.Fprintln(log, "qemu-io:", l)
	}
	return q, nil
}

// untilPrompt returns the output lines up to the next prompt.
func (q *qemuIO) untilPrompt() ([]string, error) {
	var lines []string
	var cur []byte
	for {
		b, err := q.out.ReadByte()
		if err != nil {
			if len(cur) > 0 {
				lines = append(lines, string(cur))
			}
			return lines, errors.New("qemu-io exited")
		}
		if b == '\n' {
			if l := strings.TrimSpace(string(cur)); l != "" {
				lines = append(lines, l)
			}
			cur = cur[:0]
			continue
		}
		cur = append(cur, b)
		if len(cur) == len(prompt) && string(cur) == prompt {
			return lines, nil
		}
	}
}

// run sends one command and returns its output lines.
func (q *qemuIO) run(command string) ([]string, error) {
	if _, err := io.WriteString(q.in, command+"\n"); err != nil {
		return nil, fmt.Errorf("qemu-io input: %w", err)
	}
	return q.untilPrompt()
}

// write runs one write; ok false with the message when qemu-io reports a
// failure.
func (q *qemuIO) write(off, n int64, pat byte, fua bool) (bool, string, error) {
	f := ""
	if fua {
		f = "-f "
	}
	lines, err := q.run(fmt.Sprintf("write %s-P %d %d %d", f, pat, off, n))
	if err != nil {
		return false, "", err
	}
	want := fmt.Sprintf("wrote %d/%d bytes at offset %d", n, n, off)
	for _, l := range lines {
		if l == want {
			return true, "", nil
		}
	}
	return false, strings.Join(lines, "; "), nil
}

// flush runs flush: nothing printed means it returned GOOD.
func (q *qemuIO) flush() (bool, string, error) {
	lines, err := q.run("flush")
	if err != nil {
		return false, "", err
	}
	return len(lines) == 0, strings.Join(lines, "; "), nil
}

func writeCmd(args []string) error {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	url := fs.String("url", "", "iscsi:// URL of the LUN")
	state := fs.String("state", "", "state file (the LUN's verified content, one byte per sector)")
	jpath := fs.String("journal", "", "journal file to create")
	seed := fs.Uint64("seed", 1, "random seed")
	hot := fs.Int("hot", 256, "4 KiB blocks at the start of the LUN that get half of the writes")
	flushEvery := fs.Int("flush-every", 16, "a flush after 1 to 2*N writes")
	fuaOneIn := fs.Int("fua-one-in", 8, "one write in N is sent with FUA (0: none)")
	max := fs.Int("max", 0, "stop after this many writes (0: until killed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *state == "" || *jpath == "" {
		return errors.New("write: -url, -state and -journal are required")
	}
	st, err := os.ReadFile(*state)
	if err != nil {
		return fmt.Errorf("write: state: %w", err)
	}
	if len(st) == 0 || len(st)%blockSectors != 0 {
		return fmt.Errorf("write: state %s: %d sectors, not a positive multiple of %d", *state, len(st), blockSectors)
	}
	jf, err := os.OpenFile(*jpath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("write: journal: %w", err)
	}
	defer jf.Close()
	j := journal{jf}
	q, err := startQemuIO(*url, os.Stderr)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	// SIGTERM (the harness, after the cut): the journal is complete up to
	// here; stop qemu-io and leave.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		_ = q.cmd.Process.Kill()
		os.Exit(0)
	}()

	r := rand.New(rand.NewPCG(*seed, 0x7063696f))
	blocks := len(st) / blockSectors
	hotBlocks := min(*hot, blocks)
	used := make(map[int]*patternSet)
	usedAt := func(s int) *patternSet {
		p := used[s]
		if p == nil {
			p = new(patternSet)
			p.add(st[s])
			used[s] = p
		}
		return p
	}
	var seq, lastAcked, sinceFlush int
	nextFlush := 1 + r.IntN(2**flushEvery)
	for *max == 0 || seq < *max {
		b := r.IntN(blocks)
		if r.IntN(2) == 0 {
			b = r.IntN(hotBlocks)
		}
		nb := min(1+r.IntN(maxWriteBlocks), blocks-b)
		s0, ns := b*blockSectors, nb*blockSectors
		pat, found := byte(0), false
		for try := 0; try < 32 && !found; try++ {
			pat = byte(firstPattern + r.IntN(patternsPerByte-firstPattern))
			found = true
			for s := s0; s < s0+ns; s++ {
				if usedAt(s).has(pat) {
					found = false
					break
				}
			}
		}
		if !found {
			continue
		}
		for s := s0; s < s0+ns; s++ {
			usedAt(s).add(pat)
		}
		fua := *fuaOneIn > 0 && r.IntN(*fuaOneIn) == 0
		seq++
		if err := j.event("I %d %d %d %d %t", seq, s0, ns, pat, fua); err != nil {
			return err
		}
		ok, msg, err := q.write(int64(s0)*sectorSize, int64(ns)*sectorSize, pat, fua)
		if err != nil {
			return fmt.Errorf("write %d: %w", seq, err)
		}
		if !ok {
			if err := j.event("E %d %s", seq, msg); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "pcio: write %d failed: %s\n", seq, msg)
			continue
		}
		if err := j.event("A %d", seq); err != nil {
			return err
		}
		lastAcked = seq
		if sinceFlush++; sinceFlush >= nextFlush {
			sinceFlush, nextFlush = 0, 1+r.IntN(2**flushEvery)
			if err := j.event("F %d", lastAcked); err != nil {
				return err
			}
			ok, msg, err := q.flush()
			if err != nil {
				return fmt.Errorf("flush after write %d: %w", seq, err)
			}
			if !ok {
				if err := j.event("X %d %s", lastAcked, msg); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "pcio: flush after write %d failed: %s\n", lastAcked, msg)
				continue
			}
			if err := j.event("D %d", lastAcked); err != nil {
				return err
			}
		}
	}
	// -max reached: one last flush, then a clean end.
	if err := j.event("F %d", lastAcked); err != nil {
		return err
	}
	if ok, msg, err := q.flush(); err != nil || !ok {
		return fmt.Errorf("final flush: %s %v", msg, err)
	}
	if err := j.event("D %d", lastAcked); err != nil {
		return err
	}
	q.in.Close()
	return q.cmd.Wait()
}

// ---------------------------------------------------------------- checker

// write is one journaled write.
type write struct {
	seq, sector, count int
	pat                byte
	fua, acked, failed bool
}

// journalLog is a parsed journal.
type journalLog struct {
	writes     []*write // in issue order
	durableSeq int      // every acknowledged write up to this seq is durable
	flushes    int      // flushes that returned GOOD
	errors     []string // failed writes and flushes
}

func (w *write) durable(l *journalLog) bool { return w.acked && (w.fua || w.seq <= l.durableSeq) }

func parseJournal(r io.Reader) (*journalLog, error) {
	l := &journalLog{}
	bySeq := map[int]*write{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		bad := func() error { return fmt.Errorf("journal line %d: %q", n, sc.Text()) }
		if len(f) < 2 {
			continue // a line cut short by the kill: the event did not happen
		}
		seq, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, bad()
		}
		switch f[0] {
		case "I":
			if len(f) != 6 {
				continue // cut short
			}
			s, e1 := strconv.Atoi(f[2])
			c, e2 := strconv.Atoi(f[3])
			p, e3 := strconv.Atoi(f[4])
			fua, e4 := strconv.ParseBool(f[5])
			if e1 != nil || e2 != nil || e3 != nil || e4 != nil || p < 0 || p > 255 {
				return nil, bad()
			}
			w := &write{seq: seq, sector: s, count: c, pat: byte(p), fua: fua}
			l.writes = append(l.writes, w)
			bySeq[seq] = w
		case "A":
			w := bySeq[seq]
			if w == nil {
				return nil, bad()
			}
			w.acked = true
		case "E":
			if w := bySeq[seq]; w != nil {
				w.failed = true
			}
			l.errors = append(l.errors, sc.Text())
		case "F":
		case "D":
			l.flushes++
			l.durableSeq = max(l.durableSeq, seq)
		case "X":
			l.errors = append(l.errors, sc.Text())
		default:
			return nil, bad()
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return l, nil
}

// checkError is a data check failure (exit 1), as opposed to a harness
// problem (exit 2).
type checkError struct{ msg string }

func (e checkError) Error() string { return e.msg }

// report is the outcome of one check.
type report struct {
	issued, acked, durable int
	sectorsWritten         int // sectors some write of the journal touched
	durableSectors         int // of those, sectors with a durable write
	newerThanDurable       int // sectors holding a write later than their last durable one
	torn                   int // 4 KiB blocks holding more than one pattern
	lost, garbage          int
	problems               []string
}

// check judges image (the LUN's content) against the starting state st and
// the journal; it returns the state to start the next journal from.
func check(st, image []byte, l *journalLog) (report, []byte) {
	var rep report
	ns := len(st)
	next := make([]byte, ns)
	from := make([]int, ns) // seq of the write a sector holds (0: its starting byte)
	hist := map[int][]*write{}
	for _, w := range l.writes {
		rep.issued++
		if w.acked {
			rep.acked++
		}
		if w.durable(l) {
			rep.durable++
		}
		for s := w.sector; s < w.sector+w.count && s < ns; s++ {
			hist[s] = append(hist[s], w)
		}
	}
	problem := func(kind *int, format string, a ...any) {
		*kind++
		if len(rep.problems) < 20 {
			rep.problems = append(rep.problems, fmt.Sprintf(format, a...))
		}
	}
	for s := 0; s < ns; s++ {
		sec := image[s*sectorSize : (s+1)*sectorSize]
		v := sec[0]
		uniform := true
		for _, b := range sec {
			if b != v {
				uniform = false
				break
			}
		}
		next[s] = v
		h := hist[s]
		if len(h) > 0 {
			rep.sectorsWritten++
		}
		if !uniform {
			problem(&rep.garbage, "sector %d (offset %d): not one pattern (starts %#02x); writes %s", s, s*sectorSize, v, describe(h, l))
			continue
		}
		d := -1 // index in h of the last durable write
		for i, w := range h {
			if w.durable(l) {
				d = i
			}
		}
		if d >= 0 {
			rep.durableSectors++
		}
		ok := false
		if d < 0 && v == st[s] {
			ok = true
		}
		for i := max(d, 0); i < len(h) && !ok; i++ {
			if h[i].pat == v {
				ok = true
				from[s] = h[i].seq
				if i > d && d >= 0 {
					rep.newerThanDurable++
				}
			}
		}
		if ok {
			continue
		}
		older := v == st[s]
		for i := 0; i < d && !older; i++ {
			older = h[i].pat == v
		}
		if older {
			problem(&rep.lost, "sector %d (offset %d): ACKNOWLEDGED WRITE LOST: holds %#02x from before durable write %d (pattern %#02x); writes %s",
				s, s*sectorSize, v, h[d].seq, h[d].pat, describe(h, l))
		} else {
			problem(&rep.garbage, "sector %d (offset %d): holds %#02x, which no write of it had (start %#02x); writes %s",
				s, s*sectorSize, v, st[s], describe(h, l))
		}
	}
	for b := 0; b < ns/blockSectors; b++ {
		for s := b * blockSectors; s < (b+1)*blockSectors-1; s++ {
			if from[s] != from[s+1] {
				rep.torn++
				break
			}
		}
	}
	return rep, next
}

// describe lists a sector's writes: seq:pattern/flags, a (acknowledged) d
// (durable) f (FUA) e (failed).
func describe(h []*write, l *journalLog) string {
	if len(h) == 0 {
		return "none"
	}
	var parts []string
	for _, w := range h {
		flags := ""
		if w.acked {
			flags += "a"
		}
		if w.durable(l) {
			flags += "d"
		}
		if w.fua {
			flags += "f"
		}
		if w.failed {
			flags += "e"
		}
		parts = append(parts, fmt.Sprintf("%d:%#02x/%s", w.seq, w.pat, flags))
	}
	if len(parts) > 8 {
		parts = append(parts[:3], append([]string{"..."}, parts[len(parts)-4:]...)...)
	}
	return strings.Join(parts, " ")
}

func checkCmd(args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	state := fs.String("state", "", "state file the journal started from")
	image := fs.String("image", "", "dump of the LUN")
	jpath := fs.String("journal", "", "journal (none: the LUN must equal the state)")
	newState := fs.String("new-state", "", "write the verified content here (for the next journal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := os.ReadFile(*state)
	if err != nil {
		return fmt.Errorf("check: state: %w", err)
	}
	img, err := os.ReadFile(*image)
	if err != nil {
		return fmt.Errorf("check: image: %w", err)
	}
	if len(img) != len(st)*sectorSize {
		return checkError{fmt.Sprintf("check: image %s has %d bytes, want %d (%d sectors)", *image, len(img), len(st)*sectorSize, len(st))}
	}
	l := &journalLog{}
	if *jpath != "" {
		f, err := os.Open(*jpath)
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		l, err = parseJournal(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("check: %s: %w", *jpath, err)
		}
	}
	rep, next := check(st, img, l)
	sort.Strings(l.errors)
	fmt.Printf("writes issued %d, acknowledged %d, durable %d (flushes %d, I/O errors %d); sectors written %d, with a durable write %d, newer than durable %d; torn blocks %d; LOST %d, GARBAGE %d\n",
		rep.issued, rep.acked, rep.durable, l.flushes, len(l.errors), rep.sectorsWritten, rep.durableSectors,
		rep.newerThanDurable, rep.torn, rep.lost, rep.garbage)
	for _, e := range l.errors {
		fmt.Println("  io error:", e)
	}
	for _, p := range rep.problems {
		fmt.Println("  " + p)
	}
	if *newState != "" {
		if err := os.WriteFile(*newState, next, 0o644); err != nil {
			return fmt.Errorf("check: new state: %w", err)
		}
	}
	if rep.lost > 0 || rep.garbage > 0 {
		return checkError{fmt.Sprintf("%d sectors lost an acknowledged write, %d hold garbage", rep.lost, rep.garbage)}
	}
	return nil
}
