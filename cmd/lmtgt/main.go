package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// Defaults of `lmtgt serve` (and of the client's --admin).
const (
	defaultDataDir = "./lmtgt-data"
	defaultPortal  = "127.0.0.1:3260"
	socketName     = "admin.sock"
)

// exitError carries the process exit code of a failed command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr is a usage error (exit code 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// failed is an operation that failed (exit code 1).
func failed(err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: 1, err: err}
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	args = reorderArgs(app, args)
	err := app.Run(args)
	if err == nil {
		return 0
	}
	code := 2 // errors from flag parsing and the framework are usage errors
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	msg := oneLine(err.Error())
	if t, ok := strings.CutPrefix(msg, "No help topic for '"); ok {
		// urfave/cli's own words for `lmtgt help NAME` of no command.
		name := strings.TrimSuffix(t, "'")
		msg = fmt.Sprintf("help: unknown command %q%s (see lmtgt --help)", name, didYouMean(name, commandNames(app.Commands), "%s"))
	}
	if wantsJSON(args) {
		// With -o json an error is a JSON object too (one line), so that
		// a script reads one format; the exit code is the same.
		b, _ := json.Marshal(struct {
			Error string `json:"error"`
			Code  int    `json:"code"`
		}{msg, code})
		fmt.Fprintln(stderr, string(b))
		return code
	}
	fmt.Fprintln(stderr, "lmtgt: "+msg)
	return code
}

// wantsJSON reports whether the (reordered) command line asks for -o json
// before "--". It reads argv rather than the parsed flags so that errors
// from flag parsing itself are JSON too.
func wantsJSON(args []string) bool {
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return false
		case a == "-o" || a == "--output" || a == "-output":
			if i+1 < len(args) && args[i+1] == "json" {
				return true
			}
		case a == "-o=json" || a == "--output=json" || a == "-output=json":
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:    "lmtgt",
		Usage:   "an iSCSI target server with live LUN migration",
		Version: buildVersion(version).String(),
		Description: "`lmtgt serve` runs the daemon; every other command is a client of its admin API\n" +
			"(HTTP+JSON on a unix socket: --admin or LMTGT_ADMIN). Add -o json for scripts.",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "admin",
				Usage:   "admin API: a unix socket path, or host:port of a TCP listener (default: $LMTGT_DATA_DIR/admin.sock, else /run/lmtgt/admin.sock if it exists, else ./lmtgt-data/admin.sock)",
				EnvVars: []string{"LMTGT_ADMIN"},
			},
			&cli.StringFlag{
				Name:    "admin-token",
				Usage:   "bearer token for a TCP admin listener (shows in ps; prefer --admin-token-file, or - to read it from stdin)",
				EnvVars: []string{"LMTGT_ADMIN_TOKEN"},
			},
			&cli.StringFlag{
				Name:    "admin-token-file",
				Usage:   "read the bearer token from this file",
				EnvVars: []string{"LMTGT_ADMIN_TOKEN_FILE"},
			},
		},
		Commands: []*cli.Command{
			serveCommand(),
			lunCommand(),
			targetCommand(),
			discoveryCommand(),
			migrationCommand(),
			sessionCommand(),
			aluaCommand(),
			configCommand(),
			eventsCommand(), // events.go
			versionCommand(),
			completionCommand(),
			manCommand(),
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErr("unknown command %q%s (see lmtgt --help)", c.Args().First(),
					didYouMean(c.Args().First(), commandNames(c.App.Commands), "%s"))
			}
			cli.ShowAppHelp(c)
			return usageErr("no command given")
		},
		ExitErrHandler:       func(*cli.Context, error) {}, // run decides exit codes
		EnableBashCompletion: true,
	}
	setUsageErrors(app.Commands)
	app.OnUsageError = onUsageError
	return app
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	name := "lmtgt"
	if n := cmdName(c); n != "" {
		name = "lmtgt " + n
	}
	if msg, ok := flagValueError(c, err); ok {
		return usageErr("%s (see %s --help)", msg, name)
	}
	// The flag package's `flag provided but not defined: -blocksize`.
	if f, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
		f = strings.TrimLeft(f, "-")
		flags := c.App.Flags
		if c.Command != nil && c.Command.Name != "" {
			flags = c.Command.Flags
		}
		dash := "--"
		if len(f) == 1 {
			dash = "-"
		}
		return usageErr("unknown flag %s%s%s (see %s --help)", dash, f, didYouMean(f, flagNames(flags), "--%s"), name)
	}
	return usageErr("%v (see %s --help)", err, name)
}

