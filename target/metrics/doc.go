// Package metrics serves lmtgt's metrics in the Prometheus text exposition
// format (version 0.0.4) on an optional HTTP listener: GET /metrics.
//
// What it exports (every name prefixed lmtgt_, each with HELP and TYPE):
//
//	lmtgt_build_info{version}                          gauge, always 1
//	lmtgt_iscsi_sessions{target}                       gauge: normal sessions logged in
//	lmtgt_iscsi_logins_total{type="normal|discovery"}  counter: logins that reached full feature phase
//	lmtgt_iscsi_login_failures_total                   counter: logins the target refused
//	lmtgt_lun_size_bytes{lun}                          gauge
//	lmtgt_lun_{read,write,unmap,sync}_ops_total{lun}   counters (commands completed GOOD)
//	lmtgt_lun_{read,written}_bytes_total{lun}          counters
//	lmtgt_migration_state{source,target,state}         gauge: 1 for the current state, 0 for the others
//	lmtgt_migration_{copied,total,dcl}_bytes{source,target}
//	lmtgt_migration_rate_bytes_per_second{source,target}
//	lmtgt_migration_split_pause_seconds{source,target} gauge: the pause of the pair's split
//
// The numbers come from the daemon's parts on every scrape: LUNs from the
// meta volume with their live size from lm, I/O counters and sessions from
// target.Server.Stats, pairs from lm.Manager.Pairs (for one source/target
// pair of names, the latest pair). LUN I/O counters live with the mapped
// LUN in package target: they restart from zero when a LUN is mapped again
// after being unmapped everywhere (Prometheus treats that as a reset).
//
// The formatter (Write) is a pure function of a Snapshot; Collector builds
// a Snapshot; Server is the HTTP listener.
//
// Never: change anything in the daemon (scrapes only read); block host I/O
// (a scrape takes target.Server's configuration lock briefly and reads
// counters atomically); import a Prometheus client library (the text
// format is written here).
package metrics
