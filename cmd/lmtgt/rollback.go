package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// Rollback after the switch: split --keep-source, rollback, commit,
// --retire (with --scrub, --delete-volume) and migration delete, for
// pairs and sessions (docs/cli.md "Rollback after the switch").

// splitFlags are the flags of `migration split` and `session split`.
func splitFlags() []cli.Flag {
	return append([]cli.Flag{maxPauseFlag(), outputFlag, forceFlag("split"),
		&cli.BoolFlag{Name: "keep-source", Usage: "switch to the new volume but keep mirroring host writes back to the old one (state switched) until rollback or commit"},
	}, retireFlags("after the split")...)
}

// retireFlags are --retire, --scrub and --delete-volume.
func retireFlags(when string) []cli.Flag {
	return append([]cli.Flag{
		&cli.BoolFlag{Name: "retire", Usage: when + ", delete the old LUN (the target LUN, which then holds the old volume) and its volume if lmtgt created it"},
	}, scrubFlags("with --retire: ")...)
}

// scrubFlags are --scrub and --delete-volume.
func scrubFlags(prefix string) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "scrub", Usage: prefix + "discard the old volume first (zeroes written where discard left data)"},
		&cli.BoolFlag{Name: "delete-volume", Usage: prefix + "also delete an old volume lmtgt did not create (a file or an RBD image; never a device)"},
	}
}

// retireRequest reads --retire, --scrub and --delete-volume.
func retireRequest(c *cli.Context) (*wire.Retire, error) {
	if !c.Bool("retire") {
		if c.Bool("scrub") || c.Bool("delete-volume") {
			return nil, usageErr("--scrub and --delete-volume go with --retire")
		}
		return nil, nil
	}
	if c.Bool("keep-source") {
		return nil, usageErr("--retire and --keep-source: the old volume is still mirrored; retire it on commit")
	}
	return &wire.Retire{Scrub: c.Bool("scrub"), DeleteVolume: c.Bool("delete-volume")}, nil
}

// rollbackCommands are the migration subcommands of this file.
func rollbackCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "rollback",
			Usage:     "switch switched pairs (split --keep-source) back to their old volumes in one bounded I/O pause; nothing is lost, the pairs are synced again",
			ArgsUsage: "SRC [SRC...]",
			Flags:     []cli.Flag{maxPauseFlag(), outputFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() == 0 {
					return usageErr("migration rollback: name at least one source LUN (usage: lmtgt migration rollback SRC [SRC...])")
				}
				if err := checkMaxPause(c); err != nil {
					return err
				}
				return request(c, func(cl *client.Client) (wire.SplitResult, error) {
					return cl.Rollback(context.Background(), c.Args().Slice(), c.Duration("max-pause"))
				}, func(r wire.SplitResult) {
					fmt.Fprintf(c.App.Writer, "rollback %s: host I/O paused %.2f ms; back on the old volume (state %s)\n", strings.Join(r.Pairs, ", "), r.PauseMS, orDash(r.State))
				})
			},
		},
		{
			Name:      "commit",
			Usage:     "end the mirroring of switched pairs: they become split (the old volume stops following)",
			ArgsUsage: "SRC [SRC...]",
			Flags:     append([]cli.Flag{outputFlag}, retireFlags("after the commit")...),
			Action: func(c *cli.Context) error {
				if c.NArg() == 0 {
					return usageErr("migration commit: name at least one source LUN (usage: lmtgt migration commit SRC [SRC...])")
				}
				retire, err := retireRequest(c)
				if err != nil {
					return err
				}
				return splitRequest(c, func(cl *client.Client) (wire.SplitResult, error) {
					return cl.Commit(context.Background(), c.Args().Slice(), retire)
				}, func(w io.Writer, r wire.SplitResult) {
					fmt.Fprintf(w, "commit %s: mirroring ended (state %s)\n", strings.Join(r.Pairs, ", "), orDash(r.State))
				})
			},
		},
		{
			Name:      "retire",
			Usage:     "delete the old LUN of a split (or committed) migration, and its volume if lmtgt created it",
			ArgsUsage: "SRC",
			Flags:     append([]cli.Flag{outputFlag}, scrubFlags("")...),
			Action: func(c *cli.Context) error {
				src, err := args1(c, "SRC (the source LUN's name)")
				if err != nil {
					return err
				}
				req := wire.Retire{Scrub: c.Bool("scrub"), DeleteVolume: c.Bool("delete-volume")}
				return request(c, func(cl *client.Client) (wire.Retired, error) {
					return cl.Retire(context.Background(), src, req)
				}, func(x wire.Retired) { printRetired(c.App.Writer, x) })
			},
		},
		{
			Name:      "delete",
			Usage:     "forget the ended (split) pair records of a source LUN",
			ArgsUsage: "SRC",
			Flags:     []cli.Flag{outputFlag},
			Action: func(c *cli.Context) error {
				src, err := args1(c, "SRC (the source LUN's name)")
				if err != nil {
					return err
				}
				return request(c, func(cl *client.Client) (wire.DeletedMigrations, error) {
					return cl.DeleteMigrations(context.Background(), src)
				}, func(d wire.DeletedMigrations) {
					fmt.Fprintf(c.App.Writer, "migration %s: %d ended pair record(s) deleted (%s)\n", src, len(d.Pairs), strings.Join(d.Pairs, ", "))
				})
			},
		},
	}
}

