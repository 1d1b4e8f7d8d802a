package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

func migrationCommand() *cli.Command {
	return &cli.Command{
		Name:  "migration",
		Usage: "move a LUN's data to another LUN's volume live, then split (cut over)",
		Subcommands: append([]*cli.Command{
			{
				Name:  "create",
				Usage: "pair a source LUN with a target LUN and start the initial sync",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "source", Usage: "source LUN (hosts keep using it)"},
					&cli.StringFlag{Name: "target", Usage: "target LUN: as large, same block size, not mapped"},
					&cli.StringFlag{Name: "speed", Value: "medium", Usage: "copy rate: low (10 MB/s), medium (50), high (200), highest (unthrottled)"},
					&cli.Int64Flag{Name: "max-mbps", Usage: "absolute copy rate cap in MB/s (0: none)"},
					&cli.BoolFlag{Name: "auto-split", Usage: "split as soon as the pair is synced"},
					&cli.BoolFlag{Name: "verify", Usage: "compare source and target before the split; refuse it on a difference"},
					hostLatencyFlag(),
					dryRunFlag(),
					&cli.StringFlag{Name: "vehicle", Value: "auto", Usage: "copy method: auto, generic or copy_file_range"},
					&cli.BoolFlag{Name: "preempt", Usage: "imported source: preempt another initiator's reservation on the external LUN to fence its old path (after its hosts' reservations are carried over)"},
					&cli.BoolFlag{Name: "allow-unfenced", Usage: "imported source on a target without persistent reservations: migrate without a fence (every other path must be gone)"},
					priorityFlag(), startAtFlag(), windowFlag(), maxElapsedFlag(),
					outputFlag,
				},
				Action: migrationCreate,
			},
			{
				Name:   "list",
				Usage:  "list migration pairs",
				Flags:  []cli.Flag{outputFlag},
				Action: migrationList,
			},
			{
				Name:      "show",
				Usage:     "show a pair: state, progress, rate, ETA, DCL, vehicle, last split pause",
				ArgsUsage: "SRC",
				Flags:     watchFlags("follow progress with a bar until synced (or split with --auto-split)"),
				Action:    migrationShow,
			},
			migrationAction("pause", "pause the copy; host writes go to the source and are logged in the DCL", (*client.Client).PauseMigration),
			forceAction("resume", "resume a paused pair; only what changed is copied again (queued if max-active pairs copy)"),
			forceAction("cancel", "end the pair without a split; the source is untouched"),
			{
				Name:      "set",
				Usage:     "change a running pair's speed, cap (--max-mbps 0 removes it), priority, auto-split or verify",
				ArgsUsage: "SRC",
				Flags:     append(throttleFlags(), setOptionFlags()...),
				Action:    migrationSet,
			},
			{
				Name:      "split",
				Usage:     "cut over one or several synced pairs in one bounded I/O pause (consistent split)",
				ArgsUsage: "SRC [SRC...]",
				Flags:     splitFlags(), // rollback.go
				Action:    migrationSplit,
			},
			migrationHistoryCommand(), // events.go
		}, rollbackCommands()...), // rollback.go
	}
}

// migrationAction is the subcommand "name SRC" that makes one call on a pair.
func migrationAction(name, usage string, call func(*client.Client, context.Context, string) (wire.Migration, error)) *cli.Command {
	return stateAction(name, usage, "SRC", "SRC (the source LUN's name)", "migration", call,
		func(m wire.Migration) string { return m.State })
}

