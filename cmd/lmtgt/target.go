package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// argsN returns exactly the positional arguments named in what.
func argsN(c *cli.Context, what ...string) ([]string, error) {
	if c.NArg() < len(what) {
		return nil, usageErr("%s: missing %s (usage: lmtgt %s %s)", cmdName(c), strings.Join(what[c.NArg():], " "), cmdName(c), strings.Join(what, " "))
	}
	if c.NArg() > len(what) {
		return nil, usageErr("%s: too many arguments %q (usage: lmtgt %s %s)", cmdName(c), c.Args().Slice()[len(what):], cmdName(c), strings.Join(what, " "))
	}
	return c.Args().Slice(), nil
}

func targetCommand() *cli.Command {
	return &cli.Command{
		Name:  "target",
		Usage: "create and delete iSCSI targets, map LUNs, set ACLs and CHAP",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a target (no LUNs, no initiators allowed yet)",
				ArgsUsage: "IQN",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "portal", Usage: "serve the target only on this portal ip:port, one of serve --portal (repeatable; default: every portal)"},
					outputFlag,
				},
				Action: targetCreate,
			},
			{
				Name:      "delete",
				Usage:     "delete a target (refused while LUNs are mapped unless --force)",
				ArgsUsage: "IQN",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "force", Usage: "delete even with LUNs mapped (drops its sessions)"},
					outputFlag,
				},
				Action: targetDelete,
			},
			{
				Name:   "list",
				Usage:  "list targets",
				Flags:  []cli.Flag{outputFlag},
				Action: targetList,
			},
			{
				Name:      "show",
				Usage:     "show a target: LUNs, ACL, CHAP user",
				ArgsUsage: "IQN",
				Flags:     []cli.Flag{outputFlag},
				Action:    targetShow,
			},
			targetChange{
				Name:  "map",
				Usage: "export a LUN on a target (live: hosts get REPORTED LUNS DATA HAS CHANGED)",
				Arg:   "LUN-NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "lun", Usage: "LUN number (default: the lowest free number from 0)"},
					&cli.BoolFlag{Name: "read-only", Usage: "write-protect the LUN at this mapping (hosts get DATA PROTECT on writes)"},
					&cli.StringSliceFlag{Name: "initiator", Usage: "only this initiator sees the LUN here (repeat for more; default: every allowed initiator)"},
				},
				Call: mapLUN,
				Done: func(lun string, t wire.Target) string {
					n := "?"
					if l, ok := mappedLUN(t, lun); ok {
						n = strconv.FormatUint(l.LUN, 10)
					}
					return fmt.Sprintf("LUN %s mapped on %s at LUN %s", lun, t.IQN, n)
				},
			}.command(),
			targetChange{
				Name:  "mapping",
				Usage: "change a mapped LUN's write protection or initiator mask (live)",
				Arg:   "LUN-NAME",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "read-only", Usage: "write-protect the mapping (--read-only=false: writable)"},
					&cli.StringSliceFlag{Name: "initiator", Usage: "only these initiators see the LUN here (repeat; replaces the mask)"},
					&cli.BoolFlag{Name: "all-initiators", Usage: "remove the mask: every allowed initiator sees the LUN"},
				},
				Call: setMapping,
				Done: func(lun string, t wire.Target) string {
					if l, ok := mappedLUN(t, lun); ok {
						return fmt.Sprintf("LUN %s on %s: %s", lun, t.IQN, mappingMode(l))
					}
					return fmt.Sprintf("LUN %s on %s changed", lun, t.IQN)
				},
			}.command(),
			targetChange{
				Name:  "unmap",
				Usage: "remove a LUN from a target",
				Arg:   "LUN-NAME",
				Call:  clientCall((*client.Client).Unmap),
				Done: func(lun string, t wire.Target) string {
					return fmt.Sprintf("LUN %s unmapped from %s", lun, t.IQN)
				},
			}.command(),
			targetChange{
				Name:  "allow",
				Usage: "let an initiator (or ALL initiators) log in",
				Arg:   "INITIATOR-IQN|ALL",
				Call:  clientCall((*client.Client).Allow),
				Done: func(initiator string, t wire.Target) string {
					return fmt.Sprintf("%s may log in to %s (initiators: %s)", initiator, t.IQN, aclStr(t))
				},
			}.command(),
			targetChange{
				Name:  "disallow",
				Usage: "remove an initiator (or ALL) from a target's ACL",
				Arg:   "INITIATOR-IQN|ALL",
				Call:  clientCall((*client.Client).Disallow),
				Done: func(initiator string, t wire.Target) string {
					return fmt.Sprintf("%s removed from %s (initiators: %s)", initiator, t.IQN, aclStr(t))
				},
			}.command(),
			{
				Name:  "portal",
				Usage: "the target's portal group: the portals it is served on (default: every portal)",
				Subcommands: []*cli.Command{
					targetChange{
						Name:  "add",
						Usage: "serve the target on this portal too (ip:port, one of serve --portal); a target with no portal group is then served only there",
						Arg:   "IP:PORT",
						Call:  clientCall((*client.Client).AddPortal),
						Done:  servedOn,
					}.command(),
					targetChange{
						Name:  "remove",
						Usage: "stop serving the target on this portal (its sessions there end); ALL empties the group: every portal",
						Arg:   "IP:PORT|ALL",
						Call:  clientCall((*client.Client).RemovePortal),
						Done:  servedOn,
					}.command(),
				},
			},
			{
				Name:      "logout",
				Usage:     "end every session (all connections) an initiator has on a target; it may log in again unless the ACL keeps it out",
				ArgsUsage: "IQN",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "initiator", Usage: "the initiator name whose sessions end (required)"},
					outputFlag,
				},
				Action: targetLogout,
			},
			{
				Name:      "chap",
				Usage:     "set CHAP (one-way, or mutual with --mutual-user/--mutual-secret); --off turns it off",
				ArgsUsage: "IQN",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Usage: "user name the initiator logs in with"},
					&cli.StringFlag{Name: "secret", Usage: "initiator secret (12 to 16 characters recommended; shows in ps: prefer --secret-file, or - to read it from stdin)"},
					&cli.StringFlag{Name: "secret-file", Usage: "read the initiator secret from this file"},
					&cli.StringFlag{Name: "mutual-user", Usage: "user name the target answers with (mutual CHAP)"},
					&cli.StringFlag{Name: "mutual-secret", Usage: "target secret (mutual CHAP; must differ from --secret; - reads stdin)"},
					&cli.StringFlag{Name: "mutual-secret-file", Usage: "read the target secret from this file"},
					&cli.BoolFlag{Name: "off", Usage: "turn CHAP off"},
					outputFlag,
				},
				Action: targetCHAP,
			},
		},
	}
}

