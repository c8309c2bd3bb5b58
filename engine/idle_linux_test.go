//go:build linux

package engine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"duet/engine"
	"duet/engine/enginetest"
)

// pacedReader reads at most chunk bytes a turn, one turn every every:
// a reader on a slow link, steady however fast its partner sends. A
// turn that is late (a busy machine) is not made up for.
type pacedReader struct {
	r     io.Reader
	chunk int
	every time.Duration
	next  time.Time
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if wait := time.Until(p.next); wait > 0 {
		time.Sleep(wait)
	}
	p.next = time.Now().Add(p.every)
	return p.r.Read(b[:min(len(b), p.chunk)])
}

// TestWSSlowReaderIsNotIdle: a WebSocket reader that reads steadily,
// only slower than its partner sends, and answers every ping the moment
// it reads it, is not cut off as idle, however long each ping waits
// behind what was written before it; it gets every message, in order,
// and then the pings. What shows it there meanwhile is that it keeps
// taking what the server writes. (Only its frames counted: bob, who
// could read no ping before the megabytes ahead of it, was cut as idle
// after limits.idle_timeout, and alice told he had lost the
// connection.) Once it stops reading, it is silent, and cut within
// about limits.idle_timeout; so is a reader that reads nothing while
// only pings are sent, which its kernel acknowledges all the same.
func TestWSSlowReaderIsNotIdle(t *testing.T) {
	t.Run("reads to the end", func(t *testing.T) { slowWSReader(t, 2000, 2000) })
	t.Run("stops reading", func(t *testing.T) { slowWSReader(t, 2000, 500) })
	t.Run("reads nothing", func(t *testing.T) { slowWSReader(t, 0, 0) })
}

