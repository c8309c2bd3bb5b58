// Command duetd is the duet daemon: it pairs two people by token and
// relays their messages, over a line protocol on TCP (netcat, telnet) and
// JSON over WebSocket (the browser client it serves itself).
//
// Usage:
//
//	duetd [run] [flags]        run the daemon
//	duetd check-config [flags] check the configuration as a start would, print it and exit
//	duetd version              print the version and exit (also --version)
//	duetd help                 print the usage and exit (also -h, --help)
//
// Wiring only: config -> logger -> core -> engine -> signals.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"

	"duet/config"
	"duet/engine"
	"duet/engine/auth"
	"duet/engine/cluster"
	"duet/engine/hub"
	"duet/web"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses. systemd's Restart=on-failure restarts on either; the
// difference tells an operator whether to fix the file or the machine.
const (
	exitOK      = 0
	exitRuntime = 1 // the daemon could not run: a listen address in use, say
	exitConfig  = 2 // the configuration or the command line is wrong
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

var commands = []string{"run", "check-config", "version", "help"}

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd, args, err := command(args)
	if err != nil {
		printError(stderr, err)
		fmt.Fprintln(stderr, "Run 'duetd help' for usage.")
		return exitConfig
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "duetd", buildVersion())
		return exitOK
	case "help":
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	cfg, src, err := config.Load(args, os.Environ())
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	if err != nil {
		printError(stderr, err)
		if ue, ok := errors.AsType[*config.UsageError](err); ok {
			if slices.Contains(commands, ue.Arg) {
				// duetd --config X check-config: a habit from tools
				// whose flags go anywhere.
				fmt.Fprintf(stderr, "The command goes before the flags: duetd %s [flags].\n", ue.Arg)
			}
			fmt.Fprintln(stderr, "Run 'duetd help' for usage.")
		}
		return exitConfig
	}
	if cmd == "check-config" {
		return checkConfig(cfg, src, stdout, stderr)
	}

	level := zap.NewAtomicLevel()
	log, err := newLogger(cfg.Log, level, stderr)
	if err != nil {
		printError(stderr, err)
		return exitConfig
	}
	defer func() { _ = log.Sync() }()
	for _, w := range src.Warnings() {
		log.Warn(w.Error(), zap.String("key", w.Key))
	}

	site, err := web.NewSite(web.Options{HSTSMaxAge: cfg.WS.HSTSMaxAge})
	if err != nil {
		log.Error("cannot build the web client", zap.Error(err))
		return exitRuntime
	}
	d, err := build(cfg, src, log, site)
	if err != nil {
		log.Error("bad configuration", zap.Error(err))
		return exitConfig
	}
	warnedConns := warnConnsRoom(log, d, cfg.Limits.MaxConns, 0)
	if d.accounts != nil {
		log.Info("accounts loaded", zap.String("file", d.accounts.Path()), zap.Int("accounts", d.accounts.Len()))
		warnNoAccounts(log, d.accounts.Path(), d.accounts.Len())
	}
	node, leaveCluster, err := joinCluster(cfg.Cluster, cfg.SettingsFingerprint(), d.core, log, d.ops.metrics.Registry)
	if err != nil {
		log.Error("bad cluster configuration", zap.Error(err))
		return exitConfig
	}
	defer leaveCluster()
	// Catch signals before the listeners open: a SIGHUP that arrives as
	// soon as the daemon says it is listening (systemctl reload right
	// after start) must reload, not kill it; and before the state file
	// is taken up, which a SIGTERM must not interrupt.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(signals)

	// A single node with a state file takes up the sessions the process
	// before it kept, before anyone can log in under their names.
	stateFile := cfg.Resume.StateFile
	tookState := false
	if stateFile != "" {
		if err := checkStateDir(stateFile); err != nil {
			cannotStart(log, err)
			return exitConfig
		}
		removeStaleState(stateFile)
		tookState = restoreState(stateFile, d.core, d.accounts, log)
	}

	// Every listener is bound before any is said to listen, so that a
	// start that fails (an address in use) never logs that it listens:
	// the admin listener first, as it is the cheapest to let go again.
	if err := d.ops.listen(cfg.Admin.Listen); err != nil {
		cannotStart(log, err)
		return exitRuntime
	}
	defer d.ops.stop()
	if err := d.srv.Start(); err != nil {
		cannotStart(log, err)
		return exitRuntime
	}
	if tookState {
		doneWithState(stateFile, log)
	}
	log.Info("duetd listening",
		zap.Stringer("tcp", addrOrNone(d.srv.TCPAddr())),
		zap.Stringer("ws", addrOrNone(d.srv.WSAddr())),
		zap.String("version", buildVersion()))
	// A node of a cluster drains when it stops, or when told to: its
	// clients resume on the other nodes. A single node hands its
	// sessions to the next process through resume.state_file, or, with
	// none, ends them when it stops.
	var drain *drainer
	if node != nil {
		drain = newDrainer(d.srv, node, d.ops, log, cfg)
		if d.ops.admin != nil {
			d.ops.admin.SetDrain(drain.run)
			d.ops.admin.SetReadyCheck(linkedToRedis(node))
		}
	}
	d.ops.started(d.srv)
	memCtx, stopMem := context.WithCancel(context.Background())
	defer stopMem()
	go newMemReturn(d.srv.Conns, d.srv.TakeConnsPeak).run(memCtx, log)

	r := &reloader{log: log, level: level, d: d, node: node, started: cfg, cfg: cfg, src: src, warnedConns: warnedConns}
	// handOn hands the sessions to whatever takes them up next, as a stop
	// does: a node of a cluster drains, parking them for the other
	// nodes; a single node with a state file writes them there for the
	// next process. It reports whether it did; if not, the shutdown after
	// it ends every session, telling each user.
	handOn := func(ctx context.Context, cfg *config.Config) bool {
		if drain != nil {
			// The drain is waited for whole, parks included, even past
			// the deadline: the shutdown would end the sessions being
			// parked.
			if _, err := drain.run(context.Background()); err != nil {
				log.Warn("cannot drain: not linked to Redis; shutting down instead, which ends every session", zap.Error(err))
				return false
			}
			return true
		}
		if stateFile == "" {
			return false
		}
		told, kept, err := saveState(ctx, stateFile, d.srv, d.core, cfg.DrainSpread(), r.started.Auth.Mode)
		if err != nil {
			log.Error("cannot keep the sessions for the next process; they are lost", zap.Error(err))
			return false
		}
		log.Info("kept the sessions for the next process", zap.String("file", stateFile),
			zap.Int("sessions", kept), zap.Int("connections", told.Told))
		return true
	}
	// An engine that stops on an error (a listener's accept failing for
	// want of descriptors) hands the sessions on as a stop does, while
	// its loops still run, and the daemon then exits 1: systemd's
	// Restart=on-failure starts the next process, which takes them up.
	// The hook runs on gnet's goroutine, so it reads the configuration
	// a reload may replace through live.
	var live atomic.Pointer[config.Config]
	live.Store(cfg)
	d.srv.OnFailure(func() bool {
		cfg := live.Load()
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		return handOn(ctx, cfg)
	})
	for {
		select {
		case err := <-d.srv.Done():
			log.Error("engine stopped", zap.Error(err))
			return exitRuntime
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				d.ops.reloading()
				r.reload()
				live.Store(r.cfg)
				if drain != nil {
					drain.cfg.Store(r.cfg)
				}
				d.ops.reloaded()
				continue
			}
			timeout := r.cfg.ShutdownTimeout
			log.Info("shutting down", zap.String("signal", sig.String()), zap.Duration("deadline", timeout))
			d.ops.stopping()
			// The drain and the shutdown after it share one deadline,
			// shutdown_timeout from now: the unit's TimeoutStopSec counts
			// on it, and a reader that stopped reading could otherwise
			// hold the drain for the whole of it, then the shutdown for
			// as long again. A single node's writing of its sessions is
			// within it too; a node of a cluster's parks after its drain
			// have their own short bound (parkTimeout), so that a drain
			// that used the whole deadline still hands its sessions on.
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			handOn(ctx, r.cfg)
			err := d.srv.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Warn("shutdown", zap.Error(err))
			}
			log.Info("stopped")
			return exitOK
		}
	}
}

