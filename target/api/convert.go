package api

import (
	"time"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// The one conversion of each lm status type to its wire type (lm's types
// have no JSON tags; the wire types are the only JSON shape).

// viewsOf converts every item with view; never nil (a JSON list is [],
// not null).
func viewsOf[T, W any](in []T, view func(T) W) []W {
	out := make([]W, 0, len(in))
	for _, x := range in {
		out = append(out, view(x))
	}
	return out
}

func lunView(i lm.LUNInfo) wire.LUN {
	l := i.LUN
	v := wire.LUN{
		ID: l.ID, Name: l.Name, Size: l.Size, BlockSize: l.BlockSize,
		NAA: l.NAA, Serial: l.Serial, Volume: l.VolumeID, Created: l.Created,
		Mappings: []wire.LUNMapping{},
		State:    i.Status.State.String(), Offline: i.Status.Reason,
	}
	if vol := i.Volume; vol != nil {
		v.VolumePath, v.VolumeKind, v.Owned, v.DirectIO = vol.Path, vol.Kind, vol.Owned, vol.Direct
		if vol.RBD != nil {
			v.VolumePath = "rbd:" + vol.RBD.String()
		}
		if vol.Remote != nil {
			v.VolumePath = vol.Remote.URL()
			v.Remote = &wire.LUNRemote{URL: vol.Remote.URL(), CHAPUser: vol.Remote.CHAPUser, Session: i.RemoteSession, Fence: fenceView(i.Fence)}
		}
	}
	if st := i.RBD; st != nil {
		v.RBD = &wire.LUNRBD{Image: st.Image, Lock: st.Lock, Cluster: st.Cluster, Ceph: st.Ceph}
	}
	v.Identity = "own"
	if a := l.Adopted; a != nil {
		v.Identity, v.Vendor, v.Product = "adopted", a.Vendor, a.Product
	}
	for _, m := range i.Mappings {
		v.Mappings = append(v.Mappings, wire.LUNMapping{Target: m.Target, LUN: m.Number, ReadOnly: m.ReadOnly, Initiators: m.Initiators})
	}
	if p := i.Pair; p != nil {
		v.Migration = &wire.LUNMigration{Role: p.Role, Pair: p.PairID, Peer: p.Peer, State: p.State}
	}
	return v
}

// fenceView shows the fence of a remote data volume ("" for none: a
// local volume, or no pair needed one).
func fenceView(f lm.FenceStatus) string {
	if f.State == lm.FenceNone {
		return ""
	}
	return f.String()
}

// chapInfo shows CHAP credentials without their secrets (nil: none).
func chapInfo(c *metavol.CHAP) *wire.CHAPInfo {
	if c == nil {
		return nil
	}
	return &wire.CHAPInfo{User: c.User, MutualUser: c.MutualUser}
}

func targetView(i lm.TargetInfo) wire.Target {
	t := i.Target
	v := wire.Target{
		IQN: t.IQN, AllowAll: t.AllowAll, Created: t.Created,
		Initiators: append([]string{}, t.Initiators...),
		LUNs:       []wire.TargetLUN{},
		CHAP:       chapInfo(t.CHAP),
		Portals:    append([]string(nil), t.Portals...),
	}
	for _, l := range i.LUNs {
		v.LUNs = append(v.LUNs, wire.TargetLUN{LUN: l.Number, ID: l.ID, Name: l.Name, Size: l.Size, BlockSize: l.BlockSize,
			ReadOnly: l.ReadOnly, Initiators: l.Initiators})
	}
	return v
}

func migrationView(p lm.PairStatus) wire.Migration {
	limit, by := lm.RateLimit(p.Speed, p.MaxMBps)
	if p.Window != "" { // a daily window is in force: its speed and cap
		limit, by = lm.RateLimit(p.WindowSpeed, p.WindowMaxMBps)
	}
	return wire.Migration{
		LimitBps: limit, LimitedBy: by,
		ID: p.ID, Source: p.Source, Target: p.Target, State: p.State, Reason: p.Reason,
		CopiedBytes: p.CopiedBytes, TotalBytes: p.TotalBytes, DCLBytes: p.DCLBytes,
		SkippedBytes: p.SkippedBytes, DoneBytes: p.DoneBytes, RemainingBytes: p.RemainingBytes,
		RateBps: p.RateBps, ETASeconds: p.ETASeconds, Vehicle: p.Vehicle,
		Speed: string(p.Speed), MaxMBps: p.MaxMBps, AutoSplit: p.AutoSplit, Verify: p.Verify,
		SplitPauseMS: p.SplitPauseMS, Created: p.Created,
		MaxHostLatency: lm.HostLatencyString(p.MaxHostLatency), HostLatencyBound: lm.HostLatencyString(p.HostLatencyBound),
		EffectiveBps: p.EffectiveBps, HostP99MS: float64(p.HostP99) / float64(time.Millisecond), Throttle: p.Throttle,
		DryRun: p.DryRun, Estimate: estimateView(p.Estimate), EstimateSeconds: p.EstimateDuration.Seconds(),
		EstimateBytes: p.EstimateBytes, ActualSeconds: p.ActualDuration.Seconds(),
		CursorBytes: p.CursorBytes, DataBytes: p.DataBytes, RecopiedBytes: p.RecopiedBytes,
		SourceID: p.SourceID, TargetID: p.TargetID,
		Priority: p.Priority, PriorityName: lm.PriorityName(p.Priority), StartAt: timeOrNil(p.StartAt),
		QueuePos: p.QueuePos, MaxActive: p.MaxActive, Session: p.Session,
		Windows: p.Windows, Window: p.Window, WindowUntil: timeOrNil(p.WindowUntil),
		MaxElapsed: durOrEmpty(p.MaxElapsed), CopyElapsedSeconds: p.CopyElapsed.Seconds(),
		Switched: p.Switched,
	}
}

// durOrEmpty is "" for 0.
func durOrEmpty(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// timeOrNil is nil for the zero time.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func sessionView(st lm.SessionStatus) wire.MigrationSession {
	limit, by := lm.RateLimit(st.Speed, st.MaxMBps)
	v := wire.MigrationSession{
		LimitBps: limit, LimitedBy: by,
		ID: st.ID, Name: st.Name, State: st.State, Reason: st.Reason, Speed: string(st.Speed),
		MaxMBps: st.MaxMBps, MaxActive: st.MaxActive, AutoSplit: st.AutoSplit, Verify: st.Verify,
		Paused: st.Paused, CopiedBytes: st.CopiedBytes, TotalBytes: st.TotalBytes, DCLBytes: st.DCLBytes,
		SkippedBytes: st.SkippedBytes, DoneBytes: st.DoneBytes,
		RateBps: st.RateBps, ETASeconds: st.ETASeconds, SplitPauseMS: st.SplitPauseMS,
		Counts: st.Counts, Created: st.Created,
		Priority: st.Priority, PriorityName: lm.PriorityName(st.Priority), StartAt: timeOrNil(st.StartAt),
		Forced: st.Forced, Windows: st.Windows, MaxElapsed: durOrEmpty(st.MaxElapsed),
		MaxHostLatency: lm.HostLatencyString(st.MaxHostLatency),
		DryRun:         st.DryRun, EstimateSeconds: st.EstimateDuration.Seconds(), EstimateBytes: st.EstimateBytes,
		EstimateWaitSeconds: st.EstimateWait.Seconds(),
	}
	if v.Counts == nil {
		v.Counts = map[string]int{}
	}
	v.Pairs = viewsOf(st.Pairs, migrationView)
	return v
}

func estimateView(e *lm.Estimate) *wire.Estimate {
	if e == nil {
		return nil
	}
	w := &wire.Estimate{
		TotalBytes: e.TotalBytes, Bytes: e.Bytes, Vehicle: e.Vehicle, LimitBps: e.LimitBps, LimitedBy: e.LimitedBy,
		ReadBps: e.ReadBps, SampleBytes: e.SampleBytes, SampleMS: float64(e.SampleTime) / float64(time.Millisecond),
		RateBps: e.RateBps, Basis: e.Basis, Seconds: e.Duration.Seconds(),
		Start: e.Start.UTC(), WaitSeconds: e.Wait.Seconds(), Boundaries: e.Boundaries, AverageBps: e.AverageBps,
	}
	if !e.Finish.IsZero() {
		f := e.Finish.UTC()
		w.Finish = &f
	}
	return w
}

func splitView(r lm.SplitResult) wire.SplitResult {
	pm := r.PauseMS
	if pm == 0 && r.Pause != 0 {
		pm = float64(r.Pause) / float64(time.Millisecond)
	}
	return wire.SplitResult{Pairs: r.Pairs, PauseMS: pm}
}
