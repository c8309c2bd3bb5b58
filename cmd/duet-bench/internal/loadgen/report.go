package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is what one run measured. Its JSON form is the machine-readable
// output (-json); WriteTable prints the same for people.
type Report struct {
	Proto           Proto   `json:"proto"`
	Client          Client  `json:"client"`
	Mode            string  `json:"mode"` // "relay" or "idle"
	Pairs           int     `json:"pairs"`
	MessagesPerSide int     `json:"messages_per_side,omitempty"`
	DurationSeconds float64 `json:"duration_seconds,omitempty"` // the requested sending time
	Size            int     `json:"size"`
	Window          int     `json:"window"`

	Connect Phase         `json:"connect"`
	Pair    Phase         `json:"pair"`
	Relay   *RelayReport  `json:"relay,omitempty"`
	Errors  ErrorReport   `json:"errors"`
	RSS     *MemoryReport `json:"rss,omitempty"`
	// Away is the server's RSS once every connection of an idle run was
	// reset and its session is away (-away); Connections counts the
	// sessions, and PerConnectionBytes is per session.
	Away   *MemoryReport `json:"away,omitempty"`
	Server *ServerReport `json:"server,omitempty"`
	// LoadGenerator is what this process, the load generator, spent over
	// the relay phase, per message delivered, read as the server's is
	// (with -pid). It shares the machine with the server, so a client
	// that costs more takes more of the CPUs the server runs on, and
	// leaves the server's caches colder between its turns: the figure
	// says how heavy each client is, beside what the server spent under
	// it (BENCHMARKS.md, twenty-first round).
	LoadGenerator *ServerUsage `json:"load_generator,omitempty"`
	// Kernel is the idle run's kernel memory for the open connections.
	Kernel *KernelMemoryReport `json:"kernel,omitempty"`
}

// ServerReport is what the server process (-pid) spent in each timed
// phase, read from /proc (see procstat.go).
type ServerReport struct {
	PID   int          `json:"pid"`
	Pair  *ServerUsage `json:"pair,omitempty"`  // per pair formed
	Relay *ServerUsage `json:"relay,omitempty"` // per message delivered
	// Hold is an idle run's hold, per connection held open: what a server
	// spends with nothing to relay (IdleCPUShare, IdleSwitchesPerSecond).
	Hold *ServerUsage `json:"hold,omitempty"`
}

// IdleCPUShare is the share of one CPU the server used while the idle
// run's connections were held open.
func (u *ServerUsage) IdleCPUShare() float64 {
	if u.Seconds <= 0 {
		return 0
	}
	return u.CPUSeconds / u.Seconds
}

// IdleSwitchesPerSecond is how many times a second the server's threads
// were put on a CPU while the connections were held open: its wake-ups.
func (u *ServerUsage) IdleSwitchesPerSecond() float64 {
	if u.Seconds <= 0 {
		return 0
	}
	return float64(u.ContextSwitches) / u.Seconds
}

// ServerUsage is the server's CPU time and system calls over one phase,
// in total and per op: per pair formed for the pair phase, per message
// delivered for the relay.
type ServerUsage struct {
	Ops     int64   `json:"ops"`
	Seconds float64 `json:"seconds"` // wall time between the two readings
	// CPUSeconds is user and system time together; CPUSource says whether
	// it is the threads' exact sum (schedstat) or stat's ticks (stat).
	CPUSeconds     float64 `json:"cpu_seconds"`
	CPUSource      string  `json:"cpu_source"`
	CPUMicrosPerOp float64 `json:"cpu_us_per_op"`
	// UserSeconds and SystemSeconds split the time, in 10 ms ticks.
	UserSeconds   float64 `json:"user_seconds"`
	SystemSeconds float64 `json:"system_seconds"`
	// ReadCalls and WriteCalls are read-like and write-like system calls
	// (syscr and syscw of /proc/PID/io), eventfd wake-ups included.
	ReadCalls   int64   `json:"read_calls"`
	WriteCalls  int64   `json:"write_calls"`
	ReadsPerOp  float64 `json:"reads_per_op"`
	WritesPerOp float64 `json:"writes_per_op"`
	// ContextSwitches counts the times a server thread was put on a CPU.
	ContextSwitches int64   `json:"context_switches"`
	SwitchesPerOp   float64 `json:"context_switches_per_op"`
}

