package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/metavol"
	rbdvol "github.com/lmtgt/lmtgt/metavol/volume/rbd"
	"github.com/lmtgt/lmtgt/target"
	"github.com/lmtgt/lmtgt/target/api"
	"github.com/lmtgt/lmtgt/target/api/client"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"github.com/lmtgt/lmtgt/target/iscsi"
	"github.com/lmtgt/lmtgt/target/metrics"
)

// The demo `serve --demo` creates on an empty meta volume.
const (
	demoLUN    = "demo"
	demoSize   = 1 << 30
	demoTarget = "iqn.2026-11.org.lmtgt:demo"
)

// shutdownTimeout bounds each step of a clean shutdown.
const shutdownTimeout = 15 * time.Second

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the daemon: iSCSI portal(s) and the admin API",
		Description: "Opens the meta volume in DATA_DIR/meta, reopens every LUN, migration pair and target,\n" +
			"serves the iSCSI portal(s) and the admin API, and prints one line\n" +
			"`lmtgt serving portal=... admin=...` when ready. SIGTERM or SIGINT shut it down cleanly.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: defaultDataDir, EnvVars: []string{"LMTGT_DATA_DIR"}, Usage: "meta volume and the volumes lmtgt creates"},
			&cli.StringSliceFlag{Name: "portal", Value: cli.NewStringSlice(defaultPortal), EnvVars: []string{"LMTGT_PORTAL"}, Usage: "iSCSI portal host:port (repeatable; port 0 picks a free one)"},
			&cli.StringFlag{Name: "admin", EnvVars: []string{"LMTGT_ADMIN"}, Usage: "admin API unix socket (default $RUNTIME_DIRECTORY/admin.sock under systemd, /run/lmtgt/admin.sock with the shipped unit; else DATA_DIR/admin.sock)"},
			&cli.StringFlag{Name: "admin-group", EnvVars: []string{"LMTGT_ADMIN_GROUP"}, Usage: "give the admin socket to this group, mode 0660 (default: owner only, 0600)"},
			&cli.StringFlag{Name: "admin-tcp", EnvVars: []string{"LMTGT_ADMIN_TCP"}, Usage: "also serve the admin API on this TCP host:port (needs --admin-token)"},
			&cli.StringFlag{Name: "admin-token", EnvVars: []string{"LMTGT_ADMIN_TOKEN"}, Usage: "bearer token the TCP admin listener requires (shows in ps: prefer --admin-token-file, or - to read it from stdin)"},
			&cli.StringFlag{Name: "admin-token-file", EnvVars: []string{"LMTGT_ADMIN_TOKEN_FILE"}, Usage: "read the admin TCP bearer token from this file"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"LMTGT_LOG_LEVEL"}, Usage: "trace, debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"LMTGT_LOG_FORMAT"}, Usage: "console, json, or auto (console when stderr is a terminal)"},
			&cli.IntFlag{Name: "queue-depth", EnvVars: []string{"LMTGT_QUEUE_DEPTH"}, Usage: "commands in flight per iSCSI session, 1 to 4096 (default 128)"},
			&cli.StringFlag{Name: "max-write-buffer", EnvVars: []string{"LMTGT_MAX_WRITE_BUFFER"}, Usage: "cap on data buffered for outstanding iSCSI commands (write data, and Data-In of reads), all sessions together (default: 1/8 of RAM, within 64MiB..4GiB; at least 16MiB)"},
			&cli.IntFlag{Name: "max-active", EnvVars: []string{"LMTGT_MAX_ACTIVE"}, Usage: "migration pairs copying at once (0: default 2; change it at run time with config set max-active)"},
			&cli.Int64Flag{Name: "max-total-mbps", EnvVars: []string{"LMTGT_MAX_TOTAL_MBPS"}, Usage: "bandwidth budget of all migration copies together in MB/s (0: none; config set max-total-mbps)"},
			&cli.StringFlag{Name: "max-host-latency", EnvVars: []string{"LMTGT_MAX_HOST_LATENCY"}, Usage: "default bound on the hosts' p99 command latency on a copying pair's LUNs, e.g. 2ms: the copy slows down to keep it (default: none; a pair's or session's own bound wins)"},
			&cli.DurationFlag{Name: "remote-replacement-timeout", Value: defaultReplacementTimeout, EnvVars: []string{"LMTGT_REMOTE_REPLACEMENT_TIMEOUT"}, Usage: "how long I/O to an imported (remote iSCSI) data volume waits for a lost path to come back before it fails, 1s to 1h"},
			&cli.DurationFlag{Name: "idle-poll", Value: 100 * time.Microsecond, EnvVars: []string{"LMTGT_IDLE_POLL"}, Usage: "after answering a command with nothing else in flight, how long a connection polls for the host's next command before it sleeps (0: never; at most 1ms)"},
			&cli.DurationFlag{Name: "progress-interval", Value: lm.DefaultProgressInterval, EnvVars: []string{"LMTGT_PROGRESS_INTERVAL"}, Usage: "log a progress line per copying migration pair this often (0: never)"},
			&cli.StringFlag{Name: "metrics", EnvVars: []string{"LMTGT_METRICS"}, Usage: "serve Prometheus metrics at http://ADDR/metrics (host:port; default off)"},
			&cli.BoolFlag{Name: "pprof", EnvVars: []string{"LMTGT_PPROF"}, Usage: "also serve Go's profiler (net/http/pprof) at http://ADDR/debug/pprof/ on the --metrics listener (default off; needs --metrics)"},
			&cli.BoolFlag{Name: "demo", EnvVars: []string{"LMTGT_DEMO"}, Usage: "on an empty meta volume, create a 1 GiB LUN \"demo\" exported to every initiator"},
			&cli.StringFlag{Name: "ceph-conf", EnvVars: []string{"LMTGT_CEPH_CONF", "CEPH_CONF"}, Usage: "ceph.conf of the cluster of RBD LUNs (default: librados' own, /etc/ceph/ceph.conf)"},
			&cli.StringFlag{Name: "ceph-id", EnvVars: []string{"LMTGT_CEPH_ID", "CEPH_ID"}, Usage: "Ceph client name without \"client.\" (default admin)"},
			&cli.StringFlag{Name: "ceph-keyring", EnvVars: []string{"LMTGT_CEPH_KEYRING", "CEPH_KEYRING"}, Usage: "keyring file of the Ceph client (default: what ceph.conf names)"},
			&cli.DurationFlag{Name: "ceph-op-timeout", EnvVars: []string{"LMTGT_CEPH_OP_TIMEOUT"}, Usage: "an RBD I/O or monitor call fails after this long (an OSD down: the LUN's I/O fails, a migration leg goes interrupted; default 30s)"},
		},
		Action: serveAction,
	}
}