// sessionRollbackCommands are the session subcommands of this file.
func sessionRollbackCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "rollback",
			Usage:     "switch every pair of a switched session back to its old volume in one bounded I/O pause (auto-split is turned off)",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{maxPauseFlag(), outputFlag},
			Action: func(c *cli.Context) error {
				name, err := sessionArg(c)
				if err != nil {
					return err
				}
				if err := checkMaxPause(c); err != nil {
					return err
				}
				return request(c, func(cl *client.Client) (wire.SplitResult, error) {
					return cl.RollbackSession(context.Background(), name, c.Duration("max-pause"))
				}, func(r wire.SplitResult) {
					fmt.Fprintf(c.App.Writer, "session %s rolled back (%s): host I/O paused %.2f ms\n", name, strings.Join(r.Pairs, ", "), r.PauseMS)
				})
			},
		},
		{
			Name:      "commit",
			Usage:     "end the mirroring of every pair of a switched session; the session is split",
			ArgsUsage: "NAME",
			Flags:     append([]cli.Flag{outputFlag}, retireFlags("after the commit")...),
			Action: func(c *cli.Context) error {
				name, err := sessionArg(c)
				if err != nil {
					return err
				}
				retire, err := retireRequest(c)
				if err != nil {
					return err
				}
				return splitRequest(c, func(cl *client.Client) (wire.SplitResult, error) {
					return cl.CommitSession(context.Background(), name, retire)
				}, func(w io.Writer, r wire.SplitResult) {
					fmt.Fprintf(w, "session %s committed (%s)\n", name, strings.Join(r.Pairs, ", "))
				})
			},
		},
	}
}

// splitRequest is request for a split, commit or rollback: it prints the
// retired LUNs after the text, and fails (exit 1) when a retire failed
// (the split or commit itself stands).
func splitRequest(c *cli.Context, call func(cl *client.Client) (wire.SplitResult, error), text func(io.Writer, wire.SplitResult)) error {
	var res wire.SplitResult
	err := request(c, func(cl *client.Client) (wire.SplitResult, error) {
		var err error
		res, err = call(cl)
		return res, err
	}, func(r wire.SplitResult) {
		text(c.App.Writer, r)
		for _, x := range r.Retired {
			if x.Error != "" {
				fmt.Fprintf(c.App.Writer, "  retire %s: FAILED: %s\n", x.Source, x.Error)
				continue
			}
			fmt.Fprint(c.App.Writer, "  ")
			printRetired(c.App.Writer, x)
		}
	})
	if err != nil {
		return err
	}
	var bad []string
	for _, x := range res.Retired {
		if x.Error != "" {
			bad = append(bad, x.Source+": "+x.Error)
		}
	}
	if len(bad) > 0 {
		return failed(errors.New("retire failed: " + strings.Join(bad, "; ")))
	}
	return nil
}

// printRetired prints one retired LUN.
func printRetired(w io.Writer, x wire.Retired) {
	vol := "volume deleted"
	if !x.VolumeDeleted {
		vol = "volume " + x.VolumeNote
	}
	scrub := ""
	if x.Scrub != "" {
		scrub = "scrubbed (" + x.Scrub + "), "
	}
	fmt.Fprintf(w, "retired %s (old LUN of %s): %s%s (%s)\n", x.LUN, x.Source, scrub, vol, orDash(x.Path))
}

// splitWith runs `migration split` or `session split` (name != "") with
// --keep-source and --retire.
func splitWith(c *cli.Context, session string) error {
	if err := checkMaxPause(c); err != nil {
		return err
	}
	retire, err := retireRequest(c)
	if err != nil {
		return err
	}
	keep := c.Bool("keep-source")
	return splitRequest(c, func(cl *client.Client) (wire.SplitResult, error) {
		if session != "" {
			return cl.SplitSessionWith(context.Background(), session, c.Duration("max-pause"), keep, retire)
		}
		return cl.SplitWith(context.Background(), c.Args().Slice(), c.Duration("max-pause"), keep, c.Bool("force"), retire)
	}, func(w io.Writer, r wire.SplitResult) {
		what := "split " + strings.Join(r.Pairs, ", ")
		if session != "" {
			what = fmt.Sprintf("session %s split (%s)", session, strings.Join(r.Pairs, ", "))
		}
		fmt.Fprintf(w, "%s: host I/O paused %.2f ms", what, r.PauseMS)
		if keep {
			fmt.Fprint(w, "; switched: host writes are mirrored back to the old volume (rollback or commit)")
		}
		fmt.Fprintln(w)
	})
}