func targetCreate(c *cli.Context) error {
	iqn, err := args1(c, "IQN")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.Target, error) {
		return cl.CreateTarget(context.Background(), iqn, c.StringSlice("portal")...)
	}, func(t wire.Target) {
		fmt.Fprintf(c.App.Writer, "target %s created (no initiator may log in yet: lmtgt target allow %s INITIATOR|ALL)\n", t.IQN, t.IQN)
	})
}

func targetDelete(c *cli.Context) error {
	iqn, err := args1(c, "IQN")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (map[string]string, error) {
		return deleted(iqn), cl.DeleteTarget(context.Background(), iqn, c.Bool("force"))
	}, func(map[string]string) { fmt.Fprintf(c.App.Writer, "target %s deleted\n", iqn) })
}

func aclStr(t wire.Target) string {
	var s []string
	if t.AllowAll {
		s = append(s, "ALL")
	}
	s = append(s, t.Initiators...)
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ",")
}

// portalsStr names a target's portal group.
func portalsStr(t wire.Target) string {
	if len(t.Portals) == 0 {
		return "every portal"
	}
	return strings.Join(t.Portals, ",")
}

func chapStr(t wire.Target) string {
	if t.CHAP == nil {
		return "off"
	}
	if t.CHAP.MutualUser != "" {
		return fmt.Sprintf("mutual (user %s, target user %s)", t.CHAP.User, t.CHAP.MutualUser)
	}
	return fmt.Sprintf("one-way (user %s)", t.CHAP.User)
}

func targetList(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	return request(c, func(cl *client.Client) ([]wire.Target, error) {
		return cl.Targets(context.Background())
	}, func(ts []wire.Target) {
		var rows [][]string
		for _, t := range ts {
			var luns []string
			for _, l := range t.LUNs {
				luns = append(luns, fmt.Sprintf("%d:%s", l.LUN, l.Name))
			}
			rows = append(rows, []string{t.IQN, orDash(strings.Join(luns, ",")), aclStr(t), chapStr(t)})
		}
		table(c.App.Writer, []string{"IQN", "LUNS", "INITIATORS", "CHAP"}, rows)
	})
}

