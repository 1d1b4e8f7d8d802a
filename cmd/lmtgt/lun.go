package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// args1 returns the one positional argument a command needs.
func args1(c *cli.Context, what string) (string, error) {
	switch c.NArg() {
	case 1:
		return c.Args().First(), nil
	case 0:
		return "", usageErr("%s: missing %s (see lmtgt %s --help)", cmdName(c), what, cmdName(c))
	}
	return "", usageErr("%s: too many arguments %q, want only %s", cmdName(c), c.Args().Slice()[1:], what)
}

func args0(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr("%s: unexpected arguments %q", cmdName(c), c.Args().Slice())
	}
	return nil
}

func lunCommand() *cli.Command {
	return &cli.Command{
		Name:  "lun",
		Usage: "create, list, show, resize and delete LUNs",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a LUN (a sparse file in the data dir, or --path FILE|DEVICE)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "size", Usage: "size: 1GiB, 512MiB, 1G (binary), 1GB (decimal) or bytes; optional with --path of an existing file or device"},
					&cli.StringFlag{Name: "path", Usage: "existing file or block device, or a file to create sparse"},
					&cli.UintFlag{Name: "block-size", Value: 512, Usage: "logical block size: 512 or 4096"},
					&cli.BoolFlag{Name: "direct", Usage: "open the data volume with O_DIRECT (bypass the page cache)"},
					&cli.BoolFlag{Name: "force", Usage: "allow a --path in a system location (/etc, /usr, /boot, /proc, /sys, /run, ...), a mounted block device or a non-block file in /dev"},
					&cli.StringFlag{Name: "rbd", Usage: "POOL/IMAGE: the data volume is a Ceph RBD image (created with --size; without it the existing image is attached)"},
					&cli.BoolFlag{Name: "takeover", Usage: "with --rbd: break another client's exclusive lock on the image (Ceph blocklists that client) and take it"},
					&cli.StringFlag{Name: "ceph-conf", Usage: "with --rbd: ceph.conf of the image's cluster when it is not the server's (serve --ceph-conf); kept with the LUN"},
					&cli.StringFlag{Name: "ceph-id", Usage: "with --rbd: client id (without \"client.\") for the image's cluster, instead of the server's --ceph-id"},
					&cli.StringFlag{Name: "ceph-keyring", Usage: "with --rbd: keyring file for the image's cluster, instead of the server's --ceph-keyring"},
					&cli.StringFlag{Name: "adopt-from", Usage: "with --rbd: iscsi://HOST[:PORT]/IQN/LUN of the LUN another lmtgt serves on this image: adopt its identity and reservations, leave it the image until lun takeover --adopt-from (handover without copy)"},
					outputFlag,
				},
				Action: lunCreate,
			},
			{
				Name:      "import",
				Usage:     "create a LUN whose data lives on a LUN of another iSCSI target (another array, Linux tgt, LIO, another lmtgt)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "from", Usage: "the external LUN: iscsi://HOST[:PORT]/IQN/LUN (no credentials in the URL)"},
					&cli.StringFlag{Name: "chap-user", Usage: "CHAP user for the login to the other target"},
					&cli.StringFlag{Name: "chap-secret", Usage: "CHAP secret (shows in ps: prefer --chap-secret-file, or - to read it from stdin)"},
					&cli.StringFlag{Name: "chap-secret-file", Usage: "read the CHAP secret from this file"},
					&cli.StringFlag{Name: "mutual-user", Usage: "mutual CHAP: the name the other target must answer with"},
					&cli.StringFlag{Name: "mutual-secret", Usage: "mutual CHAP: the other target's secret (- reads stdin)"},
					&cli.StringFlag{Name: "mutual-secret-file", Usage: "read the mutual CHAP secret from this file"},
					&cli.StringFlag{Name: "identity", Value: "adopt", Usage: "adopt: present the external LUN's identity (INQUIRY vendor/product/revision, serial, VPD 0x83 designators); own: lmtgt's generated identity"},
					outputFlag,
				},
				Action: lunImport,
			},
			{
				Name:   "list",
				Usage:  "list LUNs",
				Flags:  []cli.Flag{outputFlag},
				Action: lunList,
			},
			{
				Name:      "show",
				Usage:     "show a LUN: identity, data volume, mappings, migration",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{outputFlag},
				Action:    lunShow,
			},
			{
				Name:      "resize",
				Usage:     "grow a LUN (hosts get CAPACITY DATA HAS CHANGED)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "size", Usage: "new size (larger than the current one)"},
					outputFlag,
				},
				Action: lunResize,
			},
			{
				Name:      "takeover",
				Usage:     "take a LUN's RBD image back from the client holding its exclusive lock (Ceph blocklists that client)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "adopt-from", Usage: "iscsi://HOST[:PORT]/IQN/LUN of the other server's LUN (handover): read its reservations again and check its identity before taking the lock"},
					outputFlag,
				},
				Action: lunTakeover,
			},
			{
				Name:      "delete",
				Usage:     "delete a LUN (refused while mapped or in a migration pair); its volume file or RBD image is removed if lmtgt created it",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "delete-image", Usage: "also delete the LUN's RBD image when lmtgt did not create it (an attached image)"},
					outputFlag,
				},
				Action: lunDelete,
			},
		},
	}
}

