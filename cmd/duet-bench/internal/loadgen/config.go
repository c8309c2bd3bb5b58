package loadgen

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Proto says which protocol each side of a pair speaks.
type Proto string

const (
	ProtoTCP  Proto = "tcp"  // duet's line protocol on both sides
	ProtoWS   Proto = "ws"   // duet's JSON protocol over WebSocket on both sides
	ProtoMix  Proto = "mix"  // the owner speaks the line protocol, the connector WebSocket
	ProtoBare Proto = "bare" // no protocol: the bare relay pairs sockets in accept order
)

// ParseProto reads a -proto value.
func ParseProto(s string) (Proto, error) {
	switch p := Proto(s); p {
	case ProtoTCP, ProtoWS, ProtoMix, ProtoBare:
		return p, nil
	}
	return "", fmt.Errorf("unknown protocol %q: want tcp, ws, mix or bare", s)
}

// Client says which client drives the relay phase.
type Client string

const (
	// ClientTuned is the load generator's own client, built to cost the
	// machine little: one goroutine per connection that takes in all one
	// socket read delivered and refills its peer's window with one write.
	ClientTuned Client = "tuned"
	// ClientPlain is what a user writes in ten minutes, kept that way on
	// purpose: bufio on both sides, a regexp per message, a reader and a
	// writer goroutine per connection (see plain.go).
	ClientPlain Client = "plain"
)

// ParseClient reads a -client value.
func ParseClient(s string) (Client, error) {
	switch c := Client(s); c {
	case ClientTuned, ClientPlain:
		return c, nil
	}
	return "", fmt.Errorf("unknown client %q: want tuned or plain", s)
}

// Config is one load run.
type Config struct {
	Proto   Proto
	Client  Client // the client of the relay phase; setup is the same for both
	TCPAddr string // host:port of the line protocol (and of the bare relay)
	WSAddr  string // host:port of the WebSocket listener
	WSPath  string // path of the WebSocket endpoint

	Pairs    int
	Messages int           // per side; ignored when Duration is set
	Duration time.Duration // send for this long instead of a fixed count
	Size     int           // message text length in bytes
	Window   int           // messages in flight per sender

	// Sources are loopback addresses the client sockets bind to, in turn,
	// before connecting: each source has its own range of ephemeral ports.
	Sources []net.IP

	PID  int           // the server's process, for its RSS, CPU and system calls; 0 to skip
	Idle bool          // pair, hold idle for Hold, measure RSS; no relay
	Hold time.Duration // how long Idle mode holds the pairs
	// Away, in Idle mode, is how long to wait after resetting every
	// connection, so that their sessions are away (a reset is a drop,
	// not a goodbye), before reading the server's RSS again; 0 skips it.
	Away time.Duration

	// Timeout bounds every wait: a connect, a setup step, and the relay
	// going without any progress. Every phase ends by this bound.
	Timeout time.Duration

	// Concurrency bounds how many connections are being set up at once,
	// so a burst of SYNs does not overflow the server's accept backlog.
	Concurrency int
}

// DefaultConfig is the configuration the command line starts from.
func DefaultConfig() Config {
	return Config{
		Proto:       ProtoTCP,
		Client:      ClientTuned,
		TCPAddr:     "127.0.0.1:7070",
		WSAddr:      "127.0.0.1:8080",
		WSPath:      "/ws",
		Pairs:       100,
		Messages:    1000,
		Size:        64,
		Window:      16,
		Hold:        5 * time.Second,
		Timeout:     15 * time.Second,
		Concurrency: 128,
	}
}

// maxConnections keeps a run under the process's open-file limit with
// room for the runtime's own descriptors.
const maxConnections = 19000

// Validate checks the configuration and that every address it would send
// to is on the loopback network: this tool benchmarks a server on the
// same machine and must never load anything else.
func (c *Config) Validate() error {
	var errs []error
	if _, err := ParseProto(string(c.Proto)); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseClient(string(c.Client)); err != nil {
		errs = append(errs, err)
	}
	if c.Pairs < 1 || 2*c.Pairs > maxConnections {
		errs = append(errs, fmt.Errorf("-pairs %d: want 1 to %d", c.Pairs, maxConnections/2))
	}
	if !c.Idle && c.Duration <= 0 && c.Messages < 1 {
		errs = append(errs, fmt.Errorf("-messages %d: want at least 1 (or set -duration)", c.Messages))
	}
	if c.Size < MinTextSize || c.Size > MaxTextSize {
		errs = append(errs, fmt.Errorf("-size %d: want %d to %d bytes (the text carries a sequence number and a timestamp)", c.Size, MinTextSize, MaxTextSize))
	}
	if c.Window < 1 || c.Window > 1<<20 {
		errs = append(errs, fmt.Errorf("-window %d: want 1 to %d", c.Window, 1<<20))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("-timeout must be positive"))
	}
	if c.Idle && c.Hold < 0 {
		errs = append(errs, errors.New("-hold must not be negative"))
	}
	if c.Away < 0 || c.Away > 0 && (!c.Idle || c.Proto == ProtoBare) {
		errs = append(errs, errors.New("-away: want a positive wait, with -idle, against duetd"))
	}
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.Proto != ProtoWS {
		if err := checkLoopback("-tcp", c.TCPAddr); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Proto == ProtoWS || c.Proto == ProtoMix {
		if err := checkLoopback("-ws", c.WSAddr); err != nil {
			errs = append(errs, err)
		}
		if !strings.HasPrefix(c.WSPath, "/") {
			errs = append(errs, fmt.Errorf("-ws-path %q must start with /", c.WSPath))
		}
	}
	for _, ip := range c.Sources {
		if !ip.IsLoopback() {
			errs = append(errs, fmt.Errorf("-sources: %s is not a loopback address", ip))
		}
	}
	return errors.Join(errs...)
}

func checkLoopback(flag, hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%s %q: %v", flag, hostport, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s %q: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed", flag, hostport)
	}
	return nil
}

// ParseSources reads a -sources value: comma-separated IP addresses.
func ParseSources(s string) ([]net.IP, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ips []net.IP
	for _, part := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(part))
		if ip == nil {
			return nil, fmt.Errorf("-sources: %q is not an IP address", part)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// messagesPerSide is the fixed count each sender sends, or -1 when the
// run is bounded by time instead.
func (c *Config) messagesPerSide() int64 {
	if c.Duration > 0 {
		return -1
	}
	return int64(c.Messages)
}
