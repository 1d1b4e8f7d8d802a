package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/lm/histogram"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// LUN is one LUN as the metrics see it.
type LUN struct {
	Name      string
	ID        string
	SizeBytes int64
	// IO holds the LUN's I/O counters; zero when the LUN is not mapped.
	IO target.LUNStats
}

// Snapshot is everything one scrape reports, read from the daemon's
// parts at scrape time (Sources.Snapshot).
type Snapshot struct {
	Version  string
	Targets  []target.TargetStats
	Sessions []iscsi.SessionInfo
	Logins   iscsi.LoginStats
	ZeroCopy iscsi.ZeroCopyStats
	IdlePoll iscsi.IdlePollStats
	LUNs     []LUN
	// Pairs: the live pairs only (lm.Manager.LivePairs): a pair that
	// ended has no series.
	Pairs  []lm.PairCounters
	Splits lm.SplitStats
}

// descs are the descriptions of lmtgt's own families, made once per
// collector (no package-level registry or description).
type descs struct {
	buildInfo                            *prometheus.Desc
	logins, loginFailures                *prometheus.Desc
	zeroCopyReads, zeroCopyBytes         *prometheus.Desc
	idlePolls                            *prometheus.Desc
	targetSessions                       *prometheus.Desc
	sessions, connections, discovery     *prometheus.Desc
	lunSize, lunOps, lunBytes, lunErrors *prometheus.Desc
	lunLatency                           *prometheus.Desc
	pairState, copied, recopied          *prometheus.Desc
	progress, pairSize, dcl              *prometheus.Desc
	splitPause, splitDeferrals           *prometheus.Desc
}

func newDescs() descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	pair := []string{"pair", "source", "target"}
	return descs{
		buildInfo:      d("lmtgt_build_info", "lmtgt build information; the value is always 1.", "version"),
		logins:         d("lmtgt_iscsi_logins_total", "iSCSI logins that reached full feature phase, by session type (normal, discovery).", "type"),
		loginFailures:  d("lmtgt_iscsi_login_failures_total", "iSCSI logins the target refused (authentication, authorization, unknown target)."),
		zeroCopyReads:  d("lmtgt_iscsi_zero_copy_reads_total", "READs whose Data-In the target sent straight from the data volume's file (sendfile), without copying it."),
		zeroCopyBytes:  d("lmtgt_iscsi_zero_copy_bytes_total", "Data-In bytes the target sent straight from data volume files (the READs of lmtgt_iscsi_zero_copy_reads_total)."),
		idlePolls:      d("lmtgt_iscsi_idle_polls_total", "Polls of a connection's socket for the host's next command after a command at queue depth 1 (serve --idle-poll), by result: caught (it came), missed (the budget ran out first), refused (as many connections were polling as allowed), others_active (not started: other connections were receiving commands).", "result"),
		targetSessions: d("lmtgt_iscsi_target_sessions", "iSCSI normal sessions logged in to a target (every configured target, zero too).", "iqn"),
		sessions:       d("lmtgt_iscsi_sessions", "iSCSI normal sessions logged in, by target and initiator.", "iqn", "initiator"),
		connections:    d("lmtgt_iscsi_connections", "TCP connections of the iSCSI normal sessions, by target and initiator.", "iqn", "initiator"),
		discovery:      d("lmtgt_iscsi_discovery_sessions", "iSCSI discovery sessions logged in."),
		lunSize:        d("lmtgt_lun_size_bytes", "LUN capacity in bytes.", "lun"),
		lunOps:         d("lmtgt_lun_io_ops_total", "Host commands of the LUN completed with GOOD status, by I/O class (read, write, unmap, sync).", "lun", "op"),
		lunBytes:       d("lmtgt_lun_io_bytes_total", "Bytes read or written by hosts on the LUN (op read, write).", "lun", "op"),
		lunErrors:      d("lmtgt_lun_io_errors_total", "Host commands of the LUN that failed because its storage failed (NOT READY, MEDIUM ERROR, HARDWARE ERROR), by I/O class.", "lun", "op"),
		lunLatency:     d("lmtgt_lun_io_duration_seconds", "Time lmtgt took to execute a host command of the LUN (SCSI layer, migration layer and data volume; not the network), by I/O class.", "lun", "op"),
		pairState:      d("lmtgt_migration_state", "Live migration pair state: 1 for the current state, 0 for the others.", append(pair, "state")...),
		copied:         d("lmtgt_migration_copied_bytes_total", "Bytes the initial copy of the pair transferred (holes and zero chunks are not transferred).", pair...),
		recopied:       d("lmtgt_migration_recopied_bytes_total", "Bytes the pair's data change log (DCL) re-copies transferred.", pair...),
		progress:       d("lmtgt_migration_progress_bytes", "Part of the source LUN, from its start, that the initial copy has finished.", pair...),
		pairSize:       d("lmtgt_migration_size_bytes", "Bytes the migration covers (the source LUN size).", pair...),
		dcl:            d("lmtgt_migration_dcl_bytes", "Bytes marked in the pair's data change log, still to re-copy.", pair...),
		splitPause:     d("lmtgt_split_pause_seconds", "Host I/O pause of each split that swapped the volumes (a consistent split of many pairs counts once)."),
		splitDeferrals: d("lmtgt_split_deferrals_total", "Splits deferred because in-flight I/O did not drain within the pause budget."),
	}
}

