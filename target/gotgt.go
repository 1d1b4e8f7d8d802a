package target

// Everything that touches gotgt's package-level state lives in this file:
// one-time registration of our backing store, the logrus routing, and the
// creation of gotgt logical units. gotgt's own target service, LUN maps and
// reservation operator are never used: dispatch goes through our own
// copy-on-write tables (server.go) straight to lu.PerformCommand.

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"sync"
	"sync/atomic"

	"github.com/gostor/gotgt/pkg/api"
	"github.com/gostor/gotgt/pkg/config"
	"github.com/gostor/gotgt/pkg/scsi"
	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"

	"github.com/lmtgt/lmtgt/metavol/volume"
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

var errNoStore = errors.New("lmtgt backing store: no volume handed over")

// glueInit performs gotgt's one-time global setup and routes its logs to log.
func glueInit(log zerolog.Logger) {
	l := log.With().Str("component", "gotgt").Logger()
	glue.log.Store(&l)
	glue.once.Do(func() {
		// gotgt's ALUA stays off: ours is in alua.go.
		scsi.EnableMultipath = false
		// ORWRITE(16) dereferences a nil buffer in gotgt; we also override it.
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

// gotgtDeviceID derives gotgt's numeric device ID from a LUN ID.
func gotgtDeviceID(lunID string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(lunID))
	return h.Sum64() >> 4 // gotgt ORs a type nibble into the top bits
}

// newGotgtLU creates a gotgt logical unit served by our backing store over
// vol. The LU's op table is per LU; install overrides before serving.
func newGotgtLU(lunID string, vol volume.Volume, blockShift uint, id presented) (*api.SCSILu, error) {
	glue.mu.Lock()
	glue.next = &lunStore{vol: vol}
	lu, err := scsi.NewSCSILu(&config.BackendStorage{
		DeviceID:         gotgtDeviceID(lunID),
		Path:             backingStoreName + ":" + lunID,
		Online:           true,
		ThinProvisioning: true,
		BlockShift:       blockShift,
	})
	glue.next = nil
	glue.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("lun %s: gotgt logical unit: %w", lunID, err)
	}
	lu.Attrs.VendorID = id.vendor // identityOf: lmtgt's own or adopted
	lu.Attrs.ProductID = id.product
	lu.Attrs.ProductRev = id.revision
	lu.Attrs.Lbppbe = 0
	if blockShift < 12 {
		lu.Attrs.Lbppbe = int(12 - blockShift) // 4 KiB physical blocks
	}
	lu.Attrs.VersionDesction = [8]uint16{
		0x00a0, // SAM-5
		0x0960, // iSCSI
		0x0460, // SPC-4
		0x04c0, // SBC-3
	}
	return lu, nil
}

// opTable returns the LU's per-LU command table (shared backing array).
func opTable(lu *api.SCSILu) []scsi.SCSIDeviceOperation {
	sbc, ok := lu.DeviceProtocol.(scsi.SBCSCSIDeviceProtocol)
	if !ok {
		return nil
	}
	return sbc.SCSIDeviceOps
}

// lunStore is our gotgt backing store: a thin adapter over the LUN's
// volume. Our own handlers do the I/O on the hot path; this store serves
// whatever gotgt code still reaches the storage.
type lunStore struct {
	vol volume.Volume
}

var _ api.BackingStore = (*lunStore)(nil)

func (s *lunStore) Open(*api.SCSILu, string) error        { return nil }
func (s *lunStore) Close(*api.SCSILu) error               { return nil }
func (s *lunStore) Init(*api.SCSILu, string) error        { return nil }
func (s *lunStore) Exit(*api.SCSILu) error                { return nil }
func (s *lunStore) Size(*api.SCSILu) uint64               { return uint64(s.vol.Size()) }
func (s *lunStore) DataSync(int64, int64) error           { return s.vol.Sync() }
func (s *lunStore) DataAdvise(int64, int64, uint32) error { return nil }

func (s *lunStore) Read(off, length int64) ([]byte, error) {
	if length < 0 {
		return nil, fmt.Errorf("lmtgt backing store: negative read length %d", length)
	}
	b := make([]byte, length)
	_, err := s.vol.ReadAt(b, off)
	return b, err
}

func (s *lunStore) Write(b []byte, off int64) error {
	_, err := s.vol.WriteAt(b, off)
	return err
}

func (s *lunStore) Unmap(ds []api.UnmapBlockDescriptor) error {
	for _, d := range ds {
		if err := s.vol.Unmap(int64(d.Offset), int64(d.TL)); err != nil {
			return err
		}
	}
	return nil
}
