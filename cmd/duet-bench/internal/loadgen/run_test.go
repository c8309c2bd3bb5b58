package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/cmd/duet-bench/internal/barerelay"
	"duet/cmd/duet-bench/internal/gorelay"
)

func testConfig(proto Proto, pairs, messages int) Config {
	cfg := DefaultConfig()
	cfg.Proto = proto
	cfg.Pairs = pairs
	cfg.Messages = messages
	cfg.Timeout = 10 * time.Second
	return cfg
}

// checkReport asserts that a run delivered everything, in order, and that
// the report's numbers agree with one another.
func checkReport(t *testing.T, rep *Report, err error, pairs int, perSide int64) {
	t.Helper()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var table strings.Builder
	_ = rep.WriteTable(&table)
	t.Logf("report:\n%s", table.String())
	if !rep.OK() {
		t.Fatalf("report not OK: %s", rep.Errors.summary())
	}
	if rep.Connect.Count != 2*pairs || rep.Pair.Count != pairs {
		t.Errorf("connected %d, paired %d; want %d and %d", rep.Connect.Count, rep.Pair.Count, 2*pairs, pairs)
	}
	checkRate(t, "pair", float64(rep.Pair.Count), rep.Pair.Seconds, rep.Pair.PerSecond)
	rr := rep.Relay
	if rr == nil {
		t.Fatal("no relay report")
	}
	if perSide >= 0 && rr.Sent != 2*int64(pairs)*perSide {
		t.Errorf("sent %d, want %d", rr.Sent, 2*int64(pairs)*perSide)
	}
	if rr.Delivered != rr.Sent || rr.Delivered == 0 {
		t.Errorf("delivered %d of %d", rr.Delivered, rr.Sent)
	}
	checkRate(t, "relay", float64(rr.Delivered), rr.Seconds, rr.MessagesPerSecond)
	l := rr.Latency
	if l.Count != rr.Delivered {
		t.Errorf("latency samples %d, delivered %d", l.Count, rr.Delivered)
	}
	if !(l.P50 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("percentiles out of order: %+v", l)
	}
	if l.Max > int64(rr.Seconds*1e6)+1000 {
		t.Errorf("max latency %dµs exceeds the relay's %.0fµs", l.Max, rr.Seconds*1e6)
	}
	e := rep.Errors
	if e.Lost|e.Rejected|e.OutOfOrder|e.Corrupt|e.PeerLeft != 0 || e.Disconnected != 0 || len(e.Server) != 0 {
		t.Errorf("errors: %s", e.summary())
	}
}

func checkRate(t *testing.T, what string, count, seconds, rate float64) {
	t.Helper()
	if seconds <= 0 || rate <= 0 {
		t.Errorf("%s: %v in %vs at %v/s", what, count, seconds, rate)
		return
	}
	if math.Abs(rate-count/seconds) > 1e-6*rate {
		t.Errorf("%s: rate %v, but %v in %vs is %v", what, rate, count, seconds, count/seconds)
	}
}