func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{
		d.buildInfo, d.logins, d.loginFailures, d.zeroCopyReads, d.zeroCopyBytes, d.idlePolls, d.targetSessions, d.sessions, d.connections, d.discovery,
		d.lunSize, d.lunOps, d.lunBytes, d.lunErrors, d.lunLatency,
		d.pairState, d.copied, d.recopied, d.progress, d.pairSize, d.dcl,
		d.splitPause, d.splitDeferrals,
	} {
		ch <- x
	}
}

// collector is the prometheus.Collector of lmtgt's own families: every
// scrape takes one Snapshot and turns it into constant metrics.
type collector struct {
	d    descs
	snap func() (Snapshot, error)
}

func newCollector(snap func() (Snapshot, error)) *collector {
	return &collector{d: newDescs(), snap: snap}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { c.d.describe(ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.snap()
	if err != nil {
		// The scrape reports the error (promhttp logs it and serves the
		// rest: the go_ and process_ families).
		ch <- prometheus.NewInvalidMetric(c.d.buildInfo, err)
		return
	}
	c.d.collect(s, ch)
}

func (d *descs) collect(s Snapshot, ch chan<- prometheus.Metric) {
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	hist := func(desc *prometheus.Desc, h histogram.Snapshot, labels ...string) {
		buckets := make(map[float64]uint64, len(h.Bounds))
		cum := h.Cumulative()
		for i, b := range h.Bounds {
			buckets[b.Seconds()] = cum[i]
		}
		ch <- prometheus.MustNewConstHistogram(desc, h.Count, h.Sum.Seconds(), buckets, labels...)
	}

	gauge(d.buildInfo, 1, s.Version)
	counter(d.logins, float64(s.Logins.Normal), "normal")
	counter(d.logins, float64(s.Logins.Discovery), "discovery")
	counter(d.loginFailures, float64(s.Logins.Failures))
	counter(d.zeroCopyReads, float64(s.ZeroCopy.Reads))
	counter(d.zeroCopyBytes, float64(s.ZeroCopy.Bytes))
	counter(d.idlePolls, float64(s.IdlePoll.Caught), "caught")
	counter(d.idlePolls, float64(s.IdlePoll.Missed), "missed")
	counter(d.idlePolls, float64(s.IdlePoll.Refused), "refused")
	counter(d.idlePolls, float64(s.IdlePoll.OthersActive), "others_active")
	for _, t := range s.Targets {
		gauge(d.targetSessions, float64(t.Sessions), t.IQN)
	}
	type nexus struct{ iqn, initiator string }
	perNexus := map[nexus]int{}
	discovery := 0
	for _, ss := range s.Sessions {
		if ss.Discovery {
			discovery++
			continue
		}
		perNexus[nexus{ss.Target, ss.Initiator}]++
	}
	keys := make([]nexus, 0, len(perNexus))
	for k := range perNexus {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].iqn != keys[j].iqn {
			return keys[i].iqn < keys[j].iqn
		}
		return keys[i].initiator < keys[j].initiator
	})
	for _, k := range keys {
		gauge(d.sessions, float64(perNexus[k]), k.iqn, k.initiator)
		// One connection per session: lmtgt negotiates
		// MaxConnections=1 (no MC/S).
		gauge(d.connections, float64(perNexus[k]), k.iqn, k.initiator)
	}
	gauge(d.discovery, float64(discovery))

	for _, l := range s.LUNs {
		gauge(d.lunSize, float64(l.SizeBytes), l.Name)
		io := l.IO
		for op := target.OpRead; op <= target.OpSync; op++ {
			var ops uint64
			switch op {
			case target.OpRead:
				ops = io.Reads
				counter(d.lunBytes, float64(io.ReadBytes), l.Name, op.String())
			case target.OpWrite:
				ops = io.Writes
				counter(d.lunBytes, float64(io.WrittenBytes), l.Name, op.String())
			case target.OpUnmap:
				ops = io.Unmaps
			case target.OpSync:
				ops = io.Syncs
			}
			counter(d.lunOps, float64(ops), l.Name, op.String())
			counter(d.lunErrors, float64(io.Errors[op]), l.Name, op.String())
			lat := io.Latency[op]
			if lat.Bounds == nil { // not mapped: no histogram yet
				lat = histogram.Snapshot{Bounds: histogram.LatencyBounds(), Counts: make([]uint64, len(histogram.LatencyBounds())+1)}
			}
			hist(d.lunLatency, lat, l.Name, op.String())
		}
	}

	states := pairStates()
	for _, p := range s.Pairs {
		labels := []string{p.ID, p.Source, p.Target}
		known := false
		for _, st := range states {
			v := 0.0
			if st == p.State {
				v, known = 1, true
			}
			gauge(d.pairState, v, append(labels, st)...)
		}
		if !known { // a state this list does not know: still shown
			gauge(d.pairState, 1, append(labels, p.State)...)
		}
		counter(d.copied, float64(p.CopiedBytes), labels...)
		counter(d.recopied, float64(p.RecopiedBytes), labels...)
		gauge(d.progress, float64(p.DoneBytes), labels...)
		gauge(d.pairSize, float64(p.SizeBytes), labels...)
		gauge(d.dcl, float64(p.DCLBytes), labels...)
	}
	hist(d.splitPause, s.Splits.Pauses)
	counter(d.splitDeferrals, float64(s.Splits.Deferrals))
}

// pairStates are the values of the state label: every pair state that
// is not final (a live pair is never in one for long, and an ended pair
// has no series) and lm.PairOffline (a pair that could not be loaded).
func pairStates() []string {
	var out []string
	for st := lm.PairState(0); ; st++ {
		if _, err := lm.ParseState(st.String()); err != nil {
			break
		}
		if !st.Final() {
			out = append(out, st.String())
		}
	}
	return append(out, lm.PairOffline)
}