func sizeFlag(c *cli.Context, required bool) (int64, error) {
	s := c.String("size")
	if s == "" {
		if required {
			return 0, usageErr("%s: --size is required (for example --size 1GiB)", cmdName(c))
		}
		return 0, nil
	}
	n, err := client.ParseSize(s)
	if err != nil {
		return 0, usageErr("--size: %v", err)
	}
	if n == 0 {
		// 0 means "not given" on the wire: say it is too small here rather
		// than have the daemon ask for a size the user did give.
		return 0, usageErr("--size %s: a LUN needs at least one block", s)
	}
	return n, nil
}

func lunCreate(c *cli.Context) error {
	name, err := args1(c, "NAME")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.LUN, error) {
		size, err := sizeFlag(c, c.String("path") == "" && c.String("rbd") == "")
		if err != nil {
			return wire.LUN{}, err
		}
		bs := c.Uint("block-size")
		if bs != 512 && bs != 4096 {
			return wire.LUN{}, usageErr("--block-size %d: want 512 or 4096", bs)
		}
		path := c.String("path")
		if path != "" {
			// The daemon resolves paths from its own working directory.
			if path, err = filepath.Abs(path); err != nil {
				return wire.LUN{}, usageErr("--path: %v", err)
			}
		}
		if c.Bool("takeover") && c.String("rbd") == "" {
			return wire.LUN{}, usageErr("--takeover is for --rbd")
		}
		if c.String("adopt-from") != "" && c.String("rbd") == "" {
			return wire.LUN{}, usageErr("--adopt-from is for --rbd")
		}
		ceph := map[string]string{}
		for _, f := range []string{"ceph-conf", "ceph-id", "ceph-keyring"} {
			v := c.String(f)
			if v != "" && c.String("rbd") == "" {
				return wire.LUN{}, usageErr("--%s is for --rbd", f)
			}
			if v != "" && f != "ceph-id" {
				// Files: the daemon resolves paths from its own working directory.
				if v, err = filepath.Abs(v); err != nil {
					return wire.LUN{}, usageErr("--%s: %v", f, err)
				}
			}
			ceph[f] = v
		}
		return cl.CreateLUN(context.Background(), wire.CreateLUN{Name: name, Size: size, BlockSize: uint32(bs), Path: path, Direct: c.Bool("direct"), Force: c.Bool("force"),
			RBD: c.String("rbd"), Takeover: c.Bool("takeover"), AdoptFrom: c.String("adopt-from"),
			CephConf: ceph["ceph-conf"], CephID: ceph["ceph-id"], CephKeyring: ceph["ceph-keyring"]})
	}, func(l wire.LUN) {
		direct := ""
		if l.DirectIO {
			direct = " (O_DIRECT)"
		}
		fmt.Fprintf(c.App.Writer, "LUN %s created: %s, %d-byte blocks, volume %s%s\n", l.Name, sizeStr(l.Size), l.BlockSize, orDash(l.VolumePath), direct)
	})
}

