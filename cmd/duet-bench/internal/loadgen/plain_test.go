package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func plainConfig(proto Proto, pairs, messages int) Config {
	cfg := testConfig(proto, pairs, messages)
	cfg.Client = ClientPlain
	return cfg
}

// checkServerUsage asserts that a run with -pid reported the server's
// usage for both phases, per pair and per delivered message. The servers
// of these tests run in the test process, which is also the client, so
// only the shape of the figures is checked here; TestProcReaderSelf
// checks the figures themselves.
func checkServerUsage(t *testing.T, rep *Report) {
	t.Helper()
	s := rep.Server
	if s == nil || s.PID != os.Getpid() || s.Pair == nil || s.Relay == nil {
		t.Fatalf("server report %+v", s)
	}
	if s.Pair.Ops != int64(rep.Pair.Count) || s.Relay.Ops != rep.Relay.Delivered {
		t.Errorf("ops: pair %d of %d, relay %d of %d", s.Pair.Ops, rep.Pair.Count, s.Relay.Ops, rep.Relay.Delivered)
	}
	u := s.Relay
	if u.CPUSeconds <= 0 || u.ReadCalls <= 0 || u.WriteCalls <= 0 || u.Seconds <= 0 {
		t.Errorf("relay usage %+v", *u)
	}
	if !near(u.CPUMicrosPerOp, u.CPUSeconds*1e6/float64(u.Ops)) || !near(u.ReadsPerOp, float64(u.ReadCalls)/float64(u.Ops)) {
		t.Errorf("relay usage per message %+v", *u)
	}
}

func TestPlainRunAgainstBareRelay(t *testing.T) {
	cfg := plainConfig(ProtoBare, 10, 200)
	cfg.TCPAddr = startBareRelay(t)
	cfg.PID = os.Getpid()
	rep, err := Run(context.Background(), cfg)
	checkReport(t, rep, err, 10, 200)
	checkServerUsage(t, rep)
	if rep.Client != ClientPlain {
		t.Errorf("report's client %q", rep.Client)
	}
}

func TestPlainRunAgainstGoroutineRelay(t *testing.T) {
	for _, batch := range []bool{false, true} {
		lineAddr, wsAddr := startGoroutineRelay(t, batch)
		for _, proto := range []Proto{ProtoTCP, ProtoWS, ProtoMix} {
			t.Run(fmt.Sprintf("%s/batch=%v", proto, batch), func(t *testing.T) {
				cfg := plainConfig(proto, 10, 200)
				cfg.TCPAddr, cfg.WSAddr = lineAddr, wsAddr
				cfg.PID = os.Getpid()
				rep, err := Run(context.Background(), cfg)
				checkReport(t, rep, err, 10, 200)
				checkServerUsage(t, rep)
			})
		}
	}
}

func TestPlainRunShapes(t *testing.T) {
	lineAddr, wsAddr := startGoroutineRelay(t, false)
	tests := []struct {
		name   string
		proto  Proto
		change func(*Config)
	}{
		{"window of one", ProtoTCP, func(c *Config) { c.Window = 1 }},
		{"window of one, WebSocket", ProtoWS, func(c *Config) { c.Window = 1 }},
		{"window larger than the run", ProtoTCP, func(c *Config) { c.Window = 1000 }},
		{"large messages", ProtoTCP, func(c *Config) { c.Size = 3000; c.Messages = 50 }},
		{"large messages, WebSocket", ProtoWS, func(c *Config) { c.Size = 3000; c.Messages = 50 }},
		{"several sources", ProtoTCP, func(c *Config) { c.Sources = mustSources("127.0.0.1,127.0.0.2,127.0.0.3") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := plainConfig(tt.proto, 4, 100)
			cfg.TCPAddr, cfg.WSAddr = lineAddr, wsAddr
			tt.change(&cfg)
			rep, err := Run(context.Background(), cfg)
			checkReport(t, rep, err, 4, int64(cfg.Messages))
		})
	}
}

func TestPlainRunForDuration(t *testing.T) {
	lineAddr, wsAddr := startGoroutineRelay(t, false)
	for _, proto := range []Proto{ProtoTCP, ProtoWS} {
		t.Run(string(proto), func(t *testing.T) {
			cfg := plainConfig(proto, 4, 0)
			cfg.TCPAddr, cfg.WSAddr = lineAddr, wsAddr
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
		})
	}
}

