package metavol

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

const crashEnv = "METAVOL_CRASH_CHILD_DIR"

// crashWriters is how many goroutines of the child commit concurrently.
const crashWriters = 3

// TestCrashChild is the child of TestCrashDurability: it commits Updates in
// a loop, printing "ack ROUND WRITER SEQ" after each one returns, until it
// is killed. It does nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashDurability")
	}
	round := os.Getenv(crashEnv + "_ROUND")
	db, err := Open(dir, Options{Log: zerolog.Nop()})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				name := fmt.Sprintf("r%s-w%d-%d", round, w, seq)
				l := LUN{ID: NewID(), Name: name, Size: int64(seq), VolumeID: NewID()}
				err := db.Update(func(tx *Tx) error {
					if err := tx.PutVolume(Volume{ID: l.VolumeID, Path: name}); err != nil {
						return err
					}
					if err := tx.PutLUN(l); err != nil {
						return err
					}
					return tx.PutMeta(fmt.Sprintf("last-r%s-w%d", round, w), []byte(strconv.Itoa(seq)))
				})
				if err != nil {
					fmt.Println("update failed:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Printf("ack %s %d %d\n", round, w, seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashDurability kills a child process committing Updates with SIGKILL
// at a random moment, reopens the DB, and checks that every Update that
// returned before the kill is there, whole. Three rounds on one DB.
func TestCrashDurability(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("child")
	}
	dir := t.TempDir()
	for round := range 3 {
		killAfter := 20 + rand.IntN(200)
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, fmt.Sprintf("%s_ROUND=%d", crashEnv, round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[[2]int]bool{} // {writer, seq}
		sc := bufio.NewScanner(out)
		killed := false
		for sc.Scan() {
			line := sc.Text()
			var r, w, seq int
			if _, err := fmt.Sscanf(line, "ack %d %d %d", &r, &w, &seq); err != nil {
				if strings.HasPrefix(line, "ok") || strings.HasPrefix(line, "PASS") {
					continue
				}
				t.Errorf("child: %s", line)
				continue
			}
			acked[[2]int{w, seq}] = true
			if len(acked) == killAfter && !killed {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child ended before the kill: %v", round, err)
		}
		t.Logf("round %d: killed after %d acknowledged updates (%d read in all)", round, killAfter, len(acked))

		db, err := Open(dir, Options{Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		err = db.View(func(tx *Tx) error {
			for k := range acked {
				name := fmt.Sprintf("r%d-w%d-%d", round, k[0], k[1])
				l, err := tx.LUNByName(name)
				if err != nil {
					return fmt.Errorf("acknowledged update lost: %w", err)
				}
				if _, err := tx.GetVolume(l.VolumeID); err != nil {
					return fmt.Errorf("lun %s without its volume: %w", name, err)
				}
			}
			// Every committed LUN, acknowledged or not, is whole.
			ls, err := tx.LUNs()
			if err != nil {
				return err
			}
			for _, l := range ls {
				if _, err := tx.GetVolume(l.VolumeID); err != nil {
					return fmt.Errorf("lun %s committed without its volume: %w", l.Name, err)
				}
				if got, err := tx.LUNByName(l.Name); err != nil || got.ID != l.ID {
					return fmt.Errorf("lun %s: name index broken: %v", l.Name, err)
				}
			}
			return nil
		})
		if cerr := db.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// TestConcurrentUpdates: concurrent read-modify-write Updates of one key
// conflict; Update retries them so no increment is lost.
func TestConcurrentUpdates(t *testing.T) {
	db, _ := openTestDB(t)
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := db.Update(func(tx *Tx) error {
					b, err := tx.GetMeta("counter")
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(string(b))
					return tx.PutMeta("counter", []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	db.View(func(tx *Tx) error {
		b, err := tx.GetMeta("counter")
		n, _ = strconv.Atoi(string(b))
		return err
	})
	if n != workers*each {
		t.Fatalf("counter %d, want %d", n, workers*each)
	}
}
