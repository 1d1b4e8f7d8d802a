package metavol

import "time"

// Pair is the persisted record of one migration relation. Owned by package
// lm (it may add fields); metavol only stores it.
type Pair struct {
	ID        string `json:"id"`
	SourceLUN string `json:"source_lun"` // LUN ID
	TargetLUN string `json:"target_lun"` // LUN ID
	State     string `json:"state"`
	Reason    string `json:"reason"`
	Speed     string `json:"speed"`
	MaxMBps   int64  `json:"max_mbps"`
	AutoSplit bool   `json:"auto_split"`
	Verify    bool   `json:"verify"`
	// Cursor is the persisted copy checkpoint: every byte below it was
	// copied (or is marked in the DCL).
	Cursor     int64 `json:"cursor"`
	ChunkSize  int64 `json:"chunk_size"`
	RegionSize int64 `json:"region_size"` // DCL region size
	// CopiedBytes is the progress of the initial copy (the persisted
	// cursor's view: bytes of the LUN processed, holes included).
	CopiedBytes int64 `json:"copied_bytes"`
	// DataBytes counts bytes actually transferred by the initial copy,
	// RecopiedBytes those transferred by DCL re-copies.
	DataBytes     int64 `json:"data_bytes"`
	RecopiedBytes int64 `json:"recopied_bytes"`
	// SkippedBytes counts bytes of the LUN the initial copy passed without
	// transferring them (source holes, all-zero chunks).
	SkippedBytes int64 `json:"skipped_bytes,omitempty"`
	// MaxHostLatencyNS bounds the host p99 latency on the pair's LUNs
	// while it copies (lm's host-latency guard): 0 uses the server's
	// default, negative switches it off.
	MaxHostLatencyNS int64 `json:"max_host_latency_ns,omitempty"`
	// EstimateNS and EstimateBytes: the estimate made when the pair was
	// created (duration of the copy, bytes to copy); CopyStarted: when
	// its copy first started; ActualNS: from then until it first reached
	// synced (0 before).
	EstimateNS    int64     `json:"estimate_ns,omitempty"`
	EstimateBytes int64     `json:"estimate_bytes,omitempty"`
	CopyStarted   time.Time `json:"copy_started,omitzero"`
	ActualNS      int64     `json:"actual_ns,omitempty"`
	// VehicleWanted is the requested transfer vehicle ("auto", "generic",
	// "copy_file_range"); Vehicle the one that ran.
	VehicleWanted string    `json:"vehicle_wanted,omitempty"`
	Vehicle       string    `json:"vehicle"`
	SplitPauseNS  int64     `json:"split_pause_ns"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
	// Session is the ID of the migration session the pair belongs to (""
	// for a pair created alone). The session record lists its pairs in
	// order (Session.PairIDs); this is the pair's side of it. Records
	// written before the field existed get it when lm loads them.
	Session string `json:"session,omitempty"`
	// Priority (1..9, higher copies first; 0: written before priorities,
	// medium) and StartAt (zero: at once; the pair is "scheduled" until
	// then) belong to lm's queue and schedule (lm/queue.go,
	// lm/schedule.go).
	Priority int       `json:"priority,omitempty"`
	StartAt  time.Time `json:"start_at,omitzero"`
	// Windows are daily windows "HH:MM[:SS]-HH:MM[:SS]=SPEED[,max-mbps=N]"
	// (lm/schedule_window.go); MaxElapsedNS pauses the pair after that
	// much copying time (0: no limit); CopyElapsedNS is the copying time
	// so far (as of the record's write).
	Windows       []string `json:"windows,omitempty"`
	MaxElapsedNS  int64    `json:"max_elapsed_ns,omitempty"`
	CopyElapsedNS int64    `json:"copy_elapsed_ns,omitempty"`
	// Switched says that the pair mirrors back (split --keep-source):
	// the data volume IDs of its LUNs are swapped, the source LUN's data
	// volume (the new one) is the primary leg and the target LUN's (the
	// old source volume) the secondary; rollback clears it.
	Switched bool `json:"switched,omitempty"`
}
