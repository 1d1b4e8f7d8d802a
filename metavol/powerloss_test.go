package metavol_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/rs/zerolog"
)

// TestEmptyLogFileAfterPowerCut: badger creates each memtable log
// (NNNNN.mem) and value log (NNNNNN.vlog) with open(O_CREAT), then
// ftruncates it to its full size; on ext4 or xfs a journal commit between
// the two (any fsync on the file system, or the commit timer) followed by
// a power cut before the file's first sync leaves it zero-length. badger
// v4.9.6 then refuses to open ("Create a new file"), though such a file
// holds nothing. Found with metavol/crashfs (an image where a journal
// commit made the create durable but not the size). metavol.Open removes
// zero-length .mem and .vlog files before opening badger.
func TestEmptyLogFileAfterPowerCut(t *testing.T) {
	for _, name := range []string{"00002.mem", "000002.vlog"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "meta")
			db, err := metavol.Open(dir, metavol.Options{Log: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *metavol.Tx) error { return tx.PutMeta("acked", []byte("1")) }); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			// What the power cut leaves: the next log file, created, empty.
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			db, err = metavol.Open(dir, metavol.Options{Log: zerolog.Nop()})
			if err != nil {
				t.Fatalf("the meta volume does not open after a power cut left an empty %s: %v", name, err)
			}
			defer db.Close()
			var v []byte
			if err := db.View(func(tx *metavol.Tx) error { v, err = tx.GetMeta("acked"); return err }); err != nil || string(v) != "1" {
				t.Fatalf("acked record after reopening: %q, %v", v, err)
			}
		})
	}
}