func startBareRelay(t *testing.T) string {
	t.Helper()
	r, err := barerelay.Start("127.0.0.1:0", barerelay.Options{EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r.Addr().String()
}

func startGoroutineRelay(t *testing.T, batch bool) (lineAddr, wsAddr string) {
	t.Helper()
	s, err := gorelay.Listen(gorelay.Config{LineAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", Batch: batch})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.LineAddr().String(), s.WSAddr().String()
}

func TestRunAgainstBareRelay(t *testing.T) {
	cfg := testConfig(ProtoBare, 10, 200)
	cfg.TCPAddr = startBareRelay(t)
	rep, err := Run(context.Background(), cfg)
	checkReport(t, rep, err, 10, 200)
}

func TestRunAgainstGoroutineRelay(t *testing.T) {
	for _, batch := range []bool{false, true} {
		lineAddr, wsAddr := startGoroutineRelay(t, batch)
		for _, proto := range []Proto{ProtoTCP, ProtoWS, ProtoMix} {
			t.Run(fmt.Sprintf("%s/batch=%v", proto, batch), func(t *testing.T) {
				cfg := testConfig(proto, 10, 200)
				cfg.TCPAddr, cfg.WSAddr = lineAddr, wsAddr
				cfg.PID = os.Getpid()
				rep, err := Run(context.Background(), cfg)
				checkReport(t, rep, err, 10, 200)
				if rep.RSS == nil || rep.RSS.Connections != 20 || rep.RSS.BeforeKiB <= 0 {
					t.Errorf("rss report %+v", rep.RSS)
				}
				checkLoadGenerator(t, rep)
			})
		}
	}
}

// checkLoadGenerator checks the load generator's own usage over the
// relay phase of a run whose "server" (-pid) was this very process: the
// two readings are of the same counters over nearly the same time, so
// they must agree, and both be per message delivered.
func checkLoadGenerator(t *testing.T, rep *Report) {
	t.Helper()
	g, s := rep.LoadGenerator, rep.Server.Relay
	if g == nil || s == nil {
		t.Fatalf("load generator %+v, server %+v", g, s)
	}
	if g.Ops != rep.Relay.Delivered || g.Ops == 0 || g.CPUSeconds <= 0 {
		t.Fatalf("load generator over %d messages delivered: %+v", rep.Relay.Delivered, g)
	}
	// The generator's readings come just after the server's at both
	// ends; what the process spent between them is a few /proc reads.
	if diff := math.Abs(g.CPUSeconds - s.CPUSeconds); diff > 0.02+s.CPUSeconds/4 {
		t.Errorf("the same process read as load generator (%.4fs) and as server (%.4fs)", g.CPUSeconds, s.CPUSeconds)
	}
	if want := g.CPUSeconds * 1e6 / float64(g.Ops); math.Abs(g.CPUMicrosPerOp-want) > 1e-9*want {
		t.Errorf("load generator µs per message %v, want %v", g.CPUMicrosPerOp, want)
	}
}

func TestRunShapes(t *testing.T) {
	lineAddr, _ := startGoroutineRelay(t, false)
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"window of one", func(c *Config) { c.Window = 1 }},
		{"window larger than the run", func(c *Config) { c.Window = 1000 }},
		{"large messages", func(c *Config) { c.Size = 3000; c.Messages = 50 }},
		{"several sources", func(c *Config) { c.Sources = mustSources("127.0.0.1,127.0.0.2,127.0.0.3") }},
		{"one at a time", func(c *Config) { c.Concurrency = 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(ProtoTCP, 4, 100)
			cfg.TCPAddr = lineAddr
			tt.change(&cfg)
			rep, err := Run(context.Background(), cfg)
			checkReport(t, rep, err, 4, int64(cfg.Messages))
		})
	}
}

func TestRunForDuration(t *testing.T) {
	lineAddr, _ := startGoroutineRelay(t, false)
	cfg := testConfig(ProtoTCP, 4, 0)
	cfg.TCPAddr = lineAddr
	cfg.Duration = 300 * time.Millisecond
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	checkReport(t, rep, err, 4, -1)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a 300ms run took %v", took)
	}
	if rep.Relay.Seconds < 0.25 {
		t.Errorf("relay lasted %.3fs, want about 0.3s", rep.Relay.Seconds)
	}
}

func TestRunIdle(t *testing.T) {
	lineAddr, _ := startGoroutineRelay(t, false)
	cfg := testConfig(ProtoTCP, 5, 0)
	cfg.TCPAddr = lineAddr
	cfg.Idle = true
	cfg.Hold = 300 * time.Millisecond
	cfg.PID = os.Getpid()
	// The "server" is this process, kept busy by a goroutine that spins
	// until the run ends: the hold's reading must see about a CPU's
	// worth of it.
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	before, start := cpuOfSelf(t), time.Now()
	rep, err := Run(context.Background(), cfg)
	runShare := (cpuOfSelf(t) - before).Seconds() / time.Since(start).Seconds()
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Relay != nil || rep.Pair.Count != 5 {
		t.Fatalf("idle report: %+v", rep)
	}
	if rep.RSS == nil || rep.RSS.Connections != 10 || rep.RSS.AfterKiB <= 0 {
		t.Fatalf("rss: %+v", rep.RSS)
	}
	h := rep.Server.Hold
	if h == nil || h.Ops != 10 || h.Seconds < 0.3 || h.Seconds > 3 {
		t.Fatalf("hold: %+v", h)
	}
	// The spinner gets what the machine leaves it (other packages' tests
	// share its cores), so the hold's reading is held to what this
	// process was measured to use over the whole run, by getrusage: the
	// spinner dominates both, so they agree within a factor of two.
	if share := h.IdleCPUShare(); share < runShare/2 || share > float64(runtime.NumCPU())+0.5 {
		t.Errorf("a server spinning a CPU through the hold used %.2f of one, where getrusage says %.2f over the run", share, runShare)
	}
	if h.IdleSwitchesPerSecond() != float64(h.ContextSwitches)/h.Seconds {
		t.Errorf("switches per second %v, from %d in %vs", h.IdleSwitchesPerSecond(), h.ContextSwitches, h.Seconds)
	}
}

// TestRunIdleAway: with -away the idle run resets every connection once
// the idle RSS is read, waits, and reads the RSS again; the resets are
// the run's own and count as no error.
func TestRunIdleAway(t *testing.T) {
	lineAddr, _ := startGoroutineRelay(t, false)
	cfg := testConfig(ProtoTCP, 5, 0)
	cfg.TCPAddr = lineAddr
	cfg.Idle = true
	cfg.Hold = 50 * time.Millisecond
	cfg.Away = 50 * time.Millisecond
	cfg.PID = os.Getpid()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("idle run with -away: %s", rep.Errors.summary())
	}
	if rep.Away == nil || rep.Away.Connections != 10 || rep.Away.AfterKiB <= 0 || rep.Away.BeforeKiB != rep.RSS.BeforeKiB {
		t.Fatalf("away: %+v (rss %+v)", rep.Away, rep.RSS)
	}
	cfg.Idle = false
	if err := cfg.Validate(); err == nil {
		t.Error("-away without -idle validated")
	}
}