// cannotStart logs a start that could not bind. An address in use says
// how to choose another: on a developer's machine :8080 often is taken,
// and the key alone does not say that a flag or a variable will do.
func cannotStart(log *zap.Logger, err error) {
	fields := []zap.Field{zap.Error(err)}
	if le, ok := errors.AsType[*engine.ListenError](err); ok && errors.Is(err, syscall.EADDRINUSE) {
		fields = append(fields, zap.String("choose_another_with", config.WaysToSet(le.Key)))
	}
	log.Error("cannot start", fields...)
}

// command splits the subcommand off args. --version anywhere before "--"
// asks for the version, as it does of most daemons; no subcommand means
// run.
func command(args []string) (cmd string, rest []string, err error) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--version" {
			return "version", nil, nil
		}
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "run", args, nil
	}
	if !slices.Contains(commands, args[0]) {
		return "", nil, fmt.Errorf("unknown command %q", args[0])
	}
	return args[0], args[1:], nil
}

// usage is the text of duetd help, -h and --help.
func usage() string {
	return `duetd pairs two people by token and relays their chat, over a line protocol
(netcat, telnet) and WebSocket (the browser client it serves).

Usage:
  duetd [run] [flags]          run the daemon
  duetd check-config [flags]   check the configuration as a start would (users
                               file included), print every effective value and
                               where it came from, and exit
  duetd version                print the version and exit (also --version)
  duetd help                   print this help and exit (also -h, --help)

Exit status: 0 on success or a clean stop; 1 when the daemon cannot run
(a listen address already in use, say); 2 for a bad configuration or
command line.

` + config.Usage() + `
Documentation: /usr/local/share/doc/duetd/OPERATIONS.md, or docs/ in the source.
`
}