// newLogger builds the process logger on w.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), usageErr("--log-level %q: want trace, debug, info, warn or error", level)
	}
	switch format {
	case "auto":
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	case "console", "json":
	default:
		return zerolog.Nop(), usageErr("--log-format %q: want console, json or auto", format)
	}
	out := w
	switch {
	case underJournal(w): // logging.go: syslog priorities, no colors
		out = journalWriter{out: w, console: format == "console"}
	case format == "console":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(out).Level(lvl).Hook(msTimestamp{}), nil
}

// checkPortal refuses a --portal that is not host:port with a port
// number (exit 2), before anything is opened.
func checkPortal(p string) error {
	_, port, err := net.SplitHostPort(p)
	if err != nil {
		return usageErr("--portal %q: want host:port, like 127.0.0.1:3260 or [::]:3260", p)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return usageErr("--portal %q: port %q is not a number from 0 to 65535", p, port)
	}
	return nil
}

// --remote-replacement-timeout: the default (open-iscsi's) and its bounds.
// Below a second a routine reconnect (a target's restart, a moved IP)
// would already fail host I/O; beyond an hour a host's own SCSI timeouts
// have long given up.
const (
	defaultReplacementTimeout = 30 * time.Second
	minReplacementTimeout     = time.Second
	maxReplacementTimeout     = time.Hour
)

// maxQueueDepth is the largest --queue-depth: each slot may hold a
// command's buffers, and initiators rarely use more than a few hundred.
const maxQueueDepth = 4096