func lunImport(c *cli.Context) error {
	name, err := args1(c, "NAME")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.LUN, error) {
		if c.String("from") == "" {
			return wire.LUN{}, usageErr("lun import: --from iscsi://HOST[:PORT]/IQN/LUN is required")
		}
		r := &secretReader{c: c}
		secret, err := r.get("chap-secret")
		if err != nil {
			return wire.LUN{}, err
		}
		mutual, err := r.get("mutual-secret")
		if err != nil {
			return wire.LUN{}, err
		}
		if (c.String("chap-user") == "") != (secret == "") {
			return wire.LUN{}, usageErr("lun import: CHAP needs both --chap-user and --chap-secret-file (or --chap-secret)")
		}
		return cl.ImportLUN(context.Background(), wire.ImportLUN{
			Name: name, From: c.String("from"), Identity: c.String("identity"),
			CHAPUser: c.String("chap-user"), CHAPSecret: secret,
			MutualUser: c.String("mutual-user"), MutualSecret: mutual,
		})
	}, func(l wire.LUN) {
		fmt.Fprintf(c.App.Writer, "LUN %s imported: %s, %d-byte blocks, data on %s (session %s), identity %s\n",
			l.Name, sizeStr(l.Size), l.BlockSize, l.Remote.URL, l.Remote.Session, l.Identity)
	})
}

func lunList(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	return request(c, func(cl *client.Client) ([]wire.LUN, error) {
		return cl.LUNs(context.Background())
	}, func(ls []wire.LUN) {
		var rows [][]string
		for _, l := range ls {
			rows = append(rows, []string{l.Name, sizeStr(l.Size), strconv.Itoa(int(l.BlockSize)), mappingStr(l.Mappings), migrationStr(l.Migration), orDash(l.VolumePath), orDash(l.State)})
		}
		table(c.App.Writer, []string{"NAME", "SIZE", "BLOCK", "MAPPED", "MIGRATION", "VOLUME", "STATE"}, rows)
	})
}

func mappingStr(ms []wire.LUNMapping) string {
	if len(ms) == 0 {
		return "-"
	}
	var s []string
	for _, m := range ms {
		e := fmt.Sprintf("%s/%d", m.Target, m.LUN)
		if m.ReadOnly {
			e += "(ro)"
		}
		if len(m.Initiators) > 0 {
			e += "(masked)"
		}
		s = append(s, e)
	}
	return strings.Join(s, ",")
}

func migrationStr(m *wire.LUNMigration) string {
	if m == nil {
		return "-"
	}
	if m.Role == "source" {
		return fmt.Sprintf("-> %s (%s)", m.Peer, m.State)
	}
	return fmt.Sprintf("<- %s (%s)", m.Peer, m.State)
}

func lunShow(c *cli.Context) error {
	name, err := args1(c, "NAME")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.LUN, error) {
		return cl.LUN(context.Background(), name)
	}, func(l wire.LUN) { printLUN(c, l) })
}

