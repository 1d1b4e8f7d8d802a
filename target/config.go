package target

import (
	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// The Server's public API (implemented in server.go):
//
//	func New(opts Options) (*Server, error)
//	func (s *Server) Apply(targets []Target) error // live: new LUNs raise REPORTED LUNS DATA HAS CHANGED
//	func (s *Server) CapacityChanged(lunID string) // after a resize: CAPACITY DATA HAS CHANGED
//	func (s *Server) Start() error                 // bind every portal
//	func (s *Server) Addrs() []net.Addr
//	func (s *Server) Shutdown(ctx context.Context) error

// LUN is one logical unit exported at a LUN number.
type LUN struct {
	Number uint64
	ID     string // LUN ID (stable; keys reservations)
	Name   string
	NAA    [16]byte // NAA type 6 identifier for VPD 0x83
	Serial string   // VPD 0x80
	// Adopted, when set, replaces lmtgt's INQUIRY vendor/product/revision
	// and VPD 0x83 logical-unit designators (identity.go).
	Adopted   *Identity
	BlockSize uint32
	// ALUA is the LUN's access state per target port group (alua.go);
	// groups not listed are active/optimized. The same in every target
	// that maps the LUN.
	ALUA GroupStates
	// Volume is the I/O handle (lm's router); its Size() is the capacity.
	Volume volume.Volume
	// ReadOnly write-protects this mapping (targetcli's write_protect on
	// a mapped LUN): commands that change the medium answer DATA
	// PROTECT, WRITE PROTECTED and MODE SENSE sets the WP bit. Another
	// mapping of the same LUN may be writable.
	ReadOnly bool
	// Initiators masks this mapping (targetcli's mapped_luns): when not
	// empty only these initiator names see the LUN at this number; the
	// others get LOGICAL UNIT NOT SUPPORTED and do not find it in REPORT
	// LUNS. Empty: every initiator the target's ACL lets in.
	Initiators []string
}

// Target is one iSCSI target.
type Target struct {
	IQN        string
	LUNs       []LUN
	AllowAll   bool
	Initiators []string
	CHAP       *iscsi.CHAP
	// Group is the target's ALUA target port group (0: DefaultGroup) and
	// RelPort its relative target port identifier, unique on the server
	// (0: the lowest free one, in IQN order).
	Group   uint16
	RelPort uint16
	// Portals is the target's portal group: the "ip:port" listening
	// addresses (bound, as Server.Portals lists them) it is served on.
	// Empty: every portal. Discovery on another portal does not list the
	// target, a login there is refused as "not found", and sessions on a
	// portal removed from the group are ended.
	Portals []string
}

// ReservationStore persists SCSI-3 persistent reservation state per LUN ID
// (metavol implements it) so reservations survive a restart.
type ReservationStore interface {
	LoadReservations(lunID string) ([]byte, error) // nil, nil when none
	SaveReservations(lunID string, state []byte) error
}
