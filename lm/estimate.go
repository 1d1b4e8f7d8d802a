package lm

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// extentWalker is what allocatedBytes needs of a data volume.
type extentWalker interface {
	NextData(off int64) (start, end int64, err error)
}

// allocatedBytes is the number of bytes in [from, to) that the volume's
// extents hold data for (SEEK_DATA/SEEK_HOLE): what a copy of that range
// would read and write. A volume without hole tracking (a block device, a
// remote LUN) reports the whole range.
func allocatedBytes(v extentWalker, from, to int64) (int64, error) {
	var n int64
	for off := from; off < to; {
		s, e, err := v.NextData(off)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if s >= to {
			break
		}
		e = min(e, to)
		if e <= s {
			break
		}
		n += e - s
		off = e
	}
	return n, nil
}

// Estimates before a migration starts (issue 11, "estimate before
// starting"; the EMC patent's pre-migration estimate).
//
// A dry run (PairRequest.DryRun, SessionRequest.DryRun) goes through the
// checks of the real create (planPair: names, sizes, block sizes, pairs,
// mappings, offline LUNs, the volumes opened) and stops before anything is
// written or fenced; it returns the estimate instead. A real create makes
// the same estimate and keeps it on the pair record (EstimateNS,
// EstimateBytes); when the pair first reaches synced, the time since its
// copy started is kept beside it (ActualNS), and `show` puts them side
// by side. The fence of an imported source is not taken by a dry run: it
// would act on the other array.
//
// The estimate: the bytes to copy are the source's allocated extents
// (holes cost nothing); the rate is the lower of the speed level / cap and
// the source's read rate, measured by reading its first data extents for
// at most sampleTime or sampleBytes; the duration is bytes / rate. A
// session's pairs copy max-active at a time (the session's and the
// server's limits): its duration is that schedule's length, pairs in
// order, each on the first free slot.
//
// Start time and windows (issue 11: "an estimated duration from the
// speed, the cap, the windows and a short measured read rate"): the copy
// is simulated forward from its start (now, or --start-at when it is
// ahead: Estimate.Wait is the time until then) through the daily windows,
// in the server's local time as the schedule goroutine applies them: in
// each stretch between two window boundaries the rate is the window's
// speed and cap (outside every window the pair's own), lowered to the
// measured read rate; the duration is the time until the last byte. The
// copy time (Duration) is what is kept on the pair and compared with the
// actual one (which also runs from the copy's start); the wait is shown
// beside it (Finish = Start + Duration). Not simulated: the host-latency
// guard (it only holds the copy below these rates, by how much depends on
// the hosts' load to come), the server's bandwidth budget shared with
// other pairs, and a max elapsed pause (the estimate says how long the
// copy needs; the limit may stop it before).

const (
	sampleTime  = time.Second
	sampleBytes = 64 << 20
)

// Estimate is what a migration of one pair is expected to take.
type Estimate struct {
	TotalBytes int64 // the source LUN's size
	// Bytes is what the copy would read and write: the source's
	// allocated extents.
	Bytes   int64
	Vehicle string // the transfer vehicle that would run
	// LimitBps/LimitedBy: the speed level and cap (RateLimit).
	LimitBps  int64
	LimitedBy string
	// ReadBps is the source's read rate measured over SampleBytes in
	// SampleTime (0: not measured: no data, or the read failed).
	ReadBps     int64
	SampleBytes int64
	SampleTime  time.Duration
	// RateBps is the rate the estimate uses, Basis what limits it
	// ("max_mbps 50 MB/s", "source reads 120 MB/s", ...), Duration the
	// time to copy Bytes at RateBps (0 when nothing is to copy or no rate
	// is known).
	RateBps  int64
	Basis    string
	Duration time.Duration
	// Start is when the copy would start (now, or the start time when it
	// is ahead), Wait the time until then, Finish Start + Duration (the
	// zero time when Duration is not known).
	Start  time.Time
	Wait   time.Duration
	Finish time.Time
	// Boundaries is the number of window boundaries the copy crosses;
	// AverageBps its average rate over Duration.
	Boundaries int
	AverageBps int64

	// What the simulation needs (copyFrom): the pair's own limit, its
	// windows.
	ownLimit int64
	windows  []Window
}

