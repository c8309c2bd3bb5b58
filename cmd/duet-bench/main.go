// Command duet-bench measures duet's relay: a load generator that speaks
// both of duetd's protocols, and two reference relays to hold duetd's
// numbers against.
//
// # Subcommands
//
//	duet-bench run [flags]                  drive load at a server and report
//	duet-bench bare-relay -listen ADDR      the ceiling: a bare gnet v2 relay
//	duet-bench goroutine-relay -listen ADDR [-ws ADDR] [-batch]
//	                                        the floor: a goroutine-per-connection relay
//	duet-bench report -dir DIR -out FILE [-notes FILE]
//	                                        write docs/BENCHMARKS.md from bench.sh's runs
//
// # run
//
// run opens -pairs pairs of connections, pairs each (the first side logs
// in and hands its token to the second, which connects with it), then has
// both sides of every pair send -messages messages of -size bytes to each
// other, at most -window in flight per sender. Each message text carries
// its sequence number and send time, so the receiver checks order and
// measures latency on its own. It runs in three timed phases:
//
//	connect  open every connection and read the server's greeting
//	pair     first login sent to last pairing confirmed (pairings/s)
//	relay    first message sent to last message received (messages/s)
//
// It reports delivered messages per second (all messages received by all
// peers over the relay's wall time), latency percentiles in microseconds
// (p50, p99, p99.9, from an HdrHistogram), pairings per second, errors by
// kind (server error codes, rejected, lost and out-of-order messages), and
// with -pid the server's resident memory per connection: VmRSS from
// /proc/PID/status read before connecting and again after the relay (or
// after -idle's hold), divided by the connections opened. Against a server
// that has served earlier runs, "before" already holds their leftovers, so
// measure memory with -idle on a fresh server. With -away, the idle run
// then resets every connection, so that each session is away, and reads
// VmRSS again after the wait: the RSS per away session.
//
// With -pid it also reports what the server spent in the pair phase (per
// pair formed) and in the relay phase (per message delivered): CPU time,
// from the server's threads' /proc/PID/task/TID/schedstat (exact to the
// nanosecond) or, when a thread exited meanwhile, /proc/PID/stat's clock
// ticks; read and write system calls, from /proc/PID/io; and context
// switches. Each phase is bracketed by a reading just before it starts
// and one right after it ends. Beside the server's relay figures it
// reports its own, read the same way from /proc/self (load_generator in
// the JSON): client and server share the machine, so how much CPU the
// client spends per message bears on what the server's work costs.
// -idle also reports the kernel memory the
// open connections hold on top of RSS: what the socket slab caches of
// /proc/slabinfo (readable by root only) and the TCP buffers of
// /proc/net/sockstat grew by, for both ends of each connection, since
// client and server share the machine. It exits 1 when
// any pair failed to form or any message was lost, rejected, corrupted or
// reordered, and 2 on bad flags.
//
// Flags:
//
//	-proto tcp|ws|mix|bare  tcp: line protocol; ws: JSON over WebSocket;
//	                        mix: the owner on TCP, the connector on WebSocket;
//	                        bare: no protocol, for bare-relay (sockets are
//	                        paired in accept order; the first line each
//	                        sends, "hello N", tells its partner who it is)
//	-client tuned|plain     who drives the relay phase: tuned, duet-bench's own
//	                        client (below); plain, a client as a user writes it in
//	                        ten minutes (bufio, a regexp per message, a reader and
//	                        a writer goroutine per connection); setup and -idle
//	                        are the same for both
//	-tcp host:port          line protocol (and bare relay) address (127.0.0.1:7070)
//	-ws host:port           WebSocket address (127.0.0.1:8080), path -ws-path (/ws)
//	-pairs N                pairs of connections (100)
//	-messages M             messages each side sends (1000)
//	-duration D             send for D instead of a fixed count (e.g. 10s)
//	-size S                 message text length in bytes, at least 24 (64)
//	-window W               messages in flight per sender (16)
//	-sources A,B,...        loopback source addresses to spread sockets over,
//	                        each with its own ephemeral ports (127.0.0.1,127.0.0.2)
//	-pid P                  the server's pid: report its VmRSS growth per
//	                        connection, and its CPU, system calls and context
//	                        switches per pair and per message (and its own
//	                        CPU per message, beside them)
//	-idle                   pair, hold idle for -hold (5s), measure memory; no relay
//	-away D                 with -idle: then reset every connection (each session
//	                        goes away: resume) and read the RSS again after D
//	-json                   print the report as JSON
//	-timeout T              bound on every connect and setup step, and on the
//	                        relay going without progress (15s)
//	-concurrency C          connections or pairs being set up at once (128)
//	-cpuprofile FILE        write the load generator's own CPU profile
//
// Only loopback targets and sources are accepted: duet-bench measures a
// server on the same machine.
//
// The tuned client keeps out of the measurement's way: one goroutine per
// connection reads through a buffer that fits a whole window, and when it
// has taken in everything one read delivered it refills its peer's window
// with one write. The relay path allocates nothing per message.
//
// The plain client is kept simple on purpose, because a server's cost
// can depend on how its clients time their reads and writes: per
// connection a writer goroutine formats messages with fmt (encoding/json
// and wsutil.WriteClientText for WebSocket) into a bufio.Writer flushed
// when the window is spent, and a reader goroutine reads with
// bufio.Reader.ReadString (wsutil.ReadServerText and encoding/json for
// WebSocket) and picks each message's sequence number out with a regexp.
// It checks order, loss and corruption like the tuned client and reports
// the same figures.
//
// # Reference relays
//
// bare-relay is the ceiling: a multicore gnet v2 server that pairs
// connections in the order they open and forwards whole lines to the
// partner, with no protocol. Drive it with -proto bare. It runs with Go's
// default GOMAXPROCS, as duetd does, so that the two are compared under
// the same scheduler: raising it to the loop count plus two, which the
// relay once did to spare a woken loop a wait for a P, costs more CPU per
// message than it saves (up to a third more with the plain client; see
// docs/BENCHMARKS.notes.md, "Seventh round").
//
// goroutine-relay is what most people write first: the net package, one
// goroutine per connection with bufio, and a mutex-protected token map. It
// speaks the line protocol subset the load generator uses (greeting,
// /login, /connect, relayed "<NAME> text" lines), so -proto tcp works
// against it unchanged. With -ws ADDR it also serves the JSON protocol
// over WebSocket (at -ws-path, /ws), so -proto ws and mix work too.
//
// # Example
//
//	go build -o /tmp/duet-bench ./cmd/duet-bench
//	/tmp/duet-bench bare-relay -listen 127.0.0.1:7071 &
//	/tmp/duet-bench run -proto bare -tcp 127.0.0.1:7071 -pairs 200 -messages 20000 -size 64 -window 16
//	/tmp/duet-bench goroutine-relay -listen 127.0.0.1:7072 &
//	/tmp/duet-bench run -proto tcp -tcp 127.0.0.1:7072 -pairs 200 -messages 20000 -pid $!
//	/tmp/duet-bench run -proto mix -tcp 127.0.0.1:7070 -ws 127.0.0.1:8080 -pairs 1000 -duration 10s
//	/tmp/duet-bench run -idle -pairs 5000 -pid $(pidof duetd) -sources 127.0.0.1,127.0.0.2
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"duet/cmd/duet-bench/internal/barerelay"
	"duet/cmd/duet-bench/internal/benchreport"
	"duet/cmd/duet-bench/internal/gorelay"
	"duet/cmd/duet-bench/internal/loadgen"
)

