package metrics

import (
	"bufio"
	"io"
	"strconv"
	"strings"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// ContentType is the Content-Type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// LUN is one LUN as the metrics see it.
type LUN struct {
	Name      string
	ID        string
	SizeBytes int64
	// IO holds the LUN's I/O counters; zero when the LUN is not mapped.
	IO target.LUNStats
}

// Snapshot is everything one scrape reports.
type Snapshot struct {
	Version string
	Targets []target.TargetStats
	Logins  iscsi.LoginStats
	LUNs    []LUN
	Pairs   []lm.PairStatus
}

// Write renders s in the Prometheus text format.
func Write(w io.Writer, s Snapshot) error {
	b := bufio.NewWriter(w)
	e := enc{b: b}

	e.family("lmtgt_build_info", "gauge", "lmtgt build information; the value is always 1.")
	e.sample("lmtgt_build_info", labels{"version", s.Version}, "1")

	e.family("lmtgt_iscsi_sessions", "gauge", "iSCSI normal sessions logged in, by target.")
	for _, t := range s.Targets {
		e.sample("lmtgt_iscsi_sessions", labels{"target", t.IQN}, itoa(int64(t.Sessions)))
	}
	e.family("lmtgt_iscsi_logins_total", "counter", "iSCSI logins that reached full feature phase, by session type.")
	e.sample("lmtgt_iscsi_logins_total", labels{"type", "normal"}, utoa(s.Logins.Normal))
	e.sample("lmtgt_iscsi_logins_total", labels{"type", "discovery"}, utoa(s.Logins.Discovery))
	e.family("lmtgt_iscsi_login_failures_total", "counter", "iSCSI logins the target refused (authentication, authorization, unknown target).")
	e.sample("lmtgt_iscsi_login_failures_total", nil, utoa(s.Logins.Failures))

	lunFamilies := []struct {
		name, typ, help string
		value           func(l LUN) string
	}{
		{"lmtgt_lun_size_bytes", "gauge", "LUN capacity in bytes.", func(l LUN) string { return itoa(l.SizeBytes) }},
		{"lmtgt_lun_read_ops_total", "counter", "READ commands completed.", func(l LUN) string { return utoa(l.IO.Reads) }},
		{"lmtgt_lun_write_ops_total", "counter", "WRITE, WRITE SAME, COMPARE AND WRITE and ORWRITE commands completed.", func(l LUN) string { return utoa(l.IO.Writes) }},
		{"lmtgt_lun_unmap_ops_total", "counter", "UNMAP and WRITE SAME (UNMAP) commands completed.", func(l LUN) string { return utoa(l.IO.Unmaps) }},
		{"lmtgt_lun_sync_ops_total", "counter", "SYNCHRONIZE CACHE commands completed.", func(l LUN) string { return utoa(l.IO.Syncs) }},
		{"lmtgt_lun_read_bytes_total", "counter", "Bytes read by hosts.", func(l LUN) string { return utoa(l.IO.ReadBytes) }},
		{"lmtgt_lun_written_bytes_total", "counter", "Bytes written by hosts.", func(l LUN) string { return utoa(l.IO.WrittenBytes) }},
	}
	for _, f := range lunFamilies {
		e.family(f.name, f.typ, f.help)
		for _, l := range s.LUNs {
			e.sample(f.name, labels{"lun", l.Name}, f.value(l))
		}
	}

	pairs := latestPairs(s.Pairs)
	e.family("lmtgt_migration_state", "gauge", "Migration pair state: 1 for the current state, 0 for the others.")
	for _, p := range pairs {
		for st := lm.StateQueued; st <= lm.StateFaulty; st++ {
			v := "0"
			if st.String() == p.State {
				v = "1"
			}
			e.sample("lmtgt_migration_state", labels{"source", p.Source, "target", p.Target, "state", st.String()}, v)
		}
	}
	pairFamilies := []struct {
		name, help string
		value      func(p lm.PairStatus) string
	}{
		{"lmtgt_migration_copied_bytes", "Bytes of the LUN the initial copy has done.", func(p lm.PairStatus) string { return itoa(p.DoneBytes) }},
		{"lmtgt_migration_total_bytes", "Bytes the migration covers (the LUN size).", func(p lm.PairStatus) string { return itoa(p.TotalBytes) }},
		{"lmtgt_migration_dcl_bytes", "Bytes marked in the data change log, still to re-copy.", func(p lm.PairStatus) string { return itoa(p.DCLBytes) }},
		{"lmtgt_migration_rate_bytes_per_second", "Copy rate in bytes per second.", func(p lm.PairStatus) string { return itoa(p.RateBps) }},
		{"lmtgt_migration_split_pause_seconds", "Host I/O pause of the pair's split in seconds (0 before the split).", func(p lm.PairStatus) string {
			return strconv.FormatFloat(p.SplitPauseMS/1000, 'g', -1, 64)
		}},
	}
	for _, f := range pairFamilies {
		e.family(f.name, "gauge", f.help)
		for _, p := range pairs {
			e.sample(f.name, labels{"source", p.Source, "target", p.Target}, f.value(p))
		}
	}
	return b.Flush()
}

// latestPairs keeps, for each source/target pair of names, the pair
// created last (an active pair is always its source's newest), in input
// order.
func latestPairs(in []lm.PairStatus) []lm.PairStatus {
	type key struct{ s, t string }
	idx := map[key]int{}
	var out []lm.PairStatus
	for _, p := range in {
		k := key{p.Source, p.Target}
		if i, ok := idx[k]; ok {
			if !p.Created.Before(out[i].Created) {
				out[i] = p
			}
			continue
		}
		idx[k] = len(out)
		out = append(out, p)
	}
	return out
}

// labels are name, value, name, value, ...
type labels []string

type enc struct{ b *bufio.Writer }

func (e enc) family(name, typ, help string) {
	e.b.WriteString("# HELP ")
	e.b.WriteString(name)
	e.b.WriteByte(' ')
	e.b.WriteString(helpEscaper.Replace(help))
	e.b.WriteString("\n# TYPE ")
	e.b.WriteString(name)
	e.b.WriteByte(' ')
	e.b.WriteString(typ)
	e.b.WriteByte('\n')
}

func (e enc) sample(name string, ls labels, value string) {
	e.b.WriteString(name)
	if len(ls) > 0 {
		e.b.WriteByte('{')
		for i := 0; i+1 < len(ls); i += 2 {
			if i > 0 {
				e.b.WriteByte(',')
			}
			e.b.WriteString(ls[i])
			e.b.WriteString(`="`)
			e.b.WriteString(labelEscaper.Replace(ls[i+1]))
			e.b.WriteByte('"')
		}
		e.b.WriteByte('}')
	}
	e.b.WriteByte(' ')
	e.b.WriteString(value)
	e.b.WriteByte('\n')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func itoa(v int64) string  { return strconv.FormatInt(v, 10) }
func utoa(v uint64) string { return strconv.FormatUint(v, 10) }
