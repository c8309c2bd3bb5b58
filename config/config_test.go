package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// env turns vars into an environment as os.Environ returns it.
func env(vars map[string]string) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		out = append(out, name+"="+vars[name])
	}
	return out
}

var noEnv = env(nil)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "duetd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// errorKeys returns the Key of every *Error in err, in order.
func errorKeys(err error) []string {
	var list []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		list = joined.Unwrap()
	} else {
		list = []error{err}
	}
	var out []string
	for _, e := range list {
		var ce *Error
		if errors.As(e, &ce) {
			out = append(out, ce.Key)
		}
	}
	return out
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	cfg, src, err := Load(nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*cfg, d) {
		t.Errorf("Load with nothing set:\n got %+v\nwant %+v", *cfg, d)
	}
	for _, k := range Keys() {
		if got := src.Of(k); got != SourceDefault {
			t.Errorf("source of %s = %q, want default", k, got)
		}
	}
	if src.File != "" {
		t.Errorf("File = %q, want none", src.File)
	}
	// Defaults hands out fresh slices: callers may not corrupt each other.
	d.WS.AllowedOrigins = append(d.WS.AllowedOrigins, "x")
	if len(Defaults().WS.AllowedOrigins) != 0 {
		t.Error("Defaults shares its slices")
	}
}

// The shipped example must say exactly what the defaults say, and must
// mention every key. It departs from them in one value: it is installed
// for the systemd unit, which makes /var/lib/duetd, and keeps a single
// node's sessions there across a restart (resume.state_file), in the
// file and not the unit's environment so that check-config sees it. The
// default stays empty: run from a shell, duetd has no such directory.
func TestExampleFileIsDefaults(t *testing.T) {
	path := filepath.Join("..", "scripts", "duetd.yaml")
	cfg, src, err := Load([]string{"--config", path}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Resume.StateFile = "/var/lib/duetd/sessions"
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("scripts/duetd.yaml differs from Defaults:\n got %+v\nwant %+v", *cfg, want)
	}
	for _, k := range Keys() {
		if got := src.Of(k); got != SourceFile {
			t.Errorf("scripts/duetd.yaml does not set %s (source %q)", k, got)
		}
	}
}

func TestKeysAndEnvNames(t *testing.T) {
	ks := Keys()
	if len(ks) != 40 {
		t.Errorf("got %d keys, want 40: %v", len(ks), ks)
	}
	for _, want := range []string{"tcp.listen", "limits.max_conns_per_ip", "shutdown_timeout", "shutdown.drain_period", "ws.allowed_origins", "cluster.node_id"} {
		if !slices.Contains(ks, want) {
			t.Errorf("missing key %s", want)
		}
	}
	for key, want := range map[string]string{
		"tcp.listen":            "DUETD_TCP_LISTEN",
		"limits.max_line":       "DUETD_LIMITS_MAX_LINE",
		"ws.allowed_origins":    "DUETD_WS_ALLOWED_ORIGINS",
		"shutdown_timeout":      "DUETD_SHUTDOWN_TIMEOUT",
		"shutdown.drain_period": "DUETD_SHUTDOWN_DRAIN_PERIOD",
	} {
		if got := EnvName(key); got != want {
			t.Errorf("EnvName(%s) = %s, want %s", key, got, want)
		}
	}
}

func TestPrecedence(t *testing.T) {
	const file = `
tcp:
  listen: ":7001"
log:
  level: debug
limits:
  max_line: 20000
`
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		args    []string
		get     func(*Config) any
		key     string
		want    any
		wantSrc string
	}{
		{
			name: "default", key: "tcp.listen",
			get:  func(c *Config) any { return c.TCP.Listen },
			want: ":7070", wantSrc: SourceDefault,
		},
		{
			name: "file over default", file: file, key: "tcp.listen",
			get:  func(c *Config) any { return c.TCP.Listen },
			want: ":7001", wantSrc: SourceFile,
		},
		{
			name: "env over file", file: file, key: "tcp.listen",
			env:  map[string]string{"DUETD_TCP_LISTEN": ":7002"},
			get:  func(c *Config) any { return c.TCP.Listen },
			want: ":7002", wantSrc: SourceEnv,
		},
		{
			name: "flag over env", file: file, key: "tcp.listen",
			env:  map[string]string{"DUETD_TCP_LISTEN": ":7002"},
			args: []string{"--tcp-listen", ":7003"},
			get:  func(c *Config) any { return c.TCP.Listen },
			want: ":7003", wantSrc: SourceFlag,
		},
		{
			name: "flag with equals sign", key: "log.format",
			args: []string{"--log-format=json"},
			get:  func(c *Config) any { return c.Log.Format },
			want: "json", wantSrc: SourceFlag,
		},
		{
			name: "flag default does not shadow file", file: file, key: "log.level",
			args: []string{"--log-format", "console"},
			get:  func(c *Config) any { return c.Log.Level },
			want: "debug", wantSrc: SourceFile,
		},
		{
			name: "env over file, number", file: file, key: "limits.max_line",
			env:  map[string]string{"DUETD_LIMITS_MAX_LINE": "32768"},
			get:  func(c *Config) any { return c.Limits.MaxLine },
			want: 32768, wantSrc: SourceEnv,
		},
		{
			name: "empty env disables a listener", key: "tcp.listen",
			env:  map[string]string{"DUETD_TCP_LISTEN": ""},
			get:  func(c *Config) any { return c.TCP.Listen },
			want: "", wantSrc: SourceEnv,
		},
		{
			name: "empty flag disables a listener", file: file, key: "tcp.listen",
			args: []string{"--tcp-listen="},
			get:  func(c *Config) any { return c.TCP.Listen },
			want: "", wantSrc: SourceFlag,
		},
		{
			name: "env list", key: "ws.allowed_origins",
			env:  map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "https://a.example, https://b.example,"},
			get:  func(c *Config) any { return c.WS.AllowedOrigins },
			want: []string{"https://a.example", "https://b.example"}, wantSrc: SourceEnv,
		},
		{
			name: "empty env list", key: "trusted_proxies",
			file: "trusted_proxies: [10.0.0.0/8]\n",
			env:  map[string]string{"DUETD_TRUSTED_PROXIES": ""},
			get:  func(c *Config) any { return c.TrustedProxies },
			want: []string{}, wantSrc: SourceEnv,
		},
		{
			name: "file list", key: "trusted_proxies",
			file: "trusted_proxies:\n  - 127.0.0.1\n  - 10.0.0.0/8\n",
			get:  func(c *Config) any { return c.TrustedProxies },
			want: []string{"127.0.0.1", "10.0.0.0/8"}, wantSrc: SourceFile,
		},
		{
			name: "file duration", key: "limits.idle_timeout",
			file: "limits:\n  idle_timeout: 2m30s\n",
			get:  func(c *Config) any { return c.Limits.IdleTimeout },
			want: 150 * time.Second, wantSrc: SourceFile,
		},
		{
			name: "env duration", key: "shutdown_timeout",
			env:  map[string]string{"DUETD_SHUTDOWN_TIMEOUT": "1500ms"},
			get:  func(c *Config) any { return c.ShutdownTimeout },
			want: 1500 * time.Millisecond, wantSrc: SourceEnv,
		},
		{
			name: "env float", key: "limits.message_rate",
			env:  map[string]string{"DUETD_LIMITS_MESSAGE_RATE": "12.5"},
			get:  func(c *Config) any { return c.Limits.MessageRate },
			want: 12.5, wantSrc: SourceEnv,
		},
		{
			name: "env bool", key: "auth.takeover",
			env:  map[string]string{"DUETD_AUTH_TAKEOVER": "true"},
			get:  func(c *Config) any { return c.Auth.Takeover },
			want: true, wantSrc: SourceEnv,
		},
		{
			name: "yaml empty string value", key: "ws.listen",
			file: "ws:\n  listen:\n",
			get:  func(c *Config) any { return c.WS.Listen },
			want: "", wantSrc: SourceFile,
		},
		{
			name: "yaml section with everything commented out", key: "tcp.listen",
			file: "tcp:\n  # listen: \":1\"\n",
			get:  func(c *Config) any { return c.TCP.Listen },
			want: ":7070", wantSrc: SourceDefault,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeConfig(t, tt.file)}, args...)
			}
			cfg, src, err := Load(args, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.key, got, tt.want)
			}
			if got := src.Of(tt.key); got != tt.wantSrc {
				t.Errorf("source of %s = %q, want %q", tt.key, got, tt.wantSrc)
			}
		})
	}
}

