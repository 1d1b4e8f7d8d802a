package lm

import (
	"errors"
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
)

// The Manager's public API (implemented in manager.go, lun.go, pair*.go):
//
//	func Open(db *metavol.DB, opts Options) (*Manager, error) // reopen volumes, recover pairs
//	func (m *Manager) Close() error
//	func (m *Manager) LUN(id string) (volume.Volume, error)    // the host I/O handle, stable across splits
//
//	func (m *Manager) CreateLUN(req CreateLUNRequest) (metavol.LUN, error)
//	func (m *Manager) ResizeLUN(name string, size int64) (metavol.LUN, error)
//	func (m *Manager) DeleteLUN(name string) error              // refused while mapped or in a pair
//
//	func (m *Manager) CreatePair(req PairRequest) (PairStatus, error)
//	func (m *Manager) Pairs() []PairStatus
//	func (m *Manager) Pair(source string) (PairStatus, error)  // source LUN name
//	func (m *Manager) Pause(source string) error
//	func (m *Manager) Resume(source string) error
//	func (m *Manager) Cancel(source string) error
//	func (m *Manager) Set(source string, req SetRequest) (PairStatus, error)
//	func (m *Manager) Split(sources []string, maxPause time.Duration) (SplitResult, error)

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
	// AdoptFrom (with RBD, no Size) is a LUN of another lmtgt server that
	// serves the same image: its identity and reservations are adopted and
	// the image is left to it until TakeoverLUNFrom (rbdhandover.go).
	AdoptFrom *metavol.Remote
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
	AutoSplit      bool
	Verify         bool
	// Vehicle: "auto" (default), "generic" or "copy_file_range".
	Vehicle string
	// Preempt lets the fence of an imported source preempt a reservation
	// another initiator holds on the external LUN; AllowUnfenced accepts
	// an external target without persistent reservations (lm/fence.go).
	Preempt, AllowUnfenced bool
}

// SetRequest changes a running pair's throttle; nil fields stay.
type SetRequest struct {
	Speed   *Speed
	MaxMBps *int64 // 0 removes the cap
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
	ID           string    `json:"id"`
	Source       string    `json:"source"` // LUN names
	Target       string    `json:"target"`
	State        string    `json:"state"`
	Reason       string    `json:"reason"`
	CopiedBytes  int64     `json:"copied_bytes"`
	TotalBytes   int64     `json:"total_bytes"`
	DCLBytes     int64     `json:"dcl_bytes"`
	RateBps      int64     `json:"rate_bps"`
	ETASeconds   int64     `json:"eta_seconds"`
	Vehicle      string    `json:"vehicle"`
	Speed        Speed     `json:"speed"`
	MaxMBps      int64     `json:"max_mbps"`
	AutoSplit    bool      `json:"auto_split"`
	Verify       bool      `json:"verify"`
	SplitPauseMS float64   `json:"split_pause_ms"`
	Created      time.Time `json:"created"`

	// CursorBytes is the in-memory copy cursor (CopiedBytes is the part of
	// the LUN below it that is done). DataBytes: bytes transferred by the
	// initial copy (holes and zero chunks are not transferred);
	// RecopiedBytes: bytes transferred by DCL re-copies.
	CursorBytes   int64 `json:"cursor_bytes"`
	DataBytes     int64 `json:"data_bytes"`
	RecopiedBytes int64 `json:"recopied_bytes"`
	// SourceID and TargetID are the LUN IDs.
	SourceID string `json:"source_id"`
	TargetID string `json:"target_id"`
}

// SplitResult reports a (consistent) split.
type SplitResult struct {
	Pairs   []string      `json:"pairs"` // source LUN names
	Pause   time.Duration `json:"-"`
	PauseMS float64       `json:"pause_ms"`
}

// Sentinel errors (wrapped with the object's name; match with errors.Is).
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalid      = errors.New("invalid argument")
	ErrInPair       = errors.New("in a migration pair")
	ErrMapped       = errors.New("mapped to a target")
	ErrNotSynced    = errors.New("pair not synced")
	ErrSplitTimeout = errors.New("split deferred: in-flight I/O did not drain within the pause budget")
	ErrVerify       = errors.New("verify found a difference")
	ErrState        = errors.New("not allowed in this state")
	ErrUnavailable  = errors.New("data volume unavailable")
	ErrTooLarge     = errors.New("file too large for the filesystem")
	// ErrHeld: another client holds the data volume (an RBD image's
	// exclusive lock); taking it over must be asked for.
	ErrHeld = errors.New("held by another client")
	// ErrOffline: the LUN does not serve host I/O (offline.go): a pair
	// naming it could not be loaded, or its data volume is unavailable or
	// was lost. The same sentinel as volume.ErrOffline, so the SCSI front
	// end answers NOT READY without importing lm.
	ErrOffline = volume.ErrOffline
)

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