// flagValueError rewrites the flag package's `invalid value "100" for flag
// -max-pause: parse error` into "--max-pause 100: a duration with a unit,
// like 100ms": the flag, what was given and what is expected. The flag
// package returns these errors untyped, so its (stable) wording is parsed
// here, in the one place that formats usage errors.
func flagValueError(c *cli.Context, err error) (string, bool) {
	var value, name string
	if _, e := fmt.Sscanf(err.Error(), "invalid value %q for flag -%s", &value, &name); e != nil {
		return "", false
	}
	name = strings.TrimSuffix(name, ":")
	flags := c.App.Flags
	if c.Command != nil {
		flags = append(c.Command.Flags, flags...)
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			var want string
			switch {
			case name == "max-mbps":
				// MB/s caps are whole numbers (the API's max_mbps is an
				// integer); say so rather than round a fraction silently.
				return fmt.Sprintf("--%s %s: want a whole number of MB/s (10^6 bytes/s, no fraction), like 100; 0 removes the cap", name, value), true
			}
			switch f.(type) {
			case *cli.DurationFlag:
				want = "a duration with a unit, like 100ms, 2s or 1m"
			case *cli.IntFlag, *cli.Int64Flag:
				want = "a whole number"
			case *cli.UintFlag, *cli.Uint64Flag:
				want = "a whole number, 0 or more"
			case *cli.Float64Flag:
				want = "a number"
			case *cli.BoolFlag:
				want = "true or false"
			default:
				return "", false
			}
			return fmt.Sprintf("--%s %s: want %s", name, value, want), true
		}
	}
	return "", false
}

// cmdName is the full command path of c without the program name
// ("lun create").
func cmdName(c *cli.Context) string {
	var names []string
	for _, x := range c.Lineage() {
		if x.Command != nil && x.Command.Name != "" && x.Command.Name != c.App.Name {
			names = append([]string{x.Command.Name}, names...)
		}
	}
	return strings.Join(names, " ")
}

// setUsageErrors makes every command report flag errors as usage errors,
// and makes command groups refuse unknown subcommands.
func setUsageErrors(cmds []*cli.Command) {
	for _, cmd := range cmds {
		cmd.OnUsageError = onUsageError
		if len(cmd.Subcommands) == 0 {
			// Enumerated flags (--speed, -o, ...) are checked before the
			// action runs: a typo is a usage error with "did you mean".
			before := cmd.Before
			cmd.Before = func(c *cli.Context) error {
				if err := checkEnumFlags(c); err != nil {
					return err
				}
				if before != nil {
					return before(c)
				}
				return nil
			}
			// A leaf command takes names as arguments: urfave/cli would
			// add a "help" subcommand (alias "h"), so `lun create h`
			// printed the help instead of creating LUN h. --help stays.
			cmd.HideHelpCommand = true
		}
		if len(cmd.Subcommands) > 0 && cmd.Action == nil {
			group := cmd
			cmd.Action = func(c *cli.Context) error {
				if c.Args().Present() {
					return usageErr("unknown command %q for lmtgt %s%s (see lmtgt %s --help)", c.Args().First(), group.Name,
						didYouMean(c.Args().First(), commandNames(group.Subcommands), "%s"), group.Name)
				}
				cli.ShowSubcommandHelp(c)
				return usageErr("%s needs a subcommand", group.Name)
			}
		}
		setUsageErrors(cmd.Subcommands)
	}
}

