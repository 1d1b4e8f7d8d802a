package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// configCommand is `lmtgt config`: the configuration as a file (export,
// apply, backups), then the server-wide run-time limits (set, show:
// configset.go), which the file does not carry (docs/design.md).
func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "the configuration as a file (export, apply live, backups) and the server-wide run-time copy limits (set, show)",
		Description: "export/apply carry every LUN, target (portals, ACL, CHAP, mappings with read-only and initiator mask), ALUA setting,\n" +
			"and migration pair and session with its options (speed, cap, priority, start time, windows, max elapsed, auto-split,\n" +
			"verify, vehicle, max active). The run-time limits of `config set` are not in the file: they last until the next\n" +
			"restart, which takes the serve flags (--max-active, --max-total-mbps) again.",
		Subcommands: append([]*cli.Command{
			{
				Name: "export",
				Usage: "write every LUN, target, portal group, mapping (read-only, mask), ACL, CHAP setting, ALUA setting and migration " +
					"pair and session with its options (sorted, diff-friendly; secrets only with --with-secrets)",
				ArgsUsage: "[FILE]",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "yaml", Usage: "format: yaml or json"},
					&cli.BoolFlag{Name: "with-secrets", Usage: "write the CHAP secrets (else a placeholder that apply leaves unchanged); the file is mode 0600 either way"},
				},
				Action: configExport,
			},
			{
				Name: "apply",
				Usage: "make the running server match FILE (yaml or json; - reads stdin), live: prints the plan, one line per change; " +
					"refuses (changing nothing) what cannot be done live",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"},
					&cli.BoolFlag{Name: "prune", Usage: "delete the LUNs and targets FILE does not name (never a migration); default: keep them and say so"},
					outputFlag,
				},
				Action: configApply,
			},
			{
				Name:   "backups",
				Usage:  "list the automatic backups (the configuration before each apply; the newest 10 are kept in DATA_DIR/config-backups)",
				Flags:  []cli.Flag{outputFlag},
				Action: configBackups,
			},
		}, configSetCommands()...),
	}
}

func configExport(c *cli.Context) error {
	format := c.String("output")
	if format != "yaml" && format != "json" {
		return usageErr("config export: -o %q: want yaml or json", format)
	}
	if c.NArg() > 1 {
		return usageErr("config export: too many arguments %q (usage: lmtgt config export [-o yaml|json] [--with-secrets] [FILE])", c.Args().Slice()[1:])
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	cfg, err := cl.ExportConfig(context.Background(), c.Bool("with-secrets"))
	if err != nil {
		return apiFailed(err)
	}
	b, err := encodeConfig(cfg, format)
	if err != nil {
		return failed(fmt.Errorf("config export: %w", err))
	}
	file := c.Args().First()
	if file == "" || file == "-" {
		_, err := c.App.Writer.Write(b)
		return failed(err)
	}
	return failed(writeFileAtomic(file, b))
}

// encodeConfig writes a configuration as indented JSON or as YAML made
// from that JSON (one schema: the JSON names are the YAML keys, in the
// same order).
func encodeConfig(cfg wire.Config, format string) ([]byte, error) {
	j, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if format == "json" {
		return append(j, '\n'), nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(j, &doc); err != nil {
		return nil, err
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blockStyle clears the flow and quoting styles JSON's syntax gave the
// nodes: the encoder then writes block YAML and quotes only the strings
// that would otherwise read as another type ("0123", "true").
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// decodeConfig reads a configuration file: JSON when it starts with '{',
// else YAML. Unknown keys are refused (a typo must not be ignored).
func decodeConfig(b []byte) (wire.Config, error) {
	var cfg wire.Config
	j := b
	var v any
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		var doc yaml.Node
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return cfg, fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if err := noFloats(&doc, ""); err != nil {
			return cfg, err
		}
		if err := doc.Decode(&v); err != nil {
			return cfg, fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if v == nil {
			return cfg, fmt.Errorf("empty file")
		}
		var err error
		if j, err = json.Marshal(v); err != nil {
			return cfg, fmt.Errorf("YAML that does not map to JSON: %w", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		if v == nil {
			json.Unmarshal(j, &v) // JSON file: to place an unknown key
		}
		return cfg, configDecodeError(err, v)
	}
	return cfg, nil
}

// writeFileAtomic writes b to path (mode 0600) through a temporary file
// and a rename, so a failed export never leaves half a file.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("config export %s: %w", path, err)
	}
	name := tmp.Name()
	if _, err := tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("config export %s: %w", path, err)
	}
	return nil
}

func configApply(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	if c.NArg() != 1 {
		return usageErr("config apply: want one FILE (usage: lmtgt config apply [--dry-run] [--prune] FILE; - reads stdin)")
	}
	file := c.Args().First()
	var b []byte
	if file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return failed(fmt.Errorf("config apply: %w", err))
	}
	cfg, err := decodeConfig(b)
	if err != nil {
		return usageErr("config %s: %v", file, err)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	res, err := cl.ApplyConfig(context.Background(), wire.ApplyConfig{Config: cfg, DryRun: c.Bool("dry-run"), Prune: c.Bool("prune")})
	if err != nil {
		return apiFailed(err)
	}
	if asJSON {
		return printJSON(c.App.Writer, res)
	}
	printApply(c.App.Writer, res)
	return nil
}

func printApply(w io.Writer, res wire.ApplyResult) {
	switch {
	case len(res.Changes) == 0 && len(res.Kept) == 0:
		fmt.Fprintln(w, "nothing to change: the server matches the file")
	case len(res.Changes) == 0:
		fmt.Fprintf(w, "nothing to change; %d object(s) the file does not name are kept\n", len(res.Kept))
	case res.DryRun:
		fmt.Fprintf(w, "plan (dry run, nothing changed): %d change(s)\n", len(res.Changes))
	default:
		fmt.Fprintf(w, "applied %d change(s)\n", len(res.Changes))
	}
	for _, l := range res.Changes {
		fmt.Fprintln(w, l)
	}
	for _, l := range res.Kept {
		fmt.Fprintln(w, l)
	}
	if res.Backup != "" {
		fmt.Fprintln(w, "backup of the configuration before: "+res.Backup)
	}
}

func configBackups(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr("config backups: takes no arguments")
	}
	return request(c, func(cl *client.Client) ([]wire.ConfigBackup, error) {
		return cl.ConfigBackups(context.Background())
	}, func(bs []wire.ConfigBackup) {
		rows := make([][]string, 0, len(bs))
		for _, b := range bs {
			rows = append(rows, []string{b.Time.Format("2006-01-02 15:04:05.000Z07:00"), strconv.FormatInt(b.Size, 10), b.Path})
		}
		table(c.App.Writer, []string{"TIME", "BYTES", "FILE"}, rows)
	})
}