// KernelMemoryReport is what the kernel's socket slab caches and TCP
// buffers grew by while the idle run's connections were open (see
// slab.go). Each connection has both its ends on this machine, so the
// figures count the client's socket as well as the server's.
type KernelMemoryReport struct {
	Connections            int         `json:"connections"`
	Caches                 []SlabDelta `json:"caches,omitempty"`
	SlabBytes              int64       `json:"slab_bytes"`
	SlabPerConnectionBytes float64     `json:"slab_per_connection_bytes"`
	// ProcInodes is how many /proc inodes other processes made meanwhile
	// (by listing open descriptors); as many dentries and security blobs
	// are taken out of the dentry and lsm_inode_cache figures.
	ProcInodes int64 `json:"proc_inodes"`
	// SocketBufferBytes is what the machine's TCP buffers grew by (TCP
	// mem of /proc/net/sockstat): idle sockets hold none, so anything
	// here is other traffic on the machine.
	SocketBufferBytes int64 `json:"socket_buffer_bytes"`
	// Error says why nothing was measured (slabinfo is readable by root
	// only).
	Error string `json:"error,omitempty"`
}

// SlabDelta is one slab cache's growth.
type SlabDelta struct {
	Name                 string  `json:"name"`
	ObjectBytes          int64   `json:"object_bytes"`
	Objects              int64   `json:"objects"`
	ObjectsPerConnection float64 `json:"objects_per_connection"`
	Bytes                int64   `json:"bytes"`
}

// Phase is a setup phase: how many succeeded, and how fast.
type Phase struct {
	Count     int     `json:"count"` // connections opened, or pairs formed
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

// RelayReport is the message phase.
type RelayReport struct {
	Sent              int64         `json:"sent"`
	Delivered         int64         `json:"delivered"`
	Seconds           float64       `json:"seconds"` // first message sent to last received
	MessagesPerSecond float64       `json:"messages_per_second"`
	Latency           LatencyReport `json:"latency_us"`
}

// LatencyReport summarises send-to-receive times in microseconds.
type LatencyReport struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   int64   `json:"p50"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p999"`
	Max   int64   `json:"max"`
}

func summarise(h *hdrhistogram.Histogram) LatencyReport {
	return LatencyReport{
		Count: h.TotalCount(),
		Mean:  h.Mean(),
		P50:   h.ValueAtQuantile(50),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
	}
}

// ErrorReport counts everything that went wrong, by kind.
type ErrorReport struct {
	// Server counts error replies by their code (e.g. rate_limited).
	Server map[string]int64 `json:"server,omitempty"`
	// ConnectFailed and PairFailed count connections that could not be
	// opened and pairs that could not be formed; Reasons says why.
	ConnectFailed int              `json:"connect_failed"`
	PairFailed    int              `json:"pair_failed"`
	Reasons       map[string]int64 `json:"reasons,omitempty"`
	// Rejected messages got an error reply instead of being relayed.
	Rejected int64 `json:"rejected"`
	// Lost messages were sent, not rejected, and never arrived.
	Lost int64 `json:"lost"`
	// OutOfOrder messages arrived after a later one from the same sender.
	OutOfOrder int64 `json:"out_of_order"`
	// Corrupt texts did not read back as what was sent.
	Corrupt int64 `json:"corrupt"`
	// PeerLeft counts notices that a peer went away mid-run.
	PeerLeft int64 `json:"peer_left"`
	// Disconnected counts connections that ended before the run closed them.
	Disconnected int `json:"disconnected"`
	// Stalled is set when the relay ended by timeout, not completion.
	Stalled string `json:"stalled,omitempty"`
}

// MemoryReport is the server's resident memory around the run.
type MemoryReport struct {
	PID                int     `json:"pid"`
	BeforeKiB          int64   `json:"before_kib"`
	AfterKiB           int64   `json:"after_kib"`
	Connections        int     `json:"connections"`
	PerConnectionBytes float64 `json:"per_connection_bytes"`
}