func migrationCreate(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	if err := checkOptionFlags(c); err != nil { // schedule.go
		return err
	}
	return request(c, func(cl *client.Client) (wire.Migration, error) {
		if c.String("source") == "" || c.String("target") == "" {
			return wire.Migration{}, usageErr("migration create: --source and --target are required")
		}
		m, err := cl.CreateMigration(context.Background(), wire.CreateMigration{
			Source: c.String("source"), Target: c.String("target"), Speed: c.String("speed"),
			MaxMBps: c.Int64("max-mbps"), AutoSplit: c.Bool("auto-split"), Verify: c.Bool("verify"),
			MaxHostLatency: c.String("max-host-latency"), DryRun: c.Bool("dry-run"),
			Vehicle: c.String("vehicle"), Preempt: c.Bool("preempt"), AllowUnfenced: c.Bool("allow-unfenced"),
			Priority: c.String("priority"), StartAt: c.String("start-at"),
			Windows: windows(c), MaxElapsed: c.String("max-elapsed"),
		})
		for _, w := range m.Warnings {
			fmt.Fprintln(c.App.ErrWriter, w)
		}
		return m, err
	}, func(m wire.Migration) {
		if m.DryRun {
			printDryRun(c.App.Writer, m)
			return
		}
		fmt.Fprintf(c.App.Writer, "migration %s -> %s created (pair %s, state %s); follow it with: lmtgt migration show %s --watch\n",
			m.Source, m.Target, m.ID, m.State, m.Source)
	})
}

func migrationList(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	return request(c, func(cl *client.Client) ([]wire.Migration, error) {
		return cl.Migrations(context.Background())
	}, func(ms []wire.Migration) {
		var rows [][]string
		for _, m := range ms {
			copied := sizeStr(m.CopiedBytes)
			if m.SkippedBytes > 0 {
				copied += " (+" + sizeStr(m.SkippedBytes) + " skipped)"
			}
			rows = append(rows, []string{m.Source, m.Target, m.State, percent(m.DoneBytes, m.TotalBytes),
				copied, rateStr(m.RateBps), etaStr(m.ETASeconds),
				sizeStr(m.DCLBytes), orDash(m.Vehicle)})
		}
		table(c.App.Writer, []string{"SOURCE", "TARGET", "STATE", "DONE", "COPIED", "RATE", "ETA", "DCL", "VEHICLE"}, rows)
	})
}

func printMigration(c *cli.Context, m wire.Migration) {
	limit := migrationLimitStr(m)
	var opts []string
	if m.AutoSplit {
		opts = append(opts, "auto-split")
	}
	if m.Verify {
		opts = append(opts, "verify")
	}
	if m.Switched { // rollback.go
		opts = append(opts, "switched: on the new volume, writes mirrored back to the old one (rollback or commit)")
	}
	pause := "-"
	if m.SplitPauseMS > 0 {
		pause = strconv.FormatFloat(m.SplitPauseMS, 'f', 2, 64) + " ms"
	}
	fields(c.App.Writer, append([][2]string{
		{"pair", m.ID},
		{"source", m.Source},
		{"target", m.Target},
		{"state", m.State},
		{"reason", orDash(m.Reason)},
		{"done", fmt.Sprintf("%s of %s (%s)", sizeStr(m.DoneBytes), sizeStr(m.TotalBytes), percent(m.DoneBytes, m.TotalBytes))},
		{"copied", fmt.Sprintf("%s read and written, %s skipped (holes, zeros), %s to go", sizeStr(m.CopiedBytes), sizeStr(m.SkippedBytes), sizeStr(m.RemainingBytes))},
		{"rate", rateStr(m.RateBps)},
		{"eta", etaStr(m.ETASeconds)},
		{"dcl", sizeStr(m.DCLBytes)},
		{"vehicle", orDash(m.Vehicle)},
		{"fence", orDash(m.Fence)},
		{"speed", orDash(limit)},
		{"effective rate", effectiveStr(m)},
		{"options", orDash(strings.Join(opts, ", "))},
		{"split pause", pause},
		{"estimate", estimateLine(m.EstimateSeconds, m.EstimateBytes, m.ActualSeconds)},
		{"created", m.Created.Local().Format("2006-01-02 15:04:05")},
	}, scheduleFields(m)...)) // schedule.go
}

