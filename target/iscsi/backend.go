package iscsi

import (
	"errors"
	"time"
)

// Backend is everything the transport needs from the rest of the target: the
// list of targets, login authorization, and a SCSI device layer per I_T nexus.
// The transport owns sockets, PDUs, sequence numbers and data movement; the
// Backend owns SCSI semantics. Every method must be safe for concurrent use.
type Backend interface {
	// Targets lists the targets this initiator may see in a SendTargets
	// discovery (ACL applied).
	Targets(initiator string) []TargetInfo
	// Login authorizes a normal-session login of initiator to target and
	// returns how to authenticate it. Errors: ErrTargetNotFound and
	// ErrNotAuthorized (both answered 0x0203 "not found", so an outsider
	// cannot tell them apart), anything else 0x0300.
	Login(target, initiator string) (Auth, error)
	// DiscoveryAuth returns the authentication required for discovery
	// sessions (AuthMethod None when Auth.CHAP is nil).
	DiscoveryAuth(initiator string) Auth
	// OpenNexus is called once a normal session enters full feature phase.
	// The Nexus lives until Close (logout, connection loss, reinstatement).
	OpenNexus(n NexusInfo) (Nexus, error)
}

// PortalFilter is an optional Backend extension for per-target portal
// groups: a Backend that implements it limits each target to some
// portals. The transport then lists a target in a discovery session only
// on one of its portals, and refuses a normal login to it on any other
// portal with 0x0203 (not found, as for an unknown target).
type PortalFilter interface {
	// OnPortal reports whether target is reachable on portal, the bound
	// "ip:port" address of the listener the connection came in on.
	OnPortal(target, portal string) bool
}

// TargetInfo is one SendTargets entry.
type TargetInfo struct {
	Name string
	// Portals as "host:port,tpgt"; empty means the portal the discovery
	// session came in on, and so does an unspecified host (0.0.0.0, ::).
	Portals []string
}

// Auth says how a login must authenticate.
type Auth struct {
	// CHAP is nil for AuthMethod=None.
	CHAP *CHAP
}

// CHAP credentials for one target. The initiator proves User/Secret; when
// MutualUser is set the target proves MutualUser/MutualSecret back.
type CHAP struct {
	User, Secret             string
	MutualUser, MutualSecret string
}

// NexusInfo names an I_T nexus.
type NexusInfo struct {
	Target    string
	Initiator string
	ISID      [6]byte
	TSIH      uint16
	TPGT      uint16
}

// Nexus is the SCSI device layer as seen from one session.
type Nexus interface {
	// Execute runs one SCSI command synchronously and fills its results.
	// It is called concurrently for many commands of the same session.
	Execute(c *Command)
	// TaskManagement runs a task management function that touches SCSI
	// state (LUN RESET, TARGET WARM/COLD RESET clear reservations and raise
	// unit attentions). ABORT TASK / ABORT TASK SET / CLEAR TASK SET are
	// handled by the transport, which then calls this so the backend can
	// drop its own state. Returns an RFC 7143 TMF response code.
	TaskManagement(fn TMFunction, lun uint64) TMFResponse
	// Close releases the nexus (reservations registered through it stay:
	// they belong to the I_T nexus identity, not the connection).
	Close()
}

// Command is one SCSI command between transport and backend.
type Command struct {
	// Set by the transport.
	LUN  uint64 // LUN number, already decoded from SAM addressing
	CDB  []byte // 6..16 bytes (or longer with AHS)
	Tag  uint32 // initiator task tag
	Attr byte   // task attribute (simple, ordered, head of queue, ACA)
	// DataOut holds exactly the bytes the initiator sent, never more than
	// the expected data transfer length (it may be shorter: underflow).
	DataOut []byte
	// DataIn is a buffer of capacity ExpectedReadLength supplied by the
	// transport; the backend fills DataIn[:n] and sets DataInLen = n.
	DataIn              []byte
	ExpectedReadLength  uint32
	ExpectedWriteLength uint32
	// Arrived is when the transport read the command's PDU: the backend
	// times the command from there (its wait for data, a slot, a CPU).
	Arrived time.Time
	// FileOK says the transport can send this command's Data-In straight
	// from a file (zerocopy.go): the backend may then answer with
	// DataInFile instead of filling DataIn.
	FileOK bool

	// Set by the backend.
	Status    byte   // SAM status: 0x00 GOOD, 0x02 CHECK CONDITION, 0x18 RESERVATION CONFLICT ...
	Sense     []byte // fixed-format sense data when Status is CHECK CONDITION
	DataInLen int    // bytes of DataIn produced (may be less than its capacity)
	// DataInFile, when its Owner is set (only allowed with FileOK and
	// GOOD status), is where the Data-In is instead of DataIn: DataInLen
	// bytes (at most DataInFile.Len) of file DataInFile.Fd from
	// DataInFile.Off. The transport calls DataInFile.Owner.Release()
	// exactly once, after the bytes are sent or will not be; the
	// descriptor must stay open until then.
	DataInFile FileData

	// Optional, set by the backend so residuals can be reported
	// (RFC 7143 §11.4.5): TransferLength is the number of bytes the CDB
	// asks to move in its data direction, independent of the expected
	// length (for READ/WRITE: transfer length x block size; for commands
	// with an allocation length: the bytes the command has to return, at
	// most the allocation length). When HasTransferLength is false the
	// transport assumes DataInLen (reads) or len(DataOut) (writes).
	// A backend must never read or write beyond len(DataOut) / cap of
	// DataIn: with EDTL < TransferLength it moves only EDTL bytes (and the
	// transport reports the overflow).
	TransferLength    uint32
	HasTransferLength bool
}

// TMFunction is an RFC 7143 §11.5.1 task management function code.
type TMFunction uint8

const (
	TMFAbortTask        TMFunction = 1
	TMFAbortTaskSet     TMFunction = 2
	TMFClearACA         TMFunction = 3
	TMFClearTaskSet     TMFunction = 4
	TMFLogicalUnitReset TMFunction = 5
	TMFTargetWarmReset  TMFunction = 6
	TMFTargetColdReset  TMFunction = 7
	TMFTaskReassign     TMFunction = 8
)

// TMFResponse is an RFC 7143 §11.6.1 response code.
type TMFResponse uint8

const (
	TMFComplete            TMFResponse = 0
	TMFTaskNotExist        TMFResponse = 1
	TMFLUNNotExist         TMFResponse = 2
	TMFTaskStillAllegiant  TMFResponse = 3
	TMFReassignUnsupported TMFResponse = 4
	TMFNotSupported        TMFResponse = 5
	TMFAuthFailed          TMFResponse = 6
	TMFRejected            TMFResponse = 255
)

// Login errors a Backend returns.
var (
	ErrTargetNotFound = errors.New("target not found")
	ErrNotAuthorized  = errors.New("initiator not authorized")
)
