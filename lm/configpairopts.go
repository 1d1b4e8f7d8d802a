package lm

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// The options of a pair in the configuration file, in one place. A pair
// created alone carries them (ConfigPair), and so does a session, which
// gives them to each of its pairs (ConfigSession).
//
// To carry a new pair option in the file (the extension point; helpers
// adding `migration create` flags start here):
//
//  1. a field in PairOptions;
//  2. how a record holds it: pairOptionsOf (export);
//  3. a line in pairOptionTable: how two values compare, how it is
//     copied, how the plan line shows it, how a new pair gets it
//     (PairRequest) and how a running pair changes it (SetRequest; nil:
//     it cannot change live, apply refuses a change and says to cancel
//     and re-create);
//  4. sessionRequest, if sessions have it;
//  5. the wire field and its conversion (target/api/wire/config.go,
//     target/api/config.go) and docs/cli.md's config section.
//
// A session's pair with options of its own (`migration set` on the pair)
// carries all of them in ConfigSessionPair.Options; apply sets the
// session first, then each such pair from what it has after that
// (sessionAfter).
//
// The round-trip test (TestConfigRoundTrip) sets every option to a value
// that is not the default; TestConfigLiveOptions changes each live one.

// PairOptions are the settings of a pair (or of every pair of a session)
// that the file carries. The zero value is the default of each.
type PairOptions struct {
	Speed   Speed // "": medium
	MaxMBps int64 // 0: no cap
	// Priority is 1..9 (0: medium, 5).
	Priority int
	// StartAt is when the copy starts; only a time still ahead is
	// exported and compared (a start time that has passed is "at once").
	StartAt time.Time
	// Windows are the daily windows (nil: none); MaxElapsed the copying
	// time limit (0: none).
	Windows           []Window
	MaxElapsed        time.Duration
	AutoSplit, Verify bool
	// MaxHostLatency is the host-latency bound (latency.go): 0 the
	// server's default, negative off (none, even if the server has one).
	MaxHostLatency time.Duration
}

// pairOptionsOf reads the options of a pair or session record.
func pairOptionsOf(obj string, speed string, maxMBps int64, priority int, startAt time.Time, windows []string,
	maxElapsedNS int64, autoSplit, verify bool, maxHostLatencyNS int64, now time.Time) (PairOptions, error) {
	o := PairOptions{Speed: Speed(orDefault(speed, string(SpeedMedium))), MaxMBps: maxMBps, Priority: recPriority(priority),
		MaxElapsed: time.Duration(maxElapsedNS), AutoSplit: autoSplit, Verify: verify,
		MaxHostLatency: hostLatencyNormal(time.Duration(maxHostLatencyNS))}
	if startAt.After(now) {
		o.StartAt = startAt.UTC()
	}
	if len(windows) > 0 {
		ws, err := ParseWindows(obj, windows)
		if err != nil {
			return o, fmt.Errorf("%s: stored windows: %w", obj, err)
		}
		o.Windows = ws
	}
	return o, nil
}

// normalized is o with the defaults filled in (speed medium, priority
// 5), a start time that has passed as none, and no empty window list:
// the form the export writes and the plan compares.
func (o PairOptions) normalized(now time.Time) PairOptions {
	if o.Speed == "" {
		o.Speed = SpeedMedium
	}
	o.Priority = recPriority(o.Priority)
	if !o.StartAt.After(now) {
		o.StartAt = time.Time{}
	} else {
		o.StartAt = o.StartAt.UTC()
	}
	if len(o.Windows) == 0 {
		o.Windows = nil
	}
	o.MaxHostLatency = hostLatencyNormal(o.MaxHostLatency)
	return o
}

// hostLatencyNormal is a host-latency bound in one form: every negative
// value (off) is -1.
func hostLatencyNormal(d time.Duration) time.Duration {
	if d < 0 {
		return -1
	}
	return d
}

// check refuses each option out of range for obj (speed, cap, priority,
// max elapsed, max host latency; windows were parsed by the caller): one
// refusal per bad option, none when all are good.
func (o PairOptions) check(obj string) []*Refusal {
	var out []*Refusal
	add := func(err error) {
		if err != nil {
			out = append(out, asRefusal(err, obj))
		}
	}
	_, err := checkSpeed(obj, o.Speed)
	add(err)
	if o.MaxMBps < 0 {
		out = append(out, refuse(ErrInvalid, obj, "max MB/s %d is negative (0: no cap)", o.MaxMBps))
	}
	if o.Priority < 0 || o.Priority > 9 {
		out = append(out, refuse(ErrInvalid, obj, "priority %d: want 1 (lowest) to 9 (highest)", o.Priority))
	}
	if o.MaxElapsed < 0 {
		out = append(out, refuse(ErrInvalid, obj, "max elapsed %v is negative (0: no limit)", o.MaxElapsed))
	}
	add(checkHostLatency(obj, o.MaxHostLatency))
	return out
}

