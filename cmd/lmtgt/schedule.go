package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// The flags and fields of schedules, priorities, the session integrity
// rules and `migration set`/`session set` options (lm/queue.go,
// lm/schedule.go, lm/sessionref.go).

func priorityFlag() cli.Flag {
	return &cli.StringFlag{Name: "priority", Usage: "queue priority: low, medium (default), high, or 1 (lowest) to 9 (highest); queued pairs start highest first, then oldest first"}
}

func startAtFlag() cli.Flag {
	return &cli.StringFlag{Name: "start-at", Usage: "start the copy at TIME: RFC 3339 (2026-12-24T22:00:00+01:00) or HH:MM[:SS], the next such time in the server's local time zone; \"scheduled\" until then"}
}

// windowList is the value of --window: repeated, never split at commas
// (a window's options are separated by commas).
type windowList []string

func (w *windowList) Set(s string) error { *w = append(*w, s); return nil }
func (w *windowList) String() string     { return strings.Join(*w, " ") }

// windows is what --window gave (nil if not given).
func windows(c *cli.Context) []string {
	if w, ok := c.Generic("window").(*windowList); ok && w != nil {
		return *w
	}
	return nil
}

func windowFlag() cli.Flag {
	return &cli.GenericFlag{Name: "window", Value: &windowList{}, Usage: "daily window HH:MM[:SS]-HH:MM[:SS]=SPEED[,max-mbps=N] in the server's local time, may wrap midnight (repeat for several; the first that contains the time wins; outside every window --speed/--max-mbps apply)"}
}

func maxElapsedFlag() cli.Flag {
	return &cli.StringFlag{Name: "max-elapsed", Usage: "pause the pair after this much copying time (6h, 90m; 0: none)"}
}

func forceFlag(op string) cli.Flag {
	return &cli.BoolFlag{Name: "force", Usage: "a pair of a session: " + op + " it alone (recorded on the session); without it the session must " + op + " it"}
}

// setOptionFlags are the options `migration set` and `session set` change
// besides the throttle.
func setOptionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "priority", Usage: "low, medium, high or 1..9 (a queued pair takes its new place at once)"},
		&cli.BoolFlag{Name: "auto-split", Usage: "split as soon as synced (--auto-split=false turns it off)"},
		&cli.BoolFlag{Name: "verify", Usage: "compare before the split (--verify=false turns it off)"},
		&cli.GenericFlag{Name: "window", Value: &windowList{}, Usage: "replace the daily windows (repeat; --window none removes them)"},
		&cli.StringFlag{Name: "max-elapsed", Usage: "pause after this much copying time (0 removes the limit)"},
	}
}

// setOptions reads setOptionFlags (and a session's --max-active) into req.
func setOptions(c *cli.Context, req *wire.SetMigration) {
	req.Priority = flagPtr(c, "priority", c.String)
	req.AutoSplit = flagPtr(c, "auto-split", c.Bool)
	req.Verify = flagPtr(c, "verify", c.Bool)
	req.Windows = flagPtr(c, "window", func(string) []string { return windows(c) })
	req.MaxElapsed = flagPtr(c, "max-elapsed", c.String)
	req.MaxActive = flagPtr(c, "max-active", c.Int)
}

// flagPtr is the value of flag name (read by get) when the command line
// sets it, nil when it does not: the "change only what is given" fields
// of a request.
func flagPtr[T any](c *cli.Context, name string, get func(name string) T) *T {
	if !c.IsSet(name) {
		return nil
	}
	v := get(name)
	return &v
}

// forceAction is `migration resume|cancel NAME [--force]`: the pair is
// named by its source, its target or its ID.
func forceAction(name, usage string) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "SRC",
		Flags:     []cli.Flag{forceFlag(name), outputFlag},
		Action: func(c *cli.Context) error {
			arg, err := args1(c, "SRC (the source LUN's name, the target LUN's name or the pair ID)")
			if err != nil {
				return err
			}
			return request(c, func(cl *client.Client) (wire.Migration, error) {
				return cl.MigrationActionForce(context.Background(), arg, name, c.Bool("force"))
			}, func(m wire.Migration) {
				fmt.Fprintf(c.App.Writer, "migration %s: %s (state %s)\n", arg, name, orDash(m.State))
				if m.State == "queued" && m.Reason != "" {
					fmt.Fprintf(c.App.Writer, "  %s\n", m.Reason)
				}
			})
		},
	}
}

