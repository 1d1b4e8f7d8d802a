package metavol

import "time"

// Volume is a data volume record: where the bytes of one LUN live.
type Volume struct {
	ID   string `json:"id"`
	Path string `json:"path"`
	// Kind is "file" or "block".
	Kind string `json:"kind"`
	Size int64  `json:"size"`
	// Owned volumes were created by lmtgt in the data dir and are deleted
	// with their LUN; others (existing files, devices) are only forgotten.
	Owned bool `json:"owned"`
	// Direct volumes are opened with O_DIRECT (no page cache). Records
	// written before the field existed read as false.
	Direct  bool      `json:"direct,omitempty"`
	Created time.Time `json:"created"`
}

// LUN is what a host sees. Its identity (NAA, Serial) belongs to the LUN ID
// and never moves; VolumeID is the only link to the bytes and changes only
// in a split.
type LUN struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	BlockSize uint32    `json:"block_size"`
	NAA       string    `json:"naa"`    // 32 hex digits: NAA type 6, 16 bytes
	Serial    string    `json:"serial"` // VPD 0x80 unit serial number
	VolumeID  string    `json:"volume"`
	Created   time.Time `json:"created"`
}

// Mapping exposes a LUN at a LUN number of a target.
type Mapping struct {
	LUN   uint64 `json:"lun"`
	LUNID string `json:"lun_id"`
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
	Created    time.Time `json:"created"`
}