func migrationShow(c *cli.Context) error {
	src, err := args1(c, "SRC (the source LUN's name)")
	if err != nil {
		return err
	}
	if c.Bool("watch") {
		asJSON, err := jsonOutput(c)
		if err != nil {
			return err
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		return watchMigration(c, cl, src, asJSON)
	}
	return request(c, func(cl *client.Client) (wire.Migration, error) {
		return cl.Migration(context.Background(), src)
	}, func(m wire.Migration) { printMigration(c, m) })
}

// watchDone reports whether --watch should stop at this state.
func watchDone(m wire.Migration) bool {
	switch m.State {
	case "split", "cancelled", "faulty", "switched":
		return true
	case "synced":
		return !m.AutoSplit
	}
	return false
}

// watchMigration polls the pair and draws a progress bar (a line per poll
// when stdout is not a terminal, a JSON object per poll with -o json) until
// the pair is synced (split with --auto-split), final, or gone.
func watchMigration(c *cli.Context, cl *client.Client, src string, asJSON bool) error {
	interval := c.Duration("interval")
	if interval < 100*time.Millisecond {
		return usageErr("--interval %v: at least 100ms", interval)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tty := false
	if f, ok := c.App.Writer.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd())
	}
	w := c.App.Writer
	seen := "" // ID of the pair being watched
	// A cancelled pair's record is deleted (split ones stay), so once the
	// watched pair is cancelled the source shows either nothing or an older,
	// split pair of the same source: neither is the watched pair's end.
	cancelled := func() error {
		if tty && !asJSON {
			fmt.Fprintln(w)
		}
		if asJSON {
			printJSONLine(w, wire.Migration{ID: seen, Source: src, State: "cancelled"})
		} else {
			fmt.Fprintf(w, "migration %s: pair %s cancelled\n", src, seen)
		}
		return nil
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		m, err := cl.Migration(ctx, src)
		if err == nil && seen != "" && (m.ID != seen || m.State == "cancelled") {
			return cancelled() // another pair, or the watched one from the history (cancelled)
		}
		if err != nil {
			if seen != "" && client.StatusOf(err) == http.StatusNotFound {
				return cancelled()
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			if tty && seen != "" {
				fmt.Fprintln(w)
			}
			return apiFailed(err)
		}
		seen = m.ID
		switch {
		case asJSON:
			printJSONLine(w, m)
		case tty:
			fmt.Fprintf(w, "\r\033[K%s", progressLine(m))
		default:
			fmt.Fprintln(w, progressLine(m))
		}
		if watchDone(m) {
			if tty && !asJSON {
				fmt.Fprintln(w)
			}
			if m.State == "faulty" {
				return failed(fmt.Errorf("migration %s: faulty: %s", src, orDash(m.Reason)))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if tty && !asJSON {
				fmt.Fprintln(w)
			}
			return nil
		case <-tick.C:
		}
	}
}

func progressLine(m wire.Migration) string {
	s := fmt.Sprintf("%s %6s %s/%s %s ETA %s %s", progressBar(m.DoneBytes, m.TotalBytes, 30),
		percent(m.DoneBytes, m.TotalBytes), sizeStr(m.DoneBytes), sizeStr(m.TotalBytes),
		rateStr(m.RateBps), etaStr(m.ETASeconds), m.State)
	if m.DCLBytes > 0 {
		s += " dcl=" + sizeStr(m.DCLBytes)
	}
	if m.Reason != "" && m.State != "copying" && m.State != "synced" {
		s += " (" + m.Reason + ")"
	}
	return s
}

func migrationSet(c *cli.Context) error {
	src, err := args1(c, "SRC (the source LUN's name)")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.Migration, error) {
		req, err := throttleRequest(c, "migration set")
		if err != nil {
			return wire.Migration{}, err
		}
		return cl.SetMigration(context.Background(), src, req)
	}, func(m wire.Migration) {
		fmt.Fprintf(c.App.Writer, "migration %s: speed %s, %s; %s%s\n", src, m.Speed, capStr(m.MaxMBps), limitNote(m.MaxMBps, m.LimitBps, m.LimitedBy), boundNote(m.HostLatencyBound))
	})
}

func migrationSplit(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageErr("migration split: name at least one source LUN (usage: lmtgt migration split SRC [SRC...])")
	}
	return splitWith(c, "") // rollback.go: --keep-source, --retire
}

