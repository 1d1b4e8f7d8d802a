package wire

import (
	"fmt"
	"time"
)

// Version is the path prefix of every API route.
const Version = "/v1"

// AllInitiators is the initiator name that opens a target to every initiator.
const AllInitiators = "ALL"

// CreateLUN is the body of POST /v1/luns.
type CreateLUN struct {
	Name string `json:"name"`
	// Size in bytes; 0 with Path means the file's or device's size.
	Size int64 `json:"size"`
	// BlockSize is 512 (default when 0) or 4096.
	BlockSize uint32 `json:"block_size,omitempty"`
	// Path names an existing file or block device, or a file to create
	// sparse; empty means a sparse file in the data dir.
	Path string `json:"path,omitempty"`
	// Direct opens the data volume with O_DIRECT (bypassing the page
	// cache); the volume keeps the setting for its life.
	Direct bool `json:"direct,omitempty"`
	// Force allows a Path in a system location (/etc, /usr, /boot, /proc,
	// /sys, /run ...), a mounted block device or a non-block file in /dev;
	// never a file lmtgt itself uses (its data dir, meta volume, admin
	// socket, another LUN's volume).
	Force bool `json:"force,omitempty"`
	// RBD is POOL/IMAGE of a Ceph RBD image in the server's cluster:
	// created with Size, or attached (Size 0: the image's size).
	RBD string `json:"rbd,omitempty"`
	// Takeover breaks another client's exclusive lock on the RBD image
	// (Ceph blocklists that client) and takes the image.
	Takeover bool `json:"takeover,omitempty"`
	// CephConf, CephID and CephKeyring (with RBD) name the image's
	// cluster when it is not the server's default (serve --ceph-*): each
	// one set overrides the server's and is kept with the LUN.
	CephConf    string `json:"ceph_conf,omitempty"`
	CephID      string `json:"ceph_id,omitempty"`
	CephKeyring string `json:"ceph_keyring,omitempty"`
	// AdoptFrom (with RBD) is iscsi://HOST[:PORT]/IQN/LUN of the LUN
	// another lmtgt server serves on the same image: a handover without
	// copy adopts its identity and reservations (docs/design.md "RBD
	// handover").
	AdoptFrom string `json:"adopt_from,omitempty"`
}