// slowWSReader runs TestWSSlowReaderIsNotIdle: alice sends count
// messages, and bob reads reads of them. He is to be cut if he leaves
// some unread, or if there are none: then only pings are sent him.
func slowWSReader(t *testing.T, count, reads int) {
	silent := reads < count || count == 0
	const (
		idle  = 3 * time.Second
		ping  = time.Second
		chunk = 16 << 10              // bob reads this much a turn,
		every = 80 * time.Millisecond // once a turn: 200 KB/s at most
		size  = 1000                  // bytes of a message: 2,000 are 2 MB, about 10 s at bob's pace
	)
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.IdleTimeout = idle
		o.Limits.PingInterval = ping
		// alice's 2 MB wait for bob in the server's kernel, whose send
		// buffer grows to megabytes on loopback, or, what it does not
		// take, in bob's queue, which holds a megabyte before alice is
		// held: either way the first ping waits seconds behind them,
		// well past the idle timeout, wherever the kernel's buffer
		// stops. Whatever bob reads counts as draining, so he is never
		// cut as slow.
		o.Limits.OutboundHigh = 1 << 20
	})
	alice := d.DialLine(t).Login("alice")

	// bob's socket holds little, so what waits for him waits on the
	// server's side, where his reading shows.
	dialer := ws.Dialer{
		Timeout: enginetest.Timeout,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{Control: receiveBuffer(32 << 10)}
			return nd.DialContext(ctx, network, addr)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	c, br, _, err := dialer.Dial(ctx, "ws://"+d.WS+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var in io.Reader = c
	if br != nil {
		in = io.MultiReader(br, c)
	}
	// Frames are read from a buffer, which takes a turn's worth at a
	// time: a frame's header and payload are each one read.
	in = bufio.NewReaderSize(&pacedReader{r: in, chunk: chunk, every: every}, chunk)
	send := func(v any) error {
		b, _ := json.Marshal(v)
		c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		return wsutil.WriteClientText(c, b)
	}
	pings := 0
	// read reads bob's next text frame or ping, and answers a ping at
	// once, as a browser does; a close frame is an error.
	read := func() (ws.Frame, error) {
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		for {
			f, err := ws.ReadFrame(in)
			if err != nil {
				return f, err
			}
			switch f.Header.OpCode {
			case ws.OpPing:
				pings++
				c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
				err := wsutil.WriteClientMessage(c, ws.OpPong, f.Payload)
				return f, err
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(f.Payload)
				return f, fmt.Errorf("closed with %d %q", code, reason)
			case ws.OpText:
				return f, nil
			}
		}
	}
	// next reads bob's next event.
	next := func() (map[string]any, error) {
		for {
			f, err := read()
			if err != nil {
				return nil, err
			}
			if f.Header.OpCode == ws.OpText {
				var ev map[string]any
				if err := json.Unmarshal(f.Payload, &ev); err != nil {
					return nil, fmt.Errorf("bad JSON %.80q", f.Payload)
				}
				return ev, nil
			}
		}
	}
	expect := func(typ string) {
		t.Helper()
		ev, err := next()
		if err != nil || ev["type"] != typ {
			t.Fatalf("bob got %v (%v), want %q", ev, err, typ)
		}
	}
	expect("hello")
	if err := send(map[string]string{"type": "login", "name": "bob"}); err != nil {
		t.Fatal(err)
	}
	expect("welcome")
	if err := send(map[string]string{"type": "connect", "token": alice.Token}); err != nil {
		t.Fatal(err)
	}
	expect("paired")
	alice.Expect(`^\* bob is connected$`)

	// alice is told anything else only if bob is cut off.
	told := make(chan string, 1)
	start := time.Now()
	go func() {
		if l, err := alice.TryLine(time.Minute); err == nil {
			told <- fmt.Sprintf("%q, %v in", l, time.Since(start).Round(time.Millisecond))
		}
	}()
	go func() {
		alice.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
		_ = numberedLines(alice.Conn, "alice", count, size)
	}()

	pad := strings.Repeat("x", size)
	for i := range reads {
		ev, err := next()
		if err != nil {
			select {
			case l := <-told:
				t.Logf("alice was told %s", l)
			default:
			}
			t.Fatalf("after %v, %d pings seen, bob's message %d: %v", time.Since(start).Round(time.Millisecond), pings, i, err)
		}
		if want := "alice " + strconv.Itoa(i) + " " + pad; ev["type"] != "message" || ev["text"] != want {
			t.Fatalf("bob's message %d: got %.100v", i, ev)
		}
	}
	took := time.Since(start)
	t.Logf("bob read %d messages in %v, %d pings seen", reads, took.Round(time.Millisecond), pings)
	if silent {
		// Taking nothing, or only what his kernel acknowledges: cut within the idle timeout and a
		// tick or two, long before limits.slow_timeout (30 s).
		select {
		case l := <-told:
			if !strings.HasPrefix(l, `"* bob lost the connection; `) {
				t.Fatalf("alice was told %s", l)
			}
			t.Logf("bob stopped reading; alice was told %s", l)
		case <-time.After(idle + 5*time.Second):
			t.Fatalf("bob stopped reading %v ago, and was not cut", time.Since(start.Add(took)).Round(time.Millisecond))
		}
		return
	}
	if took < 2*idle {
		t.Fatalf("bob read everything in %v, within two idle timeouts: he was never behind for long", took)
	}
	select {
	case l := <-told:
		t.Fatalf("alice was told %s", l)
	default:
	}
	// The pings sent meanwhile waited behind it all: bob answers one.
	for pings == 0 {
		if _, err := read(); err != nil {
			t.Fatalf("bob, waiting for a ping: %v", err)
		}
	}
	// The pair still works both ways.
	if err := send(map[string]string{"type": "say", "text": "got it all"}); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-told:
		if !strings.HasPrefix(l, `"<bob> got it all"`) {
			t.Fatalf("alice read %s", l)
		}
	case <-time.After(enginetest.Timeout):
		t.Fatal("alice did not get bob's answer")
	}
}