// Everything not set by a layer keeps the value and source of the layer
// below, key by key rather than section by section.
func TestLayersMergePerKey(t *testing.T) {
	path := writeConfig(t, "limits:\n  max_line: 20000\n  max_frame: 140000\n")
	cfg, src, err := Load([]string{"--config", path, "--admin-listen", "127.0.0.1:9999"},
		env(map[string]string{"DUETD_LIMITS_MAX_FRAME": "150000", "DUETD_LOG_LEVEL": "warn"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Limits.MaxLine = 20000
	want.Limits.MaxFrame = 150000
	want.Log.Level = "warn"
	want.Admin.Listen = "127.0.0.1:9999"
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got %+v\nwant %+v", *cfg, want)
	}
	wantSrc := map[string]string{
		"limits.max_line":  SourceFile,
		"limits.max_frame": SourceEnv,
		"limits.max_text":  SourceDefault,
		"log.level":        SourceEnv,
		"log.format":       SourceDefault,
		"admin.listen":     SourceFlag,
		"tcp.listen":       SourceDefault,
	}
	for k, w := range wantSrc {
		if got := src.Of(k); got != w {
			t.Errorf("source of %s = %q, want %q", k, got, w)
		}
	}
	if src.File != path {
		t.Errorf("File = %q, want %q", src.File, path)
	}
}

func TestConfigFileFromEnv(t *testing.T) {
	fromEnv := writeConfig(t, "log:\n  level: warn\n")
	fromFlag := writeConfig(t, "log:\n  level: error\n")

	cfg, src, err := Load(nil, env(map[string]string{"DUETD_CONFIG": fromEnv}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "warn" || src.File != fromEnv {
		t.Errorf("DUETD_CONFIG: level %q from %q", cfg.Log.Level, src.File)
	}

	cfg, src, err = Load([]string{"--config", fromFlag}, env(map[string]string{"DUETD_CONFIG": fromEnv}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "error" || src.File != fromFlag {
		t.Errorf("--config over DUETD_CONFIG: level %q from %q", cfg.Log.Level, src.File)
	}

	// --config= with nothing reads no file, whatever DUETD_CONFIG says.
	cfg, src, err = Load([]string{"--config="}, env(map[string]string{"DUETD_CONFIG": fromEnv}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "info" || src.File != "" {
		t.Errorf("--config=: level %q from %q", cfg.Log.Level, src.File)
	}
}

// Every validation error is an *Error naming the key to fix, and only
// that key.
func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		key  string
	}{
		{"tcp listen without port", map[string]string{"DUETD_TCP_LISTEN": "7070"}, "tcp.listen"},
		{"ws listen port too big", map[string]string{"DUETD_WS_LISTEN": ":65536"}, "ws.listen"},
		{"admin listen named port", map[string]string{"DUETD_ADMIN_LISTEN": "localhost:http"}, "admin.listen"},
		{"admin listen empty port", map[string]string{"DUETD_ADMIN_LISTEN": "localhost:"}, "admin.listen"},
		{"two listeners on one address", map[string]string{"DUETD_WS_LISTEN": ":7070"}, "ws.listen"},
		{"two listeners on one address, by name", map[string]string{"DUETD_TCP_LISTEN": "127.0.0.1:17070", "DUETD_WS_LISTEN": "localhost:17070"}, "ws.listen"},
		{"two listeners on one address, by IPv6 name", map[string]string{"DUETD_TCP_LISTEN": "[::1]:17070", "DUETD_WS_LISTEN": "LocalHost:17070"}, "ws.listen"},
		{"every interface, written two ways", map[string]string{"DUETD_TCP_LISTEN": "0.0.0.0:17070", "DUETD_WS_LISTEN": ":17070"}, "ws.listen"},
		{"every interface and loopback", map[string]string{"DUETD_TCP_LISTEN": ":9090"}, "admin.listen"},
		{"every IPv6 interface and an address", map[string]string{"DUETD_TCP_LISTEN": "[::]:17070", "DUETD_WS_LISTEN": "192.0.2.7:17070"}, "ws.listen"},
		{"all listeners off", map[string]string{"DUETD_TCP_LISTEN": "", "DUETD_WS_LISTEN": "", "DUETD_ADMIN_LISTEN": ""}, "tcp.listen"},
		{"user listeners off, admin on", map[string]string{"DUETD_TCP_LISTEN": "", "DUETD_WS_LISTEN": ""}, "tcp.listen"},
		{"log level", map[string]string{"DUETD_LOG_LEVEL": "verbose"}, "log.level"},
		{"log format", map[string]string{"DUETD_LOG_FORMAT": "text"}, "log.format"},
		{"shutdown timeout zero", map[string]string{"DUETD_SHUTDOWN_TIMEOUT": "0s"}, "shutdown_timeout"},
		{"drain period negative", map[string]string{"DUETD_SHUTDOWN_DRAIN_PERIOD": "-1s"}, "shutdown.drain_period"},
		{"hsts negative", map[string]string{"DUETD_WS_HSTS_MAX_AGE": "-1s"}, "ws.hsts_max_age"},
		{"hsts part of a second", map[string]string{"DUETD_WS_HSTS_MAX_AGE": "1500ms"}, "ws.hsts_max_age"},
		{"origin with a path", map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "https://chat.example.com/"}, "ws.allowed_origins"},
		{"origin with the default port", map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "https://chat.example.com:443"}, "ws.allowed_origins"},
		{"origin without a scheme", map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "chat.example.com"}, "ws.allowed_origins"},
		{"origin not http", map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "ws://chat.example.com"}, "ws.allowed_origins"},
		{"origin null", map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "null"}, "ws.allowed_origins"},
		{"origin not ascii", map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "https://bücher.example"}, "ws.allowed_origins"},
		{"trusted proxy", map[string]string{"DUETD_TRUSTED_PROXIES": "10.0.0.1,10.0.0.0/33"}, "trusted_proxies"},
		{"trusted proxy hostname", map[string]string{"DUETD_TRUSTED_PROXIES": "proxy.local"}, "trusted_proxies"},
		{"max_line zero", map[string]string{"DUETD_LIMITS_MAX_LINE": "0"}, "limits.max_line"},
		{"max_frame negative", map[string]string{"DUETD_LIMITS_MAX_FRAME": "-1"}, "limits.max_frame"},
		{"login_timeout zero", map[string]string{"DUETD_LIMITS_LOGIN_TIMEOUT": "0s"}, "limits.login_timeout"},
		{"handshake_timeout negative", map[string]string{"DUETD_LIMITS_HANDSHAKE_TIMEOUT": "-5s"}, "limits.handshake_timeout"},
		{"tcp_keepalive zero", map[string]string{"DUETD_LIMITS_TCP_KEEPALIVE": "0s"}, "limits.tcp_keepalive"},
		{"max_conns zero", map[string]string{"DUETD_LIMITS_MAX_CONNS": "0"}, "limits.max_conns"},
		{"max_conns_per_ip zero", map[string]string{"DUETD_LIMITS_MAX_CONNS_PER_IP": "0"}, "limits.max_conns_per_ip"},
		{"message_rate zero", map[string]string{"DUETD_LIMITS_MESSAGE_RATE": "0"}, "limits.message_rate"},
		{"message_burst zero", map[string]string{"DUETD_LIMITS_MESSAGE_BURST": "0"}, "limits.message_burst"},
		{"slow_timeout zero", map[string]string{"DUETD_LIMITS_SLOW_TIMEOUT": "0s"}, "limits.slow_timeout"},
		{"connect_failures zero", map[string]string{"DUETD_LIMITS_CONNECT_FAILURES": "0"}, "limits.connect_failures"},
		{"ipv6_prefix zero", map[string]string{"DUETD_LIMITS_IPV6_PREFIX": "0"}, "limits.ipv6_prefix"},
		{"ipv6_prefix too short", map[string]string{"DUETD_LIMITS_IPV6_PREFIX": "31"}, "limits.ipv6_prefix"},
		{"ipv6_prefix too long", map[string]string{"DUETD_LIMITS_IPV6_PREFIX": "129"}, "limits.ipv6_prefix"},
		{"max_text over max_line", map[string]string{"DUETD_LIMITS_MAX_LINE": "1000", "DUETD_LIMITS_MAX_TEXT": "1001"}, "limits.max_text"},
		{"max_text over max_frame", map[string]string{"DUETD_LIMITS_MAX_FRAME": "1000", "DUETD_LIMITS_MAX_TEXT": "1001"}, "limits.max_text"},
		{"outbound_high not below max", map[string]string{"DUETD_LIMITS_OUTBOUND_HIGH": "4194304"}, "limits.outbound_high"},
		{"ping not below idle", map[string]string{"DUETD_LIMITS_PING_INTERVAL": "90s"}, "limits.ping_interval"},
		// Pings go out once a second at most, and their pongs take a
		// round trip: these cut WebSockets that answer every ping.
		{"ping too close to idle", map[string]string{"DUETD_LIMITS_PING_INTERVAL": "89s"}, "limits.ping_interval"},
		{"ping under the tick", map[string]string{"DUETD_LIMITS_PING_INTERVAL": "200ms", "DUETD_LIMITS_IDLE_TIMEOUT": "2s"}, "limits.ping_interval"},
		{"auth mode", map[string]string{"DUETD_AUTH_MODE": "ldap"}, "auth.mode"},
		{"accounts without users file", map[string]string{"DUETD_AUTH_MODE": "accounts"}, "auth.users_file"},
		{"redis scheme", map[string]string{"DUETD_CLUSTER_REDIS": "http://localhost:6379", "DUETD_CLUSTER_SECRET": testSecret}, "cluster.redis"},
		{"redis without host", map[string]string{"DUETD_CLUSTER_REDIS": "redis://", "DUETD_CLUSTER_SECRET": testSecret}, "cluster.redis"},
		{"redis not a url", map[string]string{"DUETD_CLUSTER_REDIS": "redis://a b:%zz", "DUETD_CLUSTER_SECRET": testSecret}, "cluster.redis"},
		{"redis database not a number", map[string]string{"DUETD_CLUSTER_REDIS": "redis://:pw@10.0.0.5:6379/zero", "DUETD_CLUSTER_SECRET": testSecret}, "cluster.redis"},
		{"redis unknown option", map[string]string{"DUETD_CLUSTER_REDIS": "rediss://10.0.0.5:6380/0?dial_timout=3s", "DUETD_CLUSTER_SECRET": testSecret}, "cluster.redis"},
		{"redis bad option value", map[string]string{"DUETD_CLUSTER_REDIS": "redis://10.0.0.5:6379/0?dial_timeout=soon", "DUETD_CLUSTER_SECRET": testSecret}, "cluster.redis"},
		{"cluster without a secret", map[string]string{"DUETD_CLUSTER_REDIS": "redis://127.0.0.1:6379"}, "cluster.secret"},
		{"cluster secret too short", map[string]string{"DUETD_CLUSTER_REDIS": "redis://127.0.0.1:6379", "DUETD_CLUSTER_SECRET": testSecret[:62]}, "cluster.secret"},
		{"cluster secret a passphrase", map[string]string{"DUETD_CLUSTER_REDIS": "redis://127.0.0.1:6379", "DUETD_CLUSTER_SECRET": "correct horse battery staple, all of them together"}, "cluster.secret"},
		{"cluster secret twice", map[string]string{"DUETD_CLUSTER_REDIS": "redis://127.0.0.1:6379", "DUETD_CLUSTER_SECRET": testSecret, "DUETD_CLUSTER_SECRET_FILE": "/etc/duetd/cluster-secret"}, "cluster.secret"},
		{"cluster secret file missing", map[string]string{"DUETD_CLUSTER_REDIS": "redis://127.0.0.1:6379", "DUETD_CLUSTER_SECRET_FILE": "/nonexistent/cluster-secret"}, "cluster.secret_file"},
		{"bad secret without redis", map[string]string{"DUETD_CLUSTER_SECRET": "abc"}, "cluster.secret"},
		{"resume window negative", map[string]string{"DUETD_RESUME_WINDOW": "-1s"}, "resume.window"},
		{"resume window part of a second", map[string]string{"DUETD_RESUME_WINDOW": "90500ms"}, "resume.window"},
		{"resume window over a day", map[string]string{"DUETD_RESUME_WINDOW": "25h"}, "resume.window"},
		{"replay_recent over the window", map[string]string{"DUETD_RESUME_WINDOW": "20s"}, "resume.replay_recent"},
		{"replay_recent zero", map[string]string{"DUETD_RESUME_REPLAY_RECENT": "0s"}, "resume.replay_recent"},
		{"replay_recent zero with resume off", map[string]string{"DUETD_RESUME_WINDOW": "0s", "DUETD_RESUME_REPLAY_RECENT": "0s"}, "resume.replay_recent"},
		{"resume buffer zero", map[string]string{"DUETD_RESUME_BUFFER": "0"}, "resume.buffer"},
		{"resume buffer below two texts", map[string]string{"DUETD_RESUME_BUFFER": "32767"}, "resume.buffer"},
		{"resume buffer over an eighth of outbound_max", map[string]string{"DUETD_RESUME_BUFFER": "524289"}, "resume.buffer"},
		{"max_away negative", map[string]string{"DUETD_RESUME_MAX_AWAY": "-1"}, "resume.max_away"},
		{"max_away_per_ip negative", map[string]string{"DUETD_RESUME_MAX_AWAY_PER_IP": "-1"}, "resume.max_away_per_ip"},
		{"state_file with resume off", map[string]string{"DUETD_RESUME_WINDOW": "0s", "DUETD_RESUME_STATE_FILE": "/var/lib/duetd/sessions"}, "resume.state_file"},
		{"state_file in a cluster", map[string]string{"DUETD_CLUSTER_REDIS": "redis://127.0.0.1:6379", "DUETD_CLUSTER_SECRET": testSecret, "DUETD_RESUME_STATE_FILE": "/var/lib/duetd/sessions"}, "resume.state_file"},
		// Values that cannot even be read as their type.
		{"int not a number", map[string]string{"DUETD_LIMITS_MAX_LINE": "16KiB"}, "limits.max_line"},
		{"int fraction", map[string]string{"DUETD_LIMITS_MESSAGE_BURST": "1.5"}, "limits.message_burst"},
		{"duration without unit", map[string]string{"DUETD_LIMITS_IDLE_TIMEOUT": "90"}, "limits.idle_timeout"},
		{"float not finite", map[string]string{"DUETD_LIMITS_MESSAGE_RATE": "NaN"}, "limits.message_rate"},
		{"bool", map[string]string{"DUETD_AUTH_TAKEOVER": "sometimes"}, "auth.takeover"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(nil, env(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if got := errorKeys(err); !slices.Equal(got, []string{tt.key}) {
				t.Errorf("error keys %v, want [%s]; error: %v", got, tt.key, err)
			}
			if !strings.HasPrefix(err.Error(), "config: "+tt.key+": ") {
				t.Errorf("error %q does not start with config: %s:", err, tt.key)
			}
		})
	}
}

// Listeners on one port and different addresses of one machine can
// all be bound: only an address in common, or every interface, overlaps.
func TestListenersThatDoNotOverlap(t *testing.T) {
	for _, vars := range []map[string]string{
		{"DUETD_TCP_LISTEN": "127.0.0.1:17070", "DUETD_WS_LISTEN": "127.0.0.2:17070"},
		{"DUETD_TCP_LISTEN": "127.0.0.1:17070", "DUETD_WS_LISTEN": "[::1]:17070"},
		{"DUETD_TCP_LISTEN": "192.0.2.7:17070", "DUETD_WS_LISTEN": "localhost:17070"},
		{"DUETD_TCP_LISTEN": "localhost:0", "DUETD_WS_LISTEN": ":0", "DUETD_ADMIN_LISTEN": "127.0.0.1:0"},
	} {
		if _, _, err := Load(nil, env(vars)); err != nil {
			t.Errorf("%v: %v", vars, err)
		}
	}
}

func TestValidationReportsEverything(t *testing.T) {
	_, _, err := Load(nil, env(map[string]string{
		"DUETD_LOG_LEVEL":        "loud",
		"DUETD_LIMITS_MAX_CONNS": "0",
		"DUETD_AUTH_MODE":        "nobody",
	}))
	want := []string{"log.level", "limits.max_conns", "auth.mode"}
	if got := errorKeys(err); !slices.Equal(got, want) {
		t.Errorf("error keys %v, want %v", got, want)
	}
	// Each says where the bad value was set.
	if !strings.Contains(err.Error(), "config: log.level: want debug, info, warn or error, got \"loud\" (set from DUETD_LOG_LEVEL)") {
		t.Errorf("error does not name the variable:\n%v", err)
	}
}

// A value that does not parse is one problem among the others: every
// value that does not parse is reported, from the file and the
// environment alike, and then what validation finds in the keys that
// did parse. A problem judged against a key whose value did not parse
// is left out, as it would be judged on a value nobody set.
func TestParseProblemsDoNotHideOthers(t *testing.T) {
	path := writeConfig(t, "limits:\n  max_line: lots\n  max_conns: 0\ntcp:\n  listen: 7070\nlog:\n  levle: debug\n")
	for _, tt := range []struct {
		name     string
		args     []string
		env      map[string]string
		want     []string // error keys, in order
		contains []string
		absent   string
	}{
		{name: "environment", env: map[string]string{
			"DUETD_LIMITS_MAX_TEXT":  "abc",
			"DUETD_LOG_LEVEL":        "loud",
			"DUETD_LIMITS_MAX_FRAME": "100",
			"DUETD_SHUTDOWN_TIMEOUT": "0s",
			"DUETD_AUTH_TAKEOVER":    "sometimes",
		},
			want: []string{"limits.max_text", "auth.takeover", "log.level", "shutdown_timeout"},
			contains: []string{
				`config: limits.max_text: want a whole number, got "abc" from DUETD_LIMITS_MAX_TEXT`,
				`config: auth.takeover: want true or false, got "sometimes" from DUETD_AUTH_TAKEOVER`,
				`config: log.level: want debug, info, warn or error, got "loud" (set from DUETD_LOG_LEVEL)`,
				`config: shutdown_timeout: must be greater than 0, got 0s (set from DUETD_SHUTDOWN_TIMEOUT)`,
			},
			// limits.max_frame is judged against limits.max_text, which
			// holds no value that was set.
			absent: "16384"},
		{name: "file and environment", args: []string{"--config", path}, env: map[string]string{
			"DUETD_RESUME_WINDOW": "ten seconds",
			"DUETD_AUTH_MODE":     "ldap",
		},
			want: []string{"limits.max_line", "log.levle", "tcp.listen", "resume.window", "limits.max_conns", "auth.mode"},
			contains: []string{
				`config: limits.max_line: want a whole number, got "lots" in ` + path,
				`config: log.levle: unknown key in ` + path + `; did you mean log.level?`,
				`config: tcp.listen: want a string, got 7070 (quote it) in ` + path,
				`config: resume.window: want a duration such as "30s" or "1m30s", got "ten seconds" from DUETD_RESUME_WINDOW`,
				`config: limits.max_conns: must be greater than 0, got 0 (set in ` + path + `)`,
				`config: auth.mode: want open or accounts, got "ldap" (set from DUETD_AUTH_MODE)`,
			}},
		// A good value in the environment is the one in effect over a bad
		// one in the file: the file's is reported, and the good one is
		// judged as any other.
		{name: "bad file value under a good variable", args: []string{"--config", path},
			env:  map[string]string{"DUETD_LIMITS_MAX_LINE": "1000", "DUETD_LIMITS_MAX_CONNS": "10", "DUETD_TCP_LISTEN": ":7070", "DUETD_LOG_LEVEL": "info"},
			want: []string{"limits.max_line", "log.levle", "tcp.listen", "limits.max_text"},
			contains: []string{
				`config: limits.max_text: 16384 exceeds limits.max_line (1000): a full message could not be sent over TCP ` +
					`(the default, which limits.max_line set from DUETD_LIMITS_MAX_LINE rules out; lower limits.max_text too)`,
			}},
		// A bad variable is the value in effect over a good one in the
		// file, so what is judged against it is left out too.
		{name: "bad variable over a good file value", args: []string{"--config", writeConfig(t, "limits:\n  max_line: 1000\n")},
			env:    map[string]string{"DUETD_LIMITS_MAX_LINE": "1k"},
			want:   []string{"limits.max_line"},
			absent: "exceeds"},
		// A section that is not a mapping leaves each of its keys without
		// a value set: resume.buffer is not judged against limits.max_text.
		{name: "section not a mapping", args: []string{"--config", writeConfig(t, "limits: 5\nresume:\n  buffer: 1000\n  max_away: -1\n")},
			want: []string{"limits", "resume.max_away"}, absent: "resume.buffer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(tt.args, env(tt.env))
			if got := errorKeys(err); !slices.Equal(got, tt.want) {
				t.Errorf("error keys %v, want %v; error:\n%v", got, tt.want, err)
			}
			for _, want := range tt.contains {
				if !strings.Contains(err.Error(), want+"\n") && !strings.HasSuffix(err.Error(), want) {
					t.Errorf("error does not hold the line %q:\n%v", want, err)
				}
			}
			if tt.absent != "" && strings.Contains(err.Error(), tt.absent) {
				t.Errorf("error holds %q:\n%v", tt.absent, err)
			}
		})
	}
}