// rateAt is the rate in force at t (the window's limit, else the pair's
// own, lowered to the measured read rate; 0: not known) and the next
// window boundary after t (the zero time: none).
func (e *Estimate) rateAt(t time.Time) (int64, time.Time, int) {
	in, next := windowAt(e.windows, t)
	r := e.ownLimit
	if in >= 0 {
		r = effectiveRate(e.windows[in].Speed, e.windows[in].MaxMBps)
	}
	if e.ReadBps > 0 && (r == 0 || e.ReadBps < r) {
		r = e.ReadBps
	}
	return r, next, in
}

// maxBoundaries bounds the simulation (two a day per window: years of
// copy); past it the rate in force goes on to the end.
const maxBoundaries = 10_000

// copyFrom simulates the copy of e.Bytes started at start through the
// windows: its duration and the boundaries crossed; ok is false when a
// stretch has no known rate (unthrottled, source not measured).
func (e *Estimate) copyFrom(start time.Time) (d time.Duration, crossed int, ok bool) {
	left := float64(e.Bytes)
	t := start
	for left > 0 {
		r, next, _ := e.rateAt(t)
		if r <= 0 {
			return 0, crossed, false
		}
		need := time.Duration(left / float64(r) * float64(time.Second))
		if next.IsZero() || crossed >= maxBoundaries || !t.Add(need).After(next) {
			return t.Add(need).Sub(start), crossed, true
		}
		left -= float64(r) * next.Sub(t).Seconds()
		t = next
		crossed++
	}
	return t.Sub(start), crossed, true
}

// schedule fills Start, Wait, Duration, Finish, Boundaries and
// AverageBps for a copy that starts at startAt (zero or past: now).
func (e *Estimate) schedule(startAt, now time.Time) {
	e.Start, e.Wait = now, 0
	if startAt.After(now) {
		e.Start, e.Wait = startAt, startAt.Sub(now)
	}
	e.Duration, e.Boundaries, e.Finish, e.AverageBps = 0, 0, time.Time{}, 0
	if e.Bytes == 0 {
		e.Finish = e.Start
		return
	}
	d, crossed, ok := e.copyFrom(e.Start)
	if !ok {
		return
	}
	e.Duration, e.Boundaries, e.Finish = d, crossed, e.Start.Add(d)
	if d > 0 {
		e.AverageBps = int64(float64(e.Bytes) / d.Seconds())
	}
}

// estimatePair estimates the pair a checked request would create. It
// holds no lock while it reads; budget bounds the read sample's time.
func (m *Manager) estimatePair(req PairRequest, budget time.Duration, now time.Time) (Estimate, error) {
	se, sl, err := m.entryByName(req.Source)
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate %s: source %w", req.Source, err)
	}
	te, _, err := m.entryByName(req.Target)
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate %s: target %w", req.Source, err)
	}
	so, err := se.vol.get()
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate %s: source: %w", req.Source, err)
	}
	est := Estimate{TotalBytes: sl.Size}
	est.Bytes, err = allocatedBytes(so.raw, 0, sl.Size)
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate %s: source extents: %w", req.Source, err)
	}
	est.Vehicle = pickVehicle(req.Vehicle, se.vol, te.vol)
	est.LimitBps, est.LimitedBy = RateLimit(req.Speed, req.MaxMBps)
	est.SampleBytes, est.SampleTime = sampleRead(so, sl.Size, min(budget, sampleTime), sampleBytes)
	if est.SampleTime > 0 && est.SampleBytes > 0 {
		est.ReadBps = int64(float64(est.SampleBytes) / est.SampleTime.Seconds())
	}
	est.ownLimit, est.windows = est.LimitBps, slices.Clone(req.Windows)
	est.schedule(req.StartAt, now)
	est.describe()
	return est, nil
}

// describe sets RateBps and Basis: the rate in force when the copy
// starts and what limits it, and the windows' effect over the copy.
func (e *Estimate) describe() {
	r, _, in := e.rateAt(e.Start)
	e.RateBps = r
	limit, by := e.LimitBps, e.LimitedBy
	where := ""
	if in >= 0 {
		w := e.windows[in]
		limit, by = RateLimit(w.Speed, w.MaxMBps)
		where = "window " + w.String() + ": "
	}
	switch {
	case r == 0:
		e.Basis = where + "no rate known (unthrottled, source not measured)"
	case e.ReadBps > 0 && r == e.ReadBps && (limit == 0 || e.ReadBps < limit):
		e.Basis = where + "source reads " + mbps(e.ReadBps)
	default:
		e.Basis = where + fmt.Sprintf("%s %s", by, mbps(limit))
	}
	if e.Boundaries > 0 {
		e.Basis += fmt.Sprintf("; %d window boundaries crossed, %s on average", e.Boundaries, mbps(e.AverageBps))
	}
	if e.Duration == 0 && e.Bytes > 0 && r > 0 {
		e.Basis += "; a later window has no known rate"
	}
}

