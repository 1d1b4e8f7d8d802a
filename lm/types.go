package lm

import (
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// The Manager's public API (implemented in manager.go, lun.go, import.go,
// views.go, targets.go, pairadmin.go, pairstatus.go, pairref.go,
// split.go, session*.go):
//
//	func Open(db *metavol.DB, opts Options) (*Manager, error) // reopen volumes, recover pairs
//	func (m *Manager) Close() error
//	func (m *Manager) LUN(id string) (volume.Volume, error)    // the host I/O handle, stable across splits
//
//	func (m *Manager) CreateLUN(req CreateLUNRequest) (metavol.LUN, error)
//	func (m *Manager) ImportLUN(req ImportLUNRequest) (metavol.LUN, error)
//	func (m *Manager) ResizeLUN(name string, size int64) (metavol.LUN, error)
//	func (m *Manager) DeleteLUN(name string) error              // refused while mapped or in a pair
//	func (m *Manager) LUNInfos() ([]LUNInfo, error); LUNInfo(name string) (LUNInfo, error)
//
//	func (m *Manager) SetExporter(e Exporter)                   // applies target changes live
//	func (m *Manager) CreateTarget(iqn string) error; DeleteTarget(iqn string, force bool) error
//	func (m *Manager) MapLUN(iqn, lun string, number *uint64) (uint64, error); UnmapLUN(iqn, lun string) error
//	func (m *Manager) AllowInitiator / DisallowInitiator / SetTargetCHAP / ClearTargetCHAP
//	func (m *Manager) DiscoveryCHAP / SetDiscoveryCHAP / ClearDiscoveryCHAP
//	func (m *Manager) TargetInfos() ([]TargetInfo, error); TargetInfo(iqn string) (TargetInfo, error)
//
//	func (m *Manager) CreatePair(req PairRequest) (PairStatus, error)
//	func (m *Manager) Pairs() []PairStatus
//	func (m *Manager) Pair(source string) (PairStatus, error)  // source LUN name
//	func (m *Manager) Pause(source string) error
//	func (m *Manager) Resume(source string) error
//	func (m *Manager) Cancel(source string) error
//	func (m *Manager) Set(source string, req SetRequest) (PairStatus, error)
//	func (m *Manager) Split(sources []string, maxPause time.Duration) (SplitResult, error)
//	func (m *Manager) SplitKeepSource / Rollback(sources []string, maxPause time.Duration) (SplitResult, error) // rollback.go
//	func (m *Manager) Commit(sources []string) (CommitResult, error)
//	func (m *Manager) Retire(source string, opts RetireOptions) (RetireResult, error)             // rollback_retire.go
//	func (m *Manager) DeletePairRecords(source string) ([]string, error)
//
//	func (m *Manager) CreateSession(req SessionRequest) (SessionStatus, error)
//	func (m *Manager) Sessions() []SessionStatus; Session(name string) (SessionStatus, error)
//	func (m *Manager) PauseSession / ResumeSession / SetSession / SplitSession / CancelSession / DeleteSession
//	func (m *Manager) SplitKeepSourceSession / RollbackSession / CommitSession                    // rollback.go

// CreateLUNRequest asks for a new LUN.
type CreateLUNRequest struct {
	Name      string
	Size      int64  // bytes; 0 with Path = the file's or device's size
	BlockSize uint32 // 512 (default) or 4096
	Path      string // existing file or block device; "" = sparse file in the data dir
	// Direct opens the data volume with O_DIRECT (bypassing the page
	// cache); kept in the volume record, so every later open does too.
	Direct bool
	// Force allows a Path in a system location (Options.SystemDirs, /dev
	// but a block device, a mounted block device); never one lmtgt uses.
	Force bool
	// RBD is POOL/IMAGE of a Ceph RBD image (rbd.go): created when Size
	// is set, else attached. Takeover breaks another client's lock on it.
	RBD      string
	Takeover bool
	// CephConf, CephID and CephKeyring (with RBD) name the image's
	// cluster where it is not the server's default (Options.Ceph): each
	// set one overrides the default's field and is kept in the volume
	// record (rbd.go "Clusters").
	CephConf, CephID, CephKeyring string
	// AdoptFromURL (with RBD, no Size) is the iscsi:// URL of a LUN of
	// another lmtgt server that serves the same image: its identity and
	// reservations are adopted and the image is left to it until
	// TakeoverLUNFrom (rbdhandover.go). CreateLUN parses it into AdoptFrom.
	AdoptFromURL string
	AdoptFrom    *metavol.Remote
	// ID, NAA and Serial give the new LUN an identity it had before
	// (config apply restores them); empty: new ones are made.
	ID, NAA, Serial string
}

// DeleteLUNOptions are the options of DeleteLUNWith.
type DeleteLUNOptions struct {
	// DeleteImage deletes the LUN's RBD image even when lmtgt did not
	// create it (an attached image).
	DeleteImage bool
}

// PairRequest asks for a new migration pair. LUNs are named by name.
type PairRequest struct {
	Source, Target string
	Speed          Speed // default SpeedMedium
	MaxMBps        int64 // 0 = no absolute cap
	// MaxHostLatency bounds the host p99 latency on the pair's LUNs while
	// it copies (latency.go): 0 uses the server's default, negative
	// switches the guard off for this pair.
	MaxHostLatency time.Duration
	AutoSplit      bool
	Verify         bool
	// Vehicle: "auto" (default), "generic" or "copy_file_range".
	Vehicle string
	// DryRun: check everything the create checks and return the
	// estimate (PairStatus.Estimate); nothing is created (estimate.go).
	DryRun bool
	// Preempt lets the fence of an imported source preempt a reservation
	// another initiator holds on the external LUN; AllowUnfenced accepts
	// an external target without persistent reservations (lm/fence.go).
	Preempt, AllowUnfenced bool
	// Priority 1..9 (higher copies first; 0: medium, 5) and StartAt (the
	// zero time: at once) are queue.go's and schedule.go's; Windows and
	// MaxElapsed (0: none) schedule_window.go's.
	Priority   int
	StartAt    time.Time
	Windows    []Window
	MaxElapsed time.Duration
}

// SetRequest changes a running pair's throttle; nil fields stay.
type SetRequest struct {
	Speed   *Speed
	MaxMBps *int64 // 0 removes the cap
	// Priority (1..9), AutoSplit and Verify change while the pair runs
	// (a waiting pair takes its new place in the copy queue at once).
	Priority  *int
	AutoSplit *bool
	Verify    *bool
	// Windows replaces the daily windows (an empty list removes them);
	// MaxElapsed the copying time limit (0 removes it).
	Windows    *[]Window
	MaxElapsed *time.Duration
	// MaxActive is a session's limit of pairs copying at once (sessions
	// only; 0: all).
	MaxActive *int
	// MaxHostLatency: 0 back to the server's default, negative off.
	MaxHostLatency *time.Duration
}

// Speed is a named copy rate level.
type Speed string

const (
	SpeedLow     Speed = "low"     // 10 MB/s
	SpeedMedium  Speed = "medium"  // 50 MB/s
	SpeedHigh    Speed = "high"    // 200 MB/s
	SpeedHighest Speed = "highest" // unthrottled
)

// PairStatus is a pair as shown by `migration show`.
type PairStatus struct {
	ID     string
	Source string // LUN names
	Target string
	State  string
	Reason string
	// CopiedBytes counts the bytes really read and written (initial copy
	// and DCL re-copies); SkippedBytes the bytes of the LUN the initial
	// copy passed without a transfer (holes, all-zero chunks); DoneBytes
	// is the progress of the initial copy over the LUN (holes included),
	// TotalBytes its size. RateBps is the rate of bytes really moved; the
	// ETA comes from the allocated bytes still to copy at that rate.
	CopiedBytes  int64
	SkippedBytes int64
	DoneBytes    int64
	TotalBytes   int64
	DCLBytes     int64
	// RemainingBytes: what is still to copy, the source's allocated bytes
	// above the copy cursor plus the DCL (the logical rest where the
	// source cannot tell its extents).
	RemainingBytes int64
	RateBps        int64
	ETASeconds     int64
	Vehicle        string
	Speed          Speed
	MaxMBps        int64
	AutoSplit      bool
	Verify         bool
	SplitPauseMS   float64
	Created        time.Time

	// MaxHostLatency is the pair's own host-latency bound (0: the
	// server's, negative: off) and HostLatencyBound the one in force (0:
	// none). While it copies: EffectiveBps is the copy's token bucket rate
	// now (0: unlimited), HostP99 the host p99 on its LUNs over the last
	// guard tick (0: no host I/O) and Throttle why the rate is what it is
	// ("held back: host p99 4.1 ms > 2.0 ms").
	MaxHostLatency   time.Duration
	HostLatencyBound time.Duration
	EffectiveBps     int64
	HostP99          time.Duration
	Throttle         string

	// DryRun: this status is a dry run's answer: nothing was created and
	// Estimate says what the migration would take. EstimateDuration and
	// EstimateBytes are the estimate kept on a real pair, ActualDuration
	// the time from its copy's start to its first sync (0 before).
	DryRun           bool
	Estimate         *Estimate
	EstimateDuration time.Duration
	EstimateBytes    int64
	ActualDuration   time.Duration

	// CursorBytes is the in-memory copy cursor (DoneBytes is the part of
	// the LUN below it that is done). DataBytes: bytes transferred by the
	// initial copy (holes and zero chunks are not transferred);
	// RecopiedBytes: bytes transferred by DCL re-copies.
	CursorBytes   int64
	DataBytes     int64
	RecopiedBytes int64
	// SourceID and TargetID are the LUN IDs.
	SourceID string
	TargetID string

	// Priority (1..9) and StartAt (zero: none) as requested; QueuePos is
	// the pair's place among the pairs waiting for a copy slot (1 = next,
	// 0 = not waiting) and MaxActive the server's limit (queue.go);
	// Session is the name of the session the pair belongs to ("": none).
	Priority  int
	StartAt   time.Time
	QueuePos  int
	MaxActive int
	Session   string
	// Windows (schedule_window.go); Window is the one in force now ("":
	// none, the pair's own speed and cap apply), with its speed and cap,
	// until WindowUntil (the next boundary); MaxElapsed (0: none) and the
	// copying time so far.
	Windows       []string
	Window        string
	WindowSpeed   Speed
	WindowMaxMBps int64
	WindowUntil   time.Time
	MaxElapsed    time.Duration
	CopyElapsed   time.Duration
	// Switched: the pair mirrors back (split --keep-source): the source
	// LUN runs on the new volume and host writes are mirrored back to the
	// old one (the target LUN's data volume) until rollback or commit.
	Switched bool
}

// SplitResult reports a (consistent) split.
type SplitResult struct {
	Pairs   []string // source LUN names
	Pause   time.Duration
	PauseMS float64
}

// LUNState says whether a LUN serves host I/O.
type LUNState int

// LUN states.
const (
	LUNOnline LUNState = iota
	// LUNOffline: host I/O fails with ErrOffline (SCSI NOT READY, manual
	// intervention required); LUNStatus.Reason says why and what to do.
	LUNOffline
)

func (s LUNState) String() string {
	switch s {
	case LUNOnline:
		return "online"
	case LUNOffline:
		return "offline"
	}
	return fmt.Sprintf("LUNState(%d)", int(s))
}

// LUNStatus is a LUN's serving state, as `lun show` reports it.
type LUNStatus struct {
	State  LUNState
	Reason string // why it is offline; "" when online
}

// SessionRequest asks for a new session. Each pair names its source and
// target LUN (and optionally its Vehicle); the session's Speed, MaxMBps and
// Verify apply to every pair, and AutoSplit is the session's.
type SessionRequest struct {
	Name      string
	Pairs     []PairRequest
	Speed     Speed // default SpeedMedium
	MaxMBps   int64
	MaxActive int // pairs of the session copying at once; 0 = no limit
	AutoSplit bool
	Verify    bool
	// Priority, StartAt, Windows and MaxElapsed are given to every pair
	// (queue.go, schedule.go, schedule_window.go).
	Priority   int
	StartAt    time.Time
	Windows    []Window
	MaxElapsed time.Duration
	// MaxHostLatency: every pair's (PairRequest.MaxHostLatency).
	MaxHostLatency time.Duration
	// DryRun: check and estimate every pair; create nothing.
	DryRun bool
}

// SessionStatus is a session as shown by `session show`.
type SessionStatus struct {
	ID             string
	Name           string
	State          string
	Reason         string
	Speed          Speed
	MaxMBps        int64
	MaxHostLatency time.Duration
	MaxActive      int
	AutoSplit      bool
	Verify         bool
	Paused         bool
	// Sums over the pairs; ETA from the remaining bytes and the rate.
	CopiedBytes  int64
	SkippedBytes int64
	DoneBytes    int64
	TotalBytes   int64
	DCLBytes     int64
	RateBps      int64
	ETASeconds   int64
	SplitPauseMS float64
	// DryRun: a dry run's answer (each pair has its Estimate);
	// EstimateDuration is the session's, with its pairs copying
	// max-active at a time, EstimateBytes the sum to copy.
	DryRun           bool
	EstimateDuration time.Duration
	EstimateBytes    int64
	// EstimateWait is the time until the session's start time (0: it
	// starts at once); EstimateDuration runs from there.
	EstimateWait time.Duration
	// Counts is the number of pairs per pair state.
	Counts  map[string]int
	Pairs   []PairStatus
	Created time.Time
	// Priority, StartAt (zero: none) and the forced lone operations on
	// member pairs (sessionref.go).
	Priority   int
	StartAt    time.Time
	Forced     []string
	Windows    []string
	MaxElapsed time.Duration
}
