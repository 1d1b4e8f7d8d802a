package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// followWait is one long poll of `events --follow`.
const followWait = 30 * time.Second

// followRetry is how often `events --follow` tries again while the server
// is away.
const followRetry = 500 * time.Millisecond

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "show the event log: admin changes, iSCSI logins and refused logins, migration transitions, split pauses, volume errors",
		Description: "Lists the stored events, oldest first (the server keeps the latest 10000).\n" +
			"--follow then keeps printing new events as they happen until interrupted; while the server\n" +
			"restarts it says so on stderr and goes on with the events after it is back.\n" +
			"With -o json every event is one JSON object on its own line (JSON lines), and so is each\n" +
			"notice of --follow (type \"notice\", in the same stream, instead of the text on stderr).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new events until interrupted"},
			&cli.StringFlag{Name: "since", Usage: "only events since DURATION ago (10m, 2h) or since an RFC 3339 TIME"},
			&cli.StringSliceFlag{Name: "type", Usage: "only these types (repeatable or comma-separated): " + strings.Join(lm.EventTypes, ", ")},
			&cli.IntFlag{Name: "limit", Usage: "only the latest N events of the listing (0: all)"},
			outputFlag,
		},
		Action: eventsAction,
	}
}

// parseSince accepts a duration (ago) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usageErr("--since %q: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usageErr("--since %q: want a duration (10m, 2h) or a time (2026-12-07T10:00:00Z, 2026-12-07 10:00:00)", s)
}

func eventsAction(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	var q client.EventQuery
	if s := c.String("since"); s != "" {
		if q.Since, err = parseSince(s, time.Now()); err != nil {
			return err
		}
	}
	for _, t := range c.StringSlice("type") {
		for _, x := range strings.Split(t, ",") {
			if x = strings.TrimSpace(x); x == "" {
				continue
			}
			if !slicesContains(lm.EventTypes, x) {
				return usageErr("--type %q: want one of %s%s", x, strings.Join(lm.EventTypes, ", "), didYouMean(x, lm.EventTypes, "%s"))
			}
			q.Types = append(q.Types, x)
		}
	}
	if q.Limit = c.Int("limit"); q.Limit < 0 {
		return usageErr("--limit %d: want 0 or more", q.Limit)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	w := c.App.Writer
	l, err := cl.Events(ctx, q)
	if err != nil {
		return apiFailed(err)
	}
	if err := printEvents(w, l.Events, asJSON); err != nil {
		return err
	}
	if !c.Bool("follow") {
		return nil
	}
	q.Limit, q.After, q.Wait = 0, l.Last, followWait
	note := func(msg string) error {
		if asJSON {
			return printJSONLine(w, followNotice{Time: time.Now().UTC(), Type: "notice", Message: msg})
		}
		fmt.Fprintln(c.App.ErrWriter, "lmtgt: events: "+msg)
		return nil
	}
	away := false
	for {
		l, err := cl.Events(ctx, q)
		if ctx.Err() != nil {
			return nil // interrupted: the normal end of --follow
		}
		if err != nil && client.StatusOf(err) == 0 {
			// The server went away (a restart, a stop): the event log is
			// persistent, so follow on from the same sequence number
			// once it is back.
			if !away {
				if err := note(fmt.Sprintf("the server went away (%v); following again when it is back (Ctrl-C ends)", err)); err != nil {
					return err
				}
				away = true
			}
			if !sleepCtx(ctx, followRetry) {
				return nil
			}
			continue
		}
		if err != nil {
			return apiFailed(err)
		}
		if away {
			if err := note("the server is back"); err != nil {
				return err
			}
			away = false
		}
		if err := printEvents(w, l.Events, asJSON); err != nil {
			return err
		}
		q.After = l.Last
	}
}

// followNotice is what `events --follow -o json` prints, as one JSON line
// among the events, where the table mode says something on stderr (the
// server went away, it is back): a script reading the JSON lines sees
// every line as an object, and the gap where it happened. Type "notice"
// is never an event type.
type followNotice struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Message string    `json:"message"`
}