// same reports whether o and p are equal in every option.
func (o PairOptions) same(p PairOptions) bool {
	for _, opt := range pairOptionTable() {
		if !opt.equal(o, p) {
			return false
		}
	}
	return true
}

// asMember is a session member's options o as the file compares them:
// auto split is the session's (a member pair takes none of its own).
func (o PairOptions) asMember(session PairOptions) PairOptions {
	o.AutoSplit = session.AutoSplit
	return o
}

// pairOption is one option of pairOptionTable.
type pairOption struct {
	name  string
	equal func(a, b PairOptions) bool
	// take copies the option from src to dst.
	take func(dst *PairOptions, src PairOptions)
	show func(o PairOptions) string
	// create puts the option into the request of a new pair.
	create func(o PairOptions, r *PairRequest)
	// set puts it into a live change; nil: it cannot change live.
	set func(o PairOptions, r *SetRequest)
}

// pairOptionTable lists the pair options of the file (see above).
func pairOptionTable() []pairOption {
	return []pairOption{
		{name: "speed",
			take:   func(dst *PairOptions, src PairOptions) { dst.Speed = src.Speed },
			equal:  func(a, b PairOptions) bool { return a.Speed == b.Speed },
			show:   func(o PairOptions) string { return string(o.Speed) },
			create: func(o PairOptions, r *PairRequest) { r.Speed = o.Speed },
			set:    func(o PairOptions, r *SetRequest) { v := o.Speed; r.Speed = &v }},
		{name: "max",
			take:   func(dst *PairOptions, src PairOptions) { dst.MaxMBps = src.MaxMBps },
			equal:  func(a, b PairOptions) bool { return a.MaxMBps == b.MaxMBps },
			show:   func(o PairOptions) string { return maxMBpsText(o.MaxMBps) },
			create: func(o PairOptions, r *PairRequest) { r.MaxMBps = o.MaxMBps },
			set:    func(o PairOptions, r *SetRequest) { v := o.MaxMBps; r.MaxMBps = &v }},
		{name: "priority",
			take:   func(dst *PairOptions, src PairOptions) { dst.Priority = src.Priority },
			equal:  func(a, b PairOptions) bool { return a.Priority == b.Priority },
			show:   func(o PairOptions) string { return PriorityName(o.Priority) },
			create: func(o PairOptions, r *PairRequest) { r.Priority = o.Priority },
			set:    func(o PairOptions, r *SetRequest) { v := o.Priority; r.Priority = &v }},
		{name: "start at",
			take:  func(dst *PairOptions, src PairOptions) { dst.StartAt = src.StartAt },
			equal: func(a, b PairOptions) bool { return a.StartAt.Equal(b.StartAt) },
			show: func(o PairOptions) string {
				if o.StartAt.IsZero() {
					return "at once"
				}
				return o.StartAt.Format(time.RFC3339)
			},
			create: func(o PairOptions, r *PairRequest) { r.StartAt = o.StartAt },
			set:    nil}, // no live operation changes a start time
		{name: "windows",
			take:  func(dst *PairOptions, src PairOptions) { dst.Windows = slices.Clone(src.Windows) },
			equal: func(a, b PairOptions) bool { return slices.Equal(a.Windows, b.Windows) },
			show: func(o PairOptions) string {
				if len(o.Windows) == 0 {
					return "none"
				}
				return strings.Join(windowStrings(o.Windows), " ")
			},
			create: func(o PairOptions, r *PairRequest) { r.Windows = slices.Clone(o.Windows) },
			set: func(o PairOptions, r *SetRequest) {
				v := slices.Clone(o.Windows)
				if v == nil {
					v = []Window{} // an empty list removes them
				}
				r.Windows = &v
			}},
		{name: "max elapsed",
			take:  func(dst *PairOptions, src PairOptions) { dst.MaxElapsed = src.MaxElapsed },
			equal: func(a, b PairOptions) bool { return a.MaxElapsed == b.MaxElapsed },
			show: func(o PairOptions) string {
				if o.MaxElapsed == 0 {
					return "none"
				}
				return o.MaxElapsed.String()
			},
			create: func(o PairOptions, r *PairRequest) { r.MaxElapsed = o.MaxElapsed },
			set:    func(o PairOptions, r *SetRequest) { v := o.MaxElapsed; r.MaxElapsed = &v }},
		{name: "auto split",
			take:   func(dst *PairOptions, src PairOptions) { dst.AutoSplit = src.AutoSplit },
			equal:  func(a, b PairOptions) bool { return a.AutoSplit == b.AutoSplit },
			show:   func(o PairOptions) string { return fmt.Sprint(o.AutoSplit) },
			create: func(o PairOptions, r *PairRequest) { r.AutoSplit = o.AutoSplit },
			set:    func(o PairOptions, r *SetRequest) { v := o.AutoSplit; r.AutoSplit = &v }},
		{name: "verify",
			take:   func(dst *PairOptions, src PairOptions) { dst.Verify = src.Verify },
			equal:  func(a, b PairOptions) bool { return a.Verify == b.Verify },
			show:   func(o PairOptions) string { return fmt.Sprint(o.Verify) },
			create: func(o PairOptions, r *PairRequest) { r.Verify = o.Verify },
			set:    func(o PairOptions, r *SetRequest) { v := o.Verify; r.Verify = &v }},
		{name: "max host latency",
			take: func(dst *PairOptions, src PairOptions) { dst.MaxHostLatency = src.MaxHostLatency },
			equal: func(a, b PairOptions) bool {
				return hostLatencyNormal(a.MaxHostLatency) == hostLatencyNormal(b.MaxHostLatency)
			},
			show: func(o PairOptions) string {
				if o.MaxHostLatency == 0 {
					return "server's"
				}
				return HostLatencyString(o.MaxHostLatency)
			},
			create: func(o PairOptions, r *PairRequest) { r.MaxHostLatency = o.MaxHostLatency },
			set:    func(o PairOptions, r *SetRequest) { v := o.MaxHostLatency; r.MaxHostLatency = &v }},
	}
}

