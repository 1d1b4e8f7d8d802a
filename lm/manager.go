package lm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmtgt/lmtgt/dcl"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/metavol/volume"
	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
	rbdvol "github.com/lmtgt/lmtgt/metavol/volume/rbd"
	"github.com/rs/zerolog"
)

// Options for Open. Zero values get the defaults in parentheses.
type Options struct {
	// DataDir holds the volumes lmtgt creates (DataDir/volumes/).
	DataDir string
	Log     zerolog.Logger
	// MaxActive is how many pairs copy at once (2); the rest are queued
	// (queue.go; changed at run time by SetLimits).
	MaxActive int
	// MaxTotalMBps is the bandwidth budget of all the copies together in
	// MB/s (0: none; changed at run time by SetLimits).
	MaxTotalMBps int64

	// ChunkSize of the copy (1 MiB) and RegionSize of the DCL (1 MiB);
	// ChunkSize is rounded up to a multiple of RegionSize.
	ChunkSize  int64
	RegionSize int64
	// InFlight chunks per pair (4).
	InFlight int
	// The copy checkpoint is persisted every CheckpointInterval (2s) or
	// CheckpointBytes of progress (64 MiB), whichever comes first.
	CheckpointInterval time.Duration
	CheckpointBytes    int64
	// RetryMin/RetryMax bound the backoff of an interrupted pair (200ms,
	// 10s); after RetryBudget (1h) of failures it becomes faulty.
	RetryMin, RetryMax time.Duration
	RetryBudget        time.Duration
	// ClearInterval of the DCL's lazy clearing (2s).
	ClearInterval time.Duration
	// DrainTimeout bounds the I/O drain when a pair is attached or
	// detached (30s).
	DrainTimeout time.Duration
	// VerifyInterval is how often every open data volume's identity and
	// size are checked (volume.File.Verify: an fstat and a stat each) so
	// that a file truncated, deleted or replaced underneath lmtgt takes its
	// LUN offline (2s); negative disables the periodic check (the checks
	// on I/O errors and before a split remain).
	VerifyInterval time.Duration
	// WrapVolume, if set, wraps every data volume the Manager opens (tests
	// use it to inject faults). The copy_file_range vehicle is used only
	// on unwrapped files.
	WrapVolume func(volumeID string, v volume.Volume) volume.Volume
	// AdminSocket is the admin API's socket: no LUN may use it (lun.go,
	// checkLUNPath).
	AdminSocket string
	// RemoteReplacementTimeout is how long I/O to a remote (iSCSI) data
	// volume waits for a lost session to come back before it fails (0:
	// the initiator's default, 30 s).
	RemoteReplacementTimeout time.Duration
	// SystemDirs are refused as LUN paths without Force (nil:
	// DefaultSystemDirs).
	SystemDirs []string
	// Ceph is the cluster of RBD data volumes (rbd.go), connected on
	// first use.
	Ceph rbdvol.Config
	// MaxHostLatency is the server's default bound on the host p99
	// latency of the LUNs of a copying pair (0: none; latency.go); a
	// pair's own bound wins.
	MaxHostLatency time.Duration
	// MaxEvents bounds the persistent event log (DefaultMaxEvents);
	// EventQueue is its queue (DefaultEventQueue, events.go).
	MaxEvents, EventQueue int
	// ProgressInterval: a copying pair logs a progress line this often
	// (30s; negative: never; progress.go).
	ProgressInterval time.Duration
}

