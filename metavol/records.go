package metavol

import (
	"strconv"
	"time"
)

// Volume is a data volume record: where the bytes of one LUN live.
type Volume struct {
	ID   string `json:"id"`
	Path string `json:"path"`
	// Kind is "file", "block", "iscsi" (a LUN on another iSCSI
	// target, reached through lmtgt's initiator) or "rbd" (a Ceph RBD
	// image). Records written before the field existed read as a local
	// file or device.
	Kind string `json:"kind"`
	// Remote is set for Kind "iscsi" (Path is then empty).
	Remote *Remote `json:"remote,omitempty"`
	// RBD is set for Kind "rbd" (Path is then empty).
	RBD  *RBDImage `json:"rbd,omitempty"`
	Size int64     `json:"size"`
	// Owned volumes were created by lmtgt (a file in the data dir, or an
	// RBD image) and are deleted with their LUN; others (existing files,
	// devices, images) are only forgotten.
	Owned bool `json:"owned"`
	// Direct volumes are opened with O_DIRECT (no page cache). Records
	// written before the field existed read as false.
	Direct  bool      `json:"direct,omitempty"`
	Created time.Time `json:"created"`
	// Fence is set while lmtgt must hold a WRITE EXCLUSIVE persistent
	// reservation on a remote volume (lm/fence.go).
	Fence *Fence `json:"fence,omitempty"`
}

// Fence records the fence lmtgt holds on a remote data volume.
type Fence struct {
	Key       uint64    `json:"key"`
	Taken     time.Time `json:"taken"`
	Preempted string    `json:"preempted,omitempty"` // the holder it preempted, if any
	// Unfenced: the external target has no persistent reservations and
	// the admin accepted a pair without a fence.
	Unfenced bool `json:"unfenced,omitempty"`
}

// VolumeKindISCSI is the Kind of a data volume on another iSCSI target.
const VolumeKindISCSI = "iscsi"

// VolumeKindRBD is the Kind of a data volume that is a Ceph RBD image.
const VolumeKindRBD = "rbd"

// RBDImage names a Ceph RBD image. Its cluster is the server's default
// (serve --ceph-conf/--ceph-id/--ceph-keyring) where Conf, ID and Keyring
// are empty; a LUN created with its own --ceph-conf, --ceph-id or
// --ceph-keyring keeps them here, each overriding the server's. The record
// holds no credentials (the keyring is a path).
type RBDImage struct {
	Pool    string `json:"pool"`
	Image   string `json:"image"`
	Conf    string `json:"ceph_conf,omitempty"`
	ID      string `json:"ceph_id,omitempty"`
	Keyring string `json:"ceph_keyring,omitempty"`
}

// String is POOL/IMAGE.
func (r RBDImage) String() string { return r.Pool + "/" + r.Image }

// Remote says where a remote data volume is and how to log in to it. The
// CHAP secrets live only here, in the meta volume: never print them (use
// URL, which has none).
type Remote struct {
	Portal       string `json:"portal"` // host:port
	Target       string `json:"target"` // IQN
	LUN          uint64 `json:"lun"`
	CHAPUser     string `json:"chap_user,omitempty"`
	CHAPSecret   string `json:"chap_secret,omitempty"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// URL is iscsi://HOST:PORT/IQN/LUN, without user or secret.
func (r Remote) URL() string {
	return "iscsi://" + r.Portal + "/" + r.Target + "/" + strconv.FormatUint(r.LUN, 10)
}

// Identity is a SCSI identity a LUN adopted from an external LUN (lun
// import --identity adopt). It belongs to the LUN ID, like NAA and Serial,
// and never moves in a split. The LUN's Serial holds the adopted VPD 0x80
// serial.
type Identity struct {
	Vendor   string `json:"vendor"`   // standard INQUIRY T10 vendor (8)
	Product  string `json:"product"`  // product identification (16)
	Revision string `json:"revision"` // product revision level (4)
	// Designators are the external LUN's VPD 0x83 designation descriptors
	// whose association is the logical unit (NAA, T10, EUI-64, ...), each
	// with its 4-byte header, in the external LUN's order.
	Designators []byte `json:"designators"`
}

// LUN is what a host sees. Its identity (NAA, Serial) belongs to the LUN ID
// and never moves; VolumeID is the only link to the bytes and changes only
// in a split.
type LUN struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize uint32 `json:"block_size"`
	NAA       string `json:"naa"`    // 32 hex digits: NAA type 6, 16 bytes
	Serial    string `json:"serial"` // VPD 0x80 unit serial number
	VolumeID  string `json:"volume"`
	// Adopted is set when the LUN presents an external LUN's identity
	// (vendor, product, revision, VPD 0x83 LU designators) instead of
	// lmtgt's own; NAA is then unused.
	Adopted *Identity `json:"adopted,omitempty"`
	Created time.Time `json:"created"`
}

// Mapping exposes a LUN at a LUN number of a target.
type Mapping struct {
	LUN   uint64 `json:"lun"`
	LUNID string `json:"lun_id"`
	// ReadOnly write-protects the LUN at this mapping (lm/targets.go).
	ReadOnly bool `json:"read_only,omitempty"`
	// Initiators masks the mapping: only these initiators see the LUN
	// here (empty: every initiator the target allows).
	Initiators []string `json:"initiators,omitempty"`
}

// CHAP secrets of a target.
type CHAP struct {
	User         string `json:"user"`
	Secret       string `json:"secret"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// Target is an iSCSI target (IQN) with its LUN map and access rules.
type Target struct {
	IQN        string    `json:"iqn"`
	Mappings   []Mapping `json:"mappings"`
	AllowAll   bool      `json:"allow_all"`
	Initiators []string  `json:"initiators"`
	CHAP       *CHAP     `json:"chap,omitempty"`
	// Group is the target's ALUA target port group (1..65535) and Port
	// its relative target port identifier, unique on this server
	// (alua.go). PutTarget fills them in when they are 0.
	Group   uint16    `json:"group,omitempty"`
	Port    uint16    `json:"port,omitempty"`
	Created time.Time `json:"created"`
	// Portals is the target's portal group ("ip:port", canonical); empty:
	// every portal the server listens on (lm/targets.go).
	Portals []string `json:"portals,omitempty"`
}