// OK reports whether every pair formed and stayed up, and every message
// arrived, once, intact and in order. The command exits non-zero
// otherwise.
func (r *Report) OK() bool {
	e := &r.Errors
	if e.ConnectFailed > 0 || e.PairFailed > 0 || e.Stalled != "" || e.Disconnected > 0 || e.PeerLeft > 0 {
		return false
	}
	if r.Relay == nil {
		return true
	}
	return e.Rejected == 0 && e.Lost == 0 && e.OutOfOrder == 0 && e.Corrupt == 0 &&
		r.Relay.Delivered == r.Relay.Sent
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }

	run := fmt.Sprintf("proto=%s client=%s pairs=%d size=%d window=%d", r.Proto, r.Client, r.Pairs, r.Size, r.Window)
	switch {
	case r.Mode == "idle":
		run += " idle"
	case r.DurationSeconds > 0:
		run += fmt.Sprintf(" duration=%gs", r.DurationSeconds)
	default:
		run += fmt.Sprintf(" messages/side=%d", r.MessagesPerSide)
	}
	line("run\t%s", run)
	line("connect\t%d connections\t%.3fs\t%s conn/s", r.Connect.Count, r.Connect.Seconds, thousands(r.Connect.PerSecond))
	line("pair\t%d pairs\t%.3fs\t%s pairings/s", r.Pair.Count, r.Pair.Seconds, thousands(r.Pair.PerSecond))
	if rr := r.Relay; rr != nil {
		line("relay\t%d of %d delivered\t%.3fs\t%s messages/s", rr.Delivered, rr.Sent, rr.Seconds, thousands(rr.MessagesPerSecond))
		l := rr.Latency
		line("latency µs\tp50 %d  p99 %d  p999 %d\tmax %d\tmean %.0f", l.P50, l.P99, l.P999, l.Max, l.Mean)
	}
	line("errors\t%s", r.Errors.summary())
	if m := r.RSS; m != nil {
		line("server RSS\tpid %d: %.1f MiB before, %.1f MiB after\t%d conns\t%s bytes/conn",
			m.PID, float64(m.BeforeKiB)/1024, float64(m.AfterKiB)/1024, m.Connections, thousands(m.PerConnectionBytes))
	}
	if m := r.Away; m != nil {
		line("server RSS, away\tpid %d: %.1f MiB before, %.1f MiB with the sessions away\t%d sessions\t%s bytes/session",
			m.PID, float64(m.BeforeKiB)/1024, float64(m.AfterKiB)/1024, m.Connections, thousands(m.PerConnectionBytes))
	}
	if s := r.Server; s != nil {
		for _, p := range []struct {
			name, op string
			u        *ServerUsage
		}{{"server pair", "pair", s.Pair}, {"server relay", "message", s.Relay}} {
			if p.u == nil {
				continue
			}
			u := p.u
			line("%s\tpid %d: %.3fs CPU (user %.2fs, system %.2fs; %s)\t%.3f µs/%s\treads %.3f  writes %.3f  switches %.3f per %s",
				p.name, s.PID, u.CPUSeconds, u.UserSeconds, u.SystemSeconds, u.CPUSource, u.CPUMicrosPerOp, p.op,
				u.ReadsPerOp, u.WritesPerOp, u.SwitchesPerOp, p.op)
		}
		if u := s.Hold; u != nil {
			line("server hold	pid %d: %.3fs CPU over %.1fs held (user %.2fs, system %.2fs; %s)	%.2f%% of a CPU	%.0f switches/s",
				s.PID, u.CPUSeconds, u.Seconds, u.UserSeconds, u.SystemSeconds, u.CPUSource, 100*u.IdleCPUShare(), u.IdleSwitchesPerSecond())
		}
	}
	if k := r.Kernel; k != nil {
		if k.Error != "" {
			line("kernel memory\tnot measured: %s", k.Error)
		} else {
			var caches []string
			for _, c := range k.Caches {
				caches = append(caches, fmt.Sprintf("%s %.2f×%d", c.Name, c.ObjectsPerConnection, c.ObjectBytes))
			}
			line("kernel slab\t%s bytes/conn, both ends\t%s", thousands(k.SlabPerConnectionBytes), strings.Join(caches, "  "))
			line("kernel, other\t%d /proc inodes made meanwhile, left out\tthe machine's TCP buffers %+d bytes", k.ProcInodes, k.SocketBufferBytes)
		}
	}
	if r.OK() {
		line("result\tOK")
	} else {
		line("result\tFAILED")
	}
	return tw.Flush()
}

func (e *ErrorReport) summary() string {
	var parts []string
	add := func(name string, n int64) {
		if n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", name, n))
		}
	}
	add("connect_failed", int64(e.ConnectFailed))
	add("pair_failed", int64(e.PairFailed))
	add("rejected", e.Rejected)
	add("lost", e.Lost)
	add("out_of_order", e.OutOfOrder)
	add("corrupt", e.Corrupt)
	add("peer_left", e.PeerLeft)
	add("disconnected", int64(e.Disconnected))
	for _, code := range slices.Sorted(maps.Keys(e.Server)) {
		add("server:"+code, e.Server[code])
	}
	for _, reason := range slices.Sorted(maps.Keys(e.Reasons)) {
		add("reason:"+reason, e.Reasons[reason])
	}
	if e.Stalled != "" {
		parts = append(parts, "stalled ("+e.Stalled+")")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// thousands formats a rate as an integer with thousands separators.
func thousands(v float64) string {
	n := int64(v + 0.5)
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func perSecond(count int64, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(count) / seconds
}
