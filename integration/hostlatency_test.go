package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fioRun is what one fio run measured.
type fioRun struct {
	IOPS float64
	P50  time.Duration
	P99  time.Duration
}

func (r fioRun) String() string {
	return fmt.Sprintf("%.0f IOPS, p50 %.2f ms, p99 %.2f ms", r.IOPS, ms(r.P50), ms(r.P99))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startFio starts fio (4 KiB random writes, QD8, its nbd engine) on the
// qemu-nbd socket for ramp+run and returns once fio is connected (its
// I/O starts right after), with a wait for its result.
func startFio(t *testing.T, sock string, ramp, run time.Duration) (wait func() fioRun) {
	t.Helper()
	cmd := exec.Command("fio", "--name=host", "--ioengine=nbd", "--uri=nbd+unix:///?socket="+sock,
		"--rw=randwrite", "--bs=4k", "--iodepth=8", "--time_based",
		fmt.Sprintf("--ramp_time=%d", int(ramp.Seconds())), fmt.Sprintf("--runtime=%d", int(run.Seconds())),
		"--output-format=json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fio: %v", err)
	}
	connected := make(chan struct{})
	var body bytes.Buffer
	read := make(chan struct{})
	go func() { // owned by the returned wait: ends at EOF
		defer close(read)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			if !seen && strings.Contains(line, "connected to NBD server") {
				seen = true
				close(connected)
				continue
			}
			body.WriteString(line + "\n")
		}
		if !seen {
			close(connected)
		}
	}()
	done := false
	t.Cleanup(func() {
		if !done {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	select {
	case <-connected:
	case <-time.After(cmdTimeout):
		t.Fatalf("fio did not connect to %s within %v", sock, cmdTimeout)
	}
	return func() fioRun {
		t.Helper()
		<-read
		err := cmd.Wait()
		done = true
		if err != nil {
			t.Fatalf("fio: %v\n%s\n%s", err, stderr.String(), body.String())
		}
		js := body.Bytes()
		if i := bytes.IndexByte(js, '{'); i > 0 {
			js = js[i:]
		}
		var res struct {
			Jobs []struct {
				Write struct {
					IOPS float64 `json:"iops"`
					Clat struct {
						Percentile map[string]float64 `json:"percentile"`
					} `json:"clat_ns"`
				} `json:"write"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal(js, &res); err != nil || len(res.Jobs) != 1 {
			t.Fatalf("fio output: %v\n%s", err, body.String())
		}
		w := res.Jobs[0].Write
		return fioRun{IOPS: w.IOPS, P50: time.Duration(w.Clat.Percentile["50.000000"]),
			P99: time.Duration(w.Clat.Percentile["99.000000"])}
	}
}

// TestHostLatencyGuardFio: a host runs fio (4 KiB random writes, QD8,
// through qemu-nbd on a unix socket and QEMU's libiscsi driver) on the
// source LUN; its p99 is measured with no migration, with a migration at
// speed highest without a bound, and with --max-host-latency 2ms. The
// bounded copy keeps the host p99 within 1.5x of the baseline and still
// progresses; the unbounded one does not keep it. The figures are logged.
// The baseline and the bounded run are measured again, once, when the
// first pair of runs misses the 1.5x (another process's burst on this
// shared machine).
func TestHostLatencyGuardFio(t *testing.T) {
	if testing.Short() {
		t.Skip("moves GiBs and runs fio for 20 s")
	}
	needTools(t, "qemu-nbd", "fio")
	const size = 3 << 30
	d := StartDaemon(t, "")
	dir, err := os.MkdirTemp("", "lmtgt-lat-") // short: the socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// A source full of data (holes would cost the copy nothing).
	src := filepath.Join(dir, "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d.OK("lun", "create", "src", "--path", src)
	iqn := d.exportLUN("src")
	d.OK("lun", "create", "dst", "--size", fmt.Sprint(size))

	sock := filepath.Join(dir, "nbd.sock")
	nbd := exec.Command("qemu-nbd", "-f", "raw", "--cache=none", "-t", "-k", sock, d.URL(iqn, 0))
	nbdOut := &lockedBuffer{} // qemu-nbd writes while the wait reads
	nbd.Stdout, nbd.Stderr = nbdOut, nbdOut
	if err := nbd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nbd.Process.Kill()
		nbd.Wait()
	})
	waitFor(t, cmdTimeout, "qemu-nbd socket", func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err, " ", nbdOut.String())
	})

	const ramp, run = time.Second, 5 * time.Second
	measure := func(what string, args ...string) (fioRun, int64, int64, string) {
		t.Helper()
		wait := startFio(t, sock, ramp, run)
		var before, after int64
		var throttle string
		if len(args) > 0 {
			// The migration starts while the host is busy, as an admin
			// would start it.
			d.OK(append([]string{"migration", "create", "--source", "src", "--target", "dst", "--vehicle", "generic"}, args...)...)
			before = d.mig("src").DoneBytes
		}
		r := wait()
		if len(args) > 0 {
			st := d.mig("src")
			after, throttle = st.DoneBytes, st.Throttle
			if st.State != "copying" {
				t.Logf("%s: the copy ended before fio did (%s): the measure covers part of it", what, migString(st))
			}
			d.OK("migration", "cancel", "src")
		}
		t.Logf("%s: %s; copy progress during the run %d MiB (%s)", what, r, (after-before)>>20, throttle)
		return r, before, after, throttle
	}
	// Baseline and bounded side by side; on this shared machine a burst
	// of another process's load can spoil one pair of runs: then the pair
	// is measured again, once.
	var base, bnd fioRun
	var b0, b1 int64
	var why string
	for attempt := 1; attempt <= 2; attempt++ {
		base, _, _, _ = measure("no migration")
		bnd, b0, b1, why = measure("migration, --max-host-latency 2ms", "--speed", "highest", "--max-host-latency", "2ms")
		if float64(bnd.P99) <= 1.5*float64(base.P99) {
			break
		}
		t.Logf("attempt %d: bounded p99 %.2fx the baseline", attempt, float64(bnd.P99)/float64(base.P99))
	}
	unb, u0, u1, _ := measure("migration, highest, no bound", "--speed", "highest")
	t.Logf("p99 ratios to the baseline: bounded %.2fx, unbounded %.2fx; copy progress bounded %d MiB, unbounded %d MiB",
		float64(bnd.P99)/float64(base.P99), float64(unb.P99)/float64(base.P99), (b1-b0)>>20, (u1-u0)>>20)
	if b1 <= b0 {
		t.Errorf("bounded copy made no progress during the run (%d -> %d)", b0, b1)
	}
	if !strings.HasPrefix(why, "held back") && !strings.Contains(why, "full speed") {
		t.Errorf("bounded copy: throttle %q does not say what the guard does", why)
	}
	if float64(bnd.P99) > 1.5*float64(base.P99) {
		t.Errorf("bounded: host p99 %.2f ms > 1.5x the baseline %.2f ms", ms(bnd.P99), ms(base.P99))
	}
	if float64(unb.P99) <= 1.5*float64(base.P99) {
		t.Errorf("unbounded: host p99 %.2f ms within 1.5x the baseline %.2f ms: the test does not load the host", ms(unb.P99), ms(base.P99))
	}
}