// printError writes err to stderr, each of its lines (each problem of
// a configuration with several: config reports them all, joined) after
// the program's name, as a line of a log that holds other programs'
// lines must be.
func printError(stderr io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(stderr, "duetd:", line)
	}
}

// checkConfig is duetd check-config: it builds everything a start builds
// short of binding a socket or reaching Redis, with the same code, so it
// refuses what a start would refuse; then it prints every effective value.
func checkConfig(cfg *config.Config, src *config.Sources, stdout, stderr io.Writer) int {
	for _, w := range src.Warnings() {
		fmt.Fprintln(stderr, "duetd: warning:", w)
	}
	d, err := build(cfg, src, zap.NewNop(), nil)
	if err == nil && cfg.Resume.StateFile != "" {
		err = checkStateDir(cfg.Resume.StateFile)
	}
	if err != nil {
		printError(stderr, err)
		return exitConfig
	}
	if d.accounts != nil {
		note := fmt.Sprintf("%d accounts", d.accounts.Len())
		if d.accounts.Len() == 1 {
			note = "1 account"
		}
		src.Note("auth.users_file", note)
	}
	if note := connsRoomNote(d, cfg.Limits.MaxConns); note != "" {
		src.Note("limits.max_conns", note)
	}
	fmt.Fprint(stdout, cfg.Describe(src))
	if cfg.Cluster.Redis != "" {
		// What the nodes compare: a node whose fingerprint is not this
		// one's says so in its log, and in its metrics.
		fmt.Fprintf(stdout, "# shared settings fingerprint: %s (every node of the cluster should print the same)\n", cfg.SettingsFingerprint())
	}
	return exitOK
}

// built is what a start builds before it binds a socket or reaches the
// network. check-config builds it too and throws it away.
type built struct {
	accounts *auth.Accounts // nil in open mode
	core     *hub.Hub
	ops      *operations
	srv      *engine.Server
	files    engine.Descriptors // the engine's part of the descriptor limit
}

