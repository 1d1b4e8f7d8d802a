package target

// The gotgt adapter: the only file that imports gotgt. gotgt serves the
// device-type behaviour it is good at, MODE SENSE/MODE SELECT (its mode
// pages and block descriptor) and SEND DIAGNOSTIC, and nothing else: the
// dispatch table (dispatch.go) calls gotgtLU for exactly those opcodes,
// and this file translates a Cmd into gotgt's api.SCSICommand and the
// answer back. Everything else (data path, identity, provisioning,
// reservations, REPORT LUNS, INQUIRY) is lmtgt's own and never builds a
// gotgt command.
//
// Package-level state exists only here, because gotgt demands it: the
// one-time registration of our backing store and the logrus routing.
// gotgt's own target service, LUN maps and reservation operator are never
// used.

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/gostor/gotgt/pkg/api"
	"github.com/gostor/gotgt/pkg/config"
	"github.com/gostor/gotgt/pkg/scsi"
	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
)

// backingStoreName is the gotgt backing-store type registered by this package.
const backingStoreName = "lmtgt"

// glue is the only package-level mutable state of lmtgt (gotgt demands it).
var glue struct {
	once sync.Once
	// mu serializes LU creation: the backing store constructor gotgt calls
	// takes no arguments, so the store to bind is handed over in next.
	mu   sync.Mutex
	next *lunStore
	// log receives gotgt's logrus output (the most recently created Server's).
	log atomic.Pointer[zerolog.Logger]
}

var errNoStore = errors.New("lmtgt backing store: no store handed over")

// glueInit performs gotgt's one-time global setup and routes its logs to log.
func glueInit(log zerolog.Logger) {
	l := log.With().Str("component", "gotgt").Logger()
	glue.log.Store(&l)
	glue.once.Do(func() {
		// gotgt serves no INQUIRY and no ORWRITE here; switch its
		// multipath and ORWRITE(16) emulation off all the same.
		// gotgt's ALUA stays off: ours is in alua.go.
		scsi.EnableMultipath = false
		scsi.EnableORWrite16 = false
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.WarnLevel)
		logrus.AddHook(logrusHook{})
		scsi.RegisterBackingStore(backingStoreName, func() (api.BackingStore, error) {
			// Called by scsi.NewSCSILu from newGotgtLU with glue.mu held.
			s := glue.next
			glue.next = nil
			if s == nil {
				return nil, errNoStore
			}
			return s, nil
		})
	})
}

// logrusHook forwards gotgt's logrus entries to zerolog at debug level:
// gotgt warns on every CHECK CONDITION, which is normal SCSI traffic.
type logrusHook struct{}

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (logrusHook) Fire(e *logrus.Entry) error {
	if l := glue.log.Load(); l != nil {
		l.Debug().Str("level", e.Level.String()).Msg(e.Message)
	}
	return nil
}

// gotgtLU is a gotgt logical unit that serves MODE SENSE, MODE SELECT and
// SEND DIAGNOSTIC for one luState (its mode block descriptor carries the
// size and block size the luState was built with). Immutable once built.
type gotgtLU struct {
	lu *api.SCSILu
}

// newGotgtLU creates the gotgt logical unit for a LUN of size bytes.
func newGotgtLU(lunID string, size int64, blockShift uint) (gotgtLU, error) {
	glue.mu.Lock()
	glue.next = &lunStore{size: uint64(size)}
	lu, err := scsi.NewSCSILu(&config.BackendStorage{
		DeviceID:         lunHash(lunID) >> 4, // gotgt ORs a type nibble into the top bits
		Path:             backingStoreName + ":" + lunID,
		Online:           true,
		ThinProvisioning: true,
		BlockShift:       blockShift,
	})
	glue.next = nil
	glue.mu.Unlock()
	if err != nil {
		return gotgtLU{}, fmt.Errorf("lun %s: gotgt logical unit: %w", lunID, err)
	}
	return gotgtLU{lu: lu}, nil
}

// modeSense serves MODE SENSE(6/10) from gotgt's mode pages.
func (g gotgtLU) modeSense(c *Cmd) samStatus {
	return g.run(c, scsi.SBCModeSense, modeSenseLen)
}