const usage = `usage: duet-bench <command> [flags]

commands:
  run               drive load at a duet server or a reference relay
  bare-relay        serve the bare gnet relay (the ceiling)
  goroutine-relay   serve the goroutine-per-connection relay (the floor)
  report            write the benchmark report from scripts/bench.sh's runs

"duet-bench <command> -h" lists a command's flags.
`

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

// mainExit runs a subcommand and returns the process exit code.
func mainExit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stdout, stderr)
	case "bare-relay":
		return bareRelayCommand(ctx, args[1:], stderr)
	case "goroutine-relay":
		return goroutineRelayCommand(ctx, args[1:], stderr)
	case "report":
		return reportCommand(args[1:], stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "duet-bench: unknown command %q\n%s", args[0], usage)
	return 2
}

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := loadgen.DefaultConfig()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proto := fs.String("proto", string(cfg.Proto), "protocol: tcp, ws, mix (owner TCP, connector WebSocket) or bare")
	client := fs.String("client", string(cfg.Client), "relay client: tuned (duet-bench's own) or plain (bufio, a regexp per message)")
	fs.StringVar(&cfg.TCPAddr, "tcp", cfg.TCPAddr, "line protocol (or bare relay) `host:port`")
	fs.StringVar(&cfg.WSAddr, "ws", cfg.WSAddr, "WebSocket `host:port`")
	fs.StringVar(&cfg.WSPath, "ws-path", cfg.WSPath, "WebSocket path")
	fs.IntVar(&cfg.Pairs, "pairs", cfg.Pairs, "pairs of connections")
	fs.IntVar(&cfg.Messages, "messages", cfg.Messages, "messages each side sends")
	fs.DurationVar(&cfg.Duration, "duration", 0, "send for this long instead of -messages")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "message text length in bytes")
	fs.IntVar(&cfg.Window, "window", cfg.Window, "messages in flight per sender")
	sources := fs.String("sources", "", "comma-separated loopback `addresses` to bind client sockets to")
	fs.IntVar(&cfg.PID, "pid", 0, "server `pid`, to report its RSS per connection and its CPU and system calls per pair and per message")
	fs.BoolVar(&cfg.Idle, "idle", false, "pair, hold idle for -hold and measure memory; no messages")
	fs.DurationVar(&cfg.Hold, "hold", cfg.Hold, "how long -idle holds the pairs")
	fs.DurationVar(&cfg.Away, "away", 0, "with -idle: then reset every connection, so that its session is away, and read the server's RSS again after this long")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "bound on each setup step and on the relay going without progress")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "connections or pairs set up at once")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's own CPU profile to `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "run: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var err error
	if cfg.Proto, err = loadgen.ParseProto(*proto); err != nil {
		fmt.Fprintln(stderr, "run:", err)
		return 2
	}
	if cfg.Client, err = loadgen.ParseClient(*client); err != nil {
		fmt.Fprintln(stderr, "run:", err)
		return 2
	}
	if cfg.Sources, err = loadgen.ParseSources(*sources); err != nil {
		fmt.Fprintln(stderr, "run:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "run:", err)
		return 2
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "run:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "run:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	rep, runErr := loadgen.Run(ctx, cfg)
	if rep != nil {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			_ = rep.WriteTable(stdout)
		}
	}
	if runErr != nil {
		fmt.Fprintln(stderr, "run:", runErr)
		return 1
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

func bareRelayCommand(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bare-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":7071", "`address` to listen on")
	loops := fs.Int("loops", 0, "event loops (0: one per CPU)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	r, err := barerelay.Start(*listen, barerelay.Options{EventLoops: *loops})
	if err != nil {
		fmt.Fprintln(stderr, "bare-relay:", err)
		return 1
	}
	fmt.Fprintf(stderr, "bare-relay listening on %s (GOMAXPROCS %d)\n", r.Addr(), runtime.GOMAXPROCS(0))
	<-ctx.Done()
	st := r.Stats()
	fmt.Fprintf(stderr, "bare-relay: forwarded %d bytes, dropped %d, %d connections open at exit\n", st.Forwarded, st.Dropped, st.Open)
	if err := r.Close(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "bare-relay:", err)
		return 1
	}
	return 0
}

func goroutineRelayCommand(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("goroutine-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg gorelay.Config
	fs.StringVar(&cfg.LineAddr, "listen", ":7072", "line protocol `address`")
	fs.StringVar(&cfg.WSAddr, "ws", "", "WebSocket `address` (off when empty)")
	fs.StringVar(&cfg.WSPath, "ws-path", "/ws", "WebSocket path")
	fs.BoolVar(&cfg.Batch, "batch", false, "coalesce a burst of relayed messages into one write (a tuned version; default: one write per message, as a first version does)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s, err := gorelay.Listen(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "goroutine-relay:", err)
		return 1
	}
	fmt.Fprintf(stderr, "goroutine-relay listening on %s", s.LineAddr())
	if a := s.WSAddr(); a != nil {
		fmt.Fprintf(stderr, ", WebSocket on %s%s", a, cfg.WSPath)
	}
	fmt.Fprintln(stderr)
	<-ctx.Done()
	if err := s.Close(); err != nil {
		fmt.Fprintln(stderr, "goroutine-relay:", err)
		return 1
	}
	return 0
}

func reportCommand(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "`directory` of scripts/bench.sh's runs (runs.tsv, the JSON reports, micro.txt)")
	out := fs.String("out", "docs/BENCHMARKS.md", "report `file` to write")
	notes := fs.String("notes", "", "hand-written `file` to append (docs/BENCHMARKS.notes.md)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "report: -dir is required, and nothing else")
		return 2
	}
	set, err := benchreport.Load(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "report:", err)
		return 1
	}
	var extra []byte
	if *notes != "" {
		if extra, err = os.ReadFile(*notes); err != nil {
			fmt.Fprintln(stderr, "report:", err)
			return 1
		}
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(stderr, "report:", err)
		return 1
	}
	err = set.Write(f, benchreport.ThisMachine(time.Now()), extra)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(stderr, "report:", err)
		return 1
	}
	return 0
}