// sleepCtx waits d, or less when ctx ends first (then false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func slicesContains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// printEvents prints one line per event: a JSON object with asJSON,
// else "TIME TYPE ACTION OBJECT by WHO: ok|refused REASON".
func printEvents(w io.Writer, evs []wire.Event, asJSON bool) error {
	for _, e := range evs {
		if asJSON {
			if err := printJSONLine(w, e); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(w, eventLine(e))
	}
	return nil
}

func eventLine(e wire.Event) string {
	var b strings.Builder
	b.WriteString(e.Time.Local().Format("2006-01-02 15:04:05.000"))
	b.WriteString("  " + e.Type)
	if e.Action != "" {
		b.WriteString("  " + e.Action)
	}
	if e.Object != "" {
		b.WriteString("  " + e.Object)
	}
	if e.LUN != "" && !strings.HasSuffix(e.Object, " "+e.LUN) {
		// A change on a target that concerns one LUN (map, unmap,
		// mapping): the table says which, as the JSON does.
		b.WriteString("  lun " + e.LUN)
	}
	if e.From != "" || e.To != "" {
		b.WriteString("  " + e.From + " → " + e.To)
	}
	if e.Initiator != "" && e.Who != e.Initiator {
		b.WriteString("  initiator " + e.Initiator)
	}
	if e.Address != "" {
		b.WriteString(" from " + e.Address)
	}
	if e.Who != "" {
		b.WriteString("  by " + e.Who)
	}
	if !e.OK && e.Type != lm.EventPair && e.Type != lm.EventVolume && e.Type != lm.EventOffline && e.Type != lm.EventDropped {
		b.WriteString("  REFUSED")
	}
	if e.DurationMS > 0 {
		b.WriteString("  " + strconv.FormatFloat(e.DurationMS, 'f', 3, 64) + " ms")
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	return b.String()
}

// ---- histories ----

func migrationHistoryCommand() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "show the timeline and final figures of every pair of a source (all pairs without SRC), ended and cancelled ones too",
		ArgsUsage: "[SRC]",
		Flags:     []cli.Flag{outputFlag},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageErr("%s: too many arguments %q, want at most SRC", cmdName(c), c.Args().Slice()[1:])
			}
			src := c.Args().First()
			return request(c, func(cl *client.Client) ([]wire.PairHistory, error) {
				return cl.MigrationHistory(context.Background(), src)
			}, func(hs []wire.PairHistory) {
				if len(hs) == 0 {
					fmt.Fprintln(c.App.Writer, "no migration history")
				}
				for i, h := range hs {
					if i > 0 {
						fmt.Fprintln(c.App.Writer)
					}
					printPairHistory(c.App.Writer, h, "")
				}
			})
		},
	}
}

func sessionHistoryCommand() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "show the timeline of a session and of each of its pairs",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{outputFlag},
		Action: func(c *cli.Context) error {
			name, err := sessionArg(c)
			if err != nil {
				return err
			}
			return request(c, func(cl *client.Client) (wire.SessionHistory, error) {
				return cl.SessionHistory(context.Background(), name)
			}, func(h wire.SessionHistory) {
				w := c.App.Writer
				fmt.Fprintf(w, "session %s (id %s), created %s\n", h.Name, h.ID, h.Created.Local().Format("2006-01-02 15:04:05.000"))
				printEntries(w, h.Entries, "  ")
				for _, p := range h.Pairs {
					fmt.Fprintln(w)
					printPairHistory(w, p, "  ")
				}
			})
		},
	}
}

func printPairHistory(w io.Writer, h wire.PairHistory, indent string) {
	fmt.Fprintf(w, "%spair %s: %s → %s, %s\n", indent, h.ID, h.Source, h.Target, orDash(h.State))
	printEntries(w, h.Entries, indent+"  ")
	if h.Dropped > 0 {
		fmt.Fprintf(w, "%s  (%d older entries dropped)\n", indent, h.Dropped)
	}
	if f := h.Final; f != nil {
		est := ""
		if f.EstimateSeconds != nil {
			est = fmt.Sprintf(", estimate %s", time.Duration(*f.EstimateSeconds*float64(time.Second)).Round(time.Second))
			if f.ActualSeconds > 0 {
				est += fmt.Sprintf(" (actual %s)", time.Duration(f.ActualSeconds*float64(time.Second)).Round(time.Second))
			}
		}
		pause := ""
		if f.SplitPauseMS > 0 {
			pause = fmt.Sprintf(", split pause %.2f ms", f.SplitPauseMS)
		}
		copying := ""
		if f.CopyS > 0 {
			copying = fmt.Sprintf("copying %s, ", time.Duration(f.CopyS*float64(time.Second)).Round(time.Millisecond))
		}
		fmt.Fprintf(w, "%s  %s: copied %s, re-copied %s from the DCL, in %s (%s%.1f MB/s average), vehicle %s%s%s\n", indent, f.State,
			sizeStr(f.DataBytes), sizeStr(f.RecopiedBytes), time.Duration(f.DurationS*float64(time.Second)).Round(time.Millisecond),
			copying, f.AvgMBps, orDash(f.Vehicle), pause, est)
	}
}

func printEntries(w io.Writer, es []wire.HistoryEntry, indent string) {
	for _, e := range es {
		what := e.Event
		if e.From != "" || e.To != "" {
			what = orDash(e.From) + " → " + e.To
			if e.Event == "created" {
				what = "created"
			}
		}
		line := fmt.Sprintf("%s%s  %s", indent, e.Time.Local().Format("2006-01-02 15:04:05.000"), what)
		if e.Reason != "" {
			line += ": " + e.Reason
		}
		if e.Who != "" {
			line += " (" + e.Who + ")"
		}
		fmt.Fprintln(w, line)
	}
}
