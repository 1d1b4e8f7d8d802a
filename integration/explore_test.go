package integration

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestWatchCancelledPair: `migration show SRC --watch` ends with "pair ID
// cancelled" when the watched pair is cancelled, both when the source has
// no other pair on record (the show answers 404) and when it has an older,
// split pair (the show then answers with that one: the watch must not
// report it as the watched pair's end, 100% split).
func TestWatchCancelledPair(t *testing.T) {
	needTools(t, "qemu-io")
	d := StartDaemon(t, "")
	iqn := d.Export("wsrc", "4MiB", 512)
	qemuIOOK(t, d.URL(iqn, 0), "write -P 0x3c 0 4M")
	for _, n := range []string{"w1", "w2", "w3"} {
		d.OK("lun", "create", n, "--size", "4MiB")
	}

	watchThenCancel := func(target string) string {
		t.Helper()
		d.OK("migration", "create", "--source", "wsrc", "--target", target, "--max-mbps", "1")
		id := d.mig("wsrc").ID
		cmd := exec.Command(cliBin, "--admin", d.Admin, "migration", "show", "wsrc", "--watch", "--interval", "100ms")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		lines := make(chan string, 100)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		var out []string
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended before its first line")
			}
			out = append(out, l)
		case <-time.After(cmdTimeout):
			t.Fatalf("watch printed nothing within %v", cmdTimeout)
		}
		d.OK("migration", "cancel", "wsrc")
		timeout := time.After(cmdTimeout)
		for done := false; !done; {
			select {
			case l, ok := <-lines:
				if !ok {
					done = true
					break
				}
				out = append(out, l)
			case <-timeout:
				t.Fatalf("watch still running %v after the cancel: %q", cmdTimeout, out)
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("watch of a cancelled pair: %v (output %q)", err, out)
		}
		last := out[len(out)-1]
		if want := "migration wsrc: pair " + id + " cancelled"; last != want {
			t.Errorf("watch ended with %q, want %q (output %q)", last, want, out)
		}
		return strings.Join(out, "\n")
	}

	watchThenCancel("w1") // no pair of wsrc on record once cancelled

	d.OK("migration", "create", "--source", "wsrc", "--target", "w2", "--speed", "highest")
	d.waitMig("wsrc", cmdTimeout, "synced")
	d.OK("migration", "split", "wsrc")
	if out := watchThenCancel("w3"); strings.Contains(out, " split") {
		t.Errorf("watch of a cancelled pair reported the older split pair:\n%s", out)
	}
}