func TestRunIdleNoticesDroppedConnections(t *testing.T) {
	s, err := gorelay.Listen(gorelay.Config{LineAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(ProtoTCP, 3, 0)
	cfg.TCPAddr = s.LineAddr().String()
	cfg.Idle = true
	cfg.Hold = time.Second
	// The server goes away while the pairs are held.
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for s.Paired() < 6 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		_ = s.Close()
	}()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Errors.Disconnected != 6 {
		t.Fatalf("idle run over a closed server: %s", rep.Errors.summary())
	}
}

func TestRunRefusesToStartWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	cfg := testConfig(ProtoTCP, 2, 10)
	cfg.TCPAddr = addr
	rep, err := Run(context.Background(), cfg)
	if err == nil || rep == nil || rep.OK() {
		t.Fatalf("run against nothing: %v, %+v", err, rep)
	}
	if rep.Errors.ConnectFailed != 4 || rep.Errors.Reasons["connection_refused"] != 4 {
		t.Fatalf("errors: %s", rep.Errors.summary())
	}
}

// faultyServer speaks enough of the line protocol to pair clients and
// relays their messages through a fault hook, to prove that the load
// generator notices every kind of failure.
type faultyServer struct {
	ln    net.Listener
	fault func(sender, n int) faultAction

	mu      sync.Mutex
	byToken map[string]*faultySession
	nextID  int
	wg      sync.WaitGroup
}

type faultAction int

const (
	deliver    faultAction = iota
	drop                   // relay nothing, tell no one
	reject                 // answer the sender with an error instead
	hold                   // deliver after the next message from the same sender
	swallowAll             // from now on drop everything from this sender
	garble                 // deliver with the text's last byte changed
	truncate               // deliver without the text's last byte
)

type faultySession struct {
	id      int
	conn    net.Conn
	wmu     sync.Mutex
	name    string
	peer    *faultySession
	n       int // messages received from this session
	held    string
	swallow bool
}

func (fs *faultySession) writeLine(s string) {
	fs.wmu.Lock()
	defer fs.wmu.Unlock()
	_, _ = fs.conn.Write([]byte(s + "\r\n"))
}

// when returns action if cond holds, else deliver.
func when(cond bool, action faultAction) faultAction {
	if cond {
		return action
	}
	return deliver
}