// build checks and builds everything that depends on the configuration:
// the computed values, the users file, the pairing core and the engine,
// which serves site (nil: no pages). Its errors are configuration errors.
// It fills in cfg's computed values, recording them in src.
func build(cfg *config.Config, src *config.Sources, log *zap.Logger, site *web.Site) (*built, error) {
	computeValues(cfg, src, nil)
	d := &built{}
	var err error
	if cfg.Auth.Mode == "accounts" {
		if d.accounts, err = auth.Load(cfg.Auth.UsersFile); err != nil {
			return nil, usersFileError(cfg.Auth.UsersFile, err)
		}
	}
	d.core = hub.New(engine.HubOptions(cfg.Limits, cfg.Resume))
	d.ops = newOperations(log, d.core)
	d.files = descriptors(cfg)
	d.srv, err = engine.New(engine.Options{
		TCPListen:      cfg.TCP.Listen,
		WSListen:       cfg.WS.Listen,
		AllowedOrigins: cfg.WS.AllowedOrigins,
		Limits:         cfg.Limits,
		Resume:         cfg.Resume,
		AuthMode:       cfg.Auth.Mode,
		Auth:           engine.AuthOptions{Accounts: d.accounts, Takeover: cfg.Auth.Takeover},
		Hub:            d.core,
		Site:           site,
		Logger:         log,
		TrustedProxies: cfg.TrustedNets(),
		Metrics:        d.ops.metrics,
		Descriptors:    d.files,
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// usersFileError names auth.users_file in an error reading it and, when
// the file is missing, named by a relative path or kept from the service
// by its mode, says what to do: the first start in accounts mode meets
// one of them unless docs/AUTH.md was followed to the letter.
func usersFileError(path string, err error) error {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		// Each bad line of the file (auth.Parse) is a line of the
		// output of its own, and each names the key, as the first would.
		var each []error
		for _, e := range joined.Unwrap() {
			each = append(each, fmt.Errorf("auth.users_file: %w", e))
		}
		return errors.Join(each...)
	}
	hint := config.FileHint(path, err)
	if hint == "" && errors.Is(err, fs.ErrNotExist) {
		hint = fmt.Sprintf("create it with its first user: htpasswd -B -c %s NAME (docs/AUTH.md)", path)
	}
	if hint != "" {
		err = fmt.Errorf("%w; %s", err, hint)
	}
	return fmt.Errorf("auth.users_file: %w", err)
}

// computeValues fills in the values that are worked out rather than set.
// An empty cluster.node_id in cluster mode becomes the hostname and a
// random suffix: new at each start, so a restarted node is never taken
// for its former self, but kept across reloads (running is the
// configuration in effect, nil at start).
func computeValues(cfg *config.Config, src *config.Sources, running *config.Config) {
	if cfg.Cluster.Redis == "" || cfg.Cluster.NodeID != "" {
		return
	}
	if running != nil && running.Cluster.NodeID != "" {
		cfg.Cluster.NodeID = running.Cluster.NodeID
	} else {
		cfg.Cluster.NodeID = cluster.DefaultNodeID()
	}
	src.Computed("cluster.node_id", "the hostname and a random suffix, new at each start")
}

// newLogger builds the zap logger: JSON for journald and files, console
// on a terminal, as log.format says.
func newLogger(c config.Log, level zap.AtomicLevel, out io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, &config.Error{Key: "log.level", Msg: err.Error()}
	}
	level.SetLevel(lvl)
	f, isFile := out.(*os.File)
	onTerminal := isFile && term.IsTerminal(int(f.Fd()))
	format := c.Format
	if format == "auto" || format == "" {
		format = "json"
		if onTerminal {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	// Durations as the configuration writes them ("10s"), not zap's bare
	// seconds: "deadline":10 leaves the reader to guess the unit.
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if format == "console" {
		// Colour only for a terminal: console chosen for a pipe or a
		// file, escape codes would be bytes in every line read there.
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		if onTerminal {
			encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(out), level)
	return zap.New(core), nil
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

type noAddr struct{}

func (noAddr) String() string { return "disabled" }

func addrOrNone(a fmt.Stringer) fmt.Stringer {
	if a == nil || a.String() == "" {
		return noAddr{}
	}
	return a
}
