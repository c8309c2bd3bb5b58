// Command duetd is the duet daemon: it pairs two people by token and
// relays their messages, over a line protocol on TCP (netcat, telnet) and
// JSON over WebSocket (the browser client it serves itself).
//
// Usage:
//
//	duetd [flags]              run the daemon
//	duetd check-config [flags] print the effective configuration and exit
//	duetd version              print the version and exit
//
// Wiring only: config -> logger -> core -> engine -> signals.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"

	"duet/config"
	"duet/engine"
	"duet/engine/auth"
	"duet/engine/hub"
	"duet/web"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "version" || args[0] == "check-config" || args[0] == "run") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "version" {
		fmt.Fprintln(stdout, "duetd", buildVersion())
		return 0
	}
	cfg, src, err := config.Load(args, os.LookupEnv)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintln(stdout, "usage: duetd [run|check-config|version] [flags]")
		fmt.Fprint(stdout, err.Error())
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "duetd:", err)
		return 2
	}
	if cmd == "check-config" {
		fmt.Fprint(stdout, cfg.Describe(src))
		return 0
	}

	level := zap.NewAtomicLevel()
	log, err := newLogger(cfg.Log, level, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "duetd:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	site, err := web.NewSite()
	if err != nil {
		log.Error("cannot build the web client", zap.Error(err))
		return 1
	}
	var accounts *auth.Accounts
	if cfg.Auth.Mode == "accounts" {
		if accounts, err = auth.Load(cfg.Auth.UsersFile); err != nil {
			log.Error("cannot load auth.users_file", zap.Error(err))
			return 2
		}
		log.Info("accounts loaded", zap.String("file", accounts.Path()), zap.Int("accounts", accounts.Len()))
	}
	core := hub.New(hub.Options{MaxText: cfg.Limits.MaxText})
	ops := newOperations(log, core)
	leaveCluster, err := joinCluster(cfg.Cluster, core, log, ops.metrics.Registry)
	if err != nil {
		log.Error("bad cluster configuration", zap.Error(err))
		return 2
	}
	defer leaveCluster()
	srv, err := engine.New(engine.Options{
		TCPListen:      cfg.TCP.Listen,
		WSListen:       cfg.WS.Listen,
		AllowedOrigins: cfg.WS.AllowedOrigins,
		Limits:         cfg.Limits,
		AuthMode:       cfg.Auth.Mode,
		Auth:           engine.AuthOptions{Accounts: accounts, Takeover: cfg.Auth.Takeover},
		Hub:            core,
		Site:           site,
		Logger:         log,
		TrustedProxies: cfg.TrustedNets(),
		Metrics:        ops.metrics,
	})
	if err != nil {
		log.Error("bad configuration", zap.Error(err))
		return 2
	}
	// Catch signals before the listeners open: a SIGHUP that arrives as
	// soon as the daemon says it is listening (systemctl reload right
	// after start) must reload, not kill it.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(signals)
	if err := srv.Start(); err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	log.Info("duetd listening",
		zap.Stringer("tcp", addrOrNone(srv.TCPAddr())),
		zap.Stringer("ws", addrOrNone(srv.WSAddr())),
		zap.String("version", buildVersion()))
	if err := ops.started(cfg, srv); err != nil {
		log.Error("cannot start", zap.Error(err))
		_ = srv.Shutdown(context.Background())
		return 1
	}
	defer ops.stop()

	for {
		select {
		case err := <-srv.Done():
			log.Error("engine stopped", zap.Error(err))
			return 1
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				ops.reloading()
				cfg, src = reload(log, level, srv, accounts, cfg, src)
				ops.reloaded()
				continue
			}
			log.Info("shutting down", zap.String("signal", sig.String()), zap.Duration("deadline", cfg.ShutdownTimeout))
			ops.stopping()
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			err := srv.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Warn("shutdown", zap.Error(err))
			}
			log.Info("stopped")
			return 0
		}
	}
}

// reload re-reads the configuration on SIGHUP. What can change without
// dropping a connection changes; a bad file keeps the old configuration.
func reload(log *zap.Logger, level zap.AtomicLevel, srv *engine.Server, accounts *auth.Accounts, old *config.Config, src *config.Sources) (*config.Config, *config.Sources) {
	cfg, newSrc, err := src.Reload()
	if err != nil {
		log.Error("reload failed; keeping the old configuration", zap.Error(err))
		return old, src
	}
	if lvl, err := zapcore.ParseLevel(cfg.Log.Level); err == nil {
		level.SetLevel(lvl)
	}
	srv.SetLimits(cfg.Limits)
	srv.SetAllowedOrigins(cfg.WS.AllowedOrigins)
	srv.SetTakeover(cfg.Auth.Takeover)
	if accounts != nil {
		// The users file is re-read even when the config file did not
		// change: adding an account is the common reason for a reload.
		if err := accounts.Reload(); err != nil {
			log.Error("users file reload failed; keeping the old accounts", zap.Error(err))
		} else {
			log.Info("accounts reloaded", zap.Int("accounts", accounts.Len()))
		}
	}
	if cfg.Auth.Mode != old.Auth.Mode || cfg.Auth.UsersFile != old.Auth.UsersFile {
		log.Warn("auth.mode and auth.users_file change only on restart")
	}
	srv.SetTrustedProxies(cfg.TrustedNets())
	if cfg.TCP.Listen != old.TCP.Listen || cfg.WS.Listen != old.WS.Listen || cfg.Admin.Listen != old.Admin.Listen {
		log.Warn("listen addresses change only on restart")
	}
	log.Info("configuration reloaded", zap.String("log_level", cfg.Log.Level))
	return cfg, newSrc
}

// newLogger builds the zap logger: JSON for journald and files, console
// on a terminal, as log.format says.
func newLogger(c config.Log, level zap.AtomicLevel, out io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, &config.Error{Key: "log.level", Msg: err.Error()}
	}
	level.SetLevel(lvl)
	format := c.Format
	if format == "auto" || format == "" {
		format = "json"
		if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
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
