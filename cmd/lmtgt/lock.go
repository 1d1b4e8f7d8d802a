package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockName is the lock file in the data dir: `lmtgt serve` holds an
// exclusive flock on it for as long as it runs, with its PID inside, so a
// second daemon on the same data dir is refused by name ("in use by
// another lmtgt (pid N)") before the meta store's own directory lock is reached.
// The kernel drops the flock when the process dies, so a stale file from
// a killed daemon does not block the next start.
const lockName = "lmtgt.lock"

// errDataDirInUse is returned when another process holds the lock.
var errDataDirInUse = errors.New("in use by another lmtgt")

// dataDirLock is a held lock on a data dir.
type dataDirLock struct{ f *os.File }

// lockDataDir creates dir (mode 0700) if needed and takes its lock.
func lockDataDir(dir string) (*dataDirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: lock file: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			b, _ := os.ReadFile(path)
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				return nil, fmt.Errorf("data dir %s is %w (pid %d)", dir, errDataDirInUse, pid)
			}
			return nil, fmt.Errorf("data dir %s is %w", dir, errDataDirInUse)
		}
		return nil, fmt.Errorf("data dir %s: lock %s: %w", dir, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s: write pid to %s: %w", dir, path, err)
	}
	return &dataDirLock{f: f}, nil
}

// unlock releases the lock (the file stays; its PID is stale but harmless:
// it is read only while someone holds the lock).
func (l *dataDirLock) unlock() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}
