package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestWriteGolden renders a fixed snapshot and compares it with
// testdata/snapshot.golden byte for byte.
func TestWriteGolden(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	snap := Snapshot{
		Version: "1.2.3",
		Targets: []target.TargetStats{{IQN: "iqn.2026-11.org.lmtgt:a", Sessions: 2}, {IQN: "iqn.2026-11.org.lmtgt:b"}},
		Logins:  iscsi.LoginStats{Normal: 7, Discovery: 3, Failures: 1},
		LUNs: []LUN{
			{Name: "db", ID: "0001", SizeBytes: 1 << 30, IO: target.LUNStats{Reads: 10, Writes: 20, Unmaps: 1, Syncs: 2, ReadBytes: 40960, WrittenBytes: 81920}},
			{Name: `odd"name\x`, ID: "0002", SizeBytes: 4096},
		},
		Pairs: []lm.PairStatus{
			// An older, split pair of the same names: replaced by the newer one.
			{Source: "db", Target: "db-new", State: "split", Created: t0, SplitPauseMS: 12.5, CopiedBytes: 1 << 30, DoneBytes: 1 << 30, TotalBytes: 1 << 30},
			{Source: "db", Target: "db-new", State: "copying", Created: t0.Add(time.Hour), CopiedBytes: 1 << 20, DoneBytes: 1 << 20, TotalBytes: 1 << 30, DCLBytes: 65536, RateBps: 52428800},
			{Source: "logs", Target: "logs-new", State: "split", Created: t0, SplitPauseMS: 3.25, CopiedBytes: 4096, DoneBytes: 4096, TotalBytes: 4096},
		},
	}
	var buf bytes.Buffer
	if err := Write(&buf, snap); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "snapshot.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("output differs from %s:\n%s", golden, buf.String())
	}
}

// TestWriteEmpty: with nothing configured every family still has its HELP
// and TYPE lines and the unlabelled series.
func TestWriteEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, Snapshot{Version: "dev"}); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"# TYPE lmtgt_build_info gauge\nlmtgt_build_info{version=\"dev\"} 1\n",
		"# TYPE lmtgt_iscsi_sessions gauge\n",
		"lmtgt_iscsi_login_failures_total 0\n",
		"# TYPE lmtgt_lun_read_ops_total counter\n",
		"# TYPE lmtgt_migration_state gauge\n",
	} {
		if !bytes.Contains(buf.Bytes(), []byte(line)) {
			t.Errorf("missing %q in\n%s", line, buf.String())
		}
	}
}
