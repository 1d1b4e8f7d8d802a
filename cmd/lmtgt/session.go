package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

func sessionCommand() *cli.Command {
	return &cli.Command{
		Name:  "session",
		Usage: "migrate a group of LUNs together: started, throttled, paused, resumed, cancelled and split as one",
		Subcommands: append([]*cli.Command{
			{
				Name:      "create",
				Usage:     "create a session and all its pairs (all or nothing) and start the initial sync",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "pair", Usage: "SRC:DST[:VEHICLE], a source LUN, its target LUN and optionally the pair's copy method (auto, generic, copy_file_range; repeat for every pair)"},
					priorityFlag(), startAtFlag(), windowFlag(), maxElapsedFlag(),
					&cli.StringFlag{Name: "speed", Value: "medium", Usage: "copy rate of every pair: low (10 MB/s), medium (50), high (200), highest (unthrottled)"},
					&cli.Int64Flag{Name: "max-mbps", Usage: "absolute copy rate cap of every pair in MB/s (0: none)"},
					&cli.IntFlag{Name: "max-active", Usage: "pairs of the session copying at once, the others wait (0: all)"},
					&cli.BoolFlag{Name: "auto-split", Usage: "split all the pairs in one consistent split as soon as every pair is synced"},
					&cli.BoolFlag{Name: "verify", Usage: "compare sources and targets before the split; refuse it on a difference"},
					hostLatencyFlag(),
					dryRunFlag(),
					outputFlag,
				},
				Action: sessionCreate,
			},
			{
				Name:   "list",
				Usage:  "list migration sessions",
				Flags:  []cli.Flag{outputFlag},
				Action: sessionList,
			},
			{
				Name:      "show",
				Usage:     "show a session: aggregated state and progress, and a row per pair",
				ArgsUsage: "NAME",
				Flags:     watchFlags("follow progress until synced (split with --auto-split), cancelled or faulty"),
				Action:    sessionShow,
			},
			sessionAction("pause", "pause every pair; host writes go to the sources and are logged in the DCLs", (*client.Client).PauseSession),
			sessionAction("resume", "resume a paused session (max-active pairs at a time)", (*client.Client).ResumeSession),
			sessionAction("cancel", "cancel every pair without a split; the sources are untouched", (*client.Client).CancelSession),
			{
				Name:      "set",
				Usage:     "change the speed, cap (--max-mbps 0 removes it), priority, verify of every pair, the session's max-active or auto-split",
				ArgsUsage: "NAME",
				Flags:     append(append(throttleFlags(), setOptionFlags()...), &cli.IntFlag{Name: "max-active", Usage: "pairs of the session copying at once (0: all); lowered: the last pairs copying wait again"}),
				Action:    sessionSet,
			},
			{
				Name:      "split",
				Usage:     "cut over every pair of a synced session in one bounded I/O pause (consistent split)",
				ArgsUsage: "NAME",
				Flags:     splitFlags(), // rollback.go
				Action:    sessionSplit,
			},
			{
				Name:      "delete",
				Usage:     "forget a split or cancelled session (its split pairs stay in migration list)",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{outputFlag},
				Action: func(c *cli.Context) error {
					name, err := sessionArg(c)
					if err != nil {
						return err
					}
					return request(c, func(cl *client.Client) (map[string]string, error) {
						return deleted(name), cl.DeleteSession(context.Background(), name)
					}, func(map[string]string) { fmt.Fprintf(c.App.Writer, "session %s deleted\n", name) })
				},
			},
			sessionHistoryCommand(), // events.go
		}, sessionRollbackCommands()...), // rollback.go
	}
}

// sessionAction is the subcommand "name NAME" that makes one call on a session.
func sessionAction(name, usage string, call func(*client.Client, context.Context, string) (wire.MigrationSession, error)) *cli.Command {
	return stateAction(name, usage, "NAME", sessionNameWhat, "session", call,
		func(s wire.MigrationSession) string { return s.State })
}

// parsePairs turns --pair SRC:DST values into pairs.
func parsePairs(vals []string) ([]wire.SessionPair, error) {
	var out []wire.SessionPair
	for _, v := range vals {
		src, dst, ok := strings.Cut(v, ":")
		dst, vehicle, _ := strings.Cut(dst, ":")
		if !ok || src == "" || dst == "" || strings.Contains(vehicle, ":") {
			return nil, usageErr("--pair %q: want SRC:DST[:VEHICLE] (source LUN name, colon, target LUN name, optionally colon and auto, generic or copy_file_range)", v)
		}
		out = append(out, wire.SessionPair{Source: src, Target: dst, Vehicle: vehicle})
	}
	if len(out) == 0 {
		return nil, usageErr("session create: give at least one --pair SRC:DST")
	}
	return out, nil
}

