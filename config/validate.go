package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"duet/proto"
	"duet/proto/httphead"
)

// Error is a configuration problem with one key. Callers print it and
// exit with status 2.
type Error struct {
	Key string // dotted key, e.g. "limits.max_line"
	Msg string
	// against is the key whose value this one's is judged by, when the
	// problem is how the two relate (resume.window for
	// resume.replay_recent), and fix what to do to this key to mend it
	// ("lower"). A default value can be wrong only so: Load then says
	// which setting ruled it out (annotate), since the operator never
	// set the key the error names.
	against, fix string
}

// relation is the problem that key's value does not fit against's, as
// format says; fix is what to do to key to mend it.
func relation(key, against, fix, format string, args ...any) *Error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, args...), against: against, fix: fix}
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
	var fixed []struct{ key, addr string } // checked, on a fixed port
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
		for _, other := range fixed {
			if listenOverlaps(l.addr, other.addr) {
				problems = append(problems, relation(l.key, other.key, "change", "%q overlaps %s (%q); two listeners cannot share an address", l.addr, other.key, other.addr))
				break
			}
		}
		fixed = append(fixed, l)
	}
	// The admin listener serves operators, not users: a daemon with only
	// that one on could never pair anyone, and the engine refuses to
	// start without a user listener, so say which keys to set here.
	if c.TCP.Listen == "" && c.WS.Listen == "" {
		bad("tcp.listen", "tcp.listen and ws.listen are both empty, so no user could connect; set at least one of them")
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

	if c.WS.HSTSMaxAge < 0 || c.WS.HSTSMaxAge%time.Second != 0 {
		bad("ws.hsts_max_age", "must be 0 (off) or a whole number of seconds such as \"8760h\", got %v", c.WS.HSTSMaxAge)
	}

	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be greater than 0, got %v", c.ShutdownTimeout)
	}
	if c.Shutdown.DrainPeriod < 0 {
		bad("shutdown.drain_period", "must be 0 (all at once) or more, got %v", c.Shutdown.DrainPeriod)
	}
	for _, o := range c.WS.AllowedOrigins {
		if why := originProblem(o); why != "" {
			bad("ws.allowed_origins", "%q %s", o, why)
		}
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
			problems = append(problems, relation("limits.max_text", "limits.max_line", "lower", "%d exceeds limits.max_line (%d): a full message could not be sent over TCP", l.MaxText, l.MaxLine))
		}
		if need := longestFrame(l.MaxText); need > l.MaxFrame {
			problems = append(problems, relation("limits.max_text", "limits.max_frame", "lower", "%d needs limits.max_frame of at least %d (it is %d): a full message could not be sent over WebSocket", l.MaxText, need, l.MaxFrame))
		}
		if l.OutboundHigh >= l.OutboundMax {
			problems = append(problems, relation("limits.outbound_high", "limits.outbound_max", "lower", "%d must be below limits.outbound_max (%d), or a reader is cut off before its sender is ever paused", l.OutboundHigh, l.OutboundMax))
		}
		if l.IPv6Prefix < MinIPv6Prefix || l.IPv6Prefix > 128 {
			bad("limits.ipv6_prefix", "must be between %d and 128 (bits of an IPv6 address that name one client), got %d", MinIPv6Prefix, l.IPv6Prefix)
		}
		// Pings go out on the engine's one-second tick, so up to a
		// second late, and each pong takes a round trip: an idle limit
		// closer than that to the ping's period cuts WebSockets that
		// answer every ping.
		if max(l.PingInterval, time.Second)+pingSlack > l.IdleTimeout {
			problems = append(problems, relation("limits.ping_interval", "limits.idle_timeout", "lower", "%v must be at least %v below limits.idle_timeout (%v), and pings go out once a second at most: healthy WebSockets would time out between pings", l.PingInterval, pingSlack, l.IdleTimeout))
		}
	}

	problems = append(problems, c.checkResume()...)

	switch c.Auth.Mode {
	case "open":
	case "accounts":
		if c.Auth.UsersFile == "" {
			problems = append(problems, relation("auth.users_file", "auth.mode", "set", "required when auth.mode is accounts"))
		}
	default:
		bad("auth.mode", "want open or accounts, got %q", c.Auth.Mode)
	}

	problems = append(problems, c.Cluster.check()...)
	if c.Cluster.Redis != "" {
		if c.Resume.StateFile != "" {
			bad("resume.state_file", "is for a single node: a node of a cluster drains instead, parking its sessions in Redis for the other nodes")
		}
	}

	return errors.Join(problems...)
}