// modeSelect serves MODE SELECT(6/10): gotgt accepts and ignores it.
func (g gotgtLU) modeSelect(c *Cmd) samStatus {
	return g.run(c, scsi.SBCModeSelect, nil)
}

// sendDiagnostics serves SEND DIAGNOSTIC (the default self-test only).
func (g gotgtLU) sendDiagnostics(c *Cmd) samStatus {
	return g.run(c, scsi.SPCSendDiagnostics, nil)
}

// gotgtScratch is the size of the Data-In buffer gotgt writes into: gotgt
// indexes its buffer freely, so it never gets the transport's.
const gotgtScratch = 4096

// run calls gotgt's handler fn with a command built from c. For a data-in
// command, lengthOf tells how many bytes gotgt produced (its own count is
// not reliable); they are copied, truncated to the allocation length,
// into c.In. gotgt's sense is turned into lmtgt's fixed format.
func (g gotgtLU) run(c *Cmd, fn api.CommandFunc, lengthOf func(cdb, data []byte) int) samStatus {
	scratch := make([]byte, gotgtScratch)
	in := api.SCSIDataBuffer{Buffer: scratch, Length: uint32(len(scratch))}
	out := api.SCSIDataBuffer{Buffer: c.Out, Length: uint32(len(c.Out))}
	cmd := api.SCSICommand{
		OpCode:        c.CDB[0],
		Device:        g.lu,
		DeviceID:      g.lu.UUID,
		SCB:           c.CDB,
		SCBLength:     len(c.CDB),
		InSDBBuffer:   &in,
		OutSDBBuffer:  &out,
		ITNexusLuInfo: &api.ITNexusLuInfo{Lu: g.lu, ID: c.LUN},
	}
	switch r := samStatus(fn(0, &cmd).Stat); r {
	case statusGood:
		if lengthOf == nil {
			return statusGood
		}
		n := min(lengthOf(c.CDB, scratch), allocLength(c.CDB), len(scratch))
		return c.respond(scratch[:n], n)
	case statusCheckCondition:
		var s []byte
		if cmd.SenseBuffer != nil {
			s = cmd.SenseBuffer.Buffer
		}
		if len(s) == senseLen && s[0]&0x7f == 0x70 {
			c.Sense, c.InLen = s, 0
			return statusCheckCondition
		}
		key, code, ok := senseKeyASC(s)
		if !ok {
			key, code = keyHardwareError, ascInternalTargetFailure
		}
		return c.fail(key, code)
	default:
		return r
	}
}

// modeSenseLen is the length of MODE SENSE(6/10) parameter data.
func modeSenseLen(cdb, data []byte) int {
	if cdb[0] == 0x1a {
		return int(data[0]) + 1
	}
	return int(data[0])<<8 | int(data[1]) + 2
}

// lunStore is the gotgt backing store behind a gotgtLU. gotgt reads its
// size once (for the mode block descriptor); it never moves data through
// it, as no command that does is routed to gotgt, so every data method
// fails.
type lunStore struct {
	size uint64
}

var _ api.BackingStore = (*lunStore)(nil)

var errNotServed = errors.New("lmtgt backing store: data is not served through gotgt")

func (s *lunStore) Open(*api.SCSILu, string) error        { return nil }
func (s *lunStore) Close(*api.SCSILu) error               { return nil }
func (s *lunStore) Init(*api.SCSILu, string) error        { return nil }
func (s *lunStore) Exit(*api.SCSILu) error                { return nil }
func (s *lunStore) Size(*api.SCSILu) uint64               { return s.size }
func (s *lunStore) DataSync(int64, int64) error           { return errNotServed }
func (s *lunStore) DataAdvise(int64, int64, uint32) error { return nil }
func (s *lunStore) Read(int64, int64) ([]byte, error)     { return nil, errNotServed }
func (s *lunStore) Write([]byte, int64) error             { return errNotServed }
func (s *lunStore) Unmap([]api.UnmapBlockDescriptor) error {
	return errNotServed
}
