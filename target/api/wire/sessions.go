package wire

import "time"

// SessionPair names one pair of a session to create (LUN names).
type SessionPair struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Vehicle of this pair: auto (default), generic or copy_file_range.
	Vehicle string `json:"vehicle,omitempty"`
}

// CreateSession is the body of POST /v1/sessions.
type CreateSession struct {
	Name    string        `json:"name"`
	Pairs   []SessionPair `json:"pairs"`
	Speed   string        `json:"speed,omitempty"` // low|medium|high|highest
	MaxMBps int64         `json:"max_mbps,omitempty"`
	// MaxHostLatency: every pair's (CreateMigration.MaxHostLatency).
	MaxHostLatency string `json:"max_host_latency,omitempty"`
	// MaxActive is how many of the session's pairs copy at once (0: all).
	MaxActive int  `json:"max_active,omitempty"`
	AutoSplit bool `json:"auto_split,omitempty"`
	Verify    bool `json:"verify,omitempty"`
	// Priority and StartAt of every pair (see CreateMigration).
	Priority string `json:"priority,omitempty"`
	StartAt  string `json:"start_at,omitempty"`
	// Windows and MaxElapsed of every pair (see CreateMigration).
	Windows    []string `json:"windows,omitempty"`
	MaxElapsed string   `json:"max_elapsed,omitempty"`
	// DryRun: check every pair and answer the estimates; create nothing.
	DryRun bool `json:"dry_run,omitempty"`
}

// SplitSession is the body of POST /v1/sessions/{name}/split (optional).
type SplitSession struct {
	// MaxPause is a Go duration ("100ms"); empty means 100ms.
	MaxPause string `json:"max_pause,omitempty"`
	// KeepSource: split --keep-source (every pair switched); also the
	// body of /rollback (MaxPause only) and /commit (Retire only).
	KeepSource bool    `json:"keep_source,omitempty"`
	Retire     *Retire `json:"retire,omitempty"`
}

// MigrationSession is a migration session as shown by GET
// /v1/sessions[/{name}]: its aggregated state and progress, and its pairs.
// (Session is an iSCSI session.)
type MigrationSession struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	State   string `json:"state"` // scheduled|copying|synced|paused|partially-faulty|split|cancelled
	Reason  string `json:"reason"`
	Speed   string `json:"speed"`
	MaxMBps int64  `json:"max_mbps"`
	// LimitBps and LimitedBy: each pair's copy rate limit (see Migration).
	LimitBps  int64  `json:"limit_bps"`
	LimitedBy string `json:"limited_by"`
	MaxActive int    `json:"max_active"`
	// MaxHostLatency: every pair's bound ("": the server's, "off").
	MaxHostLatency string  `json:"max_host_latency,omitempty"`
	AutoSplit      bool    `json:"auto_split"`
	Verify         bool    `json:"verify"`
	Paused         bool    `json:"paused"`
	CopiedBytes    int64   `json:"copied_bytes"`
	SkippedBytes   int64   `json:"skipped_bytes"`
	DoneBytes      int64   `json:"done_bytes"`
	TotalBytes     int64   `json:"total_bytes"`
	DCLBytes       int64   `json:"dcl_bytes"`
	RateBps        int64   `json:"rate_bps"`
	ETASeconds     int64   `json:"eta_seconds"`
	SplitPauseMS   float64 `json:"split_pause_ms"`
	// DryRun: a dry run's answer; EstimateSeconds is the session's (its
	// pairs copying max-active at a time), EstimateBytes the sum to copy.
	DryRun          bool    `json:"dry_run,omitempty"`
	EstimateSeconds float64 `json:"estimate_seconds,omitempty"`
	EstimateBytes   int64   `json:"estimate_bytes,omitempty"`
	// EstimateWaitSeconds: the time until the session's start time;
	// EstimateSeconds runs from there.
	EstimateWaitSeconds float64        `json:"estimate_wait_seconds,omitempty"`
	Counts              map[string]int `json:"counts"` // pairs per pair state
	Pairs               []Migration    `json:"pairs"`
	Created             time.Time      `json:"created"`
	// Priority of its pairs, StartAt (when a scheduled session starts)
	// and Forced (the lone operations on its pairs forced with --force).
	Priority     int        `json:"priority"`
	PriorityName string     `json:"priority_name"`
	StartAt      *time.Time `json:"start_at,omitempty"`
	Forced       []string   `json:"forced,omitempty"`
	Windows      []string   `json:"windows,omitempty"`
	MaxElapsed   string     `json:"max_elapsed,omitempty"`
}
