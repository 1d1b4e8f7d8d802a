package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/lm/histogram"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// render gathers lmtgt's own families (no go_/process_: they vary) from
// a fixed snapshot and encodes them in the text format.
func render(t *testing.T, snap Snapshot) []byte {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(func() (Snapshot, error) { return snap, nil }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("encode %s: %v", mf.GetName(), err)
		}
	}
	return buf.Bytes()
}

// TestCollectGolden renders a fixed snapshot and compares it with
// testdata/snapshot.golden byte for byte.
func TestCollectGolden(t *testing.T) {
	got := render(t, goldenSnapshot())
	golden := filepath.Join("testdata", "snapshot.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s:\n%s", golden, got)
	}
}

// goldenSnapshot has something in every family.
func goldenSnapshot() Snapshot {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lat := histogram.New(histogram.LatencyBounds())
	lat.Observe(80 * time.Microsecond)
	lat.Observe(3 * time.Millisecond)
	pauses := histogram.New(histogram.PauseBounds())
	pauses.Observe(1500 * time.Microsecond)
	dbIO := target.LUNStats{Reads: 10, Writes: 20, Unmaps: 1, Syncs: 2, ReadBytes: 40960, WrittenBytes: 81920}
	dbIO.Latency[target.OpRead] = lat.Snapshot()
	dbIO.Errors[target.OpWrite] = 3
	snap := Snapshot{
		Version: "1.2.3",
		Targets: []target.TargetStats{{IQN: "iqn.2026-11.org.lmtgt:a", Sessions: 2}, {IQN: "iqn.2026-11.org.lmtgt:b"}},
		Sessions: []iscsi.SessionInfo{
			{Target: "iqn.2026-11.org.lmtgt:a", Initiator: "iqn.1994-05.com.redhat:h1", ISID: "000000000001"},
			{Target: "iqn.2026-11.org.lmtgt:a", Initiator: "iqn.1994-05.com.redhat:h1", ISID: "000000000002"},
			{Initiator: "iqn.1994-05.com.redhat:h2", Discovery: true},
		},
		Logins:   iscsi.LoginStats{Normal: 7, Discovery: 3, Failures: 1},
		ZeroCopy: iscsi.ZeroCopyStats{Reads: 5, Bytes: 5 << 20, Copied: 2},
		IdlePoll: iscsi.IdlePollStats{Caught: 90, Missed: 3, Refused: 1, OthersActive: 4},
		LUNs: []LUN{
			{Name: "db", ID: "0001", SizeBytes: 1 << 30, IO: dbIO},
			{Name: `odd"name\x`, ID: "0002", SizeBytes: 4096},
		},
		Pairs: []lm.PairCounters{
			{ID: "p1", Source: "db", Target: "db-new", State: "copying", Created: t0, DoneBytes: 1 << 20,
				SizeBytes: 1 << 30, DCLBytes: 65536, CopiedBytes: 512 << 10, RecopiedBytes: 8192},
			{ID: "p2", Source: "logs", Target: "logs-new", State: lm.PairOffline, Created: t0},
		},
		Splits: lm.SplitStats{Pauses: pauses.Snapshot(), Deferrals: 2},
	}
	return snap
}

// TestCollectEmpty: with nothing configured the unlabelled families are
// there, and no LUN, session or pair series.
func TestCollectEmpty(t *testing.T) {
	out := render(t, Snapshot{Version: "dev", Splits: lm.SplitStats{Pauses: histogram.New(histogram.PauseBounds()).Snapshot()}})
	for _, line := range []string{
		"# TYPE lmtgt_build_info gauge\nlmtgt_build_info{version=\"dev\"} 1\n",
		"lmtgt_iscsi_login_failures_total 0\n",
		"lmtgt_iscsi_discovery_sessions 0\n",
		"lmtgt_split_pause_seconds_count 0\n",
		"lmtgt_split_deferrals_total 0\n",
	} {
		if !bytes.Contains(out, []byte(line)) {
			t.Errorf("missing %q in\n%s", line, out)
		}
	}
	for _, absent := range []string{"lmtgt_lun_", "lmtgt_migration_", "lmtgt_iscsi_sessions"} {
		if bytes.Contains(out, []byte(absent)) {
			t.Errorf("%s series without LUNs, pairs or sessions:\n%s", absent, out)
		}
	}
}