func (o *Options) fill() {
	if o.MaxActive <= 0 {
		o.MaxActive = 2
	}
	if o.RegionSize <= 0 {
		o.RegionSize = 1 << 20
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 1 << 20
	}
	if r := o.ChunkSize % o.RegionSize; r != 0 {
		o.ChunkSize += o.RegionSize - r
	}
	if o.InFlight <= 0 {
		o.InFlight = 4
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 2 * time.Second
	}
	if o.CheckpointBytes <= 0 {
		o.CheckpointBytes = 64 << 20
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 200 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 10 * time.Second
	}
	if o.RetryBudget <= 0 {
		o.RetryBudget = time.Hour
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.VerifyInterval == 0 {
		o.VerifyInterval = 2 * time.Second
	}
}

// Manager is the LM module. All methods are safe for concurrent use.
//
// Goroutines: the Manager owns one run goroutine per active pair (started
// by CreatePair or Open, ended by the pair reaching a final state or by
// Close) and the auto-split goroutines; the dcl.Store owns its committer
// and clearer. Close cancels the pairs' context, waits for every Manager
// goroutine, then closes the dcl.Store, then the data volumes.
type Manager struct {
	db   *metavol.DB
	opts Options
	log  zerolog.Logger
	dcl  *dcl.Store
	// queue grants the copy slots (queue.go); budget is the token bucket
	// every copy draws from after its own (0: unlimited; throttle.go).
	queue  *copyQueue
	budget *bucket
	// totalMBps is the budget in MB/s as set; guarded by admin.
	totalMBps int64
	// schedWake wakes the schedule goroutine (schedule_window.go).
	schedWake chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// hooks are test seams, nil in production. Set them before the
	// pairs start (CreatePair or Open); they are read without locks.
	hooks hooks

	// admin serialises the admin operations (LUN and pair changes,
	// split). Taken before mu; never held by the host I/O path.
	admin mutex[rankAdmin]
	// exporter applies target changes live (targets.go); guarded by admin.
	exporter Exporter
	// cfgApply serialises config plans and applies (config.go); taken
	// before admin, held across the admin operations of one apply.
	cfgApply sync.Mutex

	// mu guards the maps (not what the entries point at). Never held
	// during I/O or a meta volume transaction.
	mu struct {
		mutex[rankManagerMu]
		luns  map[string]*lunEntry // by LUN ID
		vols  map[string]*dataVol  // by volume ID
		pairs map[string]*pair     // active (attached) pairs by pair ID
		// unloaded: pair records that could not be loaded at startup
		// (offline.go); they fence their LUNs until cancelled.
		unloaded map[string]*unloadedPair
		closed   bool
	}

	// sess holds the migration sessions (sessionrun.go).
	sess sessionSet
	// fence holds the PR carrier (fence.go).
	fence fenceSet
	// splits counts split pauses and deferrals for metrics (splitstats.go).
	splits splitStats

	// ceph is the connection of the RBD data volumes (rbd.go).
	ceph rbdvol.Clusters

	// events is the event log and the histories (events.go); its writer
	// is stopped last by Close.
	events *EventLog
}

// hooks let tests interleave host I/O with the copier at fixed points.
type hooks struct {
	// beforeJob runs in a copy worker before it waits for the throttle
	// and takes the range lock of job j.
	beforeJob func(p *pair, j job)
	// dispatched runs in the dispatcher after job j went to a worker.
	dispatched func(p *pair, j job)
	// splitJournaled runs in Split once the split journal is committed,
	// before the in-memory routes change (the gates are closed).
	splitJournaled func()
	// splitReopened runs in Split after the pause (routes swapped, gates
	// open), before the records the journal describes are written.
	splitReopened func()
	// splitCommitted runs in Split once those records are committed (the
	// journal deleted), after the pause.
	splitCommitted func()
	// createStep runs at the steps of createPairs ("pair k ready",
	// "committed", "undo"); an error fails that step.
	createStep func(step string) error
	// splitDrained runs in Split once the gates are closed and drained,
	// before the checks made inside the pause.
	splitDrained func()
}

// dataVol is one data volume the Manager knows.
type dataVol struct {
	rec metavol.Volume
	cur atomic.Pointer[openVol] // nil while the volume is unavailable
	// why is the last open error, for status and logs.
	why atomic.Pointer[string]
	// lost is set (once, sticky until a restart) when the volume shrank,
	// vanished or was replaced underneath lmtgt (offline.go); get fails
	// from then on.
	lost atomic.Pointer[string]
	// fence is the fence of a remote volume (fence.go); nil: none.
	fence atomic.Pointer[FenceStatus]
}

type openVol struct {
	v    volume.Volume // what I/O goes to (maybe wrapped)
	file *volume.File  // the unwrapped file, nil when wrapped or remote
	raw  backing       // always the real volume, for Close, Size and NextData
	// local is the real file or device (Verify, Resize); nil for a remote
	// volume, whose loss is its initiator's replacement timeout error.
	local *volume.File
	// remote is the real remote volume (session state); nil for a file.
	remote *iscsivol.Volume
	// rbd is the real RBD image (lock state, Resize); nil otherwise.
	rbd *rbdvol.Volume
}

// backing is what every real data volume kind implements.
type backing interface {
	volume.Volume
	NextData(off int64) (start, end int64, err error)
}

var (
	_ backing = (*volume.File)(nil)
	_ backing = (*iscsivol.Volume)(nil)
)

// fileVol wraps an open file (maybe in WrapVolume) as an openVol.
func (m *Manager) fileVol(id string, f *volume.File) *openVol {
	ov := &openVol{v: f, file: f, raw: f, local: f}
	if m.opts.WrapVolume != nil {
		if w := m.opts.WrapVolume(id, f); w != nil && w != volume.Volume(f) {
			ov.v, ov.file = w, nil
		}
	}
	return ov
}

// remoteVol wraps an open remote volume (maybe in WrapVolume).
func (m *Manager) remoteVol(id string, r *iscsivol.Volume) *openVol {
	ov := &openVol{v: r, raw: r, remote: r}
	if m.opts.WrapVolume != nil {
		if w := m.opts.WrapVolume(id, r); w != nil {
			ov.v = w
		}
	}
	return ov
}

// get returns the open volume. A volume that is not open, or is lost, is
// unavailable, and its LUN offline (the error wraps both).
func (d *dataVol) get() (*openVol, error) {
	if l := d.lost.Load(); l != nil {
		return nil, fmt.Errorf("data volume %s (%s) lost: %s: %w: %w", d.rec.ID, d.where(), *l, ErrUnavailable, ErrOffline)
	}
	if o := d.cur.Load(); o != nil {
		return o, nil
	}
	why := "not opened"
	if w := d.why.Load(); w != nil {
		why = *w
	}
	return nil, fmt.Errorf("data volume %s (%s): %s: %w: %w", d.rec.ID, d.where(), why, ErrUnavailable, ErrOffline)
}

// where names the volume's bytes: its path, or its remote URL (no secret).
func (d *dataVol) where() string {
	if d.rec.Remote != nil {
		return d.rec.Remote.URL()
	}
	if d.rec.RBD != nil {
		return "rbd:" + d.rec.RBD.String()
	}
	return d.rec.Path
}

// open (re)opens the volume if it is not open.
func (m *Manager) openVolume(d *dataVol) error {
	if l := d.lost.Load(); l != nil {
		return fmt.Errorf("data volume %s: lost: %s (restore it and restart lmtgt): %w", d.rec.ID, *l, ErrUnavailable)
	}
	if d.cur.Load() != nil {
		return nil
	}
	if d.rec.Kind == metavol.VolumeKindISCSI {
		return m.openRemote(d)
	}
	if d.rec.Kind == metavol.VolumeKindRBD {
		return m.openRBD(d)
	}
	if err := m.volumeAllowed(d.rec); err != nil {
		s := err.Error()
		d.why.Store(&s)
		return fmt.Errorf("data volume %s: %w: %w", d.rec.ID, ErrUnavailable, err)
	}
	// MinSize: a file truncated while it was closed is not served.
	f, err := volume.Open(d.rec.Path, volume.Options{Direct: d.rec.Direct, MinSize: d.rec.Size})
	if err != nil {
		s := err.Error()
		d.why.Store(&s)
		return fmt.Errorf("data volume %s: %w: %w", d.rec.ID, ErrUnavailable, err)
	}
	if !d.cur.CompareAndSwap(nil, m.fileVol(d.rec.ID, f)) {
		f.Close()
	}
	d.why.Store(nil)
	return nil
}

// Open loads every data volume, LUN and pair from the meta volume,
// re-marks every region found in the DCLs as dirty and resumes the pairs.
// A missing data volume does not fail Open: its LUN's I/O fails and its
// pair is interrupted with the reason.
func Open(db *metavol.DB, opts Options) (*Manager, error) {
	if db == nil {
		return nil, invalidf("lm: nil meta volume")
	}
	opts.fill()
	m := &Manager{
		db:        db,
		opts:      opts,
		log:       opts.Log.With().Str("component", "lm").Logger(),
		queue:     newCopyQueue(opts.MaxActive),
		budget:    newBucket(max(opts.MaxTotalMBps, 0) * 1_000_000),
		totalMBps: max(opts.MaxTotalMBps, 0),
		schedWake: make(chan struct{}, 1),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.mu.luns = map[string]*lunEntry{}
	m.mu.vols = map[string]*dataVol{}
	m.mu.pairs = map[string]*pair{}
	m.mu.unloaded = map[string]*unloadedPair{}
	m.sess.init()
	m.splits.init()
	ev, err := newEventLog(db, opts.Log, opts.MaxEvents, opts.EventQueue)
	if err != nil {
		return nil, fmt.Errorf("lm: %w", err)
	}
	m.events = ev

	// A split whose records were not written after its pause (a crash)
	// left its journal: everything loaded below sees the swap it made.
	if err := m.rollForwardSplit(); err != nil {
		m.events.close()
		return nil, fmt.Errorf("lm: %w", err)
	}
	var vols []metavol.Volume
	var luns []metavol.LUN
	var pairs []metavol.Pair
	if err := db.View(func(tx *metavol.Tx) error {
		var err error
		if vols, err = tx.Volumes(); err != nil {
			return err
		}
		if luns, err = tx.LUNs(); err != nil {
			return err
		}
		pairs, err = tx.Pairs()
		return err
	}); err != nil {
		m.events.close()
		return nil, fmt.Errorf("lm: load: %w", err)
	}
	var reopen []*dataVol
	for _, v := range vols {
		d := &dataVol{rec: v}
		if err := m.openVolume(d); err != nil {
			m.events.Record(Event{Type: EventVolume, Action: "unavailable", Object: "volume " + v.ID, Reason: err.Error()})
			m.log.Error().Err(err).Str("volume", v.ID).Str("path", v.Path).Msg("data volume unavailable")
			if v.Kind == metavol.VolumeKindISCSI || v.Kind == metavol.VolumeKindRBD {
				reopen = append(reopen, d)
			}
		}
		m.mu.vols[v.ID] = d
	}
	for _, d := range reopen {
		m.reopenRemote(d) // import.go: the other array may come back
	}
	for _, l := range luns {
		e := m.newEntry(l)
		m.mu.luns[l.ID] = e
	}
	if err := m.adoptSessionPairs(pairs); err != nil {
		m.Close()
		return nil, fmt.Errorf("lm: record the sessions of old pair records: %w", err)
	}
	m.dcl = dcl.Open(db, dcl.Options{Log: opts.Log, ClearInterval: opts.ClearInterval})
	if err := m.recover(pairs); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.loadSessions(); err != nil {
		m.Close()
		return nil, err
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.scheduleLoop() // schedule_window.go: windows, max elapsed
	}()
	m.startProgress() // progress.go
	if opts.VerifyInterval > 0 {
		m.every(opts.VerifyInterval, m.VerifyVolumes) // offline.go
	}
	return m, nil
}

// every calls f every iv until the Manager closes: a goroutine the
// Manager owns (it ends with m.ctx; Close waits for it). The periodic
// volume check and the progress logger run on it.
func (m *Manager) every(iv time.Duration, f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(iv)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				f()
			}
		}
	}()
}