func mbps(bps int64) string { return fmt.Sprintf("%.1f MB/s", float64(bps)/1e6) }

// sampleRead reads the source's data extents from the start for at most
// d or max bytes, in 1 MiB pieces, and says how much it read in how long.
// A read error ends the sample (the real copy will report it).
func sampleRead(o *openVol, size int64, d time.Duration, maxBytes int64) (int64, time.Duration) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	var n int64
	for off := int64(0); off < size && n < maxBytes && time.Since(start) < d; {
		s, e, err := o.raw.NextData(off)
		if err != nil || s >= size {
			break
		}
		e = min(e, size)
		for off = s; off < e && n < maxBytes && time.Since(start) < d; {
			k := min(int64(len(buf)), e-off)
			if _, err := o.v.ReadAt(buf[:k], off); err != nil {
				return n, time.Since(start)
			}
			n += k
			off += k
		}
	}
	return n, time.Since(start)
}

// sessionEnd is when n copies started at start, at most slots at once (0:
// all), in order, each on the first free slot, end; dur(i, t) is how
// long copy i takes when it starts at t (windows make it depend on t).
func sessionEnd(start time.Time, n, slots int, dur func(i int, t time.Time) time.Duration) time.Time {
	if slots <= 0 || slots > n {
		slots = n
	}
	if slots == 0 {
		return start
	}
	free := make([]time.Time, slots) // when each slot is free
	for i := range free {
		free[i] = start
	}
	end := start
	for i := range n {
		j := 0
		for k := range free {
			if free[k].Before(free[j]) {
				j = k
			}
		}
		free[j] = free[j].Add(dur(i, free[j]))
		if free[j].After(end) {
			end = free[j]
		}
	}
	return end
}

// keepEstimate puts an estimate on a new pair's record.
func keepEstimate(rec *metavol.Pair, est Estimate) {
	rec.EstimateNS = int64(est.Duration)
	rec.EstimateBytes = est.Bytes
}

// markCopyStarted records when the pair's copy first started (its
// actual duration runs from there; persisted with the next checkpoint or
// transition); called by each run of the copy.
func (p *pair) markCopyStarted() {
	p.persist.Lock()
	defer p.persist.Unlock()
	p.mu.Lock()
	if p.mu.rec.CopyStarted.IsZero() {
		p.mu.rec.CopyStarted = time.Now().UTC()
	}
	p.mu.Unlock()
}

// markSynced records the actual duration of the copy when the pair
// first reaches synced; called before copying → synced.
func (p *pair) markSynced() {
	p.persist.Lock()
	defer p.persist.Unlock()
	p.mu.Lock()
	if p.mu.rec.ActualNS == 0 && !p.mu.rec.CopyStarted.IsZero() {
		p.mu.rec.ActualNS = max(int64(time.Since(p.mu.rec.CopyStarted)), 1)
	}
	p.mu.Unlock()
}

// dryRunPair checks a pair request as CreatePair does and estimates it;
// nothing changes.
func (m *Manager) dryRunPair(req PairRequest) (PairStatus, error) {
	m.admin.Lock()
	pl, err := m.planPair(req, "")
	m.admin.Unlock()
	if err != nil {
		return PairStatus{}, err
	}
	if err := checkPairRequest(&req); err != nil { // planPair's defaults, on this copy
		return PairStatus{}, err
	}
	est, err := m.estimatePair(req, sampleTime, time.Now())
	if err != nil {
		return PairStatus{}, err
	}
	return dryRunStatus(pl, req, est), nil
}