func printTarget(c *cli.Context, t wire.Target) {
	fields(c.App.Writer, [][2]string{
		{"iqn", t.IQN},
		{"initiators", aclStr(t)},
		{"portals", portalsStr(t)},
		{"chap", chapStr(t)},
		{"created", t.Created.Local().Format("2006-01-02 15:04:05")},
	})
	if len(t.LUNs) == 0 {
		fmt.Fprintln(c.App.Writer, "luns:       (none)")
	} else {
		fmt.Fprintln(c.App.Writer)
		var rows [][]string
		for _, l := range t.LUNs {
			rows = append(rows, []string{strconv.FormatUint(l.LUN, 10), orDash(l.Name), sizeStr(l.Size), strconv.Itoa(int(l.BlockSize)), mappingMode(l), l.ID})
		}
		table(c.App.Writer, []string{"LUN", "NAME", "SIZE", "BLOCK", "ACCESS", "ID"}, rows)
	}
	if len(t.Sessions) == 0 {
		fmt.Fprintln(c.App.Writer, "sessions:   (none)")
		return
	}
	fmt.Fprintln(c.App.Writer)
	var rows [][]string
	for _, ss := range t.Sessions {
		rows = append(rows, []string{ss.Initiator, ss.Remote, ss.ISID, strconv.Itoa(int(ss.TSIH)), digestStr(ss)})
	}
	table(c.App.Writer, []string{"INITIATOR", "REMOTE", "ISID", "TSIH", "DIGESTS"}, rows)
}

// digestStr names the CRC32C digests a session negotiated.
func digestStr(s wire.Session) string {
	switch {
	case s.HeaderDigest && s.DataDigest:
		return "header,data"
	case s.HeaderDigest:
		return "header"
	case s.DataDigest:
		return "data"
	}
	return "-"
}

func targetShow(c *cli.Context) error {
	iqn, err := args1(c, "IQN")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.Target, error) {
		return cl.Target(context.Background(), iqn)
	}, func(t wire.Target) { printTarget(c, t) })
}

// targetResult prints a changed target (JSON or a sentence) and its warnings.
func targetResult(c *cli.Context, asJSON bool, t wire.Target, msg string) error {
	for _, w := range t.Warnings {
		fmt.Fprintln(c.App.ErrWriter, "lmtgt: warning: "+w)
	}
	if asJSON {
		return printJSON(c.App.Writer, t)
	}
	fmt.Fprintln(c.App.Writer, msg)
	return nil
}

// clientCall is a targetChange.Call that hands IQN and ARG to one client
// method (a method expression such as (*client.Client).Allow).
func clientCall(f func(cl *client.Client, ctx context.Context, iqn, arg string) (wire.Target, error)) func(*cli.Context, *client.Client, string, string) (wire.Target, error) {
	return func(_ *cli.Context, cl *client.Client, iqn, arg string) (wire.Target, error) {
		return f(cl, context.Background(), iqn, arg)
	}
}

// servedOn is the sentence of a portal group change.
func servedOn(_ string, t wire.Target) string {
	return fmt.Sprintf("%s served on %s", t.IQN, portalsStr(t))
}

// targetChange is a subcommand "IQN ARG" that changes a target with one
// API call and prints the changed target: as JSON, or the sentence Done
// makes; warnings go to stderr either way.
type targetChange struct {
	Name, Usage string
	Arg         string     // the second positional argument, as ArgsUsage shows it
	Flags       []cli.Flag // besides -o
	Call        func(c *cli.Context, cl *client.Client, iqn, arg string) (wire.Target, error)
	Done        func(arg string, t wire.Target) string
}

func (tc targetChange) command() *cli.Command {
	return &cli.Command{
		Name:      tc.Name,
		Usage:     tc.Usage,
		ArgsUsage: "IQN " + tc.Arg,
		Flags:     append(tc.Flags, outputFlag),
		Action: func(c *cli.Context) error {
			a, err := argsN(c, "IQN", tc.Arg)
			if err != nil {
				return err
			}
			asJSON, err := jsonOutput(c)
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			t, err := tc.Call(c, cl, a[0], a[1])
			if err != nil {
				return apiFailed(err) // a usage error from Call keeps exit code 2
			}
			return targetResult(c, asJSON, t, tc.Done(a[1], t))
		},
	}
}

// mapLUN maps a LUN at --lun, or at the lowest free number.
func mapLUN(c *cli.Context, cl *client.Client, iqn, lun string) (wire.Target, error) {
	var number *uint64
	if s := c.String("lun"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return wire.Target{}, usageErr("--lun %q: want a LUN number (0, 1, ...)", s)
		}
		number = &n
	}
	return cl.MapWith(context.Background(), iqn, wire.MapLUN{LUN: lun, Number: number,
		ReadOnly: c.Bool("read-only"), Initiators: c.StringSlice("initiator")})
}

