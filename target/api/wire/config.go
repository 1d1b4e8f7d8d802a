package wire

import "time"

// The configuration file (`lmtgt config export|apply`, docs/cli.md
// "config"). One schema: these JSON names are also the YAML keys (the CLI
// writes YAML from this JSON). Lists are sorted (LUNs by name, targets by
// IQN, mappings by number, initiators by name, migrations by source,
// sessions by name) and empty lists are written as [] so that two exports
// of the same configuration are byte-identical and diff well.

// ConfigVersion is the version written in every export.
const ConfigVersion = 1

// SecretPlaceholder stands for a secret in an export without secrets;
// apply keeps the server's current secret where it finds it.
const SecretPlaceholder = "(hidden)"

// Config is GET /v1/config and the config of POST /v1/config/apply.
type Config struct {
	Version int `json:"version"`
	// DiscoveryCHAP: discovery (SendTargets) sessions authenticate with
	// it; absent: no authentication.
	DiscoveryCHAP *ConfigCHAP       `json:"discovery_chap,omitempty"`
	LUNs          []ConfigLUN       `json:"luns"`
	Targets       []ConfigTarget    `json:"targets"`
	Migrations    []ConfigMigration `json:"migrations"`
	Sessions      []ConfigSession   `json:"sessions"`
}