func sessionCreate(c *cli.Context) error {
	name, err := sessionArg(c)
	if err != nil {
		return err
	}
	pairs, err := parsePairs(c.StringSlice("pair"))
	if err != nil {
		return err
	}
	if c.Int("max-active") < 0 {
		return usageErr("--max-active %d: want 0 (all pairs at once) or more", c.Int("max-active"))
	}
	if err := checkOptionFlags(c); err != nil { // schedule.go
		return err
	}
	return request(c, func(cl *client.Client) (wire.MigrationSession, error) {
		return cl.CreateSession(context.Background(), wire.CreateSession{
			Name: name, Pairs: pairs, Speed: c.String("speed"), MaxMBps: c.Int64("max-mbps"),
			MaxActive: c.Int("max-active"), AutoSplit: c.Bool("auto-split"), Verify: c.Bool("verify"),
			Priority: c.String("priority"), StartAt: c.String("start-at"),
			Windows: windows(c), MaxElapsed: c.String("max-elapsed"),
			MaxHostLatency: c.String("max-host-latency"), DryRun: c.Bool("dry-run"),
		})
	}, func(s wire.MigrationSession) {
		if s.DryRun {
			printSessionDryRun(c.App.Writer, s)
			return
		}
		fmt.Fprintf(c.App.Writer, "session %s created with %d pairs (state %s); follow it with: lmtgt session show %s --watch\n",
			s.Name, len(s.Pairs), s.State, s.Name)
	})
}

func sessionList(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	return request(c, func(cl *client.Client) ([]wire.MigrationSession, error) {
		return cl.Sessions(context.Background())
	}, func(ss []wire.MigrationSession) {
		var rows [][]string
		for _, s := range ss {
			rows = append(rows, []string{s.Name, s.State, strconv.Itoa(len(s.Pairs)), percent(s.DoneBytes, s.TotalBytes),
				sizeStr(s.CopiedBytes), rateStr(s.RateBps), etaStr(s.ETASeconds),
				sizeStr(s.DCLBytes), sessionOptions(s)})
		}
		table(c.App.Writer, []string{"NAME", "STATE", "PAIRS", "DONE", "COPIED", "RATE", "ETA", "DCL", "OPTIONS"}, rows)
	})
}

func sessionOptions(s wire.MigrationSession) string {
	opts := []string{s.Speed}
	if s.MaxMBps > 0 {
		opts = append(opts, fmt.Sprintf("max %d MB/s", s.MaxMBps))
	}
	if s.MaxActive > 0 {
		opts = append(opts, fmt.Sprintf("max-active %d", s.MaxActive))
	}
	if s.AutoSplit {
		opts = append(opts, "auto-split")
	}
	if s.Verify {
		opts = append(opts, "verify")
	}
	if s.MaxHostLatency != "" {
		opts = append(opts, "max host latency "+s.MaxHostLatency)
	}
	return strings.Join(opts, ", ")
}

// sessionLines renders a session: its fields, then a row per pair.
func sessionLines(s wire.MigrationSession) string {
	var b strings.Builder
	pause := "-"
	if s.SplitPauseMS > 0 {
		pause = strconv.FormatFloat(s.SplitPauseMS, 'f', 2, 64) + " ms"
	}
	fields(&b, append([][2]string{
		{"session", s.Name},
		{"state", s.State},
		{"reason", orDash(s.Reason)},
		{"progress", sessionProgress(s)},
		{"dcl", sizeStr(s.DCLBytes)},
		{"options", sessionOptions(s)},
		{"speed", limitStr(s.Speed, s.MaxMBps, s.LimitBps, s.LimitedBy)},
		{"split pause", pause},
		{"created", s.Created.Local().Format("2006-01-02 15:04:05")},
	}, sessionScheduleFields(s)...)) // schedule.go
	fmt.Fprintln(&b)
	var rows [][]string
	for _, p := range s.Pairs {
		rows = append(rows, []string{p.Source, p.Target, p.State, percent(p.DoneBytes, p.TotalBytes),
			sizeStr(p.CopiedBytes), rateStr(p.RateBps), etaStr(p.ETASeconds),
			sizeStr(p.DCLBytes), orDash(p.Reason)})
	}
	table(&b, []string{"SOURCE", "TARGET", "STATE", "DONE", "COPIED", "RATE", "ETA", "DCL", "REASON"}, rows)
	return b.String()
}

func sessionProgress(s wire.MigrationSession) string {
	return fmt.Sprintf("%s %6s %s/%s %s ETA %s", progressBar(s.DoneBytes, s.TotalBytes, 30),
		percent(s.DoneBytes, s.TotalBytes), sizeStr(s.DoneBytes), sizeStr(s.TotalBytes),
		rateStr(s.RateBps), etaStr(s.ETASeconds))
}

