package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
)

// Error is a configuration problem with one key. Callers print it and
// exit with status 2.
type Error struct {
	Key string // dotted key, e.g. "limits.max_line"
	Msg string
}

func (e *Error) Error() string {
	return "config: " + e.Key + ": " + e.Msg
}

// Validate checks every key and the relations between them. It reports
// all problems at once, joined, each an *Error naming its key, so one run
// of `duetd check-config` shows everything there is to fix.
func (c *Config) Validate() error {
	var problems []error
	bad := func(key, format string, args ...any) {
		problems = append(problems, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}

	listeners := []struct{ key, addr string }{
		{"tcp.listen", c.TCP.Listen},
		{"ws.listen", c.WS.Listen},
		{"admin.listen", c.Admin.Listen},
	}
	seen := make(map[string]string)
	for _, l := range listeners {
		if l.addr == "" {
			continue
		}
		if err := checkListen(l.addr); err != nil {
			bad(l.key, "%v", err)
			continue
		}
		// Port 0 asks the kernel for a free port, different each time,
		// so only fixed ports can collide.
		if _, port, _ := net.SplitHostPort(l.addr); port == "0" {
			continue
		}
		if other, dup := seen[l.addr]; dup {
			bad(l.key, "%q is also %s; two listeners cannot share an address", l.addr, other)
		}
		seen[l.addr] = l.key
	}
	if c.TCP.Listen == "" && c.WS.Listen == "" && c.Admin.Listen == "" {
		bad("tcp.listen", "tcp.listen, ws.listen and admin.listen are all empty, so nothing would listen")
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console", "auto":
	default:
		bad("log.format", "want json, console or auto, got %q", c.Log.Format)
	}

	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be greater than 0, got %v", c.ShutdownTimeout)
	}
	for _, p := range c.TrustedProxies {
		if _, err := parseNet(p); err != nil {
			bad("trusted_proxies", "%q is neither an IP address nor a CIDR prefix", p)
		}
	}

	// Every limit is a size, count, rate or time that must be positive:
	// zero would mean "nothing is allowed", never "unlimited".
	positive := true
	for _, k := range keys {
		if !strings.HasPrefix(k.name, "limits.") {
			continue
		}
		if v := k.field(c); !isPositive(v) {
			bad(k.name, "must be greater than 0, got %v", v.Interface())
			positive = false
		}
	}
	// The relations only mean something once each side is sane.
	if positive {
		l := c.Limits
		if l.MaxText > l.MaxLine {
			bad("limits.max_text", "%d exceeds limits.max_line (%d): a full message could not be sent over TCP", l.MaxText, l.MaxLine)
		}
		if l.MaxText > l.MaxFrame {
			bad("limits.max_text", "%d exceeds limits.max_frame (%d): a full message could not be sent over WebSocket", l.MaxText, l.MaxFrame)
		}
		if l.OutboundHigh >= l.OutboundMax {
			bad("limits.outbound_high", "%d must be below limits.outbound_max (%d), or a reader is cut off before its sender is ever paused", l.OutboundHigh, l.OutboundMax)
		}
		if l.IPv6Prefix < MinIPv6Prefix || l.IPv6Prefix > 128 {
			bad("limits.ipv6_prefix", "must be between %d and 128 (bits of an IPv6 address that name one client), got %d", MinIPv6Prefix, l.IPv6Prefix)
		}
		if l.PingInterval >= l.IdleTimeout {
			bad("limits.ping_interval", "%v must be below limits.idle_timeout (%v), or healthy WebSockets time out between pings", l.PingInterval, l.IdleTimeout)
		}
	}

	switch c.Auth.Mode {
	case "open":
	case "accounts":
		if c.Auth.UsersFile == "" {
			bad("auth.users_file", "required when auth.mode is accounts")
		}
	default:
		bad("auth.mode", "want open or accounts, got %q", c.Auth.Mode)
	}

	if c.Cluster.Redis != "" {
		if err := checkRedisURL(c.Cluster.Redis); err != nil {
			bad("cluster.redis", "%v", err)
		}
		// Accounts logins (and takeover) are checked against one node's
		// sessions; across nodes they would need the directory too, which
		// is not built yet. Refuse the pair rather than half-enforce it.
		if c.Auth.Mode == "accounts" {
			bad("auth.mode", "accounts is not supported together with cluster.redis yet; use open mode in a cluster")
		}
	}

	return errors.Join(problems...)
}

// MinIPv6Prefix is the shortest limits.ipv6_prefix accepted. A shorter
// prefix would count whole providers' networks as one client.
const MinIPv6Prefix = 32

// checkListen accepts host:port with a numeric port; the host may be
// empty (all interfaces), an IP or a name. Port 0 picks a free port.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port such as \":7070\" or \"127.0.0.1:7070\", got %q", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port in %q must be a number from 0 to 65535", addr)
	}
	return nil
}

// checkRedisURL never quotes the URL back: it may carry a password.
func checkRedisURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL; want redis://host:port or rediss://host:port")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("scheme must be redis or rediss, got %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("missing host; want redis://host:port or rediss://host:port")
	}
	return nil
}

func isPositive(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		return v.Int() > 0
	case reflect.Float64:
		return v.Float() > 0
	}
	panic("config: limit of unsupported kind " + v.Kind().String())
}

// parseNet reads a trusted_proxies entry: a CIDR prefix, or a single
// address meaning just that host.
func parseNet(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// TrustedNets returns trusted_proxies as prefixes, a single address as a
// one-host prefix. Entries that do not parse are left out; a validated
// Config has none.
func (c *Config) TrustedNets() []netip.Prefix {
	nets := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, s := range c.TrustedProxies {
		if p, err := parseNet(s); err == nil {
			nets = append(nets, p)
		}
	}
	return nets
}