// setMapping changes a mapping's --read-only and --initiator /
// --all-initiators.
func setMapping(c *cli.Context, cl *client.Client, iqn, lun string) (wire.Target, error) {
	var req wire.SetMapping
	req.ReadOnly = flagPtr(c, "read-only", c.Bool) // schedule.go
	switch {
	case c.IsSet("initiator") && c.Bool("all-initiators"):
		return wire.Target{}, usageErr("target mapping: give --initiator or --all-initiators, not both")
	case c.IsSet("initiator"):
		inis := c.StringSlice("initiator")
		req.Initiators = &inis
	case c.Bool("all-initiators"):
		inis := []string{}
		req.Initiators = &inis
	}
	if req.ReadOnly == nil && req.Initiators == nil {
		return wire.Target{}, usageErr("target mapping: nothing to change (--read-only[=false], --initiator or --all-initiators)")
	}
	return cl.SetMapping(context.Background(), iqn, lun, req)
}

// mappedLUN finds the LUN called name among t's mapped LUNs.
func mappedLUN(t wire.Target, name string) (wire.TargetLUN, bool) {
	i := slices.IndexFunc(t.LUNs, func(l wire.TargetLUN) bool { return l.Name == name })
	if i < 0 {
		return wire.TargetLUN{}, false
	}
	return t.LUNs[i], true
}

// mappingMode describes a mapping's write protection and mask.
func mappingMode(l wire.TargetLUN) string {
	mode := "read-write"
	if l.ReadOnly {
		mode = "read-only"
	}
	if len(l.Initiators) == 0 {
		return mode + ", all initiators"
	}
	return mode + ", initiators " + strings.Join(l.Initiators, ",")
}

func targetLogout(c *cli.Context) error {
	iqn, err := args1(c, "IQN")
	if err != nil {
		return err
	}
	ini := c.String("initiator")
	if ini == "" {
		return usageErr("target logout: --initiator is required")
	}
	return request(c, func(cl *client.Client) (wire.Logout, error) {
		return cl.Logout(context.Background(), iqn, ini)
	}, func(l wire.Logout) {
		fmt.Fprintf(c.App.Writer, "%d session(s) of %s on %s ended\n", l.Sessions, l.Initiator, iqn)
	})
}

func targetCHAP(c *cli.Context) error {
	iqn, err := args1(c, "IQN")
	if err != nil {
		return err
	}
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	if c.Bool("off") {
		if c.IsSet("user") || c.IsSet("secret") || c.IsSet("mutual-user") || c.IsSet("mutual-secret") ||
			c.IsSet("secret-file") || c.IsSet("mutual-secret-file") {
			return usageErr("--off takes no --user/--secret")
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		t, err := cl.ClearCHAP(context.Background(), iqn)
		if err != nil {
			return apiFailed(err)
		}
		return targetResult(c, asJSON, t, fmt.Sprintf("CHAP off for %s", t.IQN))
	}
	set, err := chapFlags(c, "target chap", "--off")
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	t, err := cl.SetCHAP(context.Background(), iqn, set)
	if err != nil {
		return apiFailed(err)
	}
	return targetResult(c, asJSON, t, fmt.Sprintf("CHAP for %s: %s", t.IQN, chapStr(t)))
}

// chapFlags reads --user, --secret[-file], --mutual-user and
// --mutual-secret[-file] of a CHAP command (cmd names it in errors).
func chapFlags(c *cli.Context, cmd, off string) (wire.SetCHAP, error) {
	r := &secretReader{c: c}
	secret, err := r.get("secret")
	if err != nil {
		return wire.SetCHAP{}, err
	}
	mutual, err := r.get("mutual-secret")
	if err != nil {
		return wire.SetCHAP{}, err
	}
	if c.String("user") == "" || secret == "" {
		return wire.SetCHAP{}, usageErr("%s: --user and --secret (or --secret-file) are required (or %s)", cmd, off)
	}
	if (c.String("mutual-user") == "") != (mutual == "") {
		return wire.SetCHAP{}, usageErr("%s: mutual CHAP needs both --mutual-user and --mutual-secret", cmd)
	}
	return wire.SetCHAP{User: c.String("user"), Secret: secret, MutualUser: c.String("mutual-user"), MutualSecret: mutual}, nil
}