func sessionShow(c *cli.Context) error {
	name, err := sessionArg(c)
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
		return watchSession(c, cl, name, asJSON)
	}
	return request(c, func(cl *client.Client) (wire.MigrationSession, error) {
		return cl.MigrationSession(context.Background(), name)
	}, func(s wire.MigrationSession) { fmt.Fprint(c.App.Writer, sessionLines(s)) })
}

// sessionWatchDone reports whether --watch should stop, and with what error.
func sessionWatchDone(s wire.MigrationSession) (bool, error) {
	switch {
	case s.State == "split" || s.State == "cancelled" || s.State == "switched":
		return true, nil
	case s.Counts["faulty"] > 0:
		return true, fmt.Errorf("session %s: %d pair(s) faulty (see lmtgt session show %s)", s.Name, s.Counts["faulty"], s.Name)
	case s.State == "synced":
		return !s.AutoSplit, nil
	}
	return false, nil
}

// watchSession polls the session until it is synced (split with
// --auto-split), final or has a faulty pair: on a terminal the whole view
// is redrawn in place, else one progress line per poll (a JSON object per
// poll with -o json).
func watchSession(c *cli.Context, cl *client.Client, name string, asJSON bool) error {
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
	drawn := 0 // lines drawn last time (terminal)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s, err := cl.MigrationSession(ctx, name)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return apiFailed(err)
		}
		switch {
		case asJSON:
			printJSONLine(w, s)
		case tty:
			if drawn > 0 {
				fmt.Fprintf(w, "\033[%dA", drawn)
			}
			lines := strings.Split(strings.TrimSuffix(sessionLines(s), "\n"), "\n")
			for _, l := range lines {
				fmt.Fprintf(w, "\r\033[K%s\n", l)
			}
			drawn = len(lines)
		default:
			fmt.Fprintf(w, "%s %s\n", sessionProgress(s), s.State)
		}
		if done, err := sessionWatchDone(s); done {
			return failed(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func sessionSet(c *cli.Context) error {
	name, err := sessionArg(c)
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.MigrationSession, error) {
		req, err := throttleRequest(c, "session set")
		if err != nil {
			return wire.MigrationSession{}, err
		}
		return cl.SetSession(context.Background(), name, req)
	}, func(s wire.MigrationSession) {
		fmt.Fprintf(c.App.Writer, "session %s: speed %s, %s (every pair); %s%s\n", name, s.Speed, capStr(s.MaxMBps), limitNote(s.MaxMBps, s.LimitBps, s.LimitedBy), boundNote(s.MaxHostLatency))
	})
}

func sessionSplit(c *cli.Context) error {
	name, err := sessionArg(c)
	if err != nil {
		return err
	}
	return splitWith(c, name) // rollback.go: --keep-source, --retire
}

// printSessionDryRun prints a session dry run: the session's estimate and
// a row per pair.
func printSessionDryRun(w io.Writer, s wire.MigrationSession) {
	fmt.Fprintf(w, "dry run: session %s with %d pairs would be created (nothing changed)\n", s.Name, len(s.Pairs))
	fields(w, [][2]string{
		{"to copy", fmt.Sprintf("%s of %s (allocated extents)", sizeStr(s.EstimateBytes), sizeStr(s.TotalBytes))},
		{"estimate", durStr(s.EstimateSeconds) + " (pairs copy max-active at a time, through the windows)"},
		{"start", sessionEstimateStart(s)},
	})
	fmt.Fprintln(w)
	var rows [][]string
	for _, p := range s.Pairs {
		if e := p.Estimate; e != nil {
			rows = append(rows, []string{p.Source, p.Target, sizeStr(e.Bytes), e.Vehicle, rateStr(e.RateBps), durStr(e.Seconds), e.Basis})
		}
	}
	table(w, []string{"SOURCE", "TARGET", "TO COPY", "VEHICLE", "RATE", "ESTIMATE", "BASIS"}, rows)
}

// sessionEstimateStart is a session dry run's "start" line.
func sessionEstimateStart(s wire.MigrationSession) string {
	if s.EstimateWaitSeconds <= 0 || s.StartAt == nil {
		return "at once"
	}
	return fmt.Sprintf("in %s (at %s)", durStr(s.EstimateWaitSeconds), s.StartAt.Local().Format(time.RFC3339))
}

// sessionNameWhat is how a usage error names a session command's argument.
const sessionNameWhat = "NAME (the session's name)"

// sessionArg returns the session name, the one argument of a session
// command.
func sessionArg(c *cli.Context) (string, error) { return args1(c, sessionNameWhat) }
