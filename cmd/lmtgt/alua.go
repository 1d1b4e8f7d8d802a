package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

func aluaCommand() *cli.Command {
	return &cli.Command{
		Name:  "alua",
		Usage: "ALUA: target port groups, relative port IDs, per-LUN access states (implicit ALUA)",
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "show the target port groups, each target's group and relative port ID, and per LUN the state in each group",
				ArgsUsage: "[LUN]",
				Flags:     []cli.Flag{outputFlag},
				Action:    aluaShow,
			},
			{
				Name:      "group",
				Usage:     "put a target into a target port group (1..65535; live: hosts get a unit attention)",
				ArgsUsage: "IQN GROUP_ID",
				Flags:     []cli.Flag{outputFlag},
				Action:    func(c *cli.Context) error { return aluaTarget(c, "GROUP_ID") },
			},
			{
				Name:      "port",
				Usage:     "set a target's relative target port identifier (1..65535, unique on this server)",
				ArgsUsage: "IQN REL_PORT_ID",
				Flags:     []cli.Flag{outputFlag},
				Action:    func(c *cli.Context) error { return aluaTarget(c, "REL_PORT_ID") },
			},
			{
				Name: "state",
				Usage: "set a LUN's access state in one target port group: active-optimized, active-nonoptimized, " +
					"standby, unavailable or transitioning (live: hosts get ASYMMETRIC ACCESS STATE CHANGED)",
				ArgsUsage: "LUN GROUP_ID STATE",
				Flags:     []cli.Flag{outputFlag},
				Action:    aluaState,
			},
		},
	}
}

// idArg parses a numeric ID argument; the range is the daemon's rule.
func idArg(what, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, usageErr("%s %q: want a number (1..65535)", what, s)
	}
	return n, nil
}

func aluaShow(c *cli.Context) error {
	var lun string
	switch c.NArg() {
	case 0:
	case 1:
		lun = c.Args().First()
	default:
		return usageErr("alua show: too many arguments %q (usage: lmtgt alua show [LUN])", c.Args().Slice()[1:])
	}
	return request(c, func(cl *client.Client) (wire.ALUA, error) {
		return cl.ALUA(context.Background(), lun)
	}, func(a wire.ALUA) { printALUA(c, a, lun == "") })
}

func portsStr(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return orDash(strings.Join(s, ","))
}

func printALUA(c *cli.Context, a wire.ALUA, targets bool) {
	w := c.App.Writer
	if targets {
		var rows [][]string
		for _, g := range a.Groups {
			for _, t := range g.Targets {
				rows = append(rows, []string{strconv.Itoa(int(g.ID)), t.IQN, strconv.Itoa(int(t.Port))})
			}
		}
		if len(rows) == 0 {
			fmt.Fprintln(w, "targets: (none)")
		} else {
			table(w, []string{"GROUP", "TARGET", "REL-PORT"}, rows)
		}
		fmt.Fprintln(w)
	}
	var rows [][]string
	for _, l := range a.LUNs {
		if len(l.Groups) == 0 {
			rows = append(rows, []string{l.Name, "-", "active-optimized", "-"})
			continue
		}
		for _, g := range l.Groups {
			state := g.State
			if !g.Set {
				state += " (default)"
			}
			rows = append(rows, []string{l.Name, strconv.Itoa(int(g.Group)), state, portsStr(g.Ports)})
		}
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "luns: (none)")
		return
	}
	table(w, []string{"LUN", "GROUP", "STATE", "PORTS"}, rows)
}

// aluaTarget runs `alua group IQN GROUP_ID` and `alua port IQN REL_PORT_ID`.
func aluaTarget(c *cli.Context, what string) error {
	a, err := argsN(c, "IQN", what)
	if err != nil {
		return err
	}
	n, err := idArg(what, a[1])
	if err != nil {
		return err
	}
	var req wire.SetALUATarget
	if what == "GROUP_ID" {
		req.Group = &n
	} else {
		req.Port = &n
	}
	return request(c, func(cl *client.Client) (wire.ALUATarget, error) {
		return cl.SetTargetALUA(context.Background(), a[0], req)
	}, func(t wire.ALUATarget) {
		fmt.Fprintf(c.App.Writer, "target %s: target port group %d, relative target port ID %d\n", t.IQN, t.Group, t.Port)
	})
}

func aluaState(c *cli.Context) error {
	a, err := argsN(c, "LUN", "GROUP_ID", "STATE")
	if err != nil {
		return err
	}
	g, err := idArg("GROUP_ID", a[1])
	if err != nil {
		return err
	}
	if _, err := target.ParseAccessState(a[2]); err != nil { // the daemon's own rule, aliases included
		return checkEnum("STATE", a[2], aluaStates())
	}
	return request(c, func(cl *client.Client) (wire.ALUALUN, error) {
		return cl.SetALUAState(context.Background(), a[0], g, a[2])
	}, func(l wire.ALUALUN) {
		for _, lg := range l.Groups {
			if int(lg.Group) == g {
				fmt.Fprintf(c.App.Writer, "LUN %s: %s in target port group %d (ports %s)\n", l.Name, lg.State, g, portsStr(lg.Ports))
				return
			}
		}
		fmt.Fprintf(c.App.Writer, "LUN %s: active-optimized in target port group %d\n", l.Name, g)
	})
}
