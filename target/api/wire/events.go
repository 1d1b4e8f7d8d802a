package wire

import "time"

// Event is one entry of the event log (GET /v1/events). Empty fields are
// left out; Seq orders the events. It is the API's shape of the stored
// record (metavol.Event, lm.Event), kept a type of its own on purpose:
// wire stays free of the server's packages for clients, and the API
// gives the duration in ms (the record keeps ns); target/api eventView
// converts.
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Type      string    `json:"type"`
	Action    string    `json:"action,omitempty"`
	Object    string    `json:"object,omitempty"`
	Who       string    `json:"who,omitempty"`
	OK        bool      `json:"ok"`
	Reason    string    `json:"reason,omitempty"`
	LUN       string    `json:"lun,omitempty"`
	Pair      string    `json:"pair,omitempty"`
	Session   string    `json:"session,omitempty"`
	Target    string    `json:"target,omitempty"`
	Initiator string    `json:"initiator,omitempty"`
	Address   string    `json:"address,omitempty"`
	From      string    `json:"from,omitempty"`
	To        string    `json:"to,omitempty"`
	// DurationMS of what the event measured (a split pause).
	DurationMS float64 `json:"duration_ms,omitempty"`
}

// EventList answers GET /v1/events: the events selected and Last, the
// sequence number to pass as after= to follow the log. Dropped counts the
// events the server dropped since it started (its queue was full).
type EventList struct {
	Events  []Event `json:"events"`
	Last    uint64  `json:"last"`
	Dropped uint64  `json:"dropped"`
}

// HistoryEntry is one step of a pair's or a session's timeline.
type HistoryEntry struct {
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Who    string    `json:"who,omitempty"`
}

// PairFigures are the final figures of a pair that ended.
type PairFigures struct {
	State         string    `json:"state"`
	Ended         time.Time `json:"ended"`
	DataBytes     int64     `json:"data_bytes"`
	RecopiedBytes int64     `json:"recopied_bytes"`
	DurationS     float64   `json:"duration_s"`
	// CopyS is the time the pair was copying; AvgMBps the rate over it.
	CopyS        float64 `json:"copy_s,omitempty"`
	AvgMBps      float64 `json:"avg_mbps"`
	SplitPauseMS float64 `json:"split_pause_ms,omitempty"`
	Vehicle      string  `json:"vehicle,omitempty"`
	// EstimateSeconds is the estimate the pair was created with, if any,
	// and ActualSeconds the time its copy took to the first synced.
	EstimateSeconds *float64 `json:"estimate_seconds,omitempty"`
	ActualSeconds   float64  `json:"actual_seconds,omitempty"`
}

// PairHistory is the timeline of one pair (GET /v1/history/migrations).
type PairHistory struct {
	ID      string         `json:"id"`
	Source  string         `json:"source"`
	Target  string         `json:"target"`
	Session string         `json:"session,omitempty"`
	Created time.Time      `json:"created"`
	State   string         `json:"state"`
	Dropped int            `json:"dropped,omitempty"`
	Entries []HistoryEntry `json:"entries"`
	Final   *PairFigures   `json:"final,omitempty"`
}

// SessionHistory is a session's timeline and its pairs' timelines (GET
// /v1/history/sessions/NAME).
type SessionHistory struct {
	ID      string         `json:"id"`
	Name    string         `json:"name"`
	Created time.Time      `json:"created"`
	Entries []HistoryEntry `json:"entries"`
	Pairs   []PairHistory  `json:"pairs"`
}