// ConfigCHAP is CHAP credentials (one-way, or mutual with MutualUser).
type ConfigCHAP struct {
	User         string `json:"user"`
	Secret       string `json:"secret"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// ConfigLUN is a LUN: its name (the key), identity, size and data volume.
type ConfigLUN struct {
	Name string `json:"name"`
	// ID, NAA (VPD 0x83) and Serial (VPD 0x80) are the LUN's identity: a
	// restore keeps them, so hosts see the same disks. Leave them out for
	// a new LUN: the server makes them.
	ID        string       `json:"id,omitempty"`
	NAA       string       `json:"naa,omitempty"`
	Serial    string       `json:"serial,omitempty"`
	Size      int64        `json:"size"`
	BlockSize uint32       `json:"block_size,omitempty"` // 512 (default) or 4096
	Volume    ConfigVolume `json:"volume"`
	// Identity is "adopted" for a LUN presenting an imported LUN's
	// identity; absent: lmtgt's own.
	Identity string `json:"identity,omitempty"`
	// ALUA lists the groups where the LUN's access state is not the
	// default (active-optimized); the rest have the default.
	ALUA []ConfigALUA `json:"alua,omitempty"`
}

// ConfigVolume is a LUN's data volume.
type ConfigVolume struct {
	// Kind is file, block, iscsi or rbd (may be left out for a new local
	// volume).
	Kind string `json:"kind,omitempty"`
	// Path is the file or block device; absent: a file lmtgt keeps in its
	// data dir (and deletes with the LUN).
	Path   string        `json:"path,omitempty"`
	Direct bool          `json:"direct,omitempty"`
	Remote *ConfigRemote `json:"remote,omitempty"`
	RBD    string        `json:"rbd,omitempty"` // POOL/IMAGE
	// The RBD image's own Ceph cluster (lun create --ceph-conf, --ceph-id,
	// --ceph-keyring); absent: the server's.
	CephConf    string `json:"ceph_conf,omitempty"`
	CephID      string `json:"ceph_id,omitempty"`
	CephKeyring string `json:"ceph_keyring,omitempty"`
}

// ConfigRemote is a data volume on another iSCSI target.
type ConfigRemote struct {
	URL          string `json:"url"`
	CHAPUser     string `json:"chap_user,omitempty"`
	CHAPSecret   string `json:"chap_secret,omitempty"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// ConfigALUA is a LUN's access state in one target port group.
type ConfigALUA struct {
	Group uint16 `json:"group"`
	State string `json:"state"`
}

// ConfigTarget is a target. Apply makes a target of the file match it
// exactly: its mappings, initiators, allow_all and CHAP.
type ConfigTarget struct {
	IQN string `json:"iqn"`
	// Group and Port are its ALUA target port group and relative target
	// port ID; absent (0): the server's choice, or unchanged.
	Group      uint16          `json:"group,omitempty"`
	Port       uint16          `json:"port,omitempty"`
	AllowAll   bool            `json:"allow_all"`
	Initiators []string        `json:"initiators"`
	CHAP       *ConfigCHAP     `json:"chap,omitempty"`
	LUNs       []ConfigMapping `json:"luns"`
	// Portals is the target's portal group: the portals ("ip:port", ones
	// the server listens on) it is served on; absent or empty: every
	// portal.
	Portals []string `json:"portals,omitempty"`
}

// ConfigMapping is a LUN number of a target, the LUN's name and the
// mapping's options.
type ConfigMapping struct {
	LUN  uint64 `json:"lun"`
	Name string `json:"name"`
	// ReadOnly write-protects the LUN at this mapping; Initiators masks
	// it (only these initiators see it; absent: every allowed one).
	ReadOnly   bool     `json:"read_only,omitempty"`
	Initiators []string `json:"initiators,omitempty"`
}

// ConfigPairOptions are the options of a pair created alone, or of every
// pair of a session (`migration create` / `session create` flags).
// Absent fields have their default.
type ConfigPairOptions struct {
	Speed     string `json:"speed,omitempty"`
	MaxMBps   int64  `json:"max_mbps,omitempty"`
	AutoSplit bool   `json:"auto_split,omitempty"`
	Verify    bool   `json:"verify,omitempty"`
	// Priority is 1 (lowest) to 9 (highest); absent: 5 (medium).
	Priority int `json:"priority,omitempty"`
	// StartAt is an RFC 3339 time; only a time still ahead is exported
	// (a start time that has passed means "at once").
	StartAt string `json:"start_at,omitempty"`
	// Windows are daily windows HH:MM[:SS]-HH:MM[:SS]=SPEED[,max-mbps=N].
	Windows []string `json:"windows,omitempty"`
	// MaxElapsed is a Go duration (6h0m0s); absent: no limit.
	MaxElapsed string `json:"max_elapsed,omitempty"`
	// MaxHostLatency is the host-latency bound, a Go duration (2ms) or
	// "off"; absent: the server's (serve --max-host-latency).
	MaxHostLatency string `json:"max_host_latency,omitempty"`
}

// ConfigMigration is a pair created alone (its progress is not config).
type ConfigMigration struct {
	Source  string `json:"source"`
	Target  string `json:"target"`
	Vehicle string `json:"vehicle,omitempty"`
	ConfigPairOptions
}

// ConfigSession is a migration session, the options it gives to every
// pair, its max active and its pairs.
type ConfigSession struct {
	Name      string `json:"name"`
	MaxActive int    `json:"max_active,omitempty"`
	ConfigPairOptions
	Pairs []ConfigSessionPair `json:"pairs"`
}

// ConfigSessionPair is one pair of a session.
type ConfigSessionPair struct {
	Source  string `json:"source"`
	Target  string `json:"target"`
	Vehicle string `json:"vehicle,omitempty"`
	// Options are the pair's own options (`migration set` on the pair),
	// all of them; absent: the session's. auto_split is the session's and
	// not allowed here.
	Options *ConfigPairOptions `json:"options,omitempty"`
}

// ApplyConfig is the body of POST /v1/config/apply.
type ApplyConfig struct {
	Config Config `json:"config"`
	// DryRun computes and returns the plan; nothing changes.
	DryRun bool `json:"dry_run,omitempty"`
	// Prune deletes the LUNs and targets the file does not name (never a
	// migration); without it they are kept and listed in Kept.
	Prune bool `json:"prune,omitempty"`
}

// ApplyResult answers POST /v1/config/apply: the plan, one line per
// change ("+ lun a: ...", "~ target T: map lun a as LUN 0", "- lun b:
// delete"), and what is kept although the file does not name it ("= ...").
type ApplyResult struct {
	DryRun  bool     `json:"dry_run"`
	Changes []string `json:"changes"`
	Kept    []string `json:"kept"`
	// Backup is the file the configuration before the apply was saved to
	// (empty for a dry run or when nothing changed).
	Backup string `json:"backup,omitempty"`
}

// ConfigBackup is one automatic backup (GET /v1/config/backups), newest
// first.
type ConfigBackup struct {
	Name string    `json:"name"`
	Path string    `json:"path"`
	Time time.Time `json:"time"`
	Size int64     `json:"size"`
}