// A default value that another key's setting rules out is named as the
// default, with that setting and what to do, so that the operator who
// lowered resume.window learns why resume.replay_recent, which they
// never set, is refused. A value that was set is named by where.
func TestErrorsNameWhereTheValueCameFrom(t *testing.T) {
	path := writeConfig(t, "limits:\n  max_line: 1000\n")
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default under a lowered window", nil, map[string]string{"DUETD_RESUME_WINDOW": "10s"},
			"config: resume.replay_recent: must be greater than 0 and at most resume.window (10s), got 30s " +
				"(the default, which resume.window set from DUETD_RESUME_WINDOW rules out; lower resume.replay_recent too)"},
		{"set under a lowered window", nil, map[string]string{"DUETD_RESUME_WINDOW": "10s", "DUETD_RESUME_REPLAY_RECENT": "20s"},
			"got 20s (set from DUETD_RESUME_REPLAY_RECENT)"},
		{"default under a lowered limit in the file", []string{"--config", path}, nil,
			"config: limits.max_text: 16384 exceeds limits.max_line (1000): a full message could not be sent over TCP " +
				"(the default, which limits.max_line set in " + path + " rules out; lower limits.max_text too)"},
		{"default listener on a flag's port", []string{"--tcp-listen", ":9090"}, nil,
			"(the default, which tcp.listen set from --tcp-listen rules out; change admin.listen too)"},
		{"default users file in accounts mode", nil, map[string]string{"DUETD_AUTH_MODE": "accounts"},
			"config: auth.users_file: required when auth.mode is accounts " +
				"(the default, which auth.mode set from DUETD_AUTH_MODE rules out; set auth.users_file too)"},
		{"default buffer under a raised text", nil, map[string]string{"DUETD_LIMITS_MAX_LINE": "140000", "DUETD_LIMITS_MAX_TEXT": "140000", "DUETD_LIMITS_MAX_FRAME": "1048576"},
			"(the default, which limits.max_text set from DUETD_LIMITS_MAX_TEXT rules out; raise resume.buffer too)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(tt.args, env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v\nwant it to hold %q", err, tt.want)
			}
		})
	}
}