// reorderArgs lets flags follow positional arguments (`lmtgt lun show NAME
// -o json`): Go's flag package, which urfave/cli v2 uses, stops at the
// first positional argument. The leaf command's flags are moved in front of
// its positional arguments; "--" ends flag processing.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Global flags, and a command's flags given before the command
	// (`lmtgt -o json lun list`): those are held in pre and handed to the
	// leaf command below.
	var pre []string
	for i < len(args) && strings.HasPrefix(args[i], "-") && len(args[i]) > 1 && args[i] != "--" {
		a := args[i]
		i++
		// urfave/cli adds --help/-h and --version/-v when it runs.
		if hasFlag(app.Flags, a) || hasFlag([]cli.Flag{cli.HelpFlag, cli.VersionFlag}, a) {
			out = append(out, a)
			if flagTakesValue(app.Flags, a) && i < len(args) {
				out = append(out, args[i])
				i++
			}
			continue
		}
		pre = append(pre, a)
		if anyFlagTakesValue(app.Commands, a) && i < len(args) {
			pre = append(pre, args[i])
			i++
		}
	}
	// Command path.
	cmds := app.Commands
	var leaf *cli.Command
	for i < len(args) {
		var found *cli.Command
		for _, c := range cmds {
			if c.HasName(args[i]) {
				found = c
			}
		}
		if found == nil {
			break
		}
		out = append(out, args[i])
		i++
		leaf = found
		cmds = found.Subcommands
		if len(cmds) == 0 {
			break
		}
	}
	if leaf == nil || len(leaf.Subcommands) > 0 {
		// No command, or a group followed by an unknown subcommand: leave
		// the rest as it is, so the error names the unknown word rather
		// than a flag meant for the command the user mistyped.
		if len(pre) > 0 && i < len(args) && flagsKnown(app.Commands, pre) {
			// After the unknown word, where urfave/cli leaves them to the
			// action that reports it (and -o json still applies).
			return append(append(out, args[i:]...), pre...)
		}
		if len(pre) > 0 {
			return args // flags and no command: as given
		}
		return append(out, args[i:]...)
	}
	rest := append(append([]string{}, pre...), args[i:]...)
	var flags, pos, global []string
	for i = 0; i < len(rest); {
		a := rest[i]
		i++
		switch {
		case a == "--":
			pos = append(pos, rest[i:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && len(a) > 1 && !hasFlag(leaf.Flags, a) && hasFlag(app.Flags, a):
			// A global flag after the command (`lmtgt lun list --admin
			// S`): moved back among the global flags.
			global = append(global, a)
			if flagTakesValue(app.Flags, a) && i < len(rest) {
				global = append(global, rest[i])
				i++
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			flags = append(flags, a)
			if flagTakesValue(leaf.Flags, a) && i < len(rest) {
				flags = append(flags, rest[i])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(global) > 0 {
		out = append(append([]string{out[0]}, global...), out[1:]...)
	}
	out = append(out, flags...)
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}

// flagsKnown reports whether every flag in args (flags and their values)
// belongs to some command of cmds.
func flagsKnown(cmds []*cli.Command, args []string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, "-") && !anyHasFlag(cmds, a) {
			return false
		}
	}
	return true
}

func anyHasFlag(cmds []*cli.Command, arg string) bool {
	for _, c := range cmds {
		if hasFlag(c.Flags, arg) || anyHasFlag(c.Subcommands, arg) {
			return true
		}
	}
	return false
}

// anyFlagTakesValue reports whether a flag named like arg takes a value
// on some command of cmds (a flag given before its command).
func anyFlagTakesValue(cmds []*cli.Command, arg string) bool {
	for _, c := range cmds {
		if flagTakesValue(c.Flags, arg) || anyFlagTakesValue(c.Subcommands, arg) {
			return true
		}
	}
	return false
}

// hasFlag reports whether arg ("--name", "-n", "--name=value") names one
// of flags.
func hasFlag(flags []cli.Flag, arg string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// flagTakesValue reports whether arg ("--name", "-n", without "=value")
// names a flag that takes a separate value argument.
func flagTakesValue(flags []cli.Flag, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			switch f.(type) {
			case *cli.BoolFlag:
				return false
			}
			return true
		}
	}
	return false
}

// systemdSocket is where the shipped unit's daemon listens
// (RuntimeDirectory=lmtgt, docs/lmtgt.service).
const systemdSocket = "/run/lmtgt/admin.sock"

// adminAddr is the client's admin endpoint (docs/cli.md, "Global flags"):
// --admin / LMTGT_ADMIN; else $LMTGT_DATA_DIR/admin.sock when
// LMTGT_DATA_DIR is set; else /run/lmtgt/admin.sock when it exists (the
// daemon runs under systemd); else ./lmtgt-data/admin.sock.
func adminAddr(c *cli.Context) string {
	return findAdmin(c.String("admin"), os.Getenv("LMTGT_DATA_DIR"), systemdSocket)
}

// findAdmin is adminAddr's rule, with the systemd socket path given.
func findAdmin(flag, dataDirEnv, sdSocket string) string {
	if flag != "" {
		return flag
	}
	if dataDirEnv != "" {
		return filepath.Join(dataDirEnv, socketName)
	}
	if fi, err := os.Stat(sdSocket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		return sdSocket
	}
	return filepath.Join(defaultDataDir, socketName)
}

func newClient(c *cli.Context) (*client.Client, error) {
	tok, err := adminToken(c)
	if err != nil {
		return nil, err
	}
	return client.New(adminAddr(c), client.Options{Token: tok}), nil
}

// request checks -o, runs one admin API call and prints its result: as
// JSON with -o json, else with text. An error from call is reported with
// apiFailed; a usage error it returns (a flag checked before anything is
// sent) keeps its exit code 2.
func request[T any](c *cli.Context, call func(cl *client.Client) (T, error), text func(v T)) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	v, err := call(cl)
	if err != nil {
		return apiFailed(err)
	}
	if asJSON {
		return printJSON(c.App.Writer, v)
	}
	text(v)
	return nil
}

// deleted is what a delete command prints with -o json.
func deleted(name string) map[string]string { return map[string]string{"deleted": name} }

// apiFailed turns a client error into a one-line failure (exit code 1).
func apiFailed(err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return failed(errors.New(we.Error()))
	}
	return failed(err)
}
