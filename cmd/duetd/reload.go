package main

import (
	"net"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"duet/config"
	"duet/engine/cluster"
)

// restartOnly are the keys a reload cannot apply: they shaped something
// built once at start (a socket, the logger's encoder, the accounts
// table's file, the cluster link). A name ending in "." stands for every
// key of that section. The listen addresses are restart-only too but are
// compared with the sockets actually bound instead (see listensOn).
var restartOnly = []string{
	"log.format",
	"limits.tcp_keepalive", // set on the listening sockets, which connections inherit
	"auth.mode",
	"auth.users_file",
	"ws.hsts_max_age",   // the web client's headers are built once at start
	"resume.state_file", // checked writable, and read, at start
	"cluster.",
}

func isRestartOnly(key string) bool {
	for _, k := range restartOnly {
		if key == k || strings.HasSuffix(k, ".") && strings.HasPrefix(key, k) {
			return true
		}
	}
	return false
}

// reloader applies the configuration again on SIGHUP.
type reloader struct {
	log   *zap.Logger
	level zap.AtomicLevel
	d     *built
	node  *cluster.Node // nil on a single node

	started *config.Config  // in effect since start, computed values included
	cfg     *config.Config  // the last configuration loaded
	src     *config.Sources // where it came from; Reload reads the same places

	warnedConns int // the limits.max_conns last warned of as more than the descriptor limit allows (warnConnsRoom)
}

// reload re-reads the configuration. What can change without dropping a
// connection changes at once; a key that changes only on restart is
// warned about, by name, for as long as the value loaded differs from the
// one in effect; a bad file keeps the old configuration. The log line
// that ends it lists every key that changed since the last load.
func (r *reloader) reload() {
	cfg, src, err := r.src.Reload()
	if err != nil {
		r.log.Error("reload failed; keeping the old configuration", zap.Error(err))
		return
	}
	computeValues(cfg, src, r.started)
	for _, w := range src.Warnings() {
		r.log.Warn(w.Error(), zap.String("key", w.Key))
	}
	// A level that says more applies at once; one that says less comes
	// last (below), so that a reload setting log.level to warn still
	// says it was done, and what it changed.
	lvl, lvlErr := zapcore.ParseLevel(cfg.Log.Level)
	if lvlErr == nil && lvl < r.level.Level() {
		r.level.SetLevel(lvl)
	}
	srv := r.d.srv
	srv.SetLimits(cfg.Limits)
	r.warnedConns = warnConnsRoom(r.log, r.d, cfg.Limits.MaxConns, r.warnedConns)
	srv.SetResume(cfg.Resume)
	srv.SetAllowedOrigins(cfg.WS.AllowedOrigins)
	srv.SetTakeover(cfg.Auth.Takeover)
	srv.SetTrustedProxies(cfg.TrustedNets())
	if accounts := r.d.accounts; accounts != nil {
		// The users file is re-read even when the config file did not
		// change: adding an account is the common reason for a reload.
		if err := accounts.Reload(); err != nil {
			r.log.Error("users file reload failed; keeping the old accounts", zap.String("key", "auth.users_file"), zap.Error(err))
		} else {
			r.log.Info("accounts reloaded", zap.Int("accounts", accounts.Len()))
			warnNoAccounts(r.log, accounts.Path(), accounts.Len())
		}
	}

	for _, l := range []struct {
		key, configured string
		bound           net.Addr
	}{
		{"tcp.listen", cfg.TCP.Listen, srv.TCPAddr()},
		{"ws.listen", cfg.WS.Listen, srv.WSAddr()},
		{"admin.listen", cfg.Admin.Listen, r.d.ops.adminAddr()},
	} {
		if !listensOn(l.configured, l.bound) {
			r.log.Warn(l.key+" changes only on restart", zap.String("key", l.key),
				zap.String("configured", l.configured), zap.Stringer("listening", addrOrNone(l.bound)))
		}
	}
	inEffect := *cfg
	for _, key := range config.Changed(r.started, cfg) {
		if isRestartOnly(key) {
			r.log.Warn(key+" changes only on restart", zap.String("key", key))
			inEffect.Keep(r.started, key)
		}
	}
	if r.node != nil {
		// The other nodes compare the values in effect here.
		r.node.SetSettings(inEffect.SettingsFingerprint())
	}

	changed := config.Changed(r.cfg, cfg)
	r.cfg, r.src = cfg, src
	r.log.Info("configuration reloaded", zap.Strings("changed", changed))
	if lvlErr == nil {
		r.level.SetLevel(lvl)
	}
}

// listensOn reports whether a listener configured as configured is the
// socket bound at bound (nil: none). Port 0 matches any port, and an
// empty or unspecified host matches a socket bound to every interface;
// a host name is resolved as it was when the socket was bound.
func listensOn(configured string, bound net.Addr) bool {
	if configured == "" || bound == nil {
		return configured == "" && bound == nil
	}
	b, ok := bound.(*net.TCPAddr)
	if !ok {
		return false
	}
	c, err := net.ResolveTCPAddr("tcp", configured)
	if err != nil {
		return false
	}
	if c.Port != 0 && c.Port != b.Port {
		return false
	}
	if c.IP == nil || c.IP.IsUnspecified() {
		return b.IP == nil || b.IP.IsUnspecified()
	}
	return c.IP.Equal(b.IP)
}

// warnNoAccounts says that nobody can log in, when the users file has no
// entry: an empty file, or htpasswd -D of its last user, is valid, and
// would otherwise show only as every login refused.
func warnNoAccounts(log *zap.Logger, path string, n int) {
	if n == 0 {
		log.Warn("the users file has no accounts: nobody can log in until one is added (htpasswd -B FILE NAME, then SIGHUP)",
			zap.String("file", path), zap.String("key", "auth.users_file"))
	}
}