// stateAction is a subcommand that names one object (a pair by its source,
// a session), calls the API and prints "NOUN ARG: ACTION (state STATE)".
func stateAction[T any](name, usage, argsUsage, argName, noun string, call func(*client.Client, context.Context, string) (T, error), state func(T) string) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: argsUsage,
		Flags:     []cli.Flag{outputFlag},
		Action: func(c *cli.Context) error {
			arg, err := args1(c, argName)
			if err != nil {
				return err
			}
			return request(c, func(cl *client.Client) (T, error) {
				return call(cl, context.Background(), arg)
			}, func(v T) {
				fmt.Fprintf(c.App.Writer, "%s %s: %s (state %s)\n", noun, arg, name, orDash(state(v)))
			})
		},
	}
}

// watchFlags are the flags of `show` for pairs and sessions.
func watchFlags(usage string) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: usage},
		&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "refresh interval for --watch"},
		outputFlag,
	}
}

// throttleFlags are the flags of `set` for pairs and sessions.
func throttleFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "speed", Usage: "low, medium, high or highest"},
		&cli.Int64Flag{Name: "max-mbps", Usage: "absolute cap in MB/s; 0 removes it"},
		hostLatencyFlag(),
		outputFlag,
	}
}

// hostLatencyFlag is --max-host-latency of create and set.
func hostLatencyFlag() cli.Flag {
	return &cli.StringFlag{Name: "max-host-latency", Usage: "keep the hosts' p99 command latency on the LUNs under this bound while copying (e.g. 2ms): the copy slows down, never below a floor; off: none; 0: the server's default"}
}

// throttleRequest reads throttleFlags; cmd names the command in the error.
func throttleRequest(c *cli.Context, cmd string) (wire.SetMigration, error) {
	if err := checkOptionFlags(c); err != nil { // schedule.go
		return wire.SetMigration{}, err
	}
	req := wire.SetMigration{
		Speed:          flagPtr(c, "speed", c.String), // schedule.go
		MaxMBps:        flagPtr(c, "max-mbps", c.Int64),
		MaxHostLatency: flagPtr(c, "max-host-latency", c.String),
	}
	setOptions(c, &req) // schedule.go
	if req == (wire.SetMigration{}) {
		return req, usageErr("%s: give --speed and/or --max-mbps, or --priority, --auto-split, --verify, --window, --max-elapsed, --max-host-latency (session: --max-active)", cmd)
	}
	return req, nil
}

// limitNote says what a set throttle does: the effective rate and, when
// a cap is set, whether it or the speed level limits.
func limitNote(maxMBps, limitBps int64, limitedBy string) string {
	switch {
	case limitBps <= 0:
		return "unthrottled"
	case limitedBy == "max_mbps":
		return fmt.Sprintf("copies at up to %s (the cap limits)", rateStr(limitBps))
	case maxMBps > 0:
		return fmt.Sprintf("copies at up to %s (the speed level limits; the cap has no effect)", rateStr(limitBps))
	}
	return fmt.Sprintf("copies at up to %s", rateStr(limitBps))
}

// capStr describes an absolute copy cap.
func capStr(maxMBps int64) string {
	if maxMBps > 0 {
		return fmt.Sprintf("max %d MB/s", maxMBps)
	}
	return "no cap"
}

// maxPauseFlag is the split's pause budget, for pairs and sessions.
func maxPauseFlag() cli.Flag {
	return &cli.DurationFlag{Name: "max-pause", Value: 100 * time.Millisecond, Usage: "longest host I/O pause; if draining takes longer nothing changes"}
}

// checkMaxPause refuses a pause budget outside what the daemon accepts.
func checkMaxPause(c *cli.Context) error {
	if d := c.Duration("max-pause"); d < time.Millisecond || d > time.Minute {
		return usageErr("--max-pause %s: want a duration between 1ms and 1m (for example 100ms)", d)
	}
	return nil
}

// effectiveStr says at what rate a copying pair may copy now and why
// ("12.0 MB/s (held back: host p99 4.1 ms > 2.0 ms)").
func effectiveStr(m wire.Migration) string {
	s := "-"
	if m.State == "copying" {
		s = "unthrottled"
		if m.EffectiveBps > 0 {
			s = rateStr(m.EffectiveBps)
		}
	}
	switch {
	case m.Throttle != "":
		s += " (" + m.Throttle + ")"
	case m.HostLatencyBound != "":
		s += " (max host latency " + m.HostLatencyBound + ")"
	}
	return s
}