func serveAction(c *cli.Context) error {
	if err := args0(c); err != nil {
		return err
	}
	log, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(c.String("data-dir"))
	if err != nil {
		return usageErr("--data-dir: %v", err)
	}
	// The command's own --admin, else the global one (same env var).
	admin := ""
	for _, x := range c.Lineage() {
		if admin = x.String("admin"); admin != "" {
			break
		}
	}
	if admin == "" {
		admin = runtimeSocket(os.Getenv("RUNTIME_DIRECTORY"))
	}
	if admin == "" {
		admin = filepath.Join(dataDir, socketName)
	}
	if admin, err = filepath.Abs(admin); err != nil {
		return usageErr("--admin: %v", err)
	}
	var portals []string
	for _, p := range c.StringSlice("portal") {
		for _, q := range strings.Split(p, ",") {
			if q = strings.TrimSpace(q); q != "" {
				portals = append(portals, q)
			}
		}
	}
	if len(portals) == 0 {
		return usageErr("--portal: at least one host:port")
	}
	for _, p := range portals {
		if err := checkPortal(p); err != nil {
			return err
		}
	}
	if d := c.Duration("idle-poll"); d < 0 || d > maxIdlePoll {
		return usageErr("--idle-poll %v: want 0 (never) or a duration up to %v, like 100us", d, maxIdlePoll)
	}
	if d := c.Duration("progress-interval"); d < 0 {
		return usageErr("--progress-interval %v: want 0 (never) or a positive duration, like 30s", d)
	}
	if d := c.Duration("ceph-op-timeout"); d < 0 {
		return usageErr("--ceph-op-timeout %v: want a positive duration, like 30s (0: the default)", d)
	}
	if qd := c.Int("queue-depth"); c.IsSet("queue-depth") && (qd < 1 || qd > maxQueueDepth) {
		return usageErr("--queue-depth %d: want 1 to %d commands per session (default 128)", qd, maxQueueDepth)
	}
	if rt := c.Duration("remote-replacement-timeout"); rt < minReplacementTimeout || rt > maxReplacementTimeout {
		return usageErr("--remote-replacement-timeout %v: want %v to %v (default %v)", rt, minReplacementTimeout, maxReplacementTimeout, defaultReplacementTimeout)
	}
	if m := c.String("metrics"); m != "" {
		if _, _, err := net.SplitHostPort(m); err != nil {
			return usageErr("--metrics %q: want host:port", m)
		}
	}
	if c.Bool("pprof") && c.String("metrics") == "" {
		return usageErr("--pprof: needs --metrics (the profiler is served on the metrics listener only)")
	}
	maxWB, err := maxWriteBuffer(c.String("max-write-buffer"))
	if err != nil {
		return err
	}
	token, err := adminToken(c)
	if err != nil {
		return err
	}
	if c.String("admin-tcp") != "" && token == "" {
		return usageErr("--admin-tcp needs --admin-token-file or --admin-token (or LMTGT_ADMIN_TOKEN_FILE, LMTGT_ADMIN_TOKEN)")
	}
	adminGID := -1
	if g := c.String("admin-group"); g != "" {
		if adminGID, err = lookupGroup(g); err != nil {
			return err
		}
	}
	sd, err := newNotifier(os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		return usageErr("%v", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return failed(fmt.Errorf("data dir %s: %w", dataDir, err))
	}
	d := &daemon{
		sd:       sd,
		adminGID: adminGID,
		maxWB:    maxWB,
		token:    token,
		log:      log,
		dataDir:  dataDir,
		admin:    admin,
		portals:  portals,
		out:      c.App.Writer,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return failed(d.run(ctx, c))
}

// daemon is one `lmtgt serve`: it owns the meta volume, the LUN manager,
// the iSCSI server and the admin API, opened in that order and closed in
// the reverse order.
type daemon struct {
	log     zerolog.Logger
	maxWB   int64  // --max-write-buffer
	token   string // admin TCP bearer token
	dataDir string
	admin   string
	portals []string
	out     io.Writer
	// sd tells systemd (Type=notify) the start-up steps, READY=1 and
	// STOPPING=1 (notify.go).
	sd notifier
	// adminGID is --admin-group's GID, -1 for none.
	adminGID int

	lock        *dataDirLock // held from before the meta volume opens until after it closes
	db          *metavol.DB
	mgr         *lm.Manager
	tsrv        *target.Server
	tsrvStarted bool
	asrv        *api.Server
	msrv        *metrics.Server
}

func (d *daemon) run(ctx context.Context, c *cli.Context) (err error) {
	defer func() {
		if cerr := d.close(); err == nil {
			err = cerr
		}
	}()
	log := d.log
	log.Info().Str("version", version).Str("data_dir", d.dataDir).Msg("lmtgt starting")
	d.status("opening meta volume " + filepath.Join(d.dataDir, "meta"))

	if d.lock, err = lockDataDir(d.dataDir); err != nil {
		return err
	}
	d.db, err = metavol.Open(filepath.Join(d.dataDir, "meta"), metavol.Options{Log: log})
	if err != nil {
		return fmt.Errorf("open meta volume: %w", err)
	}
	hostLat, err := lm.ParseHostLatency("serve --max-host-latency", c.String("max-host-latency"))
	if err != nil {
		return usageErr("%v", err)
	}
	d.status("opening LUNs, targets and migration pairs")
	d.mgr, err = lm.Open(d.db, lm.Options{DataDir: d.dataDir, AdminSocket: d.admin, Log: log, MaxActive: c.Int("max-active"),
		MaxTotalMBps:             c.Int64("max-total-mbps"),
		MaxHostLatency:           hostLat,
		RemoteReplacementTimeout: c.Duration("remote-replacement-timeout"),
		ProgressInterval:         progressInterval(c.Duration("progress-interval")),
		Ceph:                     rbdvol.Config{Conf: c.String("ceph-conf"), ID: c.String("ceph-id"), Keyring: c.String("ceph-keyring"), OpTimeout: c.Duration("ceph-op-timeout")}})
	if err != nil {
		return fmt.Errorf("open LUNs and pairs: %w", err)
	}
	d.tsrv, err = target.New(target.Options{
		Portals:        d.portals,
		Log:            log,
		Reservations:   d.db,
		QueueDepth:     c.Int("queue-depth"),
		MaxWriteBuffer: d.maxWB,
		IdlePoll:       idlePoll(c.Duration("idle-poll")),
		OnLogin:        loginRecorder(d.mgr.Events()), // logging.go
	})
	if err != nil {
		return fmt.Errorf("iSCSI server: %w", err)
	}
	d.mgr.SetPRCarrier(d.tsrv) // PR carry-over of imported LUNs (lm/fence.go)
	svc := api.NewService(d.mgr, d.tsrv, log.With().Str("component", "api").Logger())
	if err := svc.ApplyAll(); err != nil {
		return fmt.Errorf("apply targets from the meta volume: %w", err)
	}
	demo := false
	if c.Bool("demo") {
		if demo, err = makeDemo(svc); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if addr := c.String("metrics"); addr != "" {
		d.msrv, err = metrics.Listen(addr, metrics.Sources{Version: version, DB: d.db, Manager: d.mgr, Target: d.tsrv},
			metrics.Options{Log: log.With().Str("component", "metrics").Logger(), Pprof: c.Bool("pprof")})
		if err != nil {
			return err
		}
	}
	d.status("opening portals " + strings.Join(d.portals, ","))
	if err := d.tsrv.Start(); err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "listen" && oe.Addr != nil {
			return fmt.Errorf("--portal %s: cannot listen: %w", oe.Addr, oe.Err)
		}
		return fmt.Errorf("--portal: %w", err)
	}
	d.tsrvStarted = true
	d.asrv, err = api.New(api.Options{
		Service: svc,
		Socket:  d.admin,
		TCP:     c.String("admin-tcp"),
		Token:   d.token,
		Version: version,
		Portals: d.portalAddrs,
		Log:     log.With().Str("component", "api").Logger(),
	})
	if err != nil {
		return err
	}
	if err := d.asrv.Start(); err != nil {
		return err
	}
	if d.adminGID >= 0 {
		if err := shareSocket(d.admin, d.adminGID); err != nil {
			return err
		}
	}

	portals := strings.Join(d.portalAddrs(), ",")
	if demo || c.Bool("demo") {
		printDemo(d.out, d.portalAddrs()[0], d.admin, demo)
	}
	line := fmt.Sprintf("lmtgt serving portal=%s admin=%s", portals, d.admin)
	if a := d.asrv.TCPAddr(); a != nil {
		line += " admin-tcp=" + a.String()
	}
	if d.msrv != nil {
		line += " metrics=" + d.msrv.Addr().String()
	}
	fmt.Fprintln(d.out, line)
	log.Info().Str("portal", portals).Str("admin", d.admin).Msg("lmtgt serving")
	// Every portal listens and the admin socket accepts: systemd may
	// now start what comes after lmtgt (`systemctl start` returns).
	if err := d.sd.notify("READY=1", status(strings.TrimPrefix(line, "lmtgt "))); err != nil {
		log.Warn().Err(err).Msg("systemd notify")
	}

	select {
	case <-ctx.Done():
		log.Info().Msg("signal received: shutting down")
	case err := <-d.asrv.Errors():
		d.stopping("admin API failed: " + err.Error())
		return err
	}
	d.stopping("signal received: shutting down")
	return nil
}

// status tells systemd what the daemon is doing (systemctl status).
func (d *daemon) status(s string) {
	if err := d.sd.notify(status(s)); err != nil {
		d.log.Warn().Err(err).Msg("systemd notify")
	}
}

// stopping tells systemd the shutdown has begun (STOPPING=1).
func (d *daemon) stopping(why string) {
	if err := d.sd.notify("STOPPING=1", status(why)); err != nil {
		d.log.Warn().Err(err).Msg("systemd notify")
	}
}

// portalAddrs are the bound portal addresses (the real port for port 0).
func (d *daemon) portalAddrs() []string {
	var out []string
	if d.tsrv != nil {
		for _, a := range d.tsrv.Addrs() {
			out = append(out, a.String())
		}
	}
	if len(out) == 0 {
		return d.portals
	}
	return out
}

// close stops everything that was started, in order: metrics listener,
// admin API, iSCSI server (sessions end), LUN manager (copiers stop,
// checkpoints saved), meta volume.
func (d *daemon) close() error {
	var errs []error
	if d.msrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		errs = append(errs, wrapErr("metrics listener", d.msrv.Shutdown(ctx)))
		cancel()
	}
	if d.asrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		errs = append(errs, wrapErr("admin api", d.asrv.Shutdown(ctx)))
		cancel()
	}
	if d.tsrv != nil && d.tsrvStarted {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		errs = append(errs, wrapErr("iSCSI server", d.tsrv.Shutdown(ctx)))
		cancel()
	}
	if d.mgr != nil {
		errs = append(errs, wrapErr("LUN manager", d.mgr.Close()))
	}
	if d.db != nil {
		errs = append(errs, wrapErr("meta volume", d.db.Close()))
	}
	errs = append(errs, wrapErr("data dir lock", d.lock.unlock()))
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error().Err(err).Msg("shutdown")
	} else {
		d.log.Info().Msg("lmtgt stopped")
	}
	return err
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("close %s: %w", what, err)
}