// The idle mode has no relay phase, so the plain client idles as the
// tuned one does.
func TestPlainRunIdle(t *testing.T) {
	lineAddr, _ := startGoroutineRelay(t, false)
	cfg := plainConfig(ProtoTCP, 5, 0)
	cfg.TCPAddr = lineAddr
	cfg.Idle = true
	cfg.Hold = 50 * time.Millisecond
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Relay != nil || rep.Pair.Count != 5 {
		t.Fatalf("idle report: %+v", rep)
	}
}

func TestPlainRunCountsFaults(t *testing.T) { checkFaults(t, ClientPlain) }

func TestPlainRunStopsWhenCancelled(t *testing.T) {
	addr := startFaultyServer(t, func(int, int) faultAction { return swallowAll })
	cfg := plainConfig(ProtoTCP, 1, 100)
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

// The plain client writes the same message texts as the tuned one, with
// fmt, and reads them back with its regexp.
func TestPlainTextMatchesTuned(t *testing.T) {
	padding := strings.Repeat("x", 40)
	for _, c := range []struct {
		seq   uint64
		stamp int64
	}{{0, 0}, {1, 1}, {0xabcdef, 123456789}, {1<<40 - 1, 1<<56 - 1}, {42, 1<<55 + 7}} {
		plain := fmt.Sprintf("%010x%014x%s", c.seq, c.stamp, padding)
		if tuned := string(appendText(nil, c.seq, c.stamp, []byte(padding))); plain != tuned {
			t.Errorf("seq %d stamp %d: plain %q, tuned %q", c.seq, c.stamp, plain, tuned)
		}
		m := plainTextPattern.FindStringSubmatch(plain)
		if m == nil || m[1] != fmt.Sprintf("%010x", c.seq) || m[2] != fmt.Sprintf("%014x", c.stamp) || m[3] != padding {
			t.Errorf("pattern on %q: %q", plain, m)
		}
	}
	for _, bad := range []string{"", "000000000100000000000001xxxy", "00000000010000000000000Axxx", "0000000001000000000000"} {
		if plainTextPattern.MatchString(bad) {
			t.Errorf("%q matched", bad)
		}
	}
}

// A plain WebSocket connection answers a ping through its writer and
// reads a close frame as the end, with wsutil doing the framing.
func TestPlainWebSocketControlFrames(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	e := &endpoint{conn: client, src: client, br: bufio.NewReader(client), codec: newWSCodec(1)}
	e.peer = e
	rl := newRelay(&Config{Size: MinTextSize, Window: 1, Messages: 1}, clock{base: time.Now()})
	c := newPlainRelay(rl, []*endpoint{e}).conns[0]

	type result struct {
		kind eventKind
		text string
		err  error
	}
	results := make(chan result, 3)
	go func() {
		for range 3 {
			kind, text, _, err := c.next()
			results <- result{kind, text, err}
			if err != nil {
				return
			}
		}
	}()
	// The server pings, sends a message and an error, then closes.
	go func() { _ = wsutil.WriteServerMessage(server, ws.OpPing, []byte("are you there")) }()
	f, err := ws.ReadFrame(server)
	if err != nil {
		t.Fatal(err)
	}
	masked := f.Header.Masked
	f = ws.UnmaskFrameInPlace(f)
	if f.Header.OpCode != ws.OpPong || !masked || string(f.Payload) != "are you there" {
		t.Fatalf("answer to a ping: %+v %q", f.Header, f.Payload)
	}
	if err := wsutil.WriteServerText(server, []byte(`{"type":"message","from":"b","text":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	if r := <-results; r.err != nil || r.kind != evMessage || r.text != "hello" {
		t.Fatalf("first event %+v", r)
	}
	if err := wsutil.WriteServerText(server, []byte(`{"type":"error","code":"rate_limited","text":"slow down"}`)); err != nil {
		t.Fatal(err)
	}
	if r := <-results; r.err != nil || r.kind != evError {
		t.Fatalf("second event %+v", r)
	}
	go func() {
		_ = ws.WriteFrame(server, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
		_, _ = ws.ReadFrame(server) // the client's answering close frame
	}()
	if r := <-results; r.err != nil || r.kind != evClosed {
		t.Fatalf("third event %+v", r)
	}
}