// dryRunFlag is --dry-run of migration and session create.
func dryRunFlag() cli.Flag {
	return &cli.BoolFlag{Name: "dry-run", Usage: "check everything create checks and print the bytes to copy, the vehicle and an estimated duration; create nothing"}
}

// durStr prints seconds as a short duration ("3m10s"); "-" for none.
func durStr(sec float64) string {
	if sec <= 0 {
		return "-"
	}
	d := time.Duration(sec * float64(time.Second))
	if d >= time.Second {
		d = d.Round(time.Second)
	} else {
		d = d.Round(time.Millisecond)
	}
	return d.String()
}

// migrationLimitStr is show's "speed" line: the pair's own speed and
// cap, and, while a daily window is in force, the window's (limit_bps is
// then the window's: the pair's own limit would mislead).
func migrationLimitStr(m wire.Migration) string {
	if m.Window == "" {
		return limitStr(m.Speed, m.MaxMBps, m.LimitBps, m.LimitedBy)
	}
	own := m.Speed
	if m.MaxMBps > 0 {
		own += fmt.Sprintf(", max %d MB/s", m.MaxMBps)
	}
	note := "unthrottled"
	if m.LimitBps > 0 {
		note = "copies at up to " + rateStr(m.LimitBps)
	}
	return fmt.Sprintf("%s outside the windows; window %s in force: %s", own, m.Window, note)
}

// estimateLine is show's "3m10s for 1 GiB, actual 2m55s" (the actual
// once the pair has synced).
func estimateLine(est float64, bytes int64, actual float64) string {
	if est <= 0 && actual <= 0 {
		return "-"
	}
	s := durStr(est)
	switch {
	case bytes > 0:
		s += " for " + sizeStr(bytes)
	case est <= 0:
		s = "nothing to copy" // the source had no data when created
	}
	if actual > 0 {
		s += ", actual " + durStr(actual)
	}
	return s
}

// printDryRun prints a dry run's answer for one pair.
func printDryRun(w io.Writer, m wire.Migration) {
	fmt.Fprintf(w, "dry run: migration %s -> %s would be created (nothing changed)\n", m.Source, m.Target)
	e := m.Estimate
	if e == nil {
		return
	}
	fields(w, dryRunFields(*e))
}

func dryRunFields(e wire.Estimate) [][2]string {
	read := "not measured"
	if e.ReadBps > 0 {
		read = fmt.Sprintf("%s (read %s in %s)", rateStr(e.ReadBps), sizeStr(e.SampleBytes), durStr(e.SampleMS/1000))
	}
	limit := "unthrottled"
	if e.LimitBps > 0 {
		limit = fmt.Sprintf("%s (%s)", rateStr(e.LimitBps), e.LimitedBy)
	}
	return [][2]string{
		{"to copy", fmt.Sprintf("%s of %s (allocated extents)", sizeStr(e.Bytes), sizeStr(e.TotalBytes))},
		{"vehicle", e.Vehicle},
		{"limit", limit},
		{"source read", read},
		{"estimate", fmt.Sprintf("%s at %s (%s)", durStr(e.Seconds), rateStr(e.RateBps), e.Basis)},
		{"start", estimateStart(e.WaitSeconds, e.Start, e.Finish)},
	}
}

// estimateStart is the dry run's "start" line: when the copy starts and
// ends ("at once, done 14:02:10" or "in 1h0m0s (at ...), done ...").
func estimateStart(wait float64, start time.Time, finish *time.Time) string {
	s := "at once"
	if wait > 0 {
		s = fmt.Sprintf("in %s (at %s)", durStr(wait), start.Local().Format(time.RFC3339))
	}
	if finish != nil {
		s += ", done " + finish.Local().Format(time.RFC3339)
	}
	return s
}

// boundNote is set's "; host p99 kept under 2ms" ("" without a bound).
func boundNote(bound string) string {
	if bound == "" || bound == "off" {
		return ""
	}
	return "; host p99 kept under " + bound
}