// whenStr shows a time in the local zone with how far it is.
func whenStr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	s := t.Local().Format("2006-01-02 15:04:05 MST")
	if d := time.Until(*t); d > 0 {
		s += " (in " + d.Round(time.Second).String() + ")"
	}
	return s
}

// scheduleFields are the lines `migration show` adds for the queue and
// the schedule.
func scheduleFields(m wire.Migration) [][2]string {
	kv := [][2]string{{"priority", orDash(m.PriorityName)}}
	if m.StartAt != nil {
		kv = append(kv, [2]string{"start at", whenStr(m.StartAt)})
	}
	if m.QueuePos > 0 {
		kv = append(kv, [2]string{"queue", fmt.Sprintf("waiting for a copy slot: position %d (max active %d)", m.QueuePos, m.MaxActive)})
	}
	if m.Session != "" {
		kv = append(kv, [2]string{"session", m.Session})
	}
	if len(m.Windows) > 0 {
		now := "none (own speed)"
		if m.Window != "" {
			now = m.Window
		}
		if m.WindowUntil != nil {
			now += " until " + m.WindowUntil.Local().Format("15:04:05")
		}
		kv = append(kv, [2]string{"windows", strings.Join(m.Windows, " ")}, [2]string{"window now", now})
	}
	if m.MaxElapsed != "" {
		kv = append(kv, [2]string{"elapsed", fmt.Sprintf("%v of max %s", time.Duration(m.CopyElapsedSeconds*float64(time.Second)).Round(time.Second), m.MaxElapsed)})
	}
	return kv
}

// sessionScheduleFields are the lines `session show` adds.
func sessionScheduleFields(s wire.MigrationSession) [][2]string {
	kv := [][2]string{{"priority", orDash(s.PriorityName)}}
	if s.StartAt != nil {
		kv = append(kv, [2]string{"start at", whenStr(s.StartAt)})
	}
	if len(s.Windows) > 0 {
		kv = append(kv, [2]string{"windows", strings.Join(s.Windows, " ")})
	}
	if s.MaxElapsed != "" {
		kv = append(kv, [2]string{"max elapsed", s.MaxElapsed})
	}
	if len(s.Forced) > 0 {
		kv = append(kv, [2]string{"forced", strings.Join(s.Forced, "; ")})
	}
	return kv
}

// checkOptionFlags refuses a malformed --start-at, --window, --max-elapsed,
// --priority or --max-host-latency before anything is sent: a usage error
// (exit 2) naming the flag, with the rule lm applies (the daemon checks
// again: an HH:MM start time is placed in the server's local time there).
func checkOptionFlags(c *cli.Context) error {
	check := func(flag string, parse func(obj, s string) error) error {
		if !c.IsSet(flag) {
			return nil
		}
		if err := parse("--"+flag, c.String(flag)); err != nil {
			return usageErr("%v", err)
		}
		return nil
	}
	if err := check("start-at", func(obj, s string) error { _, err := lm.ParseStartAt(obj, s, time.Now()); return err }); err != nil {
		return err
	}
	if err := check("priority", func(obj, s string) error { _, err := lm.ParsePriority(obj, s); return err }); err != nil {
		return err
	}
	if err := check("max-elapsed", func(obj, s string) error { _, err := lm.ParseMaxElapsed(obj, s); return err }); err != nil {
		return err
	}
	if err := check("max-host-latency", func(obj, s string) error { _, err := lm.ParseHostLatency(obj, s); return err }); err != nil {
		return err
	}
	if c.IsSet("window") {
		if _, err := lm.ParseWindows("--window", windows(c)); err != nil {
			return usageErr("%v", err)
		}
	}
	if c.IsSet("max-active") && c.Int("max-active") < 0 { // session create and set
		return usageErr("--max-active %d: want 0 (all pairs at once) or more", c.Int("max-active"))
	}
	return nil
}