// MaxResumeWindow is the longest resume.window accepted: a session kept
// for longer than a day would be a mailbox, which duet is not.
const MaxResumeWindow = 24 * time.Hour

// pingSlack is how far below limits.idle_timeout limits.ping_interval
// must be (Validate).
const pingSlack = 2 * time.Second

// checkResume checks the resume section, and how it fits the limits.
func (c *Config) checkResume() []error {
	var problems []error
	bad := func(key, format string, args ...any) {
		problems = append(problems, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	r, l := c.Resume, c.Limits
	switch {
	case r.Window < 0 || r.Window > MaxResumeWindow || r.Window%time.Second != 0:
		bad("resume.window", "must be 0 (resume off) or a whole number of seconds up to %v, got %v", MaxResumeWindow, r.Window)
	case r.Window > 0 && (r.ReplayRecent <= 0 || r.ReplayRecent > r.Window):
		problems = append(problems, relation("resume.replay_recent", "resume.window", "lower", "must be greater than 0 and at most resume.window (%v), got %v", r.Window, r.ReplayRecent))
	case r.ReplayRecent <= 0:
		bad("resume.replay_recent", "must be greater than 0, got %v", r.ReplayRecent)
	}
	switch {
	case r.Buffer <= 0:
		bad("resume.buffer", "must be greater than 0, got %d", r.Buffer)
	case l.MaxText > 0 && r.Buffer < 2*l.MaxText:
		problems = append(problems, relation("resume.buffer", "limits.max_text", "raise", "%d is below twice limits.max_text (%d): the longest messages could not be kept", r.Buffer, l.MaxText))
	case l.OutboundMax > 0 && r.Buffer > l.OutboundMax/8:
		// JSON escaping can make a text six times longer: a replay
		// must fit in the new connection's queue with room to spare,
		// or replaying would cut the connection off.
		problems = append(problems, relation("resume.buffer", "limits.outbound_max", "lower", "%d is above an eighth of limits.outbound_max (%d): replaying it could overflow the connection it is replayed to", r.Buffer, l.OutboundMax))
	}
	if r.MaxAway < 0 {
		bad("resume.max_away", "must be 0 (a quarter of limits.max_conns) or more, got %d", r.MaxAway)
	}
	if r.MaxAwayPerIP < 0 {
		bad("resume.max_away_per_ip", "must be 0 (limits.max_conns_per_ip) or more, got %d", r.MaxAwayPerIP)
	}
	if r.StateFile != "" && r.Window == 0 {
		bad("resume.state_file", "keeps sessions for a resume, which resume.window 0 turns off")
	}
	return problems
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

// listenOverlaps reports whether listeners on a and b, two addresses
// checkListen accepted, would need the same socket, so that the second
// could not be bound: the same port, and a host in common. An empty or
// unspecified host (every interface) has every host in common with any
// other; "localhost" is loopback, 127.0.0.1 and ::1. Other names are
// not resolved, only compared: a check that looked them up would pass
// or fail with the resolver.
func listenOverlaps(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb {
		return false
	}
	ia, ib := listenHosts(ha), listenHosts(hb)
	if ia == nil || ib == nil {
		return true // every interface
	}
	for _, x := range ia {
		if slices.Contains(ib, x) {
			return true
		}
	}
	return false
}

// listenHosts is what a listen address's host stands for, as strings
// compared by listenOverlaps: nil for every interface, IP addresses in
// their canonical form, any other name in lower case.
func listenHosts(host string) []string {
	if strings.EqualFold(host, "localhost") {
		return []string{"127.0.0.1", "::1"}
	}
	if host == "" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return []string{strings.ToLower(host)}
	}
	if ip.IsUnspecified() {
		return nil
	}
	return []string{ip.Unmap().String()}
}

// checkRedisURL never quotes the URL back: it may carry a password.
// Beyond the shape of the URL it asks go-redis's own parser, the one the
// cluster joins with, so that a URL this accepts (a database number, a
// query option such as dial_timeout) is one the daemon can use.
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
	if _, err := redis.ParseURL(raw); err != nil {
		// go-redis's messages name the database, option or path at
		// fault, never the user information.
		return errors.New(strings.TrimPrefix(err.Error(), "redis: "))
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

// Warnings returns what is valid but probably not meant, each a *Error
// naming its key: trusted proxies that cover too much (below), an admin
// listener off loopback (Admin.warnings), accounts keys in open mode
// (Auth.warnings) and the cluster's (Cluster.Warnings).
// Load puts them in Sources.Warnings, and Describe prints them after the
// keys.
//
// A trusted_proxies entry as wide as a continent's share of the internet
// (0.0.0.0/0, ::/0, 2000::/3) lets any client in it name any address it
// likes in a PROXY header or X-Forwarded-For: limits.max_conns_per_ip, the
// throttles and the addresses in the logs then mean nothing. It is still
// accepted, since a test bed may want exactly that, but never silently.
func (c *Config) Warnings() []*Error {
	var out []*Error
	for _, s := range c.TrustedProxies {
		p, err := parseNet(s)
		if err != nil || !tooWide(p) {
			continue
		}
		out = append(out, &Error{Key: "trusted_proxies", Msg: fmt.Sprintf(
			"%q trusts %s: any client there can claim any address with a PROXY header or X-Forwarded-For, "+
				"which defeats limits.max_conns_per_ip, the throttles and the addresses in the logs; list only your proxies",
			s, coverage(p))})
	}
	out = append(out, c.Admin.warnings()...)
	out = append(out, c.Auth.warnings()...)
	out = append(out, c.Resume.warnings()...)
	return append(out, c.Cluster.Warnings()...)
}

// warnings lists an admin listener that is not on loopback. The listener
// has no authentication: whoever reaches it reads /metrics (the users and
// pairs online, the traffic relayed, the process's resources) and, in
// cluster mode, can drain the node with POST /drain, which moves every
// session off it. A private network, or a firewall that lets only the
// monitoring in, may make that safe, which duet cannot see from here, so
// it is accepted, but never silently. A host name other than localhost
// is not resolved (the check would pass or fail with the resolver), so
// it is warned of as any address off loopback is.
func (a Admin) warnings() []*Error {
	if a.Listen == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil || isLoopbackHost(host) {
		return nil
	}
	where := "is not a loopback address"
	if listenHosts(host) == nil {
		where = "listens on every interface"
	}
	return []*Error{{Key: "admin.listen", Msg: fmt.Sprintf(
		"%q %s, and the admin listener has no authentication: whoever can reach it reads /metrics and, in cluster mode, "+
			"can drain this node with POST /drain; bind it to loopback (127.0.0.1:9090), or firewall the port so that only your monitoring reaches it",
		a.Listen, where)}}
}

// warnings lists a state file in a temporary directory. Under the
// systemd unit, whose PrivateTmp=yes gives the service a /tmp and a
// /var/tmp of its own, deleted when it stops, the file is gone by the
// time the next process looks: the stop logs that it kept the sessions,
// and the restart finds none. Run otherwise it works, until a reboot or
// a cleaner of /tmp, so it is not refused.
func (r Resume) warnings() []*Error {
	if r.StateFile == "" {
		return nil
	}
	clean := filepath.Clean(r.StateFile)
	for _, tmp := range []string{"/tmp", "/var/tmp"} {
		if strings.HasPrefix(clean, tmp+"/") {
			return []*Error{{Key: "resume.state_file", Msg: fmt.Sprintf(
				"%q is under %s, which the systemd unit gives the service a private copy of (PrivateTmp=yes), deleted when it stops: "+
					"the sessions a restart keeps there are lost; put it in /var/lib/duetd (the unit's StateDirectory), as /var/lib/duetd/sessions",
				r.StateFile, tmp)}}
		}
	}
	return nil
}

// warnings lists the accounts keys set in open mode, which ignores
// them: an operator who names a users file and forgets auth.mode:
// accounts believes the server restricted while anyone may /login under
// any free name. They are not refused, as a file may be made ready
// before the switch, which takes a restart.
func (a Auth) warnings() []*Error {
	if a.Mode != "open" {
		return nil
	}
	var w []*Error
	if a.UsersFile != "" {
		w = append(w, &Error{Key: "auth.users_file", Msg: "is set but auth.mode is open: the file is ignored and anyone may log in under any free name; set auth.mode: accounts"})
	}
	if a.Takeover {
		w = append(w, &Error{Key: "auth.takeover", Msg: "is set but auth.mode is open: it is ignored and anyone may log in under any free name; set auth.mode: accounts"})
	}
	return w
}

// tooWide reports whether p covers more of the internet than any one
// network's proxies could need: an IPv4 prefix shorter than /8 (10.0.0.0/8,
// the widest private range, is fine) or an IPv6 prefix shorter than /16
// that reaches into global unicast space (fc00::/7, the unique local
// range, is fine).
func tooWide(p netip.Prefix) bool {
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	if a.Is4() {
		return bits < 8
	}
	return bits < 16 && p.Overlaps(globalUnicast)
}

var globalUnicast = netip.MustParsePrefix("2000::/3")

// coverage says in words how much a too-wide prefix covers.
func coverage(p netip.Prefix) string {
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	family := "IPv6"
	if a.Is4() {
		family = "IPv4"
	}
	if bits == 0 {
		return "every " + family + " address"
	}
	return fmt.Sprintf("1/%d of all %s addresses", 1<<bits, family)
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

// longestFrame is the longest WebSocket message a client sends for a
// text of maxText bytes, numbered as the browser client numbers its
// messages (an id of up to 20 digits): the text as a say, or sealed
// (docs/E2E.md) as {"type":"seal","data":"..."} with as much data as
// the server relays (proto.SealedLimit). A say's text may take six
// bytes for each of its own once written as JSON: every encoder writes
// a control character as \u0001, and Go's writes <, > and & so too. The
// say is the longer but for a maxText under 19 bytes. A max_frame below
// it closes the sender's WebSocket (1009) for a message the server would
// otherwise relay, and its partner is told it disconnected.
//
// The frame is held whole before it is read, in gnet's buffer for the
// connection (and a fragmented one in the frame reader's as well), but
// only while it comes in: nothing is allocated for it ahead, and an
// idle connection holds neither.
func longestFrame(maxText int) int {
	const (
		id   = len(`,"id":18446744073709551615`)
		say  = len(`{"type":"say","text":""}`) + id
		seal = len(`{"type":"seal","data":""}`) + id
	)
	return max(say+6*maxText, seal+int(proto.SealedLimit(maxText)))
}

// originProblem says why o can never equal the Origin header a browser
// sends, or "" when it can (or is "*"). A browser sends
// scheme://host[:port]: no path, not even "/", and no port when it is the
// scheme's own; an entry written otherwise would refuse every browser
// with 403 and no hint of why.
func originProblem(o string) string {
	if o == "*" {
		return ""
	}
	if strings.EqualFold(o, "null") {
		// The opaque origin of sandboxed frames and file: pages: any of
		// them may send it, so it names no site to trust.
		return `is the opaque origin of sandboxed frames and file: pages, which only "*" allows`
	}
	scheme, host, ok := httphead.Origin(o)
	if !ok {
		if _, _, ok := httphead.Origin(strings.TrimSuffix(o, "/")); ok {
			return fmt.Sprintf("ends in a \"/\", which a browser leaves out: write %q", strings.TrimSuffix(o, "/"))
		}
		return `is not an origin as a browser sends it: want scheme://host[:port] with http or https and nothing after, such as "https://chat.example.com"`
	}
	if u := (&url.URL{Host: host}); (scheme == "https" && u.Port() == "443") || (scheme == "http" && u.Port() == "80") {
		return fmt.Sprintf("names the scheme's own port, which a browser leaves out: write %q", scheme+"://"+u.Hostname())
	}
	for _, r := range host {
		if r > 0x7e {
			return "has a host that is not ASCII: a browser sends an international name in its ASCII (punycode) form, xn--..."
		}
	}
	return ""
}