func startFaultyServer(t *testing.T, fault func(sender, n int) faultAction) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &faultyServer{ln: ln, fault: fault, byToken: make(map[string]*faultySession)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			fs := &faultySession{id: s.nextID, conn: c}
			s.nextID++
			s.mu.Unlock()
			s.wg.Add(1)
			go s.serve(fs)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, fs := range s.byToken {
			_ = fs.conn.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return ln.Addr().String()
}

func (s *faultyServer) serve(fs *faultySession) {
	defer s.wg.Done()
	defer fs.conn.Close()
	fs.writeLine("* welcome to the faulty test server")
	sc := bufio.NewScanner(fs.conn)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "/login "):
			fs.name = strings.TrimPrefix(line, "/login ")
			token := fmt.Sprintf("%032x", fs.id+1)
			s.mu.Lock()
			s.byToken[token] = fs
			s.mu.Unlock()
			fs.writeLine("* you are " + fs.name + ", your token is " + token)
		case strings.HasPrefix(line, "/connect "):
			s.mu.Lock()
			owner := s.byToken[strings.TrimPrefix(line, "/connect ")]
			s.mu.Unlock()
			if owner == nil {
				fs.writeLine("! unknown_token: no one holds that token")
				continue
			}
			s.mu.Lock()
			fs.peer, owner.peer = owner, fs
			s.mu.Unlock()
			fs.writeLine("* you are connected with " + owner.name)
			owner.writeLine("* " + fs.name + " is connected")
		default:
			s.mu.Lock()
			peer := fs.peer
			s.mu.Unlock()
			n := fs.n
			fs.n++
			if fs.swallow {
				continue
			}
			switch s.fault(fs.id, n) {
			case deliver:
				peer.writeLine("<" + fs.name + "> " + line)
				if fs.held != "" {
					peer.writeLine("<" + fs.name + "> " + fs.held)
					fs.held = ""
				}
			case garble:
				peer.writeLine("<" + fs.name + "> " + line[:len(line)-1] + "y")
			case truncate:
				peer.writeLine("<" + fs.name + "> " + line[:len(line)-1])
			case drop:
			case reject:
				fs.writeLine("! rate_limited: too many requests; slow down: those past the limit are dropped unanswered")
			case hold:
				fs.held = line
			case swallowAll:
				fs.swallow = true
			}
		}
	}
}

// faultTests are the faults every client must count.
var faultTests = []struct {
	name    string
	fault   func(sender, n int) faultAction
	stalls  bool
	lost    int64
	reject  int64
	reorder int64
	corrupt int64
}{
	{
		name:  "a message dropped mid-run",
		fault: func(sender, n int) faultAction { return when(sender == 0 && n == 50, drop) },
		lost:  1,
	},
	{
		name: "every tenth message rejected, the last one too",
		fault: func(sender, n int) faultAction {
			return when(n%10 == 9, reject)
		},
		reject: 2 * 10,
	},
	{
		name:    "two messages swapped",
		fault:   func(sender, n int) faultAction { return when(sender == 1 && n == 20, hold) },
		reorder: 1,
	},
	{
		name:    "a message's padding changed",
		fault:   func(sender, n int) faultAction { return when(sender == 1 && n == 30, garble) },
		corrupt: 1,
	},
	{
		name:    "a message cut short",
		fault:   func(sender, n int) faultAction { return when(sender == 0 && n == 40, truncate) },
		corrupt: 1,
	},
	{
		name:   "the last message dropped",
		fault:  func(sender, n int) faultAction { return when(sender == 0 && n == 99, drop) },
		stalls: true,
		lost:   1,
	},
	{
		name:   "everything swallowed",
		fault:  func(sender, n int) faultAction { return swallowAll },
		stalls: true,
		lost:   2 * 16, // one window from each side
	},
}

func TestRunCountsFaults(t *testing.T) { checkFaults(t, ClientTuned) }

func checkFaults(t *testing.T, client Client) {
	for _, tt := range faultTests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(ProtoTCP, 1, 100)
			cfg.Client = client
			cfg.TCPAddr = startFaultyServer(t, tt.fault)
			cfg.Timeout = 300 * time.Millisecond
			start := time.Now()
			rep, err := Run(context.Background(), cfg)
			// A guard against hanging, loose enough for -race on a busy machine.
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("run took %v", took)
			}
			if tt.stalls != errors.Is(err, errStalled) {
				t.Fatalf("err = %v; want stalled: %v", err, tt.stalls)
			}
			if !tt.stalls && err != nil {
				t.Fatal(err)
			}
			e := rep.Errors
			if rep.OK() {
				t.Error("report OK despite faults")
			}
			if e.Lost != tt.lost || e.Rejected != tt.reject || e.OutOfOrder != tt.reorder || e.Corrupt != tt.corrupt {
				t.Errorf("lost %d, rejected %d, out of order %d, corrupt %d; want %d, %d, %d, %d (%s)",
					e.Lost, e.Rejected, e.OutOfOrder, e.Corrupt, tt.lost, tt.reject, tt.reorder, tt.corrupt, e.summary())
			}
			if tt.reject > 0 && e.Server["rate_limited"] != tt.reject {
				t.Errorf("server errors %v", e.Server)
			}
			if rr := rep.Relay; rr.Sent-rr.Delivered != tt.lost+tt.reject+tt.corrupt {
				t.Errorf("sent %d, delivered %d", rr.Sent, rr.Delivered)
			}
		})
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	addr := startFaultyServer(t, func(int, int) faultAction { return swallowAll })
	cfg := testConfig(ProtoTCP, 1, 100)
	cfg.TCPAddr = addr
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("cancelled run took %v", took)
	}
}
