package iscsi

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestBenchVsQemuImg compares the remote volume with qemu-img bench
// (libiscsi) on the same Linux tgt LUN: 4 KiB random-ish read/write at
// queue depth 1 and 32 (offsets stepped by 1 MiB + 4 KiB, as scripts/bench
// does) and 1 MiB sequential read/write at depth 8. It prints ops/s and
// the ratio ours/qemu-img (median of LMTGT_BENCH_REPS runs, A,B,A,B).
// A benchmark, not a test: it runs only with LMTGT_INITIATOR_BENCH=1.
func TestBenchVsQemuImg(t *testing.T) {
	if os.Getenv("LMTGT_INITIATOR_BENCH") == "" {
		t.Skip("benchmark: set LMTGT_INITIATOR_BENCH=1 to run it")
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	reps := 3
	if n, err := strconv.Atoi(os.Getenv("LMTGT_BENCH_REPS")); err == nil && n > 0 {
		reps = n
	}
	const size = 256 << 20
	g := startTgt(t, tgtOpts{size: size})
	// pre-fill the backing file: block allocation must not favour one side
	fill := make([]byte, 1<<20)
	for i := range fill {
		fill[i] = byte(i)
	}
	f, err := os.OpenFile(g.backing, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += int64(len(fill)) {
		f.WriteAt(fill, off)
	}
	f.Close()
	v := openT(t, g.url("", ""), Config{})
	url := g.url("", "")
	type bench struct {
		name  string
		bs    int64
		qd    int
		count int
		write bool
		step  int64
	}
	benches := []bench{}
	all := []bench{
		{"4k-read-qd1", 4096, 1, 3000, false, 1<<20 + 4096},
		{"4k-write-qd1", 4096, 1, 3000, true, 1<<20 + 4096},
		{"4k-read-qd32", 4096, 32, 20000, false, 1<<20 + 4096},
		{"4k-write-qd32", 4096, 32, 20000, true, 1<<20 + 4096},
		{"1m-read-qd8", 1 << 20, 8, 512, false, 1 << 20},
		{"1m-write-qd8", 1 << 20, 8, 512, true, 1 << 20},
	}
	for _, b := range all {
		if m := os.Getenv("LMTGT_BENCH_ONLY"); m == "" || regexp.MustCompile(m).MatchString(b.name) {
			benches = append(benches, b)
		}
	}
	re := regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)
	qemu := func(b bench) float64 {
		args := []string{"bench", "-f", "raw", "-t", "none", "-c", strconv.Itoa(b.count), "-s", strconv.FormatInt(b.bs, 10),
			"-d", strconv.Itoa(b.qd), "-S", strconv.FormatInt(b.step, 10)}
		if b.write {
			args = append(args, "-w")
		}
		out, err := exec.Command("qemu-img", append(args, url)...).CombinedOutput()
		m := re.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
		s, _ := strconv.ParseFloat(string(m[1]), 64)
		return float64(b.count) / s
	}
	ours := func(b bench) float64 {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		var failed atomic.Value
		for range b.qd {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, b.bs)
				for {
					i := next.Add(1) - 1
					if i >= int64(b.count) {
						return
					}
					off := (i * b.step) % (size - b.bs) / 4096 * 4096
					var err error
					if b.write {
						_, err = v.WriteAt(buf, off)
					} else {
						_, err = v.ReadAt(buf, off)
					}
					if err != nil {
						failed.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			t.Fatal(err)
		}
		return float64(b.count) / time.Since(start).Seconds()
	}
	// cpu is this process's CPU time (user + system): the initiator's
	// cost, which a loaded machine distorts far less than the rate.
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	median := func(x []float64) float64 { sort.Float64s(x); return x[len(x)/2] }
	var table string
	for _, b := range benches {
		var q, o, c []float64
		for range reps {
			q = append(q, qemu(b))
			c0 := cpu()
			o = append(o, ours(b))
			c = append(c, float64((cpu()-c0).Microseconds())/float64(b.count))
		}
		mq, mo := median(q), median(o)
		unit := "IOPS"
		if b.bs >= 1<<20 {
			unit = "MiB/s"
		}
		table += fmt.Sprintf("%-14s qemu-img %9.0f %-5s  initiator %9.0f %-5s  ratio %.2f  initiator cpu %6.1f us/op\n", b.name, mq, unit, mo, unit, mo/mq, median(c))
	}
	t.Logf("remote volume vs qemu-img bench on the same tgt LUN (median of %d):\n%s", reps, table)
}
