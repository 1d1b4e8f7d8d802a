package iscsi

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the iSCSI well-known port.
const DefaultPort = 3260

// Config says where a remote LUN is and how to talk to it. Zero values take
// the defaults listed on each field (see withDefaults).
type Config struct {
	Portal    string // host:port of the target portal
	Target    string // target IQN
	LUN       uint64 // logical unit number
	Initiator string // our InitiatorName; default "iqn.2026-11.org.lmtgt:initiator"
	// ISID is the session's initiator session ID; zero picks a random one
	// at Dial. Either way it is kept for every re-login. A fixed ISID keeps
	// the I_T nexus (and so a persistent reservation held through it) the
	// same across restarts of the program too.
	ISID [6]byte

	// AllowStandby lets OpenConfig open a LUN whose path is in an ALUA
	// standby, unavailable or transitioning state (where TEST UNIT READY
	// fails with NOT READY): its probe sends no TEST UNIT READY. For a
	// caller that only reads identity, capacity and persistent
	// reservations, which such a path answers.
	AllowStandby bool

	// CHAP: CHAPUser/CHAPSecret authenticate us to the target. With
	// MutualUser/MutualSecret set the target must prove itself too
	// (mutual CHAP): it must answer with CHAP_N=MutualUser and a response
	// computed with MutualSecret.
	CHAPUser, CHAPSecret     string
	MutualUser, MutualSecret string

	// Digests: offer CRC32C (the target decides; "CRC32C,None" is offered).
	HeaderDigest, DataDigest bool
	// RequireDigests refuses a login where the target chose None.
	RequireDigests bool

	// Operational values we offer (RFC 7143 §13). Defaults: MaxRecvDataSegmentLength
	// 262144, MaxBurstLength 1 MiB, FirstBurstLength 256 KiB, ImmediateData
	// Yes, InitialR2T No (NoImmediateData/InitialR2T flip them).
	MaxRecvDataSegmentLength uint32
	MaxBurstLength           uint32
	FirstBurstLength         uint32
	NoImmediateData          bool
	InitialR2T               bool

	// QueueDepth caps commands in flight on the session (default 128); the
	// target's CmdSN window caps it further. MaxQueued caps commands
	// accepted but not yet sent (default 1024): callers beyond it block.
	QueueDepth int
	MaxQueued  int

	// Timeouts. DialTimeout 5 s, LoginTimeout 15 s, CommandTimeout 30 s (a
	// command without an answer for this long is aborted with ABORT TASK),
	// AbortTimeout 10 s (no TMF answer: the session is dropped and
	// re-established), NopInterval 5 s (idle time before we ping),
	// NopTimeout 5 s (unanswered ping: the connection is dead),
	// ReplacementTimeout 30 s (how long I/O waits for a lost session to
	// come back before it fails), ReconnectMin 100 ms / ReconnectMax 5 s
	// (backoff between reconnect attempts).
	DialTimeout        time.Duration
	LoginTimeout       time.Duration
	CommandTimeout     time.Duration
	AbortTimeout       time.Duration
	NopInterval        time.Duration
	NopTimeout         time.Duration
	ReplacementTimeout time.Duration
	ReconnectMin       time.Duration
	ReconnectMax       time.Duration
	// MaxAttempts bounds how often one command is sent (re-issues after a
	// reconnect or an abort included); default 16.
	MaxAttempts int
}

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.DialTimeout, 5*time.Second)
	def(&c.LoginTimeout, 15*time.Second)
	def(&c.CommandTimeout, 30*time.Second)
	def(&c.AbortTimeout, 10*time.Second)
	def(&c.NopInterval, 5*time.Second)
	def(&c.NopTimeout, 5*time.Second)
	def(&c.ReplacementTimeout, 30*time.Second)
	def(&c.ReconnectMin, 100*time.Millisecond)
	def(&c.ReconnectMax, 5*time.Second)
	if c.Initiator == "" {
		c.Initiator = "iqn.2026-11.org.lmtgt:initiator"
	}
	if c.MaxRecvDataSegmentLength == 0 {
		c.MaxRecvDataSegmentLength = 262144
	}
	if c.MaxBurstLength == 0 {
		c.MaxBurstLength = 1 << 20
	}
	if c.FirstBurstLength == 0 {
		c.FirstBurstLength = 256 << 10
	}
	if c.FirstBurstLength > c.MaxBurstLength {
		c.FirstBurstLength = c.MaxBurstLength
	}
	if c.QueueDepth <= 0 {
		c.QueueDepth = 128
	}
	if c.MaxQueued <= 0 {
		c.MaxQueued = 1024
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 16
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Portal == "":
		return errors.New("iscsi config: no portal")
	case c.Target == "":
		return errors.New("iscsi config: no target name")
	case c.LUN > 0x3fff:
		return fmt.Errorf("iscsi config: lun %d beyond flat addressing (16383)", c.LUN)
	case (c.CHAPUser == "") != (c.CHAPSecret == ""):
		return errors.New("iscsi config: CHAP needs both a user and a secret")
	case c.MutualUser != "" && c.CHAPUser == "":
		return errors.New("iscsi config: mutual CHAP needs one-way CHAP too")
	case (c.MutualUser == "") != (c.MutualSecret == ""):
		return errors.New("iscsi config: mutual CHAP needs both a user and a secret")
	case c.MaxRecvDataSegmentLength < 512 || c.MaxRecvDataSegmentLength > 1<<24-1:
		return fmt.Errorf("iscsi config: MaxRecvDataSegmentLength %d outside 512..16777215", c.MaxRecvDataSegmentLength)
	case c.MaxBurstLength < 512 || c.MaxBurstLength > 1<<24-1:
		return fmt.Errorf("iscsi config: MaxBurstLength %d outside 512..16777215", c.MaxBurstLength)
	case c.FirstBurstLength < 512:
		return fmt.Errorf("iscsi config: FirstBurstLength %d below 512", c.FirstBurstLength)
	}
	return nil
}

