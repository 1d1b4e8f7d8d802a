package lm

import (
	"fmt"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// The rules of the requests that create, throttle and split pairs and
// sessions, checked before anything is looked up. The rules that need the
// records (sizes, block sizes, a LUN in at most one pair, a pair's target
// LUN never mapped) are checked by planPair under Manager.admin.

// checkPairRequest checks a new pair's request and fills in the defaults
// (Speed medium, Vehicle auto).
func checkPairRequest(req *PairRequest) error {
	obj := pairObject(req.Source)
	if req.Source == "" || req.Target == "" {
		return refuse(ErrInvalid, "migration", "both a source and a target LUN are required")
	}
	if req.Source == req.Target {
		return refuse(ErrInvalid, obj, "source and target are the same LUN")
	}
	sp, err := checkSpeed(obj, req.Speed)
	if err != nil {
		return err
	}
	req.Speed = sp
	if req.MaxMBps < 0 {
		return refuse(ErrInvalid, obj, "max MB/s %d is negative", req.MaxMBps)
	}
	if req.Priority == 0 {
		req.Priority = PriorityDefault
	}
	if req.MaxElapsed < 0 {
		return refuse(ErrInvalid, obj, "max elapsed %v is negative (0: no limit)", req.MaxElapsed)
	}
	if req.Priority < 1 || req.Priority > 9 {
		return refuse(ErrInvalid, obj, "priority %d: want 1 (lowest) to 9 (highest)", req.Priority)
	}
	if err := checkHostLatency(obj, req.MaxHostLatency); err != nil {
		return err
	}
	switch req.Vehicle {
	case "":
		req.Vehicle = VehicleAuto
	case VehicleAuto, VehicleGeneric, VehicleCopyFileRange:
	default:
		return refuse(ErrInvalid, obj, "vehicle %q: must be auto, generic or copy_file_range", req.Vehicle)
	}
	return nil
}

// checkSpeed returns the speed level s names ("" is medium), or refuses
// it for obj (the levels are rateOf's).
func checkSpeed(obj string, s Speed) (Speed, error) {
	if s == "" {
		return SpeedMedium, nil
	}
	if _, err := rateOf(s); err != nil {
		return "", refuse(ErrInvalid, obj, "speed %q: must be low, medium, high or highest", s)
	}
	return s, nil
}

// checkSetRequest checks a throttle change of obj (a pair or a session)
// and fills in the default speed level.
// empty says whether a SetRequest changes nothing.
func (req SetRequest) empty() bool {
	return req == SetRequest{}
}

// setFields points at the option fields of a pair or session record
// (metavol.Pair, metavol.Session) that a SetRequest writes; a nil field
// is one the record does not have (MaxActive of a pair).
type setFields struct {
	Speed                          *string
	MaxMBps                        *int64
	Priority, MaxActive            *int
	AutoSplit, Verify              *bool
	Windows                        *[]string
	MaxElapsedNS, MaxHostLatencyNS *int64
}

// apply writes what req sets (a checked request: checkSetRequest) into
// the record fields f points at: the one place `migration set` and
// `session set` turn a request into record fields.
func (req SetRequest) apply(f setFields) {
	if req.Speed != nil {
		*f.Speed = string(*req.Speed)
	}
	if req.MaxMBps != nil {
		*f.MaxMBps = *req.MaxMBps
	}
	if req.Priority != nil {
		*f.Priority = *req.Priority
	}
	if req.AutoSplit != nil {
		*f.AutoSplit = *req.AutoSplit
	}
	if req.Verify != nil {
		*f.Verify = *req.Verify
	}
	if req.MaxActive != nil && f.MaxActive != nil {
		*f.MaxActive = *req.MaxActive
	}
	if req.Windows != nil {
		*f.Windows = windowStrings(*req.Windows)
	}
	if req.MaxElapsed != nil {
		*f.MaxElapsedNS = int64(*req.MaxElapsed)
	}
	if req.MaxHostLatency != nil {
		*f.MaxHostLatencyNS = int64(*req.MaxHostLatency)
	}
}

func checkSetRequest(obj string, req *SetRequest) error {
	if req.empty() {
		return refuse(ErrInvalid, obj, "nothing to set: give a speed, max_mbps, priority, auto_split, verify, windows, max_elapsed, max_host_latency or (a session) max_active")
	}
	if req.MaxHostLatency != nil {
		if err := checkHostLatency(obj, *req.MaxHostLatency); err != nil {
			return err
		}
	}
	if req.MaxElapsed != nil && *req.MaxElapsed < 0 {
		return refuse(ErrInvalid, obj, "max elapsed %v is negative (0 removes it)", *req.MaxElapsed)
	}
	if req.Priority != nil && (*req.Priority < 1 || *req.Priority > 9) {
		return refuse(ErrInvalid, obj, "priority %d: want 1 (lowest) to 9 (highest)", *req.Priority)
	}
	if req.MaxActive != nil && *req.MaxActive < 0 {
		return refuse(ErrInvalid, obj, "max active %d is negative (0: every pair copies at once)", *req.MaxActive)
	}
	if req.Speed != nil {
		sp, err := checkSpeed(obj, *req.Speed)
		if err != nil {
			return err
		}
		req.Speed = &sp
	}
	if req.MaxMBps != nil && *req.MaxMBps < 0 {
		return refuse(ErrInvalid, obj, "max MB/s %d is negative (0 removes the cap)", *req.MaxMBps)
	}
	return nil
}

// MaxPause parses a split's pause budget for obj: a Go duration between
// 1ms and 1m; "" is DefaultMaxPause.
func MaxPause(obj, s string) (time.Duration, error) {
	if s == "" {
		return DefaultMaxPause, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Millisecond || d > time.Minute {
		return 0, refuse(ErrInvalid, obj, "max pause %q: want a duration between 1ms and 1m (for example 100ms)", s)
	}
	return d, nil
}

// SplitObject names the pairs of a split by their sources, as errors
// about the split say it.
func SplitObject(sources []string) string {
	obj := ""
	for i, s := range sources {
		if i > 0 {
			obj += ","
		}
		obj += s
	}
	return pairObject(obj)
}

// checkSplitSources refuses a split that names no pair, or one twice.
func checkSplitSources(sources []string) error {
	if len(sources) == 0 {
		return refuse(ErrInvalid, "split", "name at least one source LUN")
	}
	seen := map[string]bool{}
	for _, src := range sources {
		if seen[src] {
			return refuse(ErrInvalid, SplitObject(sources), "source %s named twice", src)
		}
		seen[src] = true
	}
	return nil
}

// noActivePair is the error of an operation on the pair of source when it
// has no active pair: if its last pair has ended (a final state), a
// Refusal that says so, since `migration show` still shows that pair
// ("not found" would contradict it; it matches ErrState and ErrNotFound);
// else ErrNotFound.
func (m *Manager) noActivePair(source string) error {
	var last *metavol.Pair
	for _, r := range m.finishedRecords() {
		if m.lunName(r.SourceLUN) == source && (last == nil || r.Created.After(last.Created)) {
			last = &r
		}
	}
	if last == nil {
		return fmt.Errorf("migration of %s: %w", source, ErrNotFound)
	}
	return &Refusal{
		Object: pairObject(source),
		Reason: fmt.Sprintf("pair %s → %s is %s (a final state): no migration in progress; start a new one with migration create",
			source, m.lunName(last.TargetLUN), last.State),
		Err: fmt.Errorf("%w: %w", ErrState, ErrNotFound),
	}
}
