// Package metrics serves lmtgt's metrics on an optional HTTP listener
// (serve --metrics ADDR): GET /metrics in the Prometheus text format
// (0.0.4) or OpenMetrics when the scraper asks for it (Accept), through
// github.com/prometheus/client_golang. With serve --pprof the same
// listener, and only it, also serves net/http/pprof under /debug/pprof/.
//
// What it exports: the standard go_*, process_* and go_build_info
// families, and lmtgt's own (docs/metrics.md lists every one with its
// type, labels and meaning). Labels are the same everywhere: lun (LUN
// name), iqn (target IQN), initiator (initiator IQN), op (I/O class),
// pair (pair ID) with source and target (the pair's LUN names).
//
// How: one registry per Server (NewRegistry), no package-level registry
// or metric. lmtgt's families come from one custom collector that takes a
// Snapshot of the daemon's parts at every scrape (Sources.Snapshot): LUNs
// from the meta volume with their live size from lm, I/O counters,
// latency histograms and sessions from target.Server.Stats, the live
// pairs from lm.Manager.LivePairs and the split pauses and deferrals from
// lm.Manager.SplitStats. So counters are owned where they are counted
// (target, lm) and only read here; a pair that ended has no series (it
// is not live any more); LUN counters restart from zero when a LUN is
// mapped again after being unmapped everywhere, and every counter of
// this process restarts at a restart, except the copied and re-copied
// bytes of a pair, which are kept in its record (Prometheus treats any
// decrease as a reset).
//
// Never: change anything in the daemon (scrapes only read); block host
// I/O (a scrape takes target.Server's configuration lock and lm's maps
// briefly, and reads counters atomically); mount pprof anywhere but this
// listener, or without --pprof.
package metrics