// String names the LUN without any secret.
func (c Config) String() string {
	return Redact(c.URL())
}

// URL renders the config as iscsi://[USER%SECRET@]HOST:PORT/IQN/LUN. It
// carries the secret: never print it (use String).
func (c Config) URL() string {
	u := "iscsi://"
	if c.CHAPUser != "" {
		u += c.CHAPUser + "%" + c.CHAPSecret + "@"
	}
	return u + c.Portal + "/" + c.Target + "/" + strconv.FormatUint(c.LUN, 10)
}

// Redact removes the secret from an iscsi:// URL (the user stays).
func Redact(u string) string {
	rest, ok := strings.CutPrefix(u, "iscsi://")
	if !ok {
		return u
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return u
	}
	user, _, _ := strings.Cut(rest[:at], "%")
	return "iscsi://" + user + "%xxxxx@" + rest[at+1:]
}

// ParseURL parses iscsi://[USER[%SECRET]@]HOST[:PORT]/IQN/LUN, the form
// libiscsi and QEMU use, into a Config (other fields zero: defaults). It is
// the one place this form is parsed. Errors never contain the secret.
func ParseURL(s string) (Config, error) {
	var c Config
	rest, ok := strings.CutPrefix(s, "iscsi://")
	if !ok {
		return Config{}, fmt.Errorf("parse %s: not an iscsi:// URL", Redact(s))
	}
	// The secret may hold any character but NUL ('%', '@' and '/' too):
	// the credentials end at the last '@' (IQNs and LUNs have none), the
	// user at the first '%'. No percent-decoding, as in libiscsi.
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		cred := rest[:at]
		rest = rest[at+1:]
		c.CHAPUser, c.CHAPSecret, _ = strings.Cut(cred, "%")
		if c.CHAPUser == "" || c.CHAPSecret == "" {
			return Config{}, fmt.Errorf("parse %s: CHAP needs USER%%SECRET", Redact(s))
		}
	}
	host, path, ok := strings.Cut(rest, "/")
	if !ok || host == "" {
		return Config{}, fmt.Errorf("parse %s: want iscsi://HOST[:PORT]/IQN/LUN", Redact(s))
	}
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(DefaultPort))
	}
	c.Portal = host
	iqn, lun, ok := strings.Cut(path, "/")
	if !ok || iqn == "" || lun == "" || strings.Contains(lun, "/") {
		return Config{}, fmt.Errorf("parse %s: want iscsi://HOST[:PORT]/IQN/LUN", Redact(s))
	}
	c.Target = iqn
	n, err := strconv.ParseUint(lun, 10, 64)
	if err != nil || n > 0x3fff {
		return Config{}, fmt.Errorf("parse %s: lun %q is not a number in 0..16383", Redact(s), lun)
	}
	c.LUN = n
	return c, nil
}

// encodeLUN renders a LUN number as the 8-byte LUN field (SAM: peripheral
// addressing below 256, flat space addressing up to 16383).
func encodeLUN(n uint64) [8]byte {
	var b [8]byte
	if n < 256 {
		b[1] = byte(n)
	} else {
		b[0] = 0x40 | byte(n>>8)
		b[1] = byte(n)
	}
	return b
}