func TestValidateAcceptsEdgeValues(t *testing.T) {
	c := Defaults()
	c.TCP.Listen = "[::1]:0"
	c.WS.Listen = "[::1]:0" // two ephemeral ports do not collide
	c.Admin.Listen = "localhost:65535"
	c.Limits.MaxText = c.Limits.MaxLine
	c.Limits.IPv6Prefix = 128
	c.Cluster.Redis = "rediss://:secret@redis.internal:6380/2"
	c.Cluster.Secret = testSecret
	c.TrustedProxies = []string{"127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8"}
	c.WS.HSTSMaxAge = 8760 * time.Hour
	c.WS.AllowedOrigins = []string{"https://chat.example.com", "http://localhost:8080", "https://[::1]:8443", "HTTPS://Chat.Example.COM", "https://xn--bcher-kva.example", "*"}
	c.Resume.Window = MaxResumeWindow
	c.Resume.ReplayRecent = MaxResumeWindow
	c.Resume.Buffer = c.Limits.OutboundMax / 8
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Resume = Resume{Window: 0, Buffer: 2 * c.Limits.MaxText, MaxAway: 1, ReplayRecent: time.Hour}
	if err := c.Validate(); err != nil {
		t.Fatalf("resume off: %v", err)
	}
	c.Cluster.Redis = ""
	c.Cluster.Secret = ""
	c.Auth.Mode = "accounts"
	c.Auth.UsersFile = "/etc/duetd/users"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		keys    []string
		contain string
	}{
		{"unknown key", "tcp:\n  lisen: \":7000\"\n", []string{"tcp.lisen"}, "did you mean tcp.listen?"},
		{"unknown section", "limit:\n  max_line: 10\n", []string{"limit"}, "did you mean limits?"},
		{"unknown top-level key", "verbose: true\n", []string{"verbose"}, "unknown key"},
		{"keys are case-sensitive, and suggested in their case", "TCP:\n  listen: \":7000\"\n", []string{"TCP"}, "; did you mean tcp?"},
		{"key outside its section", "max_line: 100\n", []string{"max_line"}, "did you mean limits.max_line?"},
		{"key in another section", "limits:\n  window: 1m\n", []string{"limits.window"}, "did you mean resume.window?"},
		{"key in several sections", "listen: \":7000\"\n", []string{"listen"}, "did you mean tcp.listen, ws.listen or admin.listen?"},
		{"all unknown keys reported", "tcp:\n  port: 1\nws:\n  origin: x\n", []string{"tcp.port", "ws.origin"}, "unknown key"},
		{"numeric key", "limits:\n  1: 2\n", []string{"limits.1"}, "unknown key"},
		{"section given a value", "tcp: \":7000\"\n", []string{"tcp"}, "want a mapping"},
		{"key given a mapping", "tcp:\n  listen:\n    port: 1\n", []string{"tcp.listen"}, "want a string"},
		{"string given a number", "tcp:\n  listen: 7070\n", []string{"tcp.listen"}, "quote it"},
		{"duration given a number", "limits:\n  idle_timeout: 90\n", []string{"limits.idle_timeout"}, "unit"},
		{"number left empty", "limits:\n  max_line:\n", []string{"limits.max_line"}, "no value"},
		{"list of non-strings", "trusted_proxies: [1, 2]\n", []string{"trusted_proxies"}, "want a string"},
		{"invalid value in file", "log:\n  level: loud\n", []string{"log.level"}, "(set in "},
		// A bad value is refused even when a higher layer hides it today.
		{"bad file value under a flag", "log:\n  format: 3\n", []string{"log.format"}, "quote it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			_, _, err := Load([]string{"--config", path, "--log-format", "json"}, noEnv)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errorKeys(err); !slices.Equal(got, tt.keys) {
				t.Errorf("error keys %v, want %v; error: %v", got, tt.keys, err)
			}
			if !strings.Contains(err.Error(), tt.contain) {
				t.Errorf("error %q does not contain %q", err, tt.contain)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestUnreadableFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	// The error says where the name came from: a DUETD_CONFIG set long
	// ago is easily forgotten.
	if _, _, err := Load([]string{"--config", missing}, noEnv); err == nil || !strings.Contains(err.Error(), missing) ||
		!strings.Contains(err.Error(), "named by --config") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: error %v", err)
	}
	if _, _, err := Load(nil, env(map[string]string{"DUETD_CONFIG": missing})); err == nil ||
		!strings.Contains(err.Error(), "named by DUETD_CONFIG") {
		t.Errorf("missing file from DUETD_CONFIG: error %v", err)
	}
	// A file the user may not read says who may. Tests often run as
	// root, which reads anything, so the error is made here.
	denied := unreadable(&fs.PathError{Op: "open", Path: "/etc/duetd/duetd.yaml", Err: syscall.EACCES}, "--config")
	if !errors.Is(denied, fs.ErrPermission) || !strings.Contains(denied.Error(), "root and the duetd group") {
		t.Errorf("unreadable file: error %v", denied)
	}
	for name, yaml := range map[string]string{
		"syntax":        "tcp:\n  listen: \":1\n",
		"not a mapping": "- a\n- b\n",
		"duplicate key": "tcp:\n  listen: \":1\"\n  listen: \":2\"\n",
	} {
		path := writeConfig(t, yaml)
		if _, _, err := Load([]string{"--config", path}, noEnv); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v does not name %s", name, err, path)
		}
	}
	// A tab in the indentation, which YAML reports in its own terms, is named.
	tabbed := writeConfig(t, "tcp:\n\tlisten: \":1\"\n")
	if _, _, err := Load([]string{"--config", tabbed}, noEnv); err == nil ||
		!strings.HasSuffix(err.Error(), "(line 2 is indented with a tab: YAML indents with spaces only)") {
		t.Errorf("tab: error %v", err)
	}
	// An empty file, or one of only comments, is valid and changes nothing.
	cfg, _, err := Load([]string{"--config", writeConfig(t, "# nothing yet\n")}, noEnv)
	if err != nil || !reflect.DeepEqual(*cfg, Defaults()) {
		t.Errorf("comment-only file: %+v, %v", cfg, err)
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--tcp-listen", ":1", "--help"}} {
		_, _, err := Load(args, noEnv)
		if !errors.Is(err, ErrHelp) || !errors.Is(err, pflag.ErrHelp) {
			t.Errorf("%v: error %v, want ErrHelp", args, err)
			continue
		}
		if err.Error() != Usage() {
			t.Errorf("%v: help error text is not the usage:\n%s", args, err)
		}
	}
	if _, _, err := Load([]string{"--tcp-listn", ":1"}, noEnv); err == nil || !strings.Contains(err.Error(), "tcp-listn") {
		t.Errorf("unknown flag: error %v", err)
	}
	if _, _, err := Load([]string{"--limits-max-line", "1"}, noEnv); err == nil {
		t.Error("a key without a flag was accepted as one")
	}
	if _, _, err := Load([]string{"serve"}, noEnv); err == nil || !strings.Contains(err.Error(), `"serve"`) {
		t.Errorf("positional argument: error %v", err)
	}
	if _, _, err := Load([]string{"--tcp-listen"}, noEnv); err == nil {
		t.Error("flag without value accepted")
	}
	usage := Usage()
	for _, want := range []string{"--config", "--tcp-listen", "--ws-listen", "--admin-listen", "--log-level", "--log-format", `":7070"`, "DUETD_TCP_LISTEN"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q:\n%s", want, usage)
		}
	}
}

