// Package config loads duetd's configuration: embedded defaults, then a
// YAML file, then DUETD_* environment variables, then command-line flags,
// each overriding the one before. No other package reads viper.
package config

import "time"

// Config is duetd's whole configuration. The mapstructure tags are the
// keys used in the YAML file, in DUETD_* variables (dots become
// underscores: DUETD_TCP_LISTEN) and in `duetd check-config`.
type Config struct {
	TCP     TCP     `mapstructure:"tcp"`
	WS      WS      `mapstructure:"ws"`
	Admin   Admin   `mapstructure:"admin"`
	Log     Log     `mapstructure:"log"`
	Limits  Limits  `mapstructure:"limits"`
	Auth    Auth    `mapstructure:"auth"`
	Resume  Resume  `mapstructure:"resume"`
	Cluster Cluster `mapstructure:"cluster"`
	// Shutdown is how a node of a cluster drains for a restart.
	Shutdown Shutdown `mapstructure:"shutdown"`
	// ShutdownTimeout bounds a graceful shutdown: users are told, queued
	// output is flushed, and whatever is left is closed at the deadline.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// TrustedProxies lists the addresses or CIDRs (e.g. 127.0.0.1/32)
	// whose PROXY protocol header or X-Forwarded-For is believed.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
}

// Shutdown shapes a drain: a node of a cluster told to stop (SIGTERM) or
// to drain (POST /drain on the admin listener) tells its clients to
// reconnect and resume, on any node, and parks their sessions for them;
// a single node with resume.state_file, told to stop, tells them to
// resume on the next process, and writes their sessions for it.
type Shutdown struct {
	// DrainPeriod spreads the drain's closes evenly over this long, so
	// that the other nodes see the reconnections at that rate rather
	// than all at once; 0 closes them all at once. The closes end within
	// shutdown_timeout, which bounds the whole drain: a longer period is
	// cut to it (DrainSpread).
	DrainPeriod time.Duration `mapstructure:"drain_period"`
}

// DrainSpread is the period a drain spreads its closes over:
// shutdown.drain_period, but no longer than shutdown_timeout.
func (c *Config) DrainSpread() time.Duration {
	return min(c.Shutdown.DrainPeriod, c.ShutdownTimeout)
}

// TCP is the line-protocol listener for netcat and telnet.
type TCP struct {
	Listen string `mapstructure:"listen"` // "" disables it; default ":7070"
}

// WS is the HTTP listener that serves the web client at / and WebSocket at /ws.
type WS struct {
	Listen string `mapstructure:"listen"` // "" disables it; default ":8080"
	// AllowedOrigins lists the Origin values a browser may upgrade from.
	// Empty means the request's own host only (same origin); "*" allows any.
	AllowedOrigins []string `mapstructure:"allowed_origins"`
	// HSTSMaxAge, when not zero, makes every page carry
	// Strict-Transport-Security with this max-age: only for a deployment
	// whose users reach it over https (a TLS proxy in front), since
	// browsers then refuse plain http to the host for that long. Zero,
	// the default, sends no such header.
	HSTSMaxAge time.Duration `mapstructure:"hsts_max_age"`
}

// Admin is the loopback listener for /metrics, /healthz and /readyz.
type Admin struct {
	Listen string `mapstructure:"listen"` // "" disables it; default "127.0.0.1:9090"
}

// Log selects zap's level and encoding.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error; default info
	Format string `mapstructure:"format"` // json, console, or auto (console on a terminal); default auto
}

// Limits bound what one client can cost everyone else.
type Limits struct {
	MaxLine          int           `mapstructure:"max_line"`          // bytes in one TCP line, default 16 KiB
	MaxFrame         int           `mapstructure:"max_frame"`         // bytes in one WebSocket message, default 128 KiB
	MaxText          int           `mapstructure:"max_text"`          // bytes of text in one message, default 16 KiB
	LoginTimeout     time.Duration `mapstructure:"login_timeout"`     // time to log in after connecting, default 60s
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"` // time to finish an HTTP request or WebSocket upgrade, default 5s
	IdleTimeout      time.Duration `mapstructure:"idle_timeout"`      // WebSocket: close after this long with no frame (pongs keep it alive) and nothing read, default 90s
	PingInterval     time.Duration `mapstructure:"ping_interval"`     // WebSocket ping period, default 30s
	TCPKeepAlive     time.Duration `mapstructure:"tcp_keepalive"`     // TCP keepalive idle time, default 60s
	MaxConns         int           `mapstructure:"max_conns"`         // connections in all, default 100000
	MaxConnsPerIP    int           `mapstructure:"max_conns_per_ip"`  // connections from one address, default 64
	IPv6Prefix       int           `mapstructure:"ipv6_prefix"`       // IPv6 addresses count as one address per prefix of this many bits (max_conns_per_ip and the throttles), 32 to 128, default 64
	MessageRate      float64       `mapstructure:"message_rate"`      // commands and errors per second per connection (token bucket rate; says to a partner are not counted), default 200
	MessageBurst     int           `mapstructure:"message_burst"`     // token bucket size, default 2000
	OutboundHigh     int           `mapstructure:"outbound_high"`     // queued bytes for a reader before its sender is paused, default 256 KiB
	OutboundMax      int           `mapstructure:"outbound_max"`      // queued bytes past which a reader is cut off, default 4 MiB
	SlowTimeout      time.Duration `mapstructure:"slow_timeout"`      // a reader that drains nothing for this long while backlogged is cut off, default 30s
	ConnectFailures  int           `mapstructure:"connect_failures"`  // failed connects per address before throttling, default 10
}

