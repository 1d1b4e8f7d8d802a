package metavol

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// What a power cut can leave in the meta volume directory that badger does
// not cope with by itself (found with metavol/crashfs; docs/design.md, "How
// durability is tested").

// makeDirDurable creates dir if needed and, when it (or a parent) was
// created, fsyncs the parents so that the directory entry survives a power
// cut: badger fsyncs the files it writes inside dir, never dir's own entry.
func makeDirDurable(dir string) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !os.IsNotExist(err) {
			return err
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range created {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// removeEmptyLogs deletes zero-length memtable logs (*.mem) and value logs
// (*.vlog). badger creates such a file and then ftruncates it to its full
// size; a journal commit between the two and a power cut before the file's
// first sync leave it empty, and badger then refuses to open. An empty file
// holds no entry, so removing it loses nothing. It returns the names
// removed.
func removeEmptyLogs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(n, ".mem") || strings.HasSuffix(n, ".vlog")) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return removed, err
		}
		if fi.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			return removed, err
		}
		removed = append(removed, n)
	}
	if len(removed) > 0 {
		if err := syncDir(dir); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