// makeDemo creates the demo LUN and target on a meta volume with no LUNs,
// through the same code path as the admin API. It reports whether it did.
func makeDemo(svc *api.Service) (bool, error) {
	luns, err := svc.LUNs()
	if err != nil {
		return false, err
	}
	if len(luns) > 0 {
		return false, nil
	}
	if _, err := svc.CreateLUN(wire.CreateLUN{Name: demoLUN, Size: demoSize, BlockSize: 512}); err != nil {
		return false, err
	}
	if _, err := svc.Target(demoTarget); err != nil {
		if _, err := svc.CreateTarget(demoTarget); err != nil {
			return false, err
		}
	}
	zero := uint64(0)
	if _, err := svc.Map(demoTarget, wire.MapLUN{LUN: demoLUN, Number: &zero}); err != nil {
		return false, err
	}
	if _, err := svc.Allow(demoTarget, wire.AllInitiators); err != nil {
		return false, err
	}
	return true, nil
}

func printDemo(w io.Writer, portal, admin string, created bool) {
	if created {
		fmt.Fprintf(w, "demo: created LUN %q (1 GiB) as LUN 0 of %s, open to every initiator\n", demoLUN, demoTarget)
	} else {
		fmt.Fprintln(w, "demo: the meta volume already has LUNs; nothing created")
	}
	fmt.Fprintf(w, "connect:\n  iscsi-ls -s iscsi://%s\n", portal)
	fmt.Fprintf(w, "  qemu-io -f raw -t none -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' iscsi://%s/%s/0\n", portal, demoTarget)
	fmt.Fprintf(w, "  LMTGT_ADMIN=%s lmtgt lun list\n", admin)
}