// Auth selects who may log in.
type Auth struct {
	Mode      string `mapstructure:"mode"`       // open (default) or accounts
	UsersFile string `mapstructure:"users_file"` // htpasswd file with bcrypt entries, accounts mode
	Takeover  bool   `mapstructure:"takeover"`   // a second login of an online account replaces the first
}

// Resume lets a session outlive its connection: a user whose connection
// drops comes back with /resume and the messages sent meanwhile
// (docs/PROTOCOL.md, "Session resume"). The hub takes these as
// hub.Options (ResumeWindow, ResumeBuffer, MaxAway, MaxAwayPerIP,
// ReplayRecent).
type Resume struct {
	// Window is how long a session whose connection dropped waits for
	// a resume; 0 turns resume off. Whole seconds. Default 2m.
	Window time.Duration `mapstructure:"window"`
	// Buffer bounds the messages kept for one session, in bytes (each
	// counts its text and 64 bytes): past it, the oldest are dropped
	// while the session is attached, and new ones are refused with
	// peer_away_full while it is away. Default 256 KiB.
	Buffer int `mapstructure:"buffer"`
	// MaxAway bounds the sessions away at once on a node; past it the
	// one away the longest ends. 0, the default, is a quarter of
	// limits.max_conns (ResumeMaxAway).
	MaxAway int `mapstructure:"max_away"`
	// MaxAwayPerIP bounds the sessions away at once on a node whose
	// connections came from one client address (keyed as for
	// limits.max_conns_per_ip); past it that address's own away the
	// longest ends. 0, the default, is limits.max_conns_per_ip
	// (ResumeMaxAwayPerIP).
	MaxAwayPerIP int `mapstructure:"max_away_per_ip"`
	// ReplayRecent is, for a line-protocol client, which cannot say
	// what it read, how long before its connection dropped the
	// messages it is replayed begin. At most window. Default 30s.
	ReplayRecent time.Duration `mapstructure:"replay_recent"`
	// StateFile, on a single node, is where a stop (SIGTERM) writes the
	// sessions, after telling every client to reconnect and resume, for
	// the next process to take up: a restart then ends no conversation.
	// "" (the default): a stop ends every session. It holds what the
	// process holds in memory (names, tokens, kept messages), 0600,
	// and is deleted as it is read.
	StateFile string `mapstructure:"state_file"`
}

// ResumeMaxAway is resume.max_away as the hub takes it: the value set,
// or a quarter of limits.max_conns when it is 0. A session that goes
// away was a connection a moment ago and will be one again, so the
// bound scales with the connections a node takes. A quarter covers a
// network fault that drops a large share of a node's users at once,
// while the memory away sessions may hold, at most max_away times
// resume.buffer on top of what their partners' connections hold, stays
// a fraction of what limits.max_conns connections may.
func (c *Config) ResumeMaxAway() int {
	if c.Resume.MaxAway > 0 {
		return c.Resume.MaxAway
	}
	return max(1, c.Limits.MaxConns/4)
}

// ResumeMaxAwayPerIP is resume.max_away_per_ip as the hub takes it: the
// value set, or limits.max_conns_per_ip when it is 0. An address's away
// sessions were its connections a moment ago, so it may keep as many
// away as it may hold open: a household or an office whose network
// drops all at once keeps every session. Without a bound per address,
// one address that logs in and drops its connection over and over
// would fill resume.max_away and end, as the longest away, the sessions
// everyone else's dropped connections left waiting.
func (c *Config) ResumeMaxAwayPerIP() int {
	if c.Resume.MaxAwayPerIP > 0 {
		return c.Resume.MaxAwayPerIP
	}
	return max(1, c.Limits.MaxConnsPerIP)
}

// Cluster joins several duetd nodes into one token space through Redis.
type Cluster struct {
	Redis  string `mapstructure:"redis"`   // redis:// URL; "" means a single node, all in memory
	NodeID string `mapstructure:"node_id"` // default: hostname plus a random suffix
	// Secret keys what the nodes keep in and send through Redis (hashes
	// of tokens and names, sealed batches). Every node has the same one:
	// at least 256 random bits, hex or base64. SecretFile names a file
	// holding it instead, so it need not sit in this file or the
	// environment; one of the two is required with Redis.
	Secret     string `mapstructure:"secret"`
	SecretFile string `mapstructure:"secret_file"`
}