func printLUN(c *cli.Context, l wire.LUN) {
	fields(c.App.Writer, [][2]string{
		{"name", l.Name},
		{"id", l.ID},
		{"size", fmt.Sprintf("%s (%d bytes, %d blocks)", sizeStr(l.Size), l.Size, l.Size/int64(max(l.BlockSize, 1)))},
		{"block size", strconv.Itoa(int(l.BlockSize))},
		{"identity", identityStr(l)},
		{"naa", naaStr(l)},
		{"serial", l.Serial},
		{"volume", fmt.Sprintf("%s (%s, %s%s)", l.Volume, orDash(l.VolumePath), orDash(l.VolumeKind), map[bool]string{true: ", owned", false: ""}[l.Owned])},
		{"remote", remoteStr(l.Remote)},
		{"rbd", rbdStr(l.RBD)},
		{"direct io", map[bool]string{true: "yes", false: "no"}[l.DirectIO]},
		{"mapped", mappingStr(l.Mappings)},
		{"migration", migrationStr(l.Migration)},
		{"state", stateStr(l)},
		{"created", l.Created.Local().Format("2006-01-02 15:04:05")},
	})
}

// identityStr says whose identity the LUN presents.
func identityStr(l wire.LUN) string {
	if l.Identity == "adopted" {
		return fmt.Sprintf("adopted (%s %s)", l.Vendor, l.Product)
	}
	return orDash(l.Identity)
}

// naaStr is the LUN's own NAA, which an adopted identity does not show.
func naaStr(l wire.LUN) string {
	if l.Identity == "adopted" {
		return "- (adopted VPD 0x83 designators)"
	}
	return l.NAA
}

// remoteStr is where a remote data volume is and whether its path is up.
// rbdStr names a LUN's RBD image, its lock and the cluster state.
func rbdStr(r *wire.LUNRBD) string {
	if r == nil {
		return "-"
	}
	s := fmt.Sprintf("%s, lock %s, cluster %s", r.Image, r.Lock, r.Cluster)
	if r.Ceph != "" {
		s += " (" + r.Ceph + ")"
	}
	return s
}

func remoteStr(r *wire.LUNRemote) string {
	if r == nil {
		return "-"
	}
	s := r.URL + ", path " + r.Session
	if r.CHAPUser != "" {
		s += ", CHAP user " + r.CHAPUser
	}
	if r.Fence != "" {
		s += ", fence " + r.Fence
	}
	return s
}

// stateStr is "online", or "OFFLINE: why" (loud: host I/O fails).
func stateStr(l wire.LUN) string {
	if l.State == "offline" {
		return "OFFLINE: " + strings.TrimPrefix(l.Offline, "offline: ")
	}
	return orDash(l.State)
}

func lunResize(c *cli.Context) error {
	name, err := args1(c, "NAME")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.LUN, error) {
		size, err := sizeFlag(c, true)
		if err != nil {
			return wire.LUN{}, err
		}
		return cl.ResizeLUN(context.Background(), name, size)
	}, func(l wire.LUN) {
		fmt.Fprintf(c.App.Writer, "LUN %s is now %s (%d bytes)\n", l.Name, sizeStr(l.Size), l.Size)
	})
}

func lunTakeover(c *cli.Context) error {
	name, err := args1(c, "NAME")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (wire.LUN, error) {
		if f := c.String("adopt-from"); f != "" {
			return cl.TakeoverLUNFrom(context.Background(), name, f)
		}
		return cl.TakeoverLUN(context.Background(), name)
	}, func(l wire.LUN) {
		lock := "-"
		if l.RBD != nil {
			lock = l.RBD.Lock
		}
		fmt.Fprintf(c.App.Writer, "LUN %s: rbd %s, lock %s\n", l.Name, strings.TrimPrefix(l.VolumePath, "rbd:"), lock)
	})
}

func lunDelete(c *cli.Context) error {
	name, err := args1(c, "NAME")
	if err != nil {
		return err
	}
	return request(c, func(cl *client.Client) (map[string]string, error) {
		if c.Bool("delete-image") {
			return deleted(name), cl.DeleteLUNImage(context.Background(), name)
		}
		return deleted(name), cl.DeleteLUN(context.Background(), name)
	}, func(map[string]string) { fmt.Fprintf(c.App.Writer, "LUN %s deleted\n", name) })
}