// dryRunStatus is the status a dry run answers for a planned pair.
func dryRunStatus(pl pairPlan, req PairRequest, est Estimate) PairStatus {
	return PairStatus{
		Source: req.Source, Target: req.Target, SourceID: pl.rec.SourceLUN, TargetID: pl.rec.TargetLUN,
		State: "dry-run", Reason: "dry run: nothing created", TotalBytes: est.TotalBytes,
		RemainingBytes: est.Bytes, Vehicle: est.Vehicle, Speed: req.Speed, MaxMBps: req.MaxMBps,
		AutoSplit: req.AutoSplit, Verify: req.Verify, MaxHostLatency: req.MaxHostLatency,
		Priority: req.Priority, StartAt: req.StartAt, Windows: windowStrings(req.Windows), MaxElapsed: req.MaxElapsed,
		DryRun: true, Estimate: &est, EstimateDuration: est.Duration, EstimateBytes: est.Bytes,
	}
}

// sessionPairRequest is the request of a session's pair i.
func sessionPairRequest(req SessionRequest, i int) PairRequest {
	pr := req.Pairs[i]
	return PairRequest{Source: pr.Source, Target: pr.Target, Speed: req.Speed, MaxMBps: req.MaxMBps,
		MaxHostLatency: req.MaxHostLatency, Verify: req.Verify, Vehicle: pr.Vehicle,
		Priority: req.Priority, StartAt: req.StartAt, Windows: req.Windows, MaxElapsed: req.MaxElapsed}
}

// estimateSession estimates every pair of a session request, sharing one
// read sample budget; nil where a pair cannot be estimated (the plan
// refuses it, or it is created without an estimate).
func (m *Manager) estimateSession(req SessionRequest) []*Estimate {
	out := make([]*Estimate, len(req.Pairs))
	budget := max(sampleTime/time.Duration(max(len(req.Pairs), 1)), 50*time.Millisecond)
	now := time.Now()
	for i := range req.Pairs {
		pr := sessionPairRequest(req, i)
		if checkPairRequest(&pr) != nil {
			continue
		}
		if est, err := m.estimatePair(pr, budget, now); err == nil {
			out[i] = &est
		}
	}
	return out
}

// dryRunSession answers a session dry run whose pairs were all planned
// (checked): each pair's estimate and the session's, its pairs copying
// max-active at a time (the session's limit and the server's).
func (m *Manager) dryRunSession(req SessionRequest, plans []pairPlan) (SessionStatus, error) {
	out := SessionStatus{
		Name: req.Name, State: "dry-run", Reason: "dry run: nothing created",
		Speed: req.Speed, MaxMBps: req.MaxMBps, MaxHostLatency: req.MaxHostLatency, MaxActive: req.MaxActive,
		AutoSplit: req.AutoSplit, Verify: req.Verify, DryRun: true, Counts: map[string]int{},
	}
	if !req.StartAt.IsZero() {
		out.StartAt = req.StartAt
	}
	out.Priority, out.Windows, out.MaxElapsed = req.Priority, windowStrings(req.Windows), req.MaxElapsed
	budget := max(sampleTime/time.Duration(max(len(plans), 1)), 50*time.Millisecond)
	now := time.Now()
	var ests []Estimate
	for i, pl := range plans {
		pr := sessionPairRequest(req, i)
		if err := checkPairRequest(&pr); err != nil {
			return SessionStatus{}, fmt.Errorf("session %s: pair %d: %w", req.Name, i+1, err)
		}
		est, err := m.estimatePair(pr, budget, now)
		if err != nil {
			return SessionStatus{}, fmt.Errorf("session %s: pair %d (%s → %s): %w", req.Name, i+1, pr.Source, pr.Target, err)
		}
		ps := dryRunStatus(pl, pr, est)
		out.Pairs = append(out.Pairs, ps)
		out.Counts[ps.State]++
		out.TotalBytes += est.TotalBytes
		out.EstimateBytes += est.Bytes
		ests = append(ests, est)
	}
	slots := m.opts.MaxActive
	if req.MaxActive > 0 {
		slots = min(slots, req.MaxActive)
	}
	// Every pair starts at the session's start; a pair that waits for a
	// slot copies through the windows from when the slot frees.
	start := now
	if req.StartAt.After(now) {
		start, out.EstimateWait = req.StartAt, req.StartAt.Sub(now)
	}
	end := sessionEnd(start, len(ests), slots, func(i int, t time.Time) time.Duration {
		d, _, _ := ests[i].copyFrom(t)
		return d
	})
	out.EstimateDuration = end.Sub(start)
	return out, nil
}