// activePairs returns the loaded pairs (m.mu.pairs) in no order, taken
// under m.mu and returned without it: callers act on them lock-free.
func (m *Manager) activePairs() []*pair {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.mu.pairs))
}

func (m *Manager) newEntry(l metavol.LUN) *lunEntry {
	e := &lunEntry{m: m, id: l.ID, name: l.Name, blockSize: l.BlockSize}
	e.size.Store(l.Size)
	e.vol = m.mu.vols[l.VolumeID]
	if e.vol == nil {
		d := &dataVol{rec: metavol.Volume{ID: l.VolumeID}}
		s := "no volume record"
		d.why.Store(&s)
		e.vol = d
	}
	return e
}

// Close stops every pair (their state and checkpoint stay persisted) and
// closes the data volumes. Host handles fail afterwards.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.mu.closed {
		m.mu.Unlock()
		return nil
	}
	m.mu.closed = true
	m.mu.Unlock()
	// Stop the goroutines first (an auto-split may be waiting for admin).
	m.cancel()
	m.wg.Wait()
	// Last, after admin is released: the event writer commits what the
	// pairs queued until now.
	defer m.events.close()
	m.admin.Lock()
	defer m.admin.Unlock()
	pairs := m.activePairs()
	for _, p := range pairs {
		p.checkpoint(true)
	}
	var first error
	if m.dcl != nil {
		first = m.dcl.Close()
	}
	defer m.closeCluster() // after every RBD volume, and after m.mu is released
	// Manager.mu only to copy the maps: a gate is entered and files are
	// closed without it (lock order, doc.go).
	m.mu.Lock()
	luns := slices.Collect(maps.Values(m.mu.luns))
	vols := slices.Collect(maps.Values(m.mu.vols))
	m.mu.Unlock()
	for _, e := range luns {
		e.gate.enter()
		e.closed.Store(true)
		e.gate.exit()
	}
	for _, d := range vols {
		if o := d.cur.Swap(nil); o != nil {
			if err := o.raw.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Events is the event log and the histories (events.go).
func (m *Manager) Events() *EventLog { return m.events }

func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.closed
}

// LUN returns the host I/O handle of a LUN ID. The handle stays valid
// across splits (it reads the route under the LUN's I/O gate); Close on it
// does nothing.
func (m *Manager) LUN(id string) (volume.Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.mu.luns[id]
	if e == nil {
		return nil, fmt.Errorf("lun id %s: %w", id, ErrNotFound)
	}
	return e, nil
}

// LUNPair reports the active pair a LUN ID belongs to (as source or
// target), or ok=false.
func (m *Manager) LUNPair(id string) (pairID string, source bool, ok bool) {
	p := m.pairOf(id)
	if p == nil {
		return "", false, false
	}
	return p.id, p.src.id == id, true
}

// lunEntry is one LUN's routing entry and its host I/O handle.
type lunEntry struct {
	m         *Manager
	id        string
	name      string
	blockSize uint32
	size      atomic.Int64
	closed    atomic.Bool // deleted or Manager closed
	// fence is the unloaded pair that keeps this LUN offline, or nil
	// (offline.go; set by the Manager under m.mu).
	fence atomic.Pointer[unloadedPair]

	// syncErr: a failed sync of this LUN's data volume that no host
	// issued (its pair's checkpoint or lazy clear, write.go syncLegs);
	// the LUN's next host sync reports it, once, whatever the route is
	// by then (the pair may be split or cancelled before that sync).
	syncErr atomic.Pointer[error]

	gate gate
	// lat: the host's command service times (latency.go).
	lat hostLatency
	// The route: changed only while the gate is closed and drained.
	vol      *dataVol
	pair     *pair // the pair this LUN is the source of
	targetOf *pair // the pair this LUN is the target of
}

var (
	_ volume.Volume    = (*lunEntry)(nil)
	_ volume.RefReader = (*lunEntry)(nil)
	_ volume.RefReader = (*volume.File)(nil)
)

func (e *lunEntry) check(op string, off, n int64) error {
	if e.closed.Load() {
		return fmt.Errorf("lun %s: %s: %w", e.name, op, volume.ErrClosed)
	}
	if off < 0 || n < 0 || off+n > e.size.Load() {
		return fmt.Errorf("lun %s: %s [%d,+%d) past size %d: %w", e.name, op, off, n, e.size.Load(), volume.ErrOutOfRange)
	}
	return nil
}

// Quick reports whether a host write of the LUN completes in memory right
// now (target.QuickVolume): the LUN is open, not fenced, not the source of
// a pair (a dual write goes to a second volume, maybe remote), not the
// target of one, and its volume is a local file or device written through
// the page cache (not O_DIRECT, not iSCSI, not RBD). A hint: false sends
// the write to a worker, true lets it run on the connection's reader.
// Never blocks: the route is read under the gate's mutex, and a gate
// closed for a route change answers false.
func (e *lunEntry) Quick() bool {
	if e.closed.Load() || e.fence.Load() != nil {
		return false
	}
	g := &e.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || e.pair != nil || e.targetOf != nil {
		return false
	}
	o := e.vol.cur.Load()
	if o == nil {
		return false
	}
	f, ok := o.v.(*volume.File)
	return ok && !f.Direct()
}

func (e *lunEntry) ReadAt(p []byte, off int64) (int, error) {
	if err := e.check("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	e.gate.enter()
	defer e.gate.exit()
	if e.closed.Load() {
		return 0, fmt.Errorf("lun %s: read: %w", e.name, volume.ErrClosed)
	}
	if err := e.fenced("read"); err != nil {
		return 0, err
	}
	o, err := e.vol.get()
	if err != nil {
		return 0, fmt.Errorf("lun %s: read: %w", e.name, err)
	}
	n, err := o.v.ReadAt(p, off)
	if err != nil {
		e.m.ioFailed(e.vol, err)
	}
	return n, err
}

// ReadRef is ReadAt for a zero-copy send (volume.RefReader): the same
// checks (range, closed, fence, the open volume) under the gate, then a
// reference to the bytes in the route's file instead of a copy. Only a
// LUN that is in no pair and whose volume is an unwrapped local file
// hands one out; anything else answers volume.ErrNoRef and the caller
// reads with ReadAt. A LUN in a pair is excluded because the referenced
// pages are read by the host after the gate is left: a split could then
// give this volume to the other LUN of the pair, whose writes would be
// seen through this READ (docs/design.md "Zero-copy Data-In").
func (e *lunEntry) ReadRef(off, n int64) (volume.FileRef, error) {
	if err := e.check("read", off, n); err != nil {
		return volume.FileRef{}, err
	}
	e.gate.enter()
	defer e.gate.exit()
	if e.closed.Load() {
		return volume.FileRef{}, fmt.Errorf("lun %s: read: %w", e.name, volume.ErrClosed)
	}
	if err := e.fenced("read"); err != nil {
		return volume.FileRef{}, err
	}
	// ErrNoRef is a per-READ signal (the caller copies), never shown to
	// anyone: not wrapped, so answering it allocates nothing.
	if e.pair != nil || e.targetOf != nil {
		return volume.FileRef{}, volume.ErrNoRef
	}
	o, err := e.vol.get()
	if err != nil {
		return volume.FileRef{}, fmt.Errorf("lun %s: read: %w", e.name, err)
	}
	if o.file == nil { // remote, RBD or wrapped
		return volume.FileRef{}, volume.ErrNoRef
	}
	r, err := o.file.ReadRef(off, n)
	if err != nil && !errors.Is(err, volume.ErrNoRef) {
		e.m.ioFailed(e.vol, err)
	}
	return r, err
}

func (e *lunEntry) WriteAt(p []byte, off int64) (int, error) {
	if err := e.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	e.gate.enter()
	defer e.gate.exit()
	if err := e.writable("write"); err != nil {
		return 0, err
	}
	if e.pair != nil {
		return e.pair.write(p, off)
	}
	o, err := e.vol.get()
	if err != nil {
		return 0, fmt.Errorf("lun %s: write: %w", e.name, err)
	}
	n, err := o.v.WriteAt(p, off)
	if err != nil {
		e.m.ioFailed(e.vol, err)
	}
	return n, err
}

func (e *lunEntry) writable(op string) error {
	if e.closed.Load() {
		return fmt.Errorf("lun %s: %s: %w", e.name, op, volume.ErrClosed)
	}
	if err := e.fenced(op); err != nil {
		return err
	}
	if e.targetOf != nil {
		return fmt.Errorf("lun %s: %s refused: the LUN is the target of a migration: %w", e.name, op, ErrInPair)
	}
	return nil
}

func (e *lunEntry) Unmap(off, length int64) error {
	if err := e.check("unmap", off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	e.gate.enter()
	defer e.gate.exit()
	if err := e.writable("unmap"); err != nil {
		return err
	}
	if e.pair != nil {
		return e.pair.unmap(off, length)
	}
	o, err := e.vol.get()
	if err != nil {
		return fmt.Errorf("lun %s: unmap: %w", e.name, err)
	}
	if err := o.v.Unmap(off, length); err != nil {
		e.m.ioFailed(e.vol, err)
		return err
	}
	return nil
}

func (e *lunEntry) Sync() error {
	e.gate.enter()
	defer e.gate.exit()
	if e.closed.Load() {
		return fmt.Errorf("lun %s: sync: %w", e.name, volume.ErrClosed)
	}
	if err := e.fenced("sync"); err != nil {
		return err
	}
	// A successful sync promises the host that its writes are in the
	// volume: after the fsync, the file must still be the one at the
	// volume's path with its size (volume.File.Verify). Writes made
	// between a file's replacement (or unlink) underneath lmtgt and the
	// periodic check went to the old inode; the flush that would call
	// them durable fails instead, and the LUN goes offline. (A check that
	// itself failed, say a stat error, does not fail the flush.)
	if p := e.pair; p != nil {
		if err := p.sync(); err != nil {
			return err
		}
		lv := p.legs()
		if !p.view().sourceOnly() {
			e.m.verifyVolume(lv.tgt) // a lost target interrupts the pair
		}
		if err := e.m.verifyVolume(lv.src); err != nil && lv.src.lost.Load() != nil {
			return fmt.Errorf("lun %s: sync: %w", e.name, err)
		}
		return nil
	}
	o, err := e.vol.get()
	if err != nil {
		return fmt.Errorf("lun %s: sync: %w", e.name, err)
	}
	if err := o.v.Sync(); err != nil {
		e.syncErr.Store(nil) // reported by this one
		e.m.ioFailed(e.vol, err)
		return err
	}
	if earlier := e.syncErr.Swap(nil); earlier != nil {
		return fmt.Errorf("lun %s: sync: an earlier sync of its data volume failed while it was a pair's source, data written before it may be lost: %w",
			e.name, *earlier)
	}
	if err := e.m.verifyVolume(e.vol); err != nil && e.vol.lost.Load() != nil {
		return fmt.Errorf("lun %s: sync: %w", e.name, err)
	}
	return nil
}

// Size is the LUN's size (which may be less than its data volume's).
func (e *lunEntry) Size() int64 { return e.size.Load() }

// NextData returns [start, end) of the next data extent at or after off in
// the LUN's current data volume (io.EOF when none), so that GET LBA STATUS
// tells hosts the truth about deallocated ranges. Extents are clamped to
// the LUN's size.
func (e *lunEntry) NextData(off int64) (start, end int64, err error) {
	e.gate.enter()
	defer e.gate.exit()
	if e.closed.Load() {
		return 0, 0, fmt.Errorf("lun %s: next data: %w", e.name, volume.ErrClosed)
	}
	if err := e.fenced("next data"); err != nil {
		return 0, 0, err
	}
	o, err := e.vol.get()
	if err != nil {
		return 0, 0, fmt.Errorf("lun %s: next data: %w", e.name, err)
	}
	size := e.size.Load()
	start, end, err = o.raw.NextData(off)
	if err != nil {
		if err != io.EOF {
			e.m.ioFailed(e.vol, err)
		}
		return 0, 0, err
	}
	if start >= size {
		return 0, 0, io.EOF
	}
	return start, min(end, size), nil
}

// Offline returns why the LUN does not serve host I/O now (wrapping
// ErrOffline), or nil; the SCSI front end answers TEST UNIT READY with it.
func (e *lunEntry) Offline() error {
	e.gate.enter()
	defer e.gate.exit()
	if err := e.fenced("test unit ready"); err != nil {
		return err
	}
	if _, err := e.vol.get(); err != nil {
		return fmt.Errorf("lun %s: %w", e.name, err)
	}
	return nil
}

// Close does nothing: the handle belongs to the Manager.
func (e *lunEntry) Close() error { return nil }

// withGates closes the gates of the entries, waits for the drain (up to
// the DrainTimeout), runs fn and reopens them.
func (m *Manager) withGates(entries []*lunEntry, fn func() error) error {
	gates := make([]*gate, len(entries))
	for i, e := range entries {
		gates[i] = &e.gate
	}
	if !closeGates(gates, m.opts.DrainTimeout) {
		return fmt.Errorf("in-flight I/O did not drain within %v: %w", m.opts.DrainTimeout, ErrSplitTimeout)
	}
	defer func() {
		for _, g := range gates {
			g.open()
		}
	}()
	return fn()
}

// volumePath is where an owned volume lives.
func (m *Manager) volumePath(id string) string {
	return filepath.Join(m.opts.DataDir, "volumes", id+".img")
}

func mapMetaErr(kind, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, metavol.ErrNotFound):
		return fmt.Errorf("%s %s: %w", kind, name, ErrNotFound)
	case errors.Is(err, metavol.ErrExists):
		return fmt.Errorf("%s %s: %w", kind, name, ErrExists)
	}
	return fmt.Errorf("%s %s: %w", kind, name, err)
}