// ImportLUN is the body of POST /v1/luns/import: a LUN whose data volume
// is a LUN on another iSCSI target.
type ImportLUN struct {
	Name string `json:"name"`
	// From is iscsi://HOST[:PORT]/IQN/LUN, without credentials.
	From string `json:"from"`
	// CHAP credentials for the login to the other target (one-way, or
	// mutual with MutualUser/MutualSecret). Stored in the meta volume,
	// never shown.
	CHAPUser     string `json:"chap_user,omitempty"`
	CHAPSecret   string `json:"chap_secret,omitempty"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
	// Identity is "adopt" (default: present the external LUN's identity)
	// or "own" (lmtgt's generated one).
	Identity string `json:"identity,omitempty"`
}

// ResizeLUN is the body of POST|PATCH /v1/luns/{name}/resize.
type ResizeLUN struct {
	Size int64 `json:"size"`
}

// LUN is a LUN as shown by GET /v1/luns[/{name}].
type LUN struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Size       int64  `json:"size"`
	BlockSize  uint32 `json:"block_size"`
	NAA        string `json:"naa"`
	Serial     string `json:"serial"`
	Volume     string `json:"volume"` // data volume ID
	VolumePath string `json:"volume_path,omitempty"`
	VolumeKind string `json:"volume_kind,omitempty"`
	Owned      bool   `json:"volume_owned"`
	DirectIO   bool   `json:"direct_io"` // the data volume is opened with O_DIRECT
	// Remote is set when the data volume is a LUN on another iSCSI target.
	Remote *LUNRemote `json:"remote,omitempty"`
	// RBD is set when the data volume is a Ceph RBD image.
	RBD *LUNRBD `json:"rbd,omitempty"`
	// Identity is "own" (lmtgt's generated NAA and serial) or "adopted"
	// (the identity of the external LUN it was imported from).
	Identity string    `json:"identity"`
	Vendor   string    `json:"vendor,omitempty"`  // adopted INQUIRY vendor
	Product  string    `json:"product,omitempty"` // adopted INQUIRY product
	Created  time.Time `json:"created"`
	// Mappings lists where the LUN is exported.
	Mappings []LUNMapping `json:"mappings"`
	// Migration is set while the LUN is in a pair.
	Migration *LUNMigration `json:"migration,omitempty"`
	// State is "online" or "offline": an offline LUN fails every host
	// command with NOT READY (manual intervention required) because a
	// pair naming it could not be loaded, or its data volume is missing or
	// shrank, vanished or was replaced underneath lmtgt.
	State string `json:"state"`
	// Offline says why the LUN is offline and what to do; "" when online.
	Offline string `json:"offline,omitempty"`
}

// LUNRBD says which RBD image holds a LUN's data and how it stands.
type LUNRBD struct {
	Image string `json:"image"` // POOL/IMAGE
	// Lock is "held" (this server holds the image's exclusive lock),
	// "lost" (another client broke it) or "not open: WHY".
	Lock string `json:"lock"`
	// Cluster is the monitors' answer ("up, fsid F, N% used") or why
	// there is none.
	Cluster string `json:"cluster"`
	// Ceph names the image's cluster: its ceph.conf and client id.
	Ceph string `json:"ceph,omitempty"`
}

// LUNRemote says where a remote data volume is (never its secrets).
type LUNRemote struct {
	URL      string `json:"url"` // iscsi://HOST:PORT/IQN/LUN
	CHAPUser string `json:"chap_user,omitempty"`
	// Session is the initiator's session state: "up", "connecting" (lost,
	// I/O waits for the replacement timeout), "down" (I/O fails),
	// "closed" or "not open".
	Session string `json:"session"`
	// Fence is the state of lmtgt's reservation on the external LUN
	// (see Migration.Fence); empty for none.
	Fence string `json:"fence,omitempty"`
}

// LUNMapping is one export of a LUN: a target and a LUN number.
type LUNMapping struct {
	Target string `json:"target"`
	LUN    uint64 `json:"lun"`
	// ReadOnly: the mapping is write-protected.
	ReadOnly bool `json:"read_only,omitempty"`
	// Initiators masks the mapping (empty: every allowed initiator).
	Initiators []string `json:"initiators,omitempty"`
}

// LUNMigration is the LUN's role in a migration pair.
type LUNMigration struct {
	Role  string `json:"role"` // "source" or "target"
	Pair  string `json:"pair"` // pair ID
	Peer  string `json:"peer"` // the other LUN's name
	State string `json:"state"`
}

// CreateTarget is the body of POST /v1/targets.
type CreateTarget struct {
	IQN string `json:"iqn"`
	// Portals is the target's portal group ("ip:port" each, among the
	// server's portals); empty: every portal.
	Portals []string `json:"portals,omitempty"`
}

// Portal is the body of POST /v1/targets/{iqn}/portals.
type Portal struct {
	Portal string `json:"portal"`
}

// Target is an iSCSI target as shown by GET /v1/targets[/{iqn}].
type Target struct {
	IQN        string      `json:"iqn"`
	LUNs       []TargetLUN `json:"luns"`
	AllowAll   bool        `json:"allow_all"`
	Initiators []string    `json:"initiators"`
	CHAP       *CHAPInfo   `json:"chap,omitempty"`
	Created    time.Time   `json:"created"`
	// Portals is the target's portal group; empty: every portal.
	Portals []string `json:"portals,omitempty"`
	// Sessions logged in to the target now (in `target show`).
	Sessions []Session `json:"sessions,omitempty"`
	// Warnings carries advice about the change just made (for example a
	// short CHAP secret); empty in listings.
	Warnings []string `json:"warnings,omitempty"`
}

// Session is one iSCSI session logged in to a target.
type Session struct {
	Initiator    string `json:"initiator"`
	ISID         string `json:"isid"`
	TSIH         uint16 `json:"tsih"`
	Remote       string `json:"remote"`
	HeaderDigest bool   `json:"header_digest"`
	DataDigest   bool   `json:"data_digest"`
}

// TargetLUN is one LUN number of a target.
type TargetLUN struct {
	LUN       uint64 `json:"lun"`
	Name      string `json:"name"`
	ID        string `json:"id"`
	Size      int64  `json:"size"`
	BlockSize uint32 `json:"block_size"`
	// ReadOnly: the mapping is write-protected.
	ReadOnly bool `json:"read_only,omitempty"`
	// Initiators masks the mapping: only they see the LUN (empty: all).
	Initiators []string `json:"initiators,omitempty"`
}

// CHAPInfo shows a target's CHAP configuration without its secrets.
type CHAPInfo struct {
	User       string `json:"user"`
	MutualUser string `json:"mutual_user,omitempty"`
}

// Discovery is how discovery (SendTargets) sessions authenticate
// (GET /v1/discovery). CHAP nil: no authentication (the default).
type Discovery struct {
	CHAP     *CHAPInfo `json:"chap,omitempty"`
	Warnings []string  `json:"warnings,omitempty"`
}

// MapLUN is the body of POST /v1/targets/{iqn}/luns.
type MapLUN struct {
	// LUN is the LUN's name.
	LUN string `json:"lun"`
	// Number is the LUN number; nil means the lowest free number from 0.
	Number *uint64 `json:"number,omitempty"`
	// ReadOnly write-protects the mapping.
	ReadOnly bool `json:"read_only,omitempty"`
	// Initiators masks the mapping (empty: every allowed initiator).
	Initiators []string `json:"initiators,omitempty"`
}

// SetMapping is the body of PATCH /v1/targets/{iqn}/luns/{name}: a nil
// field keeps the setting; an empty Initiators list unmasks.
type SetMapping struct {
	ReadOnly   *bool     `json:"read_only,omitempty"`
	Initiators *[]string `json:"initiators,omitempty"`
}

// Logout is the body of POST /v1/targets/{iqn}/logout and its answer.
type Logout struct {
	Initiator string `json:"initiator"`
	// Sessions is how many sessions were ended (in the answer).
	Sessions int `json:"sessions"`
}

// Allow is the body of POST /v1/targets/{iqn}/initiators.
type Allow struct {
	// Initiator is an initiator name, or ALL.
	Initiator string `json:"initiator"`
}

// SetCHAP is the body of PUT /v1/targets/{iqn}/chap.
type SetCHAP struct {
	User         string `json:"user"`
	Secret       string `json:"secret"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// CreateMigration is the body of POST /v1/migrations.
type CreateMigration struct {
	Source    string `json:"source"` // LUN names
	Target    string `json:"target"`
	Speed     string `json:"speed,omitempty"` // low|medium|high|highest
	MaxMBps   int64  `json:"max_mbps,omitempty"`
	AutoSplit bool   `json:"auto_split,omitempty"`
	Verify    bool   `json:"verify,omitempty"`
	// MaxHostLatency bounds the host p99 latency on the pair's LUNs while
	// it copies: a Go duration ("2ms"), "off", or empty (the server's).
	MaxHostLatency string `json:"max_host_latency,omitempty"`
	// DryRun: check everything and answer the estimate (Migration.Estimate,
	// state "dry-run"); nothing is created.
	DryRun bool `json:"dry_run,omitempty"`
	// Vehicle: "auto" (default), "generic" or "copy_file_range".
	Vehicle string `json:"vehicle,omitempty"`
	// Preempt lets the fence of an imported source preempt another
	// initiator's reservation on the external LUN; AllowUnfenced accepts
	// an external target without persistent reservations.
	Preempt       bool `json:"preempt,omitempty"`
	AllowUnfenced bool `json:"allow_unfenced,omitempty"`
	// Priority: low, medium (default), high or 1..9 (higher copies
	// first). StartAt: RFC 3339, or HH:MM[:SS] in the server's local time
	// (its next occurrence); the pair is "scheduled" until then.
	Priority string `json:"priority,omitempty"`
	StartAt  string `json:"start_at,omitempty"`
	// Windows: daily windows "HH:MM[:SS]-HH:MM[:SS]=SPEED[,max-mbps=N]"
	// in the server's local time; MaxElapsed: a Go duration ("6h") of
	// copying after which the pair pauses.
	Windows    []string `json:"windows,omitempty"`
	MaxElapsed string   `json:"max_elapsed,omitempty"`
}

// SetMigration is the body of PATCH /v1/migrations/{source}; nil fields stay.
type SetMigration struct {
	Speed   *string `json:"speed,omitempty"`
	MaxMBps *int64  `json:"max_mbps,omitempty"` // 0 removes the cap
	// Priority: low, medium, high or 1..9.
	Priority  *string `json:"priority,omitempty"`
	AutoSplit *bool   `json:"auto_split,omitempty"`
	Verify    *bool   `json:"verify,omitempty"`
	// MaxActive: a session's pairs copying at once (sessions only).
	MaxActive *int `json:"max_active,omitempty"`
	// Windows replaces the daily windows (["none"] or [] removes them);
	// MaxElapsed a Go duration ("0" removes the limit).
	Windows    *[]string `json:"windows,omitempty"`
	MaxElapsed *string   `json:"max_elapsed,omitempty"`
	// MaxHostLatency: "2ms", "off", or "0" (back to the server's).
	MaxHostLatency *string `json:"max_host_latency,omitempty"`
}

// Limits are the server-wide copy limits (GET/PATCH /v1/config/limits):
// pairs copying at once (Active of them now, Waiting queued for a slot)
// and the bandwidth budget of all copies together (0: none).
type Limits struct {
	MaxActive    int   `json:"max_active"`
	Active       int   `json:"active"`
	Waiting      int   `json:"waiting"`
	MaxTotalMBps int64 `json:"max_total_mbps"`
}

// SetLimits is the body of PATCH /v1/config/limits; nil fields stay.
type SetLimits struct {
	MaxActive    *int   `json:"max_active,omitempty"`
	MaxTotalMBps *int64 `json:"max_total_mbps,omitempty"` // 0 removes the budget
}

// Migration is a pair as shown by GET /v1/migrations[/{source}].
type Migration struct {
	// Warnings are given by create only (for example the bypass warning
	// of a source imported from another array).
	Warnings []string `json:"warnings,omitempty"`
	// Fence is the state of the fence on an imported source's old path
	// ("held (key 0x...)", "lost: ...", "unfenced: ..."); empty for none.
	Fence  string `json:"fence,omitempty"`
	ID     string `json:"id"`
	Source string `json:"source"`
	Target string `json:"target"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	// CopiedBytes: bytes really read and written (initial copy and DCL
	// re-copies); SkippedBytes: bytes of the LUN the initial copy passed
	// without a transfer (holes, zero chunks); DoneBytes: the initial
	// copy's progress over the LUN (holes included; percent = done/total);
	// RemainingBytes: allocated bytes still to copy plus the DCL. RateBps
	// and ETASeconds use the bytes really moved.
	CopiedBytes    int64  `json:"copied_bytes"`
	SkippedBytes   int64  `json:"skipped_bytes"`
	DoneBytes      int64  `json:"done_bytes"`
	RemainingBytes int64  `json:"remaining_bytes"`
	TotalBytes     int64  `json:"total_bytes"`
	DCLBytes       int64  `json:"dcl_bytes"`
	RateBps        int64  `json:"rate_bps"`
	ETASeconds     int64  `json:"eta_seconds"`
	Vehicle        string `json:"vehicle"`
	Speed          string `json:"speed"`
	MaxMBps        int64  `json:"max_mbps"`
	// LimitBps is the copy rate speed and max_mbps allow together (the
	// lower one; 0: unlimited) and LimitedBy which one it is: "speed",
	// "max_mbps" or "" (nothing); while a daily window is in force
	// (Window), the window's speed and cap, not the pair's own.
	LimitBps  int64  `json:"limit_bps"`
	LimitedBy string `json:"limited_by"`
	// MaxHostLatency is the pair's own bound ("": the server's, "off")
	// and HostLatencyBound the one in force ("": none). While it copies,
	// EffectiveBps is the copy rate allowed now (0: unlimited), HostP99MS
	// the host p99 on its LUNs over the last guard tick (0: no host I/O)
	// and Throttle why ("held back: host p99 4.1 ms > 2.0 ms").
	MaxHostLatency   string  `json:"max_host_latency,omitempty"`
	HostLatencyBound string  `json:"host_latency_bound,omitempty"`
	EffectiveBps     int64   `json:"effective_bps"`
	HostP99MS        float64 `json:"host_p99_ms,omitempty"`
	Throttle         string  `json:"throttle,omitempty"`
	// DryRun and Estimate: a dry run's answer (nothing was created).
	// EstimateSeconds and EstimateBytes: the estimate kept on a real pair;
	// ActualSeconds: from its copy's start to its first sync (0 before).
	DryRun          bool      `json:"dry_run,omitempty"`
	Estimate        *Estimate `json:"estimate,omitempty"`
	EstimateSeconds float64   `json:"estimate_seconds,omitempty"`
	EstimateBytes   int64     `json:"estimate_bytes,omitempty"`
	ActualSeconds   float64   `json:"actual_seconds,omitempty"`
	AutoSplit       bool      `json:"auto_split"`
	Verify          bool      `json:"verify"`
	SplitPauseMS    float64   `json:"split_pause_ms"`
	Created         time.Time `json:"created"`
	// CursorBytes is the copy cursor; DataBytes the bytes the initial copy
	// transferred (holes and zero chunks are skipped); RecopiedBytes the
	// bytes DCL re-copies transferred.
	CursorBytes   int64  `json:"cursor_bytes"`
	DataBytes     int64  `json:"data_bytes"`
	RecopiedBytes int64  `json:"recopied_bytes"`
	SourceID      string `json:"source_id,omitempty"`
	TargetID      string `json:"target_id,omitempty"`
	// Priority (1..9, higher copies first) and its name (low, medium,
	// high or the number); StartAt: when a scheduled pair starts;
	// QueuePos: its place among the pairs waiting for a copy slot (1 =
	// next, 0 = not waiting) under the server's MaxActive; Session: the
	// session the pair belongs to.
	Priority     int        `json:"priority"`
	PriorityName string     `json:"priority_name"`
	StartAt      *time.Time `json:"start_at,omitempty"`
	QueuePos     int        `json:"queue_pos,omitempty"`
	MaxActive    int        `json:"max_active,omitempty"`
	Session      string     `json:"session,omitempty"`
	// Windows; Window is the one in force now (empty: the pair's own
	// speed and cap apply; LimitBps is the window's when one is) until
	// WindowUntil (the next window boundary); MaxElapsed (a Go duration,
	// empty: none) and the copying time so far in seconds.
	Windows            []string   `json:"windows,omitempty"`
	Window             string     `json:"window,omitempty"`
	WindowUntil        *time.Time `json:"window_until,omitempty"`
	MaxElapsed         string     `json:"max_elapsed,omitempty"`
	CopyElapsedSeconds float64    `json:"copy_elapsed_seconds"`
	// Switched: the pair mirrors back (split --keep-source): the source
	// LUN runs on the new volume, host writes also reach the old one
	// (the target LUN's) until rollback or commit.
	Switched bool `json:"switched,omitempty"`
}

// Estimate is what a migration of one pair is expected to take (a dry
// run's answer): the bytes to copy (the source's allocated extents), the
// vehicle that would run, the rate limit of speed and cap, the source's
// read rate measured over SampleBytes in SampleMS, the rate the estimate
// uses and why (Basis), and the duration, simulated through the daily
// windows from the copy's start.
type Estimate struct {
	TotalBytes  int64   `json:"total_bytes"`
	Bytes       int64   `json:"bytes"`
	Vehicle     string  `json:"vehicle"`
	LimitBps    int64   `json:"limit_bps"`
	LimitedBy   string  `json:"limited_by"`
	ReadBps     int64   `json:"read_bps"`
	SampleBytes int64   `json:"sample_bytes"`
	SampleMS    float64 `json:"sample_ms"`
	RateBps     int64   `json:"rate_bps"`
	Basis       string  `json:"basis"`
	Seconds     float64 `json:"seconds"`
	// Start is when the copy would start (now, or the start time when
	// it is ahead), WaitSeconds the time until then; Finish is Start +
	// Seconds (absent when no rate is known). Boundaries is the number of
	// window boundaries the copy crosses, AverageBps its average rate.
	Start       time.Time  `json:"start"`
	WaitSeconds float64    `json:"wait_seconds,omitempty"`
	Finish      *time.Time `json:"finish,omitempty"`
	Boundaries  int        `json:"boundaries,omitempty"`
	AverageBps  int64      `json:"average_bps,omitempty"`
}

// Split is the body of POST /v1/migrations/split (and of
// /v1/migrations/rollback, which takes no KeepSource or Retire).
type Split struct {
	// Sources name the pairs: source LUN, target LUN or pair ID.
	Sources []string `json:"sources"`
	// Force splits pairs of a session alone (recorded on the session).
	Force bool `json:"force,omitempty"`
	// MaxPause is a Go duration ("100ms"); empty means 100ms.
	MaxPause string `json:"max_pause,omitempty"`
	// KeepSource keeps every pair, switched: host writes are mirrored
	// back to the old volumes until rollback or commit.
	KeepSource bool `json:"keep_source,omitempty"`
	// Retire, after a plain split, deletes each old LUN (Retire).
	Retire *Retire `json:"retire,omitempty"`
}

// Retire asks to delete the old LUN after a split or a commit: its volume
// goes with it if lmtgt created it, or with DeleteVolume (a file or an
// RBD image); Scrub discards it (zeroes what discard left) first.
type Retire struct {
	Scrub        bool `json:"scrub,omitempty"`
	DeleteVolume bool `json:"delete_volume,omitempty"`
}

// Commit is the body of POST /v1/migrations/commit.
type Commit struct {
	Sources []string `json:"sources"`
	Retire  *Retire  `json:"retire,omitempty"`
}

// SplitResult reports a (consistent) split, rollback or commit.
type SplitResult struct {
	Pairs   []string `json:"pairs"`
	PauseMS float64  `json:"pause_ms"`
	// State is the pairs' state now: split, switched (--keep-source) or
	// synced (rollback).
	State string `json:"state,omitempty"`
	// Retired reports the old LUNs retired (one per pair, when asked).
	Retired []Retired `json:"retired,omitempty"`
}

// Retired is what a retire did with one old LUN. Error is set when the
// retire of that LUN failed (the split or commit itself succeeded).
type Retired struct {
	Source        string `json:"source"`
	LUN           string `json:"lun"`
	Volume        string `json:"volume,omitempty"`
	Path          string `json:"path,omitempty"`
	Scrub         string `json:"scrub,omitempty"` // "discard" or "discard+zero"
	VolumeDeleted bool   `json:"volume_deleted"`
	VolumeNote    string `json:"volume_note,omitempty"`
	Error         string `json:"error,omitempty"`
}

// DeletedMigrations answers DELETE /v1/migrations/{source}: the ended
// pair records of the source that were deleted.
type DeletedMigrations struct {
	Source string   `json:"source"`
	Pairs  []string `json:"pairs"`
}

// Health is the body of GET /v1/health.
type Health struct {
	Status  string   `json:"status"`
	Version string   `json:"version"`
	Portals []string `json:"portals"`
}

// Error is every non-2xx response body. Message is the whole error text,
// Object names what it is about ("lun demo", "target iqn...") and Reason is
// the short cause ("mapped to a target").
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	Object  string `json:"object,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	switch {
	case e.Object != "" && e.Reason != "":
		return e.Object + ": " + e.Reason
	case e.Reason != "":
		return e.Reason
	}
	return fmt.Sprintf("HTTP status %d", e.Status)
}