func TestReload(t *testing.T) {
	path := writeConfig(t, "log:\n  level: debug\n")
	args := []string{"--config", path, "--tcp-listen", ":7001"}
	vars := map[string]string{"DUETD_LIMITS_MAX_CONNS": "500"}
	cfg, src, err := Load(args, env(vars))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "debug" {
		t.Fatalf("level %q", cfg.Log.Level)
	}
	// The caller's slice is not kept: reusing it must not change Reload.
	args[3] = ":9999"

	if err := os.WriteFile(path, []byte("log:\n  level: warn\nlimits:\n  max_conns_per_ip: 8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg2, src2, err := src.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if cfg2.Log.Level != "warn" || cfg2.Limits.MaxConnsPerIP != 8 {
		t.Errorf("reload did not pick up the file: %+v", cfg2)
	}
	if cfg2.TCP.Listen != ":7001" || cfg2.Limits.MaxConns != 500 {
		t.Errorf("reload lost the flag or env: tcp %q, max_conns %d", cfg2.TCP.Listen, cfg2.Limits.MaxConns)
	}
	if src2.Of("limits.max_conns_per_ip") != SourceFile || src2.Of("tcp.listen") != SourceFlag || src2.Of("limits.max_conns") != SourceEnv {
		t.Errorf("reload sources wrong:\n%s", cfg2.Describe(src2))
	}
	if cfg.Log.Level != "debug" {
		t.Error("reload changed the old config")
	}

	for name, broken := range map[string]string{
		"syntax":  "log: [\n",
		"typo":    "log:\n  levl: warn\n",
		"invalid": "log:\n  level: shout\n",
	} {
		if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		if c, s, err := src2.Reload(); err == nil || c != nil || s != nil {
			t.Errorf("%s: reload of a broken file returned %v, %v, %v", name, c, s, err)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, _, err := src2.Reload(); err == nil {
		t.Error("reload of a removed file succeeded")
	}
}

func TestDescribe(t *testing.T) {
	path := writeConfig(t, "log:\n  level: debug\ncluster:\n  redis: \"redis://:hunter2@10.0.0.5:6379/0\"\n  secret: \""+testSecret+"\"\n")
	cfg, src, err := Load([]string{"--config", path, "--tcp-listen", ":7001"},
		env(map[string]string{"DUETD_WS_ALLOWED_ORIGINS": "https://a.example,https://b.example"}))
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Describe(src)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "# config file: "+path {
		t.Errorf("first line %q", lines[0])
	}
	lines = lines[1:]
	if len(lines) != len(Keys()) {
		t.Fatalf("%d lines for %d keys:\n%s", len(lines), len(Keys()), out)
	}
	for i, k := range Keys() {
		line, _, _ := strings.Cut(lines[i], " # ") // a note follows the source
		fields := strings.Fields(line)
		if fields[0] != k {
			t.Errorf("line %d is %q, want key %s (sorted)", i, lines[i], k)
		}
		if last := fields[len(fields)-1]; last != src.Of(k) {
			t.Errorf("line %q ends in %q, want source %q", lines[i], last, src.Of(k))
		}
	}
	for _, want := range []string{
		`tcp.listen `, `":7001"`, `flag`,
		`log.level `, `"debug"`,
		`ws.allowed_origins `, `["https://a.example", "https://b.example"]`,
		`limits.idle_timeout `, `1m30s`,
		`limits.login_timeout `, ` 1m `,
		`limits.message_rate `, ` 200 `,
		`auth.takeover `, ` false `,
		`trusted_proxies `, ` [] `,
		`cluster.redis `, `"redis://:xxxxx@10.0.0.5:6379/0"`,
		`cluster.secret `, `"xxxxx"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Describe lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("Describe shows the redis password:\n%s", out)
	}
	if strings.Contains(out, testSecret[:16]) {
		t.Errorf("Describe shows the cluster secret:\n%s", out)
	}
	lineOf := func(k string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, k+" ") {
				return l
			}
		}
		return ""
	}
	for k, source := range map[string]string{"tcp.listen": "flag", "log.level": "file", "ws.allowed_origins": "env", "log.format": "default"} {
		if l := lineOf(k); !strings.HasSuffix(l, " "+source) {
			t.Errorf("line for %s is %q, want source %s", k, l, source)
		}
	}
	// A zero that stands for something else says what.
	d0 := Defaults()
	if l := lineOf("resume.max_away"); !regexp.MustCompile(`^resume\.max_away\s+0\s+default\s+# 0: a quarter of limits\.max_conns, 25000$`).MatchString(l) {
		t.Errorf("line for resume.max_away is %q", l)
	}
	if l := lineOf("resume.max_away_per_ip"); !regexp.MustCompile(`^resume\.max_away_per_ip\s+0\s+default\s+# 0: limits\.max_conns_per_ip, 64$`).MatchString(l) {
		t.Errorf("line for resume.max_away_per_ip is %q", l)
	}
	if l := d0.Describe(nil); !regexp.MustCompile(`(?m)^ws\.allowed_origins\s+\[\]\s+-\s+# none listed: the page's own origin only$`).MatchString(l) {
		t.Errorf("no note for the empty ws.allowed_origins:\n%s", l)
	}

	// A computed value says so, and how it was worked out.
	cfg.Cluster.NodeID = "web1-a1b2c3"
	src.Computed("cluster.node_id", "hostname plus a random suffix, new at each start")
	out = cfg.Describe(src)
	if !regexp.MustCompile(`(?m)^cluster\.node_id\s+"web1-a1b2c3"\s+computed\s+# hostname plus a random suffix, new at each start$`).MatchString(out) {
		t.Errorf("computed node_id:\n%s", out)
	}
	if src.Of("cluster.node_id") != SourceComputed {
		t.Errorf("source %q", src.Of("cluster.node_id"))
	}

	// Without sources (a Config built in code) every line still renders.
	d := Defaults()
	if out := d.Describe(nil); !strings.Contains(out, "# config file: none") || strings.Count(out, "\n") != len(Keys())+1 {
		t.Errorf("Describe(nil):\n%s", out)
	}
}

func TestResumeMaxAway(t *testing.T) {
	c := Defaults()
	if got := c.ResumeMaxAway(); got != 25000 {
		t.Errorf("default max_away %d, want a quarter of 100000", got)
	}
	c.Limits.MaxConns = 3
	if got := c.ResumeMaxAway(); got != 1 {
		t.Errorf("max_away for 3 connections %d, want 1", got)
	}
	c.Resume.MaxAway = 7
	if got := c.ResumeMaxAway(); got != 7 {
		t.Errorf("max_away set to 7 reads %d", got)
	}
}

func TestResumeMaxAwayPerIP(t *testing.T) {
	c := Defaults()
	if got := c.ResumeMaxAwayPerIP(); got != 64 {
		t.Errorf("default max_away_per_ip %d, want limits.max_conns_per_ip, 64", got)
	}
	c.Limits.MaxConnsPerIP = 200
	if got := c.ResumeMaxAwayPerIP(); got != 200 {
		t.Errorf("max_away_per_ip for 200 connections per address %d, want 200", got)
	}
	c.Resume.MaxAwayPerIP = 7
	if got := c.ResumeMaxAwayPerIP(); got != 7 {
		t.Errorf("max_away_per_ip set to 7 reads %d", got)
	}
}

func TestRedisPasswordNeverInErrors(t *testing.T) {
	_, _, err := Load(nil, env(map[string]string{"DUETD_CLUSTER_REDIS": "http://:hunter2@host:6379"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v", err)
	}
}

func TestTrustedNets(t *testing.T) {
	c := Defaults()
	c.TrustedProxies = []string{"127.0.0.1", "10.1.2.3/8", "::1", "fd00::/8"}
	want := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("fd00::/8"),
	}
	if got := c.TrustedNets(); !slices.Equal(got, want) {
		t.Errorf("TrustedNets = %v, want %v", got, want)
	}
	if got := (&Config{}).TrustedNets(); len(got) != 0 {
		t.Errorf("default TrustedNets = %v", got)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second:                   "30s",
		60 * time.Second:                   "1m",
		90 * time.Second:                   "1m30s",
		time.Hour:                          "1h",
		time.Hour + time.Minute:            "1h1m",
		1500 * time.Millisecond:            "1.5s",
		time.Hour + 30*time.Millisecond:    "1h0m0.03s",
		2*time.Hour + 3*time.Second:        "2h0m3s",
		500 * time.Millisecond:             "500ms",
		10*time.Minute + 10*time.Second:    "10m10s",
		10 * time.Minute:                   "10m",
		100*time.Hour + 10*time.Minute:     "100h10m",
		100 * time.Hour:                    "100h",
		time.Duration(0):                   "0s",
		-5 * time.Second:                   "-5s",
		time.Minute + 500*time.Millisecond: "1m0.5s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("formatDuration(%v) = %q does not parse back: %v, %v", d, formatDuration(d), back, err)
		}
	}
}

// A URL that go-redis, which the cluster joins with, accepts is accepted;
// its options too.
func TestRedisURLAccepted(t *testing.T) {
	for _, u := range []string{
		"redis://10.0.0.5:6379",
		"rediss://duet:s3cret@redis.example:6380/2?dial_timeout=3s&pool_size=20",
	} {
		if _, _, err := Load(nil, env(map[string]string{"DUETD_CLUSTER_REDIS": u, "DUETD_CLUSTER_SECRET": testSecret})); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	_, _, err := Load(nil, env(map[string]string{"DUETD_CLUSTER_REDIS": "redis://:hunter2@10.0.0.5:6379/x?dial_timout=1s"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v", err)
	}
}

// A DUETD_* variable that sets no key is a warning naming it and the
// variable it probably meant; the value it was meant to set stays at its
// default, which is why it must not pass silently.
func TestUnknownEnvWarns(t *testing.T) {
	cfg, src, err := Load(nil, env(map[string]string{
		"DUETD_LIMITS_MAX_LINES": "32768",
		"DUETD_TCP_LISTEN":       ":7001",
		"DUETD_ws_listen":        ":7002",
		"DUETD_WINDOW":           "1m",
		"DUETD_BINARY":           "/tmp/duetd",
		"DUETD_CONFIG":           "",
		"DUET_REQUIRE_TOOLS":     "1",
		"HOME":                   "/root",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.MaxLine != Defaults().Limits.MaxLine || cfg.TCP.Listen != ":7001" {
		t.Errorf("max_line %d, tcp.listen %q", cfg.Limits.MaxLine, cfg.TCP.Listen)
	}
	var got []string
	for _, w := range src.Warnings() {
		got = append(got, w.Error())
	}
	want := []string{
		"config: DUETD_BINARY: names no key, so it is ignored",
		"config: DUETD_LIMITS_MAX_LINES: names no key, so it is ignored; did you mean DUETD_LIMITS_MAX_LINE?",
		"config: DUETD_WINDOW: names no key, so it is ignored; did you mean DUETD_RESUME_WINDOW?",
		"config: DUETD_ws_listen: names no key, so it is ignored; did you mean DUETD_WS_LISTEN?",
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
	// The file's typos are errors, and say the same.
	_, _, err = Load([]string{"--config", writeConfig(t, "limits:\n  max_lines: 32768\n")}, noEnv)
	if err == nil || !strings.Contains(err.Error(), "did you mean limits.max_line?") {
		t.Errorf("file typo: %v", err)
	}
	// A reload sees the same environment, and warns again.
	_, src2, err := src.Reload()
	if err != nil || len(src2.Warnings()) != 4 {
		t.Errorf("reload: %v, %v", err, src2.Warnings())
	}
}

// A name is suggested for a misspelt one only when it is a typo away:
// one edit in a short name, two in a longer one, a swap of two letters
// counting as one. Past that a near name is chance ("foo" is two edits
// from "log"), and suggesting it sends the operator the wrong way. The
// file's keys and the environment's variables share the rule.
func TestSuggestionsOnlyForTypos(t *testing.T) {
	for _, tt := range []struct {
		nearest    func(string) string
		name, want string
	}{
		{nearestKey, "foo", ""},
		{nearestKey, "bar", ""},
		{nearestKey, "lgo", "log"},
		{nearestKey, "limit", "limits"},
		{nearestKey, "tcp.lisen", "tcp.listen"},
		{nearestKey, "tpc.listen", "tcp.listen"},
		{nearestKey, "resume.windw", "resume.window"},
		{nearestKey, "resume.wndw", "resume.window"},
		{nearestKey, "max_line", "limits.max_line"},
		{nearestEnv, "DUETD_FOO", ""},
		{nearestEnv, "DUETD_LGO_LEVEL", "DUETD_LOG_LEVEL"},
		{nearestEnv, "DUETD_LIMITS_MAX_LINES", "DUETD_LIMITS_MAX_LINE"},
		{nearestEnv, "DUETD_CONFG", "DUETD_CONFIG"},
		{nearestEnv, "DUETD_WINDOW", "DUETD_RESUME_WINDOW"},
	} {
		if got := tt.nearest(tt.name); got != tt.want {
			t.Errorf("suggested %q for %q, want %q", got, tt.name, tt.want)
		}
	}
	// As the operator meets it.
	_, _, err := Load([]string{"--config", writeConfig(t, "foo: 1\n")}, noEnv)
	if err == nil || !strings.Contains(err.Error(), "config: foo: unknown key in ") || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("unknown key far from any: %v", err)
	}
}

// trusted_proxies entries that cover a large share of the internet are
// accepted with a warning; a network's own proxies are not warned about.
func TestTrustedProxiesTooWide(t *testing.T) {
	for entry, wide := range map[string]bool{
		"0.0.0.0/0":         true,
		"::/0":              true,
		"0.0.0.0/1":         true,
		"128.0.0.0/7":       true,
		"2000::/3":          true,
		"2400::/12":         true,
		"::ffff:0.0.0.0/96": true,
		"10.0.0.0/8":        false,
		"100.64.0.0/10":     false,
		"173.245.48.0/20":   false,
		"127.0.0.1":         false,
		"fc00::/7":          false,
		"fe80::/10":         false,
		"2001:db8::/32":     false,
		"::1":               false,
	} {
		cfg, src, err := Load(nil, env(map[string]string{"DUETD_TRUSTED_PROXIES": "127.0.0.1, " + entry}))
		if err != nil {
			t.Fatalf("%s: %v", entry, err)
		}
		if !slices.Contains(cfg.TrustedProxies, entry) {
			t.Errorf("%s: not kept: %v", entry, cfg.TrustedProxies)
		}
		ws := src.Warnings()
		if !wide {
			if len(ws) != 0 {
				t.Errorf("%s: warned %v", entry, ws)
			}
			continue
		}
		if len(ws) != 1 || ws[0].Key != "trusted_proxies" || !strings.Contains(ws[0].Msg, `"`+entry+`" trusts `) ||
			!strings.Contains(ws[0].Msg, "list only your proxies") {
			t.Errorf("%s: warnings %v", entry, ws)
		}
	}
	c := Defaults()
	c.TrustedProxies = []string{"0.0.0.0/0", "::/0", "0.0.0.0/4"}
	var msgs []string
	for _, w := range c.Warnings() {
		msgs = append(msgs, w.Msg[:strings.Index(w.Msg, ": any")])
	}
	want := []string{`"0.0.0.0/0" trusts every IPv4 address`, `"::/0" trusts every IPv6 address`, `"0.0.0.0/4" trusts 1/16 of all IPv4 addresses`}
	if !slices.Equal(msgs, want) {
		t.Errorf("got %q\nwant %q", msgs, want)
	}
}

// An admin listener off loopback is accepted with a warning naming
// admin.listen, what anyone who reaches it can do, and how to restrict
// it; one on loopback, or off, is not warned about.
func TestAdminListenOffLoopback(t *testing.T) {
	for addr, where := range map[string]string{
		"0.0.0.0:9999":            "listens on every interface",
		":9090":                   "listens on every interface",
		"[::]:9090":               "listens on every interface",
		"10.0.0.5:9090":           "is not a loopback address",
		"[2001:db8::1]:90":        "is not a loopback address",
		"admin.example:90":        "is not a loopback address",
		"127.0.0.1:9090":          "",
		"127.0.0.2:9090":          "",
		"127.255.255.1:0":         "",
		"[::1]:9090":              "",
		"localhost:9090":          "",
		"LocalHost:9090":          "",
		"[::ffff:127.0.0.1]:9090": "",
		"":                        "",
	} {
		_, src, err := Load(nil, env(map[string]string{"DUETD_ADMIN_LISTEN": addr}))
		if err != nil {
			t.Fatalf("%q: %v", addr, err)
		}
		ws := src.Warnings()
		if where == "" {
			if len(ws) != 0 {
				t.Errorf("%q: warned %v", addr, ws)
			}
			continue
		}
		if len(ws) != 1 || ws[0].Key != "admin.listen" || !strings.HasPrefix(ws[0].Msg, fmt.Sprintf("%q %s, ", addr, where)) ||
			!strings.Contains(ws[0].Msg, "no authentication") || !strings.Contains(ws[0].Msg, "/metrics") ||
			!strings.Contains(ws[0].Msg, "POST /drain") || !strings.Contains(ws[0].Msg, "bind it to loopback") ||
			!strings.Contains(ws[0].Msg, "firewall") {
			t.Errorf("%q: warnings %v", addr, ws)
		}
	}
	// From the file as from the environment: the warning is about the
	// value in effect, wherever it was set.
	path := writeConfig(t, "admin:\n  listen: \"0.0.0.0:9090\"\n")
	if _, src, err := Load([]string{"--config", path}, noEnv); err != nil || len(src.Warnings()) != 1 {
		t.Errorf("file: %v, warnings %v", err, src.Warnings())
	}
	if _, src, err := Load([]string{"--config", path, "--admin-listen", "127.0.0.1:9090"}, noEnv); err != nil || len(src.Warnings()) != 0 {
		t.Errorf("file overridden by a flag: %v, warnings %v", err, src.Warnings())
	}
}

func TestChanged(t *testing.T) {
	a, b := Defaults(), Defaults()
	if got := Changed(&a, &b); len(got) != 0 {
		t.Errorf("equal configs: %v", got)
	}
	b.Log.Level = "debug"
	b.Limits.MaxConnsPerIP = 8
	b.TrustedProxies = []string{"127.0.0.1"}
	b.TCP.Listen = ":7001"
	b.Limits.SlowTimeout = time.Minute
	b.Limits.MessageRate = 10.5
	b.Auth.Takeover = true
	want := []string{"auth.takeover", "limits.max_conns_per_ip", "limits.message_rate", "limits.slow_timeout", "log.level", "tcp.listen", "trusted_proxies"}
	if got := Changed(&a, &b); !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	// nil and empty lists are the same list.
	a.WS.AllowedOrigins, b = nil, a
	b.WS.AllowedOrigins = []string{}
	if got := Changed(&a, &b); len(got) != 0 {
		t.Errorf("nil vs empty: %v", got)
	}
}

// An operator who names a users file, or turns takeover on, but leaves
// auth.mode open believes the server restricted while anyone may log in
// under any name: neither is refused (a file being prepared for a
// switch is fine), but neither is silent.
func TestAuthKeysIgnoredInOpenMode(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  map[string]string
		want []string // keys warned about
	}{
		{"users file", map[string]string{"DUETD_AUTH_USERS_FILE": "/etc/duetd/users"}, []string{"auth.users_file"}},
		{"takeover", map[string]string{"DUETD_AUTH_TAKEOVER": "true"}, []string{"auth.takeover"}},
		{"both", map[string]string{"DUETD_AUTH_USERS_FILE": "/etc/duetd/users", "DUETD_AUTH_TAKEOVER": "true"}, []string{"auth.users_file", "auth.takeover"}},
		{"accounts", map[string]string{"DUETD_AUTH_MODE": "accounts", "DUETD_AUTH_USERS_FILE": "/etc/duetd/users", "DUETD_AUTH_TAKEOVER": "true"}, nil},
		{"open alone", map[string]string{"DUETD_AUTH_MODE": "open"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, src, err := Load(nil, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, w := range src.Warnings() {
				keys = append(keys, w.Key)
				if !strings.Contains(w.Msg, "auth.mode is open") || !strings.Contains(w.Msg, "anyone may log in") {
					t.Errorf("%s: %q does not say the server is open", w.Key, w.Msg)
				}
			}
			if !slices.Equal(keys, tt.want) {
				t.Errorf("warned about %q, want %q", keys, tt.want)
			}
			// A reload warns again.
			if _, src2, err := src.Reload(); err != nil || len(src2.Warnings()) != len(tt.want) {
				t.Errorf("reload: %v, %v", err, src2.Warnings())
			}
		})
	}
}

// A state file under /tmp or /var/tmp is lost at the very restart it is
// for when duetd runs under the systemd unit, whose PrivateTmp=yes gives
// the service a /tmp of its own, deleted as it stops. Elsewhere it
// works, so it is warned of, not refused.
func TestStateFileInTmpWarned(t *testing.T) {
	for _, tt := range []struct {
		path string
		warn bool
	}{
		{"/tmp/duetd/sessions", true},
		{"/var/tmp/sessions", true},
		{"/tmp//x/../sessions", true},
		{"/var/lib/duetd/sessions", false},
		{"/tmp/../var/lib/duetd/sessions", false},
		{"/tmpfiles/sessions", false},
		{"", false},
	} {
		t.Run(tt.path, func(t *testing.T) {
			_, src, err := Load(nil, env(map[string]string{"DUETD_RESUME_STATE_FILE": tt.path}))
			if err != nil {
				t.Fatal(err)
			}
			var warned []*Error
			for _, w := range src.Warnings() {
				if w.Key == "resume.state_file" {
					warned = append(warned, w)
				}
			}
			if !tt.warn {
				if len(warned) != 0 {
					t.Fatalf("warned %v", warned)
				}
				return
			}
			if len(warned) != 1 {
				t.Fatalf("warned %v, want one warning about resume.state_file", src.Warnings())
			}
			for _, want := range []string{tt.path, "PrivateTmp", "/var/lib/duetd"} {
				if !strings.Contains(warned[0].Msg, want) {
					t.Errorf("%q does not say %q", warned[0].Msg, want)
				}
			}
		})
	}
}
