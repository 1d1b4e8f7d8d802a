package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

func discoveryCommand() *cli.Command {
	return &cli.Command{
		Name:  "discovery",
		Usage: "how iSCSI discovery (SendTargets) sessions authenticate (default: no authentication)",
		Subcommands: []*cli.Command{
			{
				Name:   "show",
				Usage:  "show the discovery authentication (never the secrets)",
				Flags:  []cli.Flag{outputFlag},
				Action: discoveryShow,
			},
			{
				Name:  "chap",
				Usage: "require CHAP on discovery sessions (one-way, or mutual with --mutual-user/--mutual-secret); --disable turns it off",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Usage: "user name the initiator logs in with"},
					&cli.StringFlag{Name: "secret", Usage: "initiator secret (shows in ps: prefer --secret-file, or - to read it from stdin)"},
					&cli.StringFlag{Name: "secret-file", Usage: "read the initiator secret from this file"},
					&cli.StringFlag{Name: "mutual-user", Usage: "user name the target answers with (mutual CHAP)"},
					&cli.StringFlag{Name: "mutual-secret", Usage: "target secret (mutual CHAP; must differ from --secret; - reads stdin)"},
					&cli.StringFlag{Name: "mutual-secret-file", Usage: "read the target secret from this file"},
					&cli.BoolFlag{Name: "disable", Aliases: []string{"off"}, Usage: "discovery without authentication again"},
					outputFlag,
				},
				Action: discoveryCHAP,
			},
		},
	}
}

func discoveryStr(d wire.Discovery) string {
	return chapStr(wire.Target{CHAP: d.CHAP})
}

func discoveryShow(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.Discovery, error) {
		return cl.Discovery(context.Background())
	}, func(d wire.Discovery) {
		fields(c.App.Writer, [][2]string{{"chap", discoveryStr(d)}})
	})
}

func discoveryCHAP(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	var call func(cl *client.Client) (wire.Discovery, error)
	if c.Bool("disable") {
		for _, f := range []string{"user", "secret", "secret-file", "mutual-user", "mutual-secret", "mutual-secret-file"} {
			if c.IsSet(f) {
				return usageErr("--disable takes no --%s", f)
			}
		}
		call = func(cl *client.Client) (wire.Discovery, error) { return cl.ClearDiscoveryCHAP(context.Background()) }
	} else {
		set, err := chapFlags(c, "discovery chap", "--disable")
		if err != nil {
			return err
		}
		call = func(cl *client.Client) (wire.Discovery, error) { return cl.SetDiscoveryCHAP(context.Background(), set) }
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	d, err := call(cl)
	if err != nil {
		return apiFailed(err)
	}
	for _, w := range d.Warnings {
		fmt.Fprintln(c.App.ErrWriter, "lmtgt: warning: "+w)
	}
	if asJSON {
		return printJSON(c.App.Writer, d)
	}
	fmt.Fprintf(c.App.Writer, "discovery CHAP: %s\n", discoveryStr(d))
	return nil
}
