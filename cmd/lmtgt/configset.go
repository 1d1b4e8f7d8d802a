package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// configSetCommands are `config set KEY VALUE` and `config show`: the
// server-wide copy limits changed at run time (lm/queue.go). They are
// subcommands of `lmtgt config` (whose export/apply live in config.go).
func configSetCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "set",
			Usage:     "change a server-wide copy limit at run time: max-active N (pairs copying at once) or max-total-mbps N (bandwidth budget of all copies, 0: none); not kept across a restart (use the serve flags)",
			ArgsUsage: "KEY VALUE",
			Flags:     []cli.Flag{outputFlag},
			Action:    configSet,
		},
		{
			Name:   "show",
			Usage:  "show the server-wide copy limits and how many pairs copy or wait now",
			Flags:  []cli.Flag{outputFlag},
			Action: configShow,
		},
	}
}

func configSet(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErr("config set: want KEY VALUE (keys: max-active, max-total-mbps)")
	}
	key, val := c.Args().Get(0), c.Args().Get(1)
	var req wire.SetLimits
	switch key {
	case "max-active":
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return usageErr("config set max-active %q: want a number of pairs, 1 or more", val)
		}
		req.MaxActive = &n
	case "max-total-mbps":
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil || n < 0 {
			return usageErr("config set max-total-mbps %q: want MB/s, 0 (no budget) or more", val)
		}
		req.MaxTotalMBps = &n
	default:
		return usageErr("config set: unknown key %q (keys: max-active, max-total-mbps)", key)
	}
	return request(c, func(cl *client.Client) (wire.Limits, error) {
		return cl.SetLimits(context.Background(), req)
	}, func(l wire.Limits) {
		fmt.Fprintf(c.App.Writer, "config: %s set to %s\n", key, val)
		printLimits(c, l)
	})
}

func configShow(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.Limits, error) {
		return cl.Limits(context.Background())
	}, func(l wire.Limits) { printLimits(c, l) })
}

func printLimits(c *cli.Context, l wire.Limits) {
	budget := "none"
	if l.MaxTotalMBps > 0 {
		budget = fmt.Sprintf("%d MB/s", l.MaxTotalMBps)
	}
	fields(c.App.Writer, [][2]string{
		{"max-active", fmt.Sprintf("%d (%d copying, %d queued)", l.MaxActive, l.Active, l.Waiting)},
		{"max-total-mbps", budget},
	})
}