// pairRequest is the request of a new pair from source to target with o.
func (o PairOptions) pairRequest(source, target, vehicle string) PairRequest {
	r := PairRequest{Source: source, Target: target, Vehicle: orDefault(vehicle, VehicleAuto)}
	for _, opt := range pairOptionTable() {
		opt.create(o, &r)
	}
	return r
}

// sessionRequest is the request of a new session with o given to every
// pair (its pairs and max active are the caller's).
func (o PairOptions) sessionRequest(name string) SessionRequest {
	t := o.pairRequest("", "", "")
	return SessionRequest{Name: name, Speed: t.Speed, MaxMBps: t.MaxMBps, AutoSplit: t.AutoSplit, Verify: t.Verify,
		Priority: t.Priority, StartAt: t.StartAt, Windows: t.Windows, MaxElapsed: t.MaxElapsed, MaxHostLatency: t.MaxHostLatency}
}

// optionsDiff compares want with cur (both normalized) and returns the
// live change to want and back to cur, the plan line ("speed low→high,
// verify false→true") and the options that differ but cannot change
// live. An empty line: nothing differs.
func optionsDiff(want, cur PairOptions) (do, undo SetRequest, line string, fixed []string) {
	var parts []string
	for _, opt := range pairOptionTable() {
		if opt.equal(want, cur) {
			continue
		}
		if opt.set == nil {
			fixed = append(fixed, fmt.Sprintf("%s %s is %s here", opt.name, opt.show(want), opt.show(cur)))
			continue
		}
		opt.set(want, &do)
		opt.set(cur, &undo)
		parts = append(parts, fmt.Sprintf("%s %s→%s", opt.name, opt.show(cur), opt.show(want)))
	}
	return do, undo, strings.Join(parts, ", "), fixed
}

// sessionAfter is a member's options cur after a session change from
// sessCur to sessWant (SetSession sets every option that changed on
// every pair).
func sessionAfter(cur, sessCur, sessWant PairOptions) PairOptions {
	for _, opt := range pairOptionTable() {
		if !opt.equal(sessWant, sessCur) && opt.set != nil {
			opt.take(&cur, sessWant)
		}
	}
	return cur
}

// pairRecordOptions reads a pair record's options.
func pairRecordOptions(obj string, p metavol.Pair, now time.Time) (PairOptions, error) {
	return pairOptionsOf(obj, p.Speed, p.MaxMBps, p.Priority, p.StartAt, p.Windows, p.MaxElapsedNS, p.AutoSplit, p.Verify, p.MaxHostLatencyNS, now)
}

// sessionRecordOptions reads a session record's options.
func sessionRecordOptions(obj string, s metavol.Session, now time.Time) (PairOptions, error) {
	return pairOptionsOf(obj, s.Speed, s.MaxMBps, s.Priority, s.StartAt, s.Windows, s.MaxElapsedNS, s.AutoSplit, s.Verify, s.MaxHostLatencyNS, now)
}