// Bounds of the default --max-write-buffer (1/8 of physical memory).
const (
	minDefaultWriteBuffer = 64 << 20
	maxDefaultWriteBuffer = 4 << 30
	// minWriteBuffer is the transport's largest command (16 MiB): a
	// smaller cap could never buffer one.
	minWriteBuffer = iscsi.DefaultMaxTransferLength
)

// maxWriteBuffer parses --max-write-buffer; empty picks the default, a
// share of physical memory (docs/design.md).
func maxWriteBuffer(s string) (int64, error) {
	if s == "" {
		return defaultWriteBuffer(physicalMemory()), nil
	}
	n, err := client.ParseSize(s)
	if err != nil {
		return 0, usageErr("--max-write-buffer: %v", err)
	}
	if n < minWriteBuffer {
		return 0, usageErr("--max-write-buffer %s: at least %s (one command of the largest size)", s, sizeStr(minWriteBuffer))
	}
	return n, nil
}

// defaultWriteBuffer is 1/8 of mem within [64 MiB, 4 GiB] (64 MiB when mem
// is unknown).
func defaultWriteBuffer(mem int64) int64 {
	return min(max(mem/8, minDefaultWriteBuffer), maxDefaultWriteBuffer)
}

// physicalMemory returns the machine's RAM in bytes, 0 if unknown.
func physicalMemory() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}

// maxIdlePoll bounds --idle-poll: polling longer than a millisecond would
// burn a processor for hosts that are not in a tight loop.
const maxIdlePoll = time.Millisecond

// idlePoll maps --idle-poll to target.Options.IdlePoll (0 there is the
// transport's default, negative is never).
func idlePoll(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
