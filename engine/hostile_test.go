package engine_test

// The hostile-client suite: each test runs an attack against a real
// daemon on loopback while one healthy pair (a netcat-style user and a
// browser-style user, both from 127.0.0.3) keeps exchanging numbered
// messages, and checks that the pair lost nothing and kept order, that
// the attacker got a clear answer, and that the daemon's memory stayed
// bounded. Attackers dial from other loopback addresses (127.0.0.1,
// 127.0.0.2, ...) by binding the local address (dialFrom, in
// realaddr_test.go), so per-address limits can be told apart.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"duet/config"
	"duet/engine"
	"duet/engine/enginetest"
	"duet/proto"
)

// healthyIP is where the healthy pair connects from; attackers use others.
const healthyIP = "127.0.0.3"

// startDaemon runs a daemon with the given limits edited in.
func startDaemon(t *testing.T, edit func(o *engine.Options)) *enginetest.Daemon {
	t.Helper()
	return enginetest.Start(t, edit)
}

// lineConn is a bare line-protocol client.
type lineConn struct {
	t      *testing.T
	c      net.Conn
	r      *bufio.Reader
	resume bool // the server has resume on: a login is told a key
}

// newLineConn is a bare client on c, to a daemon with resume on, as
// enginetest.Start's are unless told otherwise.
func newLineConn(t *testing.T, c net.Conn) *lineConn {
	return &lineConn{t: t, c: c, r: bufio.NewReaderSize(c, 64<<10), resume: true}
}

// dialLine connects from local and reads the greeting.
func dialLine(t *testing.T, d *enginetest.Daemon, local string) *lineConn {
	t.Helper()
	lc := newLineConn(t, dialFrom(t, local, d.TCP))
	lc.resume = d.Resume
	lc.expect(`^\* welcome to duet`)
	return lc
}

func (lc *lineConn) send(s string) {
	lc.t.Helper()
	lc.c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := io.WriteString(lc.c, s+"\n"); err != nil {
		lc.t.Fatalf("send %.40q: %v", s, err)
	}
}

// read returns the next line without CRLF, or the error.
func (lc *lineConn) read(timeout time.Duration) (string, error) {
	lc.c.SetReadDeadline(time.Now().Add(timeout))
	s, err := lc.r.ReadString('\n')
	return strings.TrimSuffix(s, "\r\n"), err
}

func (lc *lineConn) expect(pattern string) string {
	lc.t.Helper()
	s, err := lc.read(enginetest.Timeout)
	if err != nil {
		lc.t.Fatalf("read (want %q): %v after %q", pattern, err, s)
	}
	if !regexp.MustCompile(pattern).MatchString(s) {
		lc.t.Fatalf("got %q, want match for %q", s, pattern)
	}
	return s
}

var tokenInLine = regexp.MustCompile(`your token is ([0-9a-f]{32})`)

func (lc *lineConn) login(name string) string {
	lc.t.Helper()
	lc.send("/login " + name)
	m := tokenInLine.FindStringSubmatch(lc.expect(`^\* you are ` + name))
	if lc.resume {
		lc.expect(`^\* resume key: `)
	}
	return m[1]
}

// expectClosed reads until the server closes the connection, returning
// what it said meanwhile.
func (lc *lineConn) expectClosed(within time.Duration) []string {
	lc.t.Helper()
	var got []string
	deadline := time.Now().Add(within)
	for {
		s, err := lc.read(time.Until(deadline))
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				lc.t.Fatalf("not closed within %v; last lines %q", within, tail(got, 3))
			}
			return got
		}
		got = append(got, s)
	}
}

func tail(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// wsConn is a bare WebSocket client: it writes frames by hand and reads
// the server's frames as they are.
type wsConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// upgradeRequest is a valid WebSocket upgrade; extra holds more header
// lines, each ending in CRLF.
func upgradeRequest(host, extra string) string {
	return "GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

// dialWSRaw upgrades from local and returns the response status; on 101
// it also reads the hello event.
func dialWSRaw(t *testing.T, d *enginetest.Daemon, local, extra string) (*wsConn, int) {
	t.Helper()
	wc, status := upgradeFrom(t, d, local, extra)
	if status != http.StatusSwitchingProtocols {
		return wc, status
	}
	if ev := wc.event(); ev["type"] != "hello" {
		t.Fatalf("first event %v, want hello", ev)
	}
	return wc, status
}

// upgradeFrom sends an upgrade from local and returns the response
// status, and the connection to read on.
func upgradeFrom(t *testing.T, d *enginetest.Daemon, local, extra string) (*wsConn, int) {
	t.Helper()
	c := dialFrom(t, local, d.WS)
	c.SetDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := io.WriteString(c, upgradeRequest(d.WS, extra)); err != nil {
		t.Fatal(err)
	}
	wc := &wsConn{t: t, c: c, r: bufio.NewReader(c)}
	resp, err := http.ReadResponse(wc.r, nil)
	if err != nil {
		t.Fatalf("upgrade response: %v", err)
	}
	return wc, resp.StatusCode
}

func dialWS(t *testing.T, d *enginetest.Daemon, local string) *wsConn {
	t.Helper()
	wc, status := dialWSRaw(t, d, local, "")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d", status)
	}
	return wc
}

// clientFrame builds a client frame by hand: b0 is FIN, RSV and opcode as
// they go on the wire.
func clientFrame(b0 byte, payload []byte, masked bool) []byte {
	out := appendFrameHeader([]byte{b0}, len(payload), masked)
	if !masked {
		return append(out, payload...)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out = append(out, key[:]...)
	p := append([]byte(nil), payload...)
	ws.Cipher(p, key, 0)
	return append(out, p...)
}

// appendFrameHeader appends the length byte(s) after b0.
func appendFrameHeader(out []byte, n int, masked bool) []byte {
	var maskBit byte
	if masked {
		maskBit = 0x80
	}
	switch {
	case n < 126:
		return append(out, maskBit|byte(n))
	case n <= 0xFFFF:
		return append(out, maskBit|126, byte(n>>8), byte(n))
	}
	out = append(out, maskBit|127)
	return binary.BigEndian.AppendUint64(out, uint64(n))
}

func (wc *wsConn) write(b []byte) {
	wc.t.Helper()
	wc.c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := wc.c.Write(b); err != nil {
		wc.t.Fatalf("write: %v", err)
	}
}

func (wc *wsConn) sendJSON(v any) {
	wc.t.Helper()
	b, _ := json.Marshal(v)
	wc.write(clientFrame(0x81, b, true))
}

// frame reads one server frame.
func (wc *wsConn) frame(timeout time.Duration) (ws.Frame, error) {
	wc.c.SetReadDeadline(time.Now().Add(timeout))
	return ws.ReadFrame(wc.r)
}

// event reads the next JSON event, skipping pings.
func (wc *wsConn) event() map[string]any {
	wc.t.Helper()
	for {
		f, err := wc.frame(enginetest.Timeout)
		if err != nil {
			wc.t.Fatalf("read event: %v", err)
		}
		switch f.Header.OpCode {
		case ws.OpText:
			var ev map[string]any
			if err := json.Unmarshal(f.Payload, &ev); err != nil {
				wc.t.Fatalf("bad JSON %q", f.Payload)
			}
			return ev
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			wc.t.Fatalf("closed %d %q while waiting for an event", code, reason)
		}
	}
}

// expectClose reads until a close frame and returns its code and reason;
// the server must then close the TCP connection.
func (wc *wsConn) expectClose() (ws.StatusCode, string) {
	wc.t.Helper()
	for {
		f, err := wc.frame(enginetest.Timeout)
		if err != nil {
			wc.t.Fatalf("no close frame: %v", err)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		code, reason := ws.ParseCloseFrameData(f.Payload)
		wc.c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		if _, err := wc.r.ReadByte(); err == nil {
			wc.t.Fatalf("data after the close frame")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			wc.t.Fatalf("connection left open after close %d", code)
		}
		return code, reason
	}
}

// healthyPair is two users who keep talking through every attack: a
// line user and a WebSocket user, each sending a numbered message every
// few milliseconds and checking that the other's arrive complete and in
// order.
type healthyPair struct {
	t          *testing.T
	stop       chan struct{}
	wg         sync.WaitGroup
	errs       chan error
	sentA      atomic.Int64 // line user's messages sent
	sentB      atomic.Int64
	gotA, gotB atomic.Int64 // messages received in order, by sender
}

const healthyEnd = "end"

func startHealthyPair(t *testing.T, d *enginetest.Daemon) *healthyPair {
	t.Helper()
	a := dialLine(t, d, healthyIP)
	tokenA := a.login("healthyA")
	b := dialWS(t, d, healthyIP)
	b.sendJSON(map[string]string{"type": "login", "name": "healthyB"})
	if ev := b.event(); ev["type"] != "welcome" {
		t.Fatalf("healthyB login: %v", ev)
	}
	b.sendJSON(map[string]string{"type": "connect", "token": tokenA})
	if ev := b.event(); ev["type"] != "paired" {
		t.Fatalf("healthyB connect: %v", ev)
	}
	a.expect(`^\* healthyB is connected$`)
	a.c.SetDeadline(time.Time{})
	b.c.SetDeadline(time.Time{})

	p := &healthyPair{t: t, stop: make(chan struct{}), errs: make(chan error, 4)}
	p.wg.Add(4)
	send := func(sent *atomic.Int64, write func(string) error) {
		defer p.wg.Done()
		tick := time.NewTicker(4 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				if err := write(healthyEnd); err != nil {
					p.errs <- err
				}
				return
			case <-tick.C:
			}
			if err := write(strconv.Itoa(i)); err != nil {
				p.errs <- err
				return
			}
			sent.Add(1)
		}
	}
	go send(&p.sentA, func(s string) error {
		a.c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		_, err := io.WriteString(a.c, s+"\n")
		return err
	})
	go send(&p.sentB, func(s string) error {
		msg, _ := json.Marshal(map[string]string{"type": "say", "text": s})
		b.c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		_, err := b.c.Write(clientFrame(0x81, msg, true))
		return err
	})
	// check takes each received text in turn; it returns true at the end.
	check := func(got *atomic.Int64, who, text string) (bool, error) {
		if text == healthyEnd {
			return true, nil
		}
		if want := strconv.FormatInt(got.Load(), 10); text != want {
			return false, fmt.Errorf("healthy pair: %s got %q, want %q", who, text, want)
		}
		got.Add(1)
		return false, nil
	}
	go func() { // the line user reads the WebSocket user's messages
		defer p.wg.Done()
		for {
			s, err := a.read(time.Minute)
			if err != nil {
				p.errs <- fmt.Errorf("healthy pair: healthyA read: %v", err)
				return
			}
			text, ok := strings.CutPrefix(s, "<healthyB> ")
			if !ok {
				p.errs <- fmt.Errorf("healthy pair: healthyA got %q", s)
				return
			}
			if end, err := check(&p.gotB, "healthyA", text); err != nil || end {
				if err != nil {
					p.errs <- err
				}
				return
			}
		}
	}()
	go func() { // the WebSocket user reads the line user's messages
		defer p.wg.Done()
		for {
			f, err := b.frame(time.Minute)
			if err != nil {
				p.errs <- fmt.Errorf("healthy pair: healthyB read: %v", err)
				return
			}
			if f.Header.OpCode != ws.OpText {
				continue
			}
			var ev struct{ Type, From, Text string }
			if err := json.Unmarshal(f.Payload, &ev); err != nil || ev.Type != "message" || ev.From != "healthyA" {
				p.errs <- fmt.Errorf("healthy pair: healthyB got %q", f.Payload)
				return
			}
			if end, err := check(&p.gotA, "healthyB", ev.Text); err != nil || end {
				if err != nil {
					p.errs <- err
				}
				return
			}
		}
	}()
	return p
}

// finish stops the pair and checks that every message arrived in order.
func (p *healthyPair) finish() {
	p.t.Helper()
	// However fast the attack was over, the pair must have talked.
	for deadline := time.Now().Add(enginetest.Timeout); p.sentA.Load() < 10 || p.sentB.Load() < 10; {
		if time.Now().After(deadline) {
			p.t.Fatalf("healthy pair: sent only %d and %d messages", p.sentA.Load(), p.sentB.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(p.stop)
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case err := <-p.errs:
		p.t.Fatal(err)
	case <-time.After(20 * time.Second):
		p.t.Fatal("healthy pair: did not finish")
	}
	select {
	case err := <-p.errs:
		p.t.Fatal(err)
	default:
	}
	if p.gotA.Load() != p.sentA.Load() || p.gotB.Load() != p.sentB.Load() {
		p.t.Fatalf("healthy pair lost messages: A sent %d, B got %d; B sent %d, A got %d",
			p.sentA.Load(), p.gotA.Load(), p.sentB.Load(), p.gotB.Load())
	}
	if p.sentA.Load() == 0 || p.sentB.Load() == 0 {
		p.t.Fatal("healthy pair sent nothing")
	}
	p.t.Logf("healthy pair: %d + %d messages, none lost, in order", p.sentA.Load(), p.sentB.Load())
}

// waitConns waits until the daemon holds n connections.
func waitConns(t *testing.T, d *enginetest.Daemon, n int64) {
	t.Helper()
	deadline := time.Now().Add(enginetest.Timeout)
	for d.Conns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("daemon holds %d connections, want %d", d.Conns(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// heapInuse is the Go heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// heapPeak samples HeapInuse until stopped and returns the highest seen.
// Meanwhile the collector runs when garbage reaches a tenth of the live
// heap, not the whole of it: the heap in use counts garbage not yet
// collected, and with the default the peak moved with what the tests
// before had left live (108 MiB live at the start let 88 MiB of garbage
// through under a loaded machine), not with what the server kept.
func heapPeak() (stop func() uint64) {
	gcPercent := debug.SetGCPercent(10)
	var peak atomic.Uint64
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(quit)
		<-done
		debug.SetGCPercent(gcPercent)
		return peak.Load()
	}
}

// vmRSS is the process's resident set from /proc, for the log.
func vmRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

const mib = 1 << 20

// TestHostileSlowloris: bytes trickled into an HTTP request, a WebSocket
// upgrade, a WebSocket frame and a line-protocol login are cut at their
// deadlines, not held open.
func TestHostileSlowloris(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.HandshakeTimeout = time.Second
		o.Limits.LoginTimeout = time.Second
		o.Limits.IdleTimeout = 2 * time.Second
	})
	pair := startHealthyPair(t, d)

	trickle := func(c net.Conn, s string, stop <-chan struct{}) {
		for i := 0; i < len(s); i++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			if _, err := c.Write([]byte{s[i]}); err != nil {
				return
			}
		}
	}
	// cutWithin checks the server answers and closes within the limit
	// plus the once-a-second deadline check and some slack.
	cutWithin := func(name string, c net.Conn, payload string, want string, limit time.Duration) {
		stop := make(chan struct{})
		defer close(stop)
		start := time.Now()
		go trickle(c, payload, stop)
		// The deadlines are checked once a second; the slack is for a
		// loaded machine.
		c.SetReadDeadline(time.Now().Add(limit + 8*time.Second))
		got, err := io.ReadAll(c)
		took := time.Since(start)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: not cut within %v (got %q)", name, limit+8*time.Second, got)
			return
		}
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
		if took < limit-50*time.Millisecond {
			t.Errorf("%s: cut after %v, before the limit %v", name, took, limit)
		}
		t.Logf("%s: cut after %v", name, took.Round(time.Millisecond))
	}

	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		c := dialFrom(t, "127.0.0.1", d.WS)
		cutWithin("HTTP request", c, "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n\r\n", "408", time.Second)
	}()
	go func() {
		defer wg.Done()
		c := dialFrom(t, "127.0.0.1", d.WS)
		cutWithin("WebSocket upgrade", c, upgradeRequest(d.WS, ""), "408", time.Second)
	}()
	go func() {
		defer wg.Done()
		c := dialFrom(t, "127.0.0.1", d.TCP)
		cutWithin("line login", c, "/login slowpoke\n", "! login_timeout", time.Second)
	}()
	go func() {
		defer wg.Done()
		// Upgraded and logged in (so the login deadline does not end it
		// first), then a frame trickled a byte at a time: no frame is
		// ever complete, so the idle timeout ends it with 1001.
		c := dialFrom(t, "127.0.0.1", d.WS)
		io.WriteString(c, upgradeRequest(d.WS, ""))
		c.Write(clientFrame(0x81, []byte(`{"type":"login","name":"trickler"}`), true))
		frame := clientFrame(0x81, []byte(`{"type":"who"}`), true)
		stop := make(chan struct{})
		defer close(stop)
		go trickle(c, string(frame[:len(frame)-1]), stop)
		c.SetReadDeadline(time.Now().Add(12 * time.Second))
		got, _ := io.ReadAll(c)
		i := bytes.LastIndex(got, []byte{0x88})
		if i < 0 || len(got) < i+4 || binary.BigEndian.Uint16(got[i+2:]) != 1001 {
			t.Errorf("trickled frame: want close 1001 at the idle timeout, got %q", got)
		}
	}()
	wg.Wait()
	pair.finish()
}

// TestHostileLongLine: a 10 MB line with no newline is refused once
// with too_long, the rest is dropped without being buffered, and the
// connection works again after the newline. On the web port the same
// bytes are a request head too large: 431.
func TestHostileLongLine(t *testing.T) {
	d := startDaemon(t, nil)
	pair := startHealthyPair(t, d)
	base := heapInuse()
	peak := heapPeak()

	lc := dialLine(t, d, "127.0.0.1")
	lc.login("longliner")
	sent := make(chan error, 1)
	go func() {
		lc.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		chunk := bytes.Repeat([]byte("y"), 64<<10)
		for i := 0; i < 160; i++ { // 10 MiB
			if _, err := lc.c.Write(chunk); err != nil {
				sent <- err
				return
			}
		}
		_, err := io.WriteString(lc.c, "\n/who\n")
		sent <- err
	}()
	lc.expect(`^! too_long: `)
	lc.expect(`^\* you are longliner, your token is [0-9a-f]{32}, not connected$`)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	c := dialFrom(t, "127.0.0.1", d.WS)
	go func() {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		chunk := bytes.Repeat([]byte("z"), 64<<10)
		for i := 0; i < 160; i++ { // 10 MiB, until the server hangs up
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("10 MB request head: %v %v", resp, err)
	}
	grown := int64(peak()) - int64(base)
	t.Logf("a 10 MB line and a 10 MB request head: heap peak +%d KiB", grown>>10)
	if grown > 16*mib {
		t.Fatalf("heap grew by %d MiB for a 10 MB line", grown/mib)
	}
	pair.finish()
}

// TestHostileRandomBinary: random bytes on both ports. The line port
// answers only with well-formed server lines (rate limited) and answers
// to the telnet commands among the bytes, the web
// port with an HTTP error, a WebSocket with a protocol close; the daemon
// goes on serving.
func TestHostileRandomBinary(t *testing.T) {
	d := startDaemon(t, nil)
	pair := startHealthyPair(t, d)
	rng := rand.New(rand.NewSource(42))
	junk := make([]byte, 1<<20)
	rng.Read(junk)

	// An EOT (Ctrl-D) at the start of a line quits, as /quit does, and
	// the server would close the connection while the junk still comes
	// (a reset): the line port's junk holds none, so that all of it is
	// read.
	lineJunk := bytes.ReplaceAll(junk, []byte{0x04}, []byte{0x05})
	lc := dialLine(t, d, "127.0.0.1")
	go func() {
		lc.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		lc.c.Write(lineJunk)
		lc.c.(*net.TCPConn).CloseWrite()
	}()
	lc.c.SetReadDeadline(time.Now().Add(2 * enginetest.Timeout))
	out, err := io.ReadAll(lc.r)
	if err != nil {
		t.Fatalf("line port: no end after %d bytes: %v", len(out), err)
	}
	// The junk holds telnet commands too, which the server answers with
	// IAC WILL/WONT/DO/DONT and an option byte (any byte, LF included).
	// Server lines never hold byte 255: what is left once the answers are
	// taken out must be whole server lines.
	var text []byte
	for i := 0; i < len(out); i++ {
		if out[i] == 0xff && i+2 < len(out) && out[i+1] >= 0xfb && out[i+1] <= 0xfe {
			i += 2
			continue
		}
		text = append(text, out[i])
	}
	rateLimited := 0
	for _, s := range strings.SplitAfter(string(text), "\r\n") {
		if s == "" {
			continue
		}
		if !strings.HasSuffix(s, "\r\n") || !strings.HasPrefix(s, "! ") && !strings.HasPrefix(s, "* ") {
			t.Fatalf("line port answered random bytes with %q", s)
		}
		if strings.HasPrefix(s, "! rate_limited") {
			rateLimited++
		}
	}
	if rateLimited > 3 {
		t.Errorf("%d rate_limited errors for one burst of junk; want at most one a second", rateLimited)
	}

	// The web port, before an upgrade: an HTTP error, then the close.
	c := dialFrom(t, "127.0.0.1", d.WS)
	go func() { c.SetWriteDeadline(time.Now().Add(5 * time.Second)); c.Write(junk[:64<<10]) }()
	c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	got, _ := io.ReadAll(c)
	if !regexp.MustCompile(`^HTTP/1\.1 4\d\d `).Match(got) {
		t.Errorf("web port answered random bytes with %.80q", got)
	}

	// After an upgrade: a close frame with a protocol status.
	for i := 0; i < 5; i++ {
		wc := dialWS(t, d, "127.0.0.1")
		go func(off int) {
			wc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			wc.c.Write(junk[off : off+128<<10])
		}(i * 128 << 10)
		switch code, _ := wc.expectClose(); code {
		case ws.StatusProtocolError, ws.StatusUnsupportedData, ws.StatusInvalidFramePayloadData, ws.StatusMessageTooBig:
		default:
			t.Errorf("random frame bytes closed with %d", code)
		}
	}
	waitConns(t, d, 2)
	pair.finish()
}

// TestHostileAbruptClose: sockets closed mid-line, mid-frame and
// mid-handshake, some with a reset, leave nothing behind.
func TestHostileAbruptClose(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	pair := startHealthyPair(t, d)
	for _, reset := range []bool{false, true} {
		hangUp := func(c net.Conn) {
			if reset {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
		}
		lc := dialLine(t, d, "127.0.0.1")
		lc.login("dropper")
		io.WriteString(lc.c, "half a li")
		hangUp(lc.c)

		c := dialFrom(t, "127.0.0.1", d.WS)
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgr")
		hangUp(c)

		wc := dialWS(t, d, "127.0.0.1")
		f := clientFrame(0x81, bytes.Repeat([]byte("a"), 300), true)
		wc.write(f[:100])
		hangUp(wc.c)

		wc = dialWS(t, d, "127.0.0.1")
		wc.write(f[:1]) // in the middle of a frame header
		hangUp(wc.c)
	}
	waitConns(t, d, 2)
	pair.finish()
}

// TestHostileTokenGuessing: a thousand wrong tokens from one address are
// answered unknown_token up to limits.connect_failures, then held with
// a growing delay and answered throttled; failures are logged with the
// address and six characters of the token, never all of it, the first
// at once, and the address reaching the limit as a warning (the rest at
// most a line a second: TestHostileGuessingFromManyAddresses). A right
// token from another address still works at once.
func TestHostileTokenGuessing(t *testing.T) {
	t.Parallel()
	const limit = 5
	core, logs := observer.New(zap.InfoLevel)
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.ConnectFailures = limit
		o.Logger = zap.New(core)
	})
	pair := startHealthyPair(t, d)

	guesser := dialLine(t, d, "127.0.0.1")
	guesser.login("guesser")
	rng := rand.New(rand.NewSource(7))
	var batch strings.Builder
	guesses := make([]string, 1000)
	for i := range guesses {
		guesses[i] = fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
		batch.WriteString("/connect " + guesses[i] + "\n")
	}
	start := time.Now()
	io.WriteString(guesser.c, batch.String())
	for i := 0; i < limit; i++ {
		guesser.expect(`^! unknown_token: `)
	}
	fast := time.Since(start)
	guesser.expect(`^! throttled: `)
	first := time.Since(start)
	guesser.expect(`^! throttled: `)
	second := time.Since(start)
	t.Logf("first %d answered after %v; the next two after %v and %v", limit, fast, first, second)
	// The holds are 250 ms and then 500 ms.
	if first < 250*time.Millisecond || second < first+450*time.Millisecond {
		t.Errorf("answers after %v and %v: want holds of 250 ms, then 500 ms", first, second)
	}

	// While 127.0.0.1 is held, a right token from 127.0.0.2 is instant.
	host := dialLine(t, d, "127.0.0.4")
	token := host.login("host")
	friend := dialLine(t, d, "127.0.0.2")
	friend.login("friend")
	t0 := time.Now()
	friend.send("/connect " + token)
	friend.expect(`^\* you are connected with host$`)
	if took := time.Since(t0); took > time.Second {
		t.Errorf("a right token from another address took %v", took)
	}
	host.expect(`^\* friend is connected$`)

	// The guesser hangs up with hundreds of guesses unread: none of them
	// is checked.
	guesser.c.Close()
	waitConns(t, d, 4)
	var failures []observer.LoggedEntry
	for _, e := range logs.All() {
		if _, ok := e.ContextMap()["token_prefix"]; ok {
			failures = append(failures, e)
		}
	}
	if len(failures) < 2 || len(failures) > limit+4 {
		t.Errorf("%d connect failures logged; want the first and the warning at the limit (+ a line a second)", len(failures))
	}
	for _, e := range failures {
		f := e.ContextMap()
		if f["remote"] != "127.0.0.1" || len(fmt.Sprint(f["token_prefix"])) != 6 {
			t.Errorf("log entry %q %v: want remote 127.0.0.1 and a 6-character token_prefix", e.Message, f)
		}
	}
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		for _, g := range guesses {
			if strings.Contains(line, g[:12]) {
				t.Fatalf("log shows more of a token than its prefix: %q", line)
			}
		}
	}
	pair.finish()
}

// TestNotSentCountComesFirst: the count of lines refused in a run is
// told before the answer to the command that ends the run, even a quit,
// the connection's last: a file piped in with no partner, then /who or
// /quit, gets the error, the count, then the answer.
func TestNotSentCountComesFirst(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	for _, end := range []struct{ cmd, answer string }{
		{"/who", `^\* you are alice\d, .*not connected$`},
		{"/quit", `^\* bye$`},
	} {
		c := dialLine(t, d, "127.0.0.1")
		c.login("alice" + strconv.Itoa(len(end.cmd)))
		io.WriteString(c.c, strings.Repeat("anyone there?\n", 500)+end.cmd+"\n")
		c.expect(`^! not_paired: `)
		c.expect(`^\* 499 more lines were not sent: you are not connected to anyone$`)
		c.expect(end.answer)
	}
}

// TestZeroTokenGuessesNothing: the all-zero token is answered
// unknown_token, but no one is ever given it, so, as a bad_token, it is
// no failed connect: past limits.connect_failures of them the user is
// still answered at once, and a real wrong token after them is the
// first failure counted.
func TestZeroTokenGuessesNothing(t *testing.T) {
	t.Parallel()
	const limit = 2
	d := startDaemon(t, func(o *engine.Options) { o.Limits.ConnectFailures = limit })
	c := dialLine(t, d, "127.0.0.1")
	c.login("zeros")
	for range 3 * limit {
		c.send("/connect " + strings.Repeat("0", 32))
		c.expect(`^! unknown_token: `)
	}
	for range limit {
		c.send("/connect " + strings.Repeat("0", 31) + "1")
		c.expect(`^! unknown_token: `)
	}
	c.send("/connect " + strings.Repeat("0", 31) + "2")
	c.expect(`^! throttled: `)
}

// TestHostileGuessingFromManyAddresses: failed resumes and connects from
// many addresses, each address failing too few times to be held, and
// each reaching limits.connect_failures, are logged at most once a
// second for the failures and once a second for the warnings, each line
// with the count of those not logged since the last: a guesser who
// cycles through more addresses than the throttle's table holds cannot
// fill the disk. No failure goes uncounted.
func TestHostileGuessingFromManyAddresses(t *testing.T) {
	t.Parallel()
	const addrs, limit = 150, 2
	core, logs := observer.New(zap.InfoLevel)
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.ConnectFailures = limit
		o.Logger = zap.New(core)
	})
	// Each address fails a resume (its first failure, at info level),
	// then a connect (its second: the warning).
	guess := func(i int) {
		c := dialLine(t, d, fmt.Sprintf("127.0.%d.%d", 1+i/200, 1+i%200))
		c.send("/resume " + proto.NewResumeKey().String())
		c.expect(`^! bad_resume_key: `)
		c.login(fmt.Sprint("guesser", i))
		c.send(fmt.Sprintf("/connect %032x", i+1))
		c.expect(`^! unknown_token: `)
		c.c.Close()
	}
	start := time.Now()
	for i := range addrs {
		guess(i)
	}
	elapsed := time.Since(start)
	// A failure a second later is logged, with the count of those that
	// were not.
	time.Sleep(1100 * time.Millisecond)
	guess(addrs)
	// At most one line when the flood starts, one for each second it
	// lasts, and the last.
	bound := 2 + int(elapsed/time.Second)
	for _, kind := range []struct {
		level zapcore.Level
		msgs  []string
	}{
		{zap.InfoLevel, []string{"resume failed", "connect failed"}},
		{zap.WarnLevel, []string{"failed connects from this address reached limits.connect_failures; further connects are slowed"}},
	} {
		lines, counted := 0, 0
		for _, e := range logs.FilterLevelExact(kind.level).All() {
			if !slices.Contains(kind.msgs, e.Message) {
				continue
			}
			lines++
			counted++
			if n, ok := e.ContextMap()["failures_not_logged"].(int64); ok {
				counted += int(n)
			}
		}
		t.Logf("%s: %d lines for %d failures in %v", kind.level, lines, counted, elapsed)
		if lines > bound {
			t.Errorf("%d %s lines for %d failures in %v; want at most %d", lines, kind.level, addrs+1, elapsed, bound)
		}
		if counted != addrs+1 {
			t.Errorf("%s lines account for %d failures (logged and not), want %d", kind.level, counted, addrs+1)
		}
	}
}

// flooderWithBob starts a daemon on its embedded limits and pairs two
// line clients on it, the flooder and bob.
func flooderWithBob(t *testing.T) (flooder, bob *lineConn) {
	t.Helper()
	d := startDaemon(t, nil)
	flooder = dialLine(t, d, "127.0.0.1")
	token := flooder.login("flooder")
	bob = dialLine(t, d, "127.0.0.1")
	bob.login("bob")
	bob.send("/connect " + token)
	bob.expect(`^\* you are connected with flooder$`)
	flooder.expect(`^\* bob is connected$`)
	return flooder, bob
}

// TestFloodGoodbyeReachesALateReader: a script writes 40,000 commands
// at once and reads nothing for a second. It is disconnected as a
// flood, with most of what it wrote unread; a plain close would have
// the kernel reset the connection and throw away what it had not sent,
// the goodbye among it: the client read part of its answers and a
// reset, never why. The close lingers instead: the client reads every
// answer, the goodbye, and a clean end of the stream. Its partner is
// told as the linger begins, not as it ends: by the time the flooder
// has read its end of the stream, a second after, long before its
// linger is over (it never closes its side).
func TestFloodGoodbyeReachesALateReader(t *testing.T) {
	t.Parallel()
	flooder, bob := flooderWithBob(t)
	flooder.c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := flooder.c.Write([]byte(strings.Repeat("/who\n", 40_000))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	flooder.c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	rest, err := io.ReadAll(flooder.r)
	if err != nil {
		t.Fatalf("after %d bytes: %v", len(rest), err)
	}
	lines := strings.Split(strings.TrimSuffix(string(rest), "\r\n"), "\r\n")
	if last := lines[len(lines)-1]; last != "! rate_limited: too many requests for too long; closing the connection" {
		t.Fatalf("%d lines, the last %q", len(lines), last)
	}
	if l, err := bob.read(100 * time.Millisecond); err != nil || !strings.HasPrefix(l, "* flooder disconnected; ") {
		t.Fatalf("bob was told %q, %v", l, err)
	}
}

// TestFloodClosesSampled: a client that reconnects to flood again, cut
// in milliseconds each time, costs a log line a second, not one a cut
// (hundreds a second, which used up a journal's rate limit and hid
// every other line); the lines let through count the cuts held back.
// Nor does a flood of one refusal hide another reason's line: an
// upgrade refused for its origin, the line an operator needs to allow
// it, is logged among a flood of connections refused as too many.
func TestFloodClosesSampled(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	d := startDaemon(t, func(o *engine.Options) {
		o.Logger = zap.New(core)
		o.Limits.MessageRate = 10
		o.Limits.MessageBurst = 2
		o.Limits.MaxConnsPerIP = 1
	})
	floods := func() []observer.LoggedEntry {
		return logs.FilterMessage("connection closed: input flood past the rate limit").All()
	}
	total := 0
	flood := func() {
		t.Helper()
		// From a new address each time, past max_conns_per_ip.
		c := dialLine(t, d, fmt.Sprintf("127.2.%d.%d", total/250, 1+total%250))
		c.c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		c.c.Write([]byte(strings.Repeat("/\n", 200)))
		if lines := c.expectClosed(enginetest.Timeout); lines[len(lines)-1] != "! rate_limited: too many requests for too long; closing the connection" {
			t.Fatalf("the flood was told %q", lines[len(lines)-1])
		}
		c.c.Close()
	}
	start := time.Now()
	for ; total < 100 || time.Since(start) < 1500*time.Millisecond; total++ {
		flood()
	}
	if n := len(floods()); n > int(time.Since(start)/time.Second)+1 {
		t.Fatalf("%d of %d flood cuts logged in %v; want one line a second", n, total, time.Since(start))
	}
	deadline := time.Now().Add(enginetest.Timeout)
	for n := len(floods()); len(floods()) == n; total++ {
		if time.Now().After(deadline) {
			t.Fatal("no flood cut logged after the others")
		}
		time.Sleep(100 * time.Millisecond)
		flood()
	}
	notLogged := 0
	for _, e := range floods() {
		n, _ := e.ContextMap()["floods_not_logged"].(int64)
		notLogged += int(n)
	}
	if got := len(floods()) + notLogged; got != total {
		t.Errorf("%d flood cuts logged and %d counted as not logged; want %d in all", len(floods()), notLogged, total)
	}

	// One connection held from 127.0.0.1: each more is refused.
	held := dialLine(t, d, "127.0.0.1")
	defer held.c.Close()
	origins := func() int {
		return logs.Filter(func(e observer.LoggedEntry) bool { return e.ContextMap()["reason"] == "origin" }).Len()
	}
	for i := range 50 {
		c := dialFrom(t, "127.0.0.1", d.TCP)
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		if l, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(l, "! too_many_connections:") {
			t.Fatalf("connection %d past the limit told %q", i, l)
		}
		c.Close()
		if i == 25 {
			if _, status := dialWSRaw(t, d, "127.0.3.1", "Origin: http://elsewhere.example\r\n"); status != http.StatusForbidden {
				t.Fatalf("an upgrade from another origin answered %d", status)
			}
		}
	}
	if origins() != 1 {
		t.Fatalf("the upgrade refused for its origin logged %d times among refusals for too many connections, want once", origins())
	}
}

// TestFloodWithSaysIsStillAFlood: a relayed message makes up for ten
// dropped inputs (a file piped through nc with lines that cannot be
// sent among its others is not a flood), not for a flood: a script
// that adds a say to every 9,000 commands past the rate is cut as one,
// as it was before messages made up for anything.
func TestFloodWithSaysIsStillAFlood(t *testing.T) {
	t.Parallel()
	flooder, bob := flooderWithBob(t)
	go io.Copy(io.Discard, bob.c) // bob reads all he is sent
	go func() {
		flooder.c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		flooder.c.Write([]byte(strings.Repeat(strings.Repeat("/who\n", 9000)+"hi\n", 5)))
	}()
	lines := flooder.expectClosed(enginetest.Timeout)
	if last := lines[len(lines)-1]; last != "! rate_limited: too many requests for too long; closing the connection" {
		t.Fatalf("%d lines, the last %q", len(lines), last)
	}
}

// TestHostileFreeFrameFloods: WebSocket frames that carry nothing, a
// pong nobody asked for or an empty fragment of a message that never
// ends, cost their sender nothing to send and the server a read each.
// Before, a flood of either was read for ever (millions a second, one
// core busy); now unasked pongs spend tokens and are cut as any flood
// (1008), and a message in more than wsframe.MaxFragments frames is
// refused (1008), either within a second.
func TestHostileFreeFrameFloods(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.MessageRate = 10
		o.Limits.MessageBurst = 20
	})
	for _, tc := range []struct {
		name   string
		frames []byte
		reason string
	}{
		{"pongs", bytes.Repeat(clientFrame(0x8A, nil, true), 5000), "rate limit"},
		// A text frame without FIN, then continuations without it.
		{"empty fragments", append(clientFrame(0x01, []byte("a"), true), bytes.Repeat(clientFrame(0x00, nil, true), 5000)...), "fragments"},
	} {
		wc := dialWS(t, d, "127.0.0.1")
		go func() { wc.c.SetWriteDeadline(time.Now().Add(10 * time.Second)); wc.c.Write(tc.frames) }()
		start := time.Now()
		for {
			f, err := wc.frame(enginetest.Timeout)
			if err != nil {
				t.Fatalf("%s: %v, not closed", tc.name, err)
			}
			if f.Header.OpCode == ws.OpClose {
				code, reason := ws.ParseCloseFrameData(f.Payload)
				if code != ws.StatusPolicyViolation || !strings.Contains(reason, tc.reason) || time.Since(start) > time.Second {
					t.Errorf("%s: closed with %d %q after %v, want 1008 saying %q within a second", tc.name, code, reason, time.Since(start), tc.reason)
				}
				break
			}
		}
	}
}

// TestPongsAnswerPingsFree: a client that reads late answers several of
// the server's pings at once, each pong free, and a heartbeat pong of
// its own that finds no token is dropped without a word, nothing it
// meant being lost. Before, only the first answer was free (the others,
// with its burst spent, drew rate_limited), and so did the heartbeat.
func TestPongsAnswerPingsFree(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.MessageRate = 0.01
		o.Limits.MessageBurst = 3
		o.Limits.PingInterval = time.Second
		o.Limits.IdleTimeout = 10 * time.Second
	})
	wc := dialWS(t, d, "127.0.0.1")
	// The login and two whos spend the burst.
	wc.sendJSON(map[string]any{"type": "login", "name": "late"})
	wc.sendJSON(map[string]any{"type": "who"})
	wc.sendJSON(map[string]any{"type": "who"})
	time.Sleep(3500 * time.Millisecond)
	pings, errs := 0, 0
	read := func() {
		for {
			f, err := wc.frame(300 * time.Millisecond)
			if err != nil {
				return
			}
			switch {
			case f.Header.OpCode == ws.OpPing:
				pings++
			case bytes.Contains(f.Payload, []byte(`"type":"error"`)):
				errs++
				t.Errorf("told %s", f.Payload)
			}
		}
	}
	read()
	// A loop slowed by a busy machine may have sent one by now: the
	// second is waited for, as a client reading late would still.
	for deadline := time.Now().Add(enginetest.Timeout); pings < 2 && time.Now().Before(deadline); {
		read()
	}
	if pings < 2 {
		t.Fatalf("%d pings in %v at one a second", pings, 3500*time.Millisecond+enginetest.Timeout)
	}
	for range pings + 1 { // and a heartbeat of its own
		wc.write(clientFrame(0x8A, nil, true))
	}
	read()
	if errs != 0 {
		t.Errorf("%d errors for answering %d pings late, and one heartbeat", errs, pings)
	}
}

// TestHostileCommandFlood: commands past the rate are dropped with one
// rate_limited error a second, and a flood far past it is disconnected
// with a stated reason; a fast paste to a partner is never refused.
func TestHostileCommandFlood(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.MessageRate = 10
		o.Limits.MessageBurst = 20
	})
	pair := startHealthyPair(t, d)

	flooder := dialLine(t, d, "127.0.0.1")
	flooder.login("flooder")
	go func() {
		flooder.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		flooder.c.Write([]byte(strings.Repeat("/who\n", 5000)))
	}()
	lines := flooder.expectClosed(enginetest.Timeout)
	status, limited := 0, 0
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "* you are flooder"):
			status++
		case l == "! rate_limited: too many requests; slow down: those past the limit are dropped unanswered":
			limited++
		}
	}
	last := lines[len(lines)-1]
	// A burst of 20, plus what refills while the flood is read; one
	// rate_limited (two if the flood straddles a second).
	if status < 19 || status > 30 || limited < 1 || limited > 2 || !strings.HasPrefix(last, "! rate_limited: too many requests for too long; closing") {
		t.Errorf("flood answered with %d statuses, %d rate_limited, last %q", status, limited, last)
	}

	// The same over WebSocket ends with close 1008, and pipelined HTTP
	// requests past the burst with 429.
	wf := dialWS(t, d, "127.0.0.1")
	var frames []byte
	for i := 0; i < 1000; i++ {
		frames = append(frames, clientFrame(0x81, []byte(`{"type":"who"}`), true)...)
	}
	go func() { wf.c.SetWriteDeadline(time.Now().Add(10 * time.Second)); wf.c.Write(frames) }()
	wsLimited := 0
	for {
		f, err := wf.frame(enginetest.Timeout)
		if err != nil {
			t.Fatalf("WebSocket flood: %v", err)
		}
		if f.Header.OpCode == ws.OpClose {
			if code, reason := ws.ParseCloseFrameData(f.Payload); code != ws.StatusPolicyViolation || reason == "" {
				t.Errorf("WebSocket flood closed with %d %q, want 1008", code, reason)
			}
			break
		}
		if bytes.Contains(f.Payload, []byte(`"rate_limited"`)) {
			wsLimited++
		}
	}
	if wsLimited < 2 || wsLimited > 3 { // one told on the way, one with the close
		t.Errorf("WebSocket flood: %d rate_limited errors, want 2", wsLimited)
	}
	hc := dialFrom(t, "127.0.0.1", d.WS)
	go func() {
		hc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(hc, strings.Repeat("GET /favicon.svg HTTP/1.1\r\nHost: "+d.WS+"\r\n\r\n", 100))
	}()
	hr := bufio.NewReader(hc)
	for i := 0; ; i++ {
		hc.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		resp, err := http.ReadResponse(hr, nil)
		if err != nil {
			t.Fatalf("pipelined request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode == http.StatusTooManyRequests {
			if i < 19 || i > 30 {
				t.Errorf("429 after %d requests, want after about a burst of 20", i)
			}
			break
		}
	}

	// Says are not limited: 3000 lines at a rate of 10 a second all arrive.
	alice := dialLine(t, d, "127.0.0.1")
	alice.login("alice")
	bob := dialLine(t, d, "127.0.0.2")
	bob.login("bob")
	bob.send("/connect " + tokenOf(t, alice))
	bob.expect(`connected with alice`)
	alice.expect(`bob is connected`)
	go numberedLines(alice.c, "paste", 3000, 50)
	pad := strings.Repeat("x", 50)
	for i := 0; i < 3000; i++ {
		bob.expect(`^<alice> paste ` + strconv.Itoa(i) + ` ` + pad + `$`)
	}

	// After the pair ends, a sender still pasting gets one not_paired and
	// then a count each second, not an error per line.
	bob.send("/leave")
	bob.expect(`you left alice`)
	alice.expect(`bob left`)
	go numberedLines(alice.c, "late", 3000, 50)
	alice.expect(`^! not_paired: `)
	notSent := regexp.MustCompile(`^\* (\d+) more lines? (?:was|were) not sent: you are not connected to anyone$`)
	for total := 1; total < 3000; {
		s := alice.expect(`^\* \d+ more line`)
		n, _ := strconv.Atoi(notSent.FindStringSubmatch(s)[1])
		total += n
	}
	alice.send("/who")
	alice.expect(`^\* you are alice, .*not connected$`)

	// The same for a browser: one error, then a count of messages.
	wl := dialWS(t, d, "127.0.0.1")
	wl.sendJSON(map[string]string{"type": "login", "name": "lonely"})
	wl.event()
	var says []byte
	for i := 0; i < 50; i++ {
		says = append(says, clientFrame(0x81, []byte(`{"type":"say","text":"anyone?"}`), true)...)
	}
	wl.write(says)
	if ev := wl.event(); ev["type"] != "error" || ev["code"] != "not_paired" {
		t.Fatalf("first say with no partner: %v", ev)
	}
	if ev := wl.event(); ev["type"] != "notice" || ev["text"] != "49 more messages were not sent: you are not connected to anyone" {
		t.Fatalf("then: %v", ev)
	}
	// Messages the client numbered are named: the error the first, the
	// count the first and last it counts, so that a page can mark each
	// one not sent.
	wl.sendJSON(map[string]string{"type": "who"})
	if ev := wl.event(); ev["type"] != "status" {
		t.Fatalf("who: %v", ev)
	}
	says = says[:0]
	for i := 101; i <= 150; i++ {
		says = append(says, clientFrame(0x81, []byte(`{"type":"say","text":"anyone?","id":`+strconv.Itoa(i)+`}`), true)...)
	}
	wl.write(says)
	if ev := wl.event(); ev["type"] != "error" || ev["code"] != "not_paired" || ev["id"] != 101.0 {
		t.Fatalf("first numbered say with no partner: %v", ev)
	}
	if ev := wl.event(); ev["type"] != "notice" || ev["code"] != "not_paired" || ev["first_id"] != 102.0 || ev["last_id"] != 150.0 {
		t.Fatalf("then: %v", ev)
	}
	pair.finish()
}

// tokenOf asks a logged-in line user for its token.
func tokenOf(t *testing.T, lc *lineConn) string {
	t.Helper()
	lc.send("/who")
	return tokenInLine.FindStringSubmatch(lc.expect(`your token is`))[1]
}

// TestHostileConnectionFlood: connections past the per-address cap and
// past the total cap are refused with a line (line port) or a 503 (web
// port), and the caps free up when connections close.
func TestHostileConnectionFlood(t *testing.T) {
	t.Parallel()
	const perIP, total = 5, 14
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.MaxConnsPerIP = perIP
		o.Limits.MaxConns = total
	})
	pair := startHealthyPair(t, d) // 2 connections from 127.0.0.3

	refusedLine := func(local, want string) {
		t.Helper()
		lc := newLineConn(t, dialFrom(t, local, d.TCP))
		lc.expect(`^! ` + want + `: `)
		lc.expectClosed(enginetest.Timeout)
	}
	refusedWeb := func(local string) {
		t.Helper()
		c := dialFrom(t, local, d.WS)
		c.SetDeadline(time.Now().Add(enginetest.Timeout))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: duet.test\r\n\r\n")
		got, _ := io.ReadAll(c)
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 503 ")) {
			t.Fatalf("web port over the cap answered %.60q", got)
		}
	}

	var held []net.Conn
	for i := 0; i < perIP; i++ {
		held = append(held, dialLine(t, d, "127.0.0.1").c)
	}
	for i := 0; i < 20; i++ {
		refusedLine("127.0.0.1", "too_many_connections")
	}
	refusedWeb("127.0.0.1")
	dialLine(t, d, "127.0.0.2") // another address is still welcome
	for _, c := range held {
		c.Close()
	}
	waitConns(t, d, 3)
	dialLine(t, d, "127.0.0.1").c.Close() // and the first again
	waitConns(t, d, 3)

	for i := 0; d.Conns() < total; i++ {
		dialLine(t, d, fmt.Sprintf("127.0.1.%d", 1+i/2))
	}
	refusedLine("127.0.2.1", "server_full")
	refusedWeb("127.0.2.1")
	pair.finish()
}

// TestWebSocketRefusalTold: a WebSocket upgrade on a connection refused
// as it opens (too many from its address, the server full) is accepted,
// and the refusal told in it: the error, then close 1013, try again
// later; a page cannot read the status of an upgrade refused. Anything
// else is answered 503 as before: a page's request, an upgrade from
// another site, a request never finished. Each counts once as the
// refusal it is. Past engine.RefusalsKeptPerAddr such connections at
// once from an address, the next is answered 503 as it opens, unread.
func TestWebSocketRefusalTold(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reason, text string
		edit         func(o *engine.Options)
		from         string
	}{
		{"too_many_connections", "too many connections from your address",
			func(o *engine.Options) { o.Limits.MaxConnsPerIP = 1 }, "127.0.0.1"},
		{"server_full", "the server has too many connections; try again later",
			func(o *engine.Options) { o.Limits.MaxConns = 1 }, "127.0.0.2"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			t.Parallel()
			m := &countingMetrics{counts: map[string]int{}}
			var lim config.Limits
			d := enginetest.Start(t, func(o *engine.Options) {
				o.Metrics = m
				o.Limits.HandshakeTimeout = time.Second
				tc.edit(o)
				lim = o.Limits
			})
			held := d.DialLine(t) // from 127.0.0.1

			wc := refusedWS(t, d, tc.from, "")
			if ev := wc.event(); ev["type"] != "error" || ev["code"] != tc.reason || ev["text"] != tc.text {
				t.Fatalf("the refused WebSocket is told %v", ev)
			}
			if code, reason := wc.expectClose(); code != 1013 || reason != "try again later" {
				t.Fatalf("then closed %d %q, want 1013 \"try again later\"", code, reason)
			}

			expect503 := func(what, request string) {
				t.Helper()
				c := dialFrom(t, tc.from, d.WS)
				c.SetDeadline(time.Now().Add(enginetest.Timeout))
				io.WriteString(c, request)
				if got, _ := io.ReadAll(c); !bytes.HasPrefix(got, []byte("HTTP/1.1 503 ")) {
					t.Fatalf("%s answered %.80q, want a 503", what, got)
				}
			}
			expect503("a page's request", "GET / HTTP/1.1\r\nHost: "+d.WS+"\r\n\r\n")
			expect503("an upgrade from another site", upgradeRequest(d.WS, "Origin: http://evil.test\r\n"))
			// Nothing sent: answered once limits.handshake_timeout is out,
			// as any request head not sent in time is.
			expect503("a connection that sends nothing", "")
			// A client that hangs up unanswered was refused all the same.
			gone := dialFrom(t, tc.from, d.WS)
			gone.Close()
			for deadline := time.Now().Add(enginetest.Timeout); m.snapshot()["disconnected "+tc.reason] < 5; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the connection that hung up was not counted: %v", m.snapshot())
				}
			}
			waitRefusalsKept(t, d, tc.from, 0)

			// Connections kept for their request are bounded per address:
			// past the bound, one is answered at once, unread. Those kept
			// are kept for as long as the test looks.
			lim.HandshakeTimeout = time.Hour
			d.SetLimits(lim)
			var silent []net.Conn
			for range engine.RefusalsKeptPerAddr {
				c := dialFrom(t, tc.from, d.WS)
				silent = append(silent, c)
			}
			waitRefusalsKept(t, d, tc.from, engine.RefusalsKeptPerAddr)
			c := dialFrom(t, tc.from, d.WS)
			c.SetReadDeadline(time.Now().Add(enginetest.Timeout / 2))
			if got, _ := io.ReadAll(c); !bytes.HasPrefix(got, []byte("HTTP/1.1 503 ")) {
				t.Fatalf("a connection past the bound answered %.80q, want a 503 at once", got)
			}
			for _, c := range silent {
				c.Close()
			}
			waitRefusalsKept(t, d, tc.from, 0)
			held.Conn.Close()

			refused := 5 + engine.RefusalsKeptPerAddr + 1
			want := map[string]int{
				"open line": 1, "open http": refused - 1, "upgraded": 1,
				"now line": 0, "now http": 0, "now ws": 0,
				"rejected " + tc.reason: refused, "disconnected " + tc.reason: refused,
				"disconnected closed": 1,
			}
			for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(10 * time.Millisecond) {
				got := m.snapshot()
				if maps.Equal(got, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("metrics %v, want %v", got, want)
				}
			}
		})
	}
}

// waitRefusalsKept waits until the daemon keeps n connections from ip
// that it refused as they opened.
func waitRefusalsKept(t *testing.T, d *enginetest.Daemon, ip string, n int) {
	t.Helper()
	for deadline := time.Now().Add(enginetest.Timeout); d.RefusalsKept(ip) != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections from %s kept for their request, want %d", d.RefusalsKept(ip), ip, n)
		}
	}
}

// refusedWS upgrades from local, on a connection the daemon refuses,
// and returns it once upgraded.
func refusedWS(t *testing.T, d *enginetest.Daemon, local, extra string) *wsConn {
	t.Helper()
	wc, status := upgradeFrom(t, d, local, extra)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("a refused upgrade answered %d, want it accepted and the refusal told in it", status)
	}
	return wc
}

// TestHostileSlowReader: a partner that never reads while its partner
// sends 100 MB is cut off, and the daemon's heap stays within 64 MiB of
// where it was. With resume off the sender is told how many messages
// were not delivered, then not_paired once and a count a second; with
// resume on the reader's session goes away, the sender is told so, then
// peer_away_full once (what is kept for the reader fills resume.buffer)
// and a count a second: never an error per line.
func TestHostileSlowReader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		window  time.Duration
		cut     string // the notice of the cut; (\d+), if any, counts what was lost
		refused string // the error for the first line after it
		count   string // the count a second of the lines not sent: a second that ends just after the last line counts one, in the singular
	}{
		// Without a count when the socket took all that was held as it
		// closed (see TestSlowReaderIsCut).
		{"resume off", 0, `^\* sleeper stopped reading and was cut off; (?:(\d+) of your messages were not delivered; )?you are free`,
			`^! not_paired: `, `^\* (1 more line was|\d+ more lines were) not sent: you are not connected to anyone$`},
		{"resume on", 2 * time.Minute, `^\* sleeper lost the connection; waiting up to 2m for sleeper to come back(?:; \d+ of your messages were not delivered)?$`,
			`^! peer_away_full: sleeper is away, and `, `^\* (1 more line was|\d+ more lines were) not sent: your partner is away and no more of your messages can be kept for them$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, func(o *engine.Options) {
				o.Limits.SlowTimeout = time.Second
				o.Resume.Window = tc.window
			})
			pair := startHealthyPair(t, d)
			base := heapInuse()
			rssBefore := vmRSS()
			peak := heapPeak()

			sender := dialLine(t, d, "127.0.0.1")
			sender.login("sender")
			sleeper := dialLine(t, d, "127.0.0.2")
			sleeper.send("/login sleeper")
			sleeper.send("/connect " + tokenOf(t, sender))
			sender.expect(`sleeper is connected`)

			start := time.Now()
			const total, size = 100 << 20, 16000
			sent := make(chan error, 1)
			go func() {
				sender.c.SetWriteDeadline(time.Now().Add(40 * time.Second))
				sent <- numberedLines(sender.c, "bulk", total/size, size-len("bulk 00000 \n"))
			}()
			cut := regexp.MustCompile(tc.cut)
			m := cut.FindStringSubmatch(sender.expect(`^\* sleeper `))
			if m == nil {
				t.Fatalf("sender was not told of the cut as %q", tc.cut)
			}
			if len(m) > 1 && m[1] != "" {
				if n, _ := strconv.Atoi(m[1]); n <= 0 {
					t.Fatalf("cut notice with a count of %q: %q", m[1], m[0])
				}
			}
			t.Logf("the reader was cut off %v after the sending began", time.Since(start).Round(time.Millisecond))
			sender.expect(tc.refused)
			// Then only a count a second, until well after the last line.
			count := regexp.MustCompile(tc.count)
			for done := false; ; {
				select {
				case err := <-sent:
					if err != nil {
						t.Fatalf("sender: %v", err)
					}
					done = true
				default:
				}
				s, err := sender.read(1200 * time.Millisecond)
				if ne, ok := err.(net.Error); ok && ne.Timeout() && done {
					break
				} else if err != nil && !(ok && ne.Timeout()) {
					t.Fatalf("sender: %v", err)
				}
				if s != "" && !count.MatchString(s) {
					t.Fatalf("sender got %q", s)
				}
			}
			grown := int64(peak()) - int64(base)
			t.Logf("100 MB to a reader that never reads: heap %d MiB at start, peak +%d MiB; VmRSS %s -> %s",
				base/mib, grown/mib, rssBefore, vmRSS())
			if grown > 64*mib {
				t.Fatalf("heap grew by %d MiB; the bound is 64 MiB", grown/mib)
			}
			pair.finish()
		})
	}
}

// TestHostilePipelinedRequests: thousands of pipelined requests from a
// client that reads no responses do not pile pages up in memory.
func TestHostilePipelinedRequests(t *testing.T) {
	d := startDaemon(t, nil)
	pair := startHealthyPair(t, d)
	base := heapInuse()
	peak := heapPeak()
	c := dialFrom(t, "127.0.0.1", d.WS)
	req := "GET /app.js HTTP/1.1\r\nHost: " + d.WS + "\r\n\r\n"
	go func() {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(strings.Repeat(req, 1900)))
	}()
	time.Sleep(1500 * time.Millisecond)
	// What the daemon holds for the unread answers is the live heap; the
	// peak also counts the garbage of parsing 1,900 requests that the
	// collector had not yet reclaimed, which varies with its pacing.
	held := int64(heapInuse()) - int64(base)
	grown := int64(peak()) - int64(base)
	t.Logf("1900 pipelined requests not read: heap held +%d KiB, peak +%d KiB", held>>10, grown>>10)
	if held > 16*mib {
		t.Fatalf("heap held %d MiB for pipelined requests not read", held/mib)
	}
	if grown > 64*mib {
		t.Fatalf("heap peaked %d MiB above its start for pipelined requests not read", grown/mib)
	}
	// Reading resumes the answers: every one arrives.
	r := bufio.NewReader(c)
	for i := 0; i < 1900; i++ {
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		resp, err := http.ReadResponse(r, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("response %d: %v %v", i, resp, err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	pair.finish()
}

// TestHostileWebSocketViolations: each RFC 6455 violation closes the
// connection with its status code and a reason.
func TestHostileWebSocketViolations(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) { o.Limits.MaxFrame = 1024 })
	pair := startHealthyPair(t, d)
	text := []byte(`{"type":"who"}`)
	cases := []struct {
		name  string
		bytes []byte
		code  ws.StatusCode
	}{
		{"unmasked frame", clientFrame(0x81, text, false), ws.StatusProtocolError},
		{"reserved bit RSV1", clientFrame(0xC1, text, true), ws.StatusProtocolError},
		{"reserved bits RSV2 RSV3", clientFrame(0xB1, text, true), ws.StatusProtocolError},
		{"unknown data opcode", clientFrame(0x83, text, true), ws.StatusProtocolError},
		{"unknown control opcode", clientFrame(0x8B, nil, true), ws.StatusProtocolError},
		{"fragmented ping", clientFrame(0x09, []byte("p"), true), ws.StatusProtocolError},
		{"ping over 125 bytes", clientFrame(0x89, bytes.Repeat([]byte("p"), 126), true), ws.StatusProtocolError},
		{"continuation without a start", clientFrame(0x80, text, true), ws.StatusProtocolError},
		{"new message inside a fragmented one", append(clientFrame(0x01, text[:3], true), clientFrame(0x81, text, true)...), ws.StatusProtocolError},
		{"invalid UTF-8 in a text frame", clientFrame(0x81, []byte("{\"text\":\"\xff\xfe\"}"), true), ws.StatusInvalidFramePayloadData},
		{"invalid UTF-8 across fragments", append(clientFrame(0x01, []byte("ok \xe2\x82"), true), clientFrame(0x80, []byte("\x28"), true)...), ws.StatusInvalidFramePayloadData},
		{"frame over the size limit", append(appendFrameHeader([]byte{0x81}, 2000, true), 1, 2, 3, 4), ws.StatusMessageTooBig},
		{"frame claiming 2^62 bytes", append(appendFrameHeader([]byte{0x82}, 1<<62, true), 1, 2, 3, 4), ws.StatusMessageTooBig},
		{"fragments over the size limit", append(clientFrame(0x01, make([]byte, 800), true), clientFrame(0x80, make([]byte, 800), true)...), ws.StatusMessageTooBig},
		{"binary frame", clientFrame(0x82, text, true), ws.StatusUnsupportedData},
		{"close with an invalid code", clientFrame(0x88, []byte{0x03, 0xe7}, true), ws.StatusProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wc := dialWS(t, d, "127.0.0.1")
			wc.write(tc.bytes)
			code, reason := wc.expectClose()
			if code != tc.code || reason == "" {
				t.Errorf("closed with %d %q, want %d and a reason", code, reason, tc.code)
			}
		})
	}
	waitConns(t, d, 2)
	pair.finish()
}

// TestHostileCrossOrigin: a page from another site cannot open a
// WebSocket as the user (403); the server's own pages can.
func TestHostileCrossOrigin(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	pair := startHealthyPair(t, d)
	for _, tc := range []struct {
		origin string
		status int
	}{
		{"http://evil.example", http.StatusForbidden},
		{"http://" + d.WS + ".evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
		{"http://" + d.WS, http.StatusSwitchingProtocols},
	} {
		_, status := dialWSRaw(t, d, "127.0.0.1", "Origin: "+tc.origin+"\r\n")
		if status != tc.status {
			t.Errorf("Origin %s: status %d, want %d", tc.origin, status, tc.status)
		}
	}
	pair.finish()
}

// TestHostileIdleConnectionsStayCheap: a thousand connections that log in
// and then say nothing cost the daemon a few KiB of heap each (measured
// just under 3 KiB, client side included), so holding connections open
// is not a cheap way to exhaust its memory.
func TestHostileIdleConnectionsStayCheap(t *testing.T) {
	const n = 1000
	d := startDaemon(t, func(o *engine.Options) { o.Limits.MaxConnsPerIP = 2 * n })
	base := heapInuse()
	buf := make([]byte, 512)
	conns := make([]net.Conn, n)
	for i := range conns {
		c := dialFrom(t, "127.0.0.1", d.TCP)
		c.SetDeadline(time.Now().Add(enginetest.Timeout))
		c.Read(buf) // the greeting
		fmt.Fprintf(c, "/login idle%d\n", i)
		c.Read(buf)
		conns[i] = c
	}
	waitConns(t, d, n)
	perConn := (int64(heapInuse()) - int64(base)) / n
	t.Logf("%d idle logged-in connections: %d bytes of heap each, client side included", n, perConn)
	if perConn > 8<<10 {
		t.Fatalf("an idle connection costs %d bytes of heap; want under 8 KiB", perConn)
	}
	runtime.KeepAlive(conns)
}

// TestBrokenSayRefusalNamesID: a say the decoder refuses before it has
// read its members (a lone surrogate, a member given twice, JSON that
// breaks after the id or a raw control character in the text before
// it) is refused naming its id, over a real WebSocket, so that the page
// marks the message refused; one whose id is given twice or cut short
// is refused naming none, as is any other command.
func TestBrokenSayRefusalNamesID(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	wc := dialWS(t, d, "127.0.0.1")
	wc.sendJSON(map[string]string{"type": "login", "name": "broken"})
	if ev := wc.event(); ev["type"] != "welcome" {
		t.Fatalf("login: %v", ev)
	}
	for _, tt := range []struct {
		msg  string
		code string
		id   any // float64, or nil for none
	}{
		{`{"type":"say","text":"\ud800","id":11}`, "invalid_utf8", 11.0},
		{`{"type":"say","id":12,"text":"\udc00 and more"}`, "invalid_utf8", 12.0},
		{`{"type":"say","text":"a","text":"b","id":13}`, "bad_message", 13.0},
		{`{"type":"say","id":14,"text":"hi"`, "bad_json", 14.0},
		{"{\"type\":\"say\",\"text\":\"tab\x01\",\"id\":15}", "bad_json", 15.0},
		{`{"type":"seal","data":"\ud800","id":16}`, "invalid_utf8", 16.0},
		{`{"type":"say","text":"\ud800","id":17,"id":18}`, "invalid_utf8", nil},
		{`{"type":"say","text":"hi","id":19`, "bad_json", nil},
		{`{"type":"say","text":"a"b","id":20}`, "bad_json", nil},
	} {
		wc.write(clientFrame(0x81, []byte(tt.msg), true))
		ev := wc.event()
		if ev["type"] != "error" || ev["code"] != tt.code || ev["id"] != tt.id {
			t.Errorf("%q: %v; want error %s id %v", tt.msg, ev, tt.code, tt.id)
		}
	}
	// The connection is still usable.
	wc.sendJSON(map[string]string{"type": "who"})
	if ev := wc.event(); ev["type"] != "status" {
		t.Fatalf("who after the refusals: %v", ev)
	}
}

// TestHostileNumberedSaysRateLimited: a say or seal its client numbered
// and the rate limit dropped is named, like any other refusal of one, so
// that a page marks exactly the messages that were not sent: the error
// names the first dropped, the notices the rest, and a command dropped
// among them names none.
func TestHostileNumberedSaysRateLimited(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.MessageRate = 10
		o.Limits.MessageBurst = 20
	})
	wc := dialWS(t, d, "127.0.0.1")
	// Before login, a say is refused by its id too.
	wc.write(clientFrame(0x81, []byte(`{"type":"say","text":"hi","id":7}`), true))
	if ev := wc.event(); ev["type"] != "error" || ev["code"] != "not_logged_in" || ev["id"] != 7.0 {
		t.Fatalf("say before login: %v", ev)
	}
	wc.sendJSON(map[string]string{"type": "login", "name": "hasty"})
	if ev := wc.event(); ev["type"] != "welcome" {
		t.Fatalf("login: %v", ev)
	}
	// So is one the decoder refuses, once it knows it is a say.
	wc.write(clientFrame(0x81, []byte(`{"type":"say","text":5,"id":8}`), true))
	if ev := wc.event(); ev["type"] != "error" || ev["code"] != "bad_message" || ev["id"] != 8.0 {
		t.Fatalf("say whose text is not a string: %v", ev)
	}
	// Empty says and seals whose data is not base64url are refused, and
	// each refusal spends a token: past the burst they are dropped.
	// Dropped commands among them name nothing. (Messages refused with
	// no partner would spend none: they form a run, told by its first's
	// error and counts.)
	const n = 100
	var frames []byte
	for i := 1; i <= n; i++ {
		msg := `{"type":"say","text":"","id":` // empty_message
		if i%2 == 0 {
			msg = `{"type":"seal","data":"QQ==","id":` // bad_message
		}
		frames = append(frames, clientFrame(0x81, []byte(msg+strconv.Itoa(i)+`}`), true)...)
		if i%10 == 0 {
			frames = append(frames, clientFrame(0x81, []byte(`{"type":"who"}`), true)...)
		}
	}
	wc.write(frames)
	named := map[int]string{}
	name := func(id int, code string) {
		if prev, ok := named[id]; ok {
			t.Fatalf("message %d named twice: %s, then %s", id, prev, code)
		}
		named[id] = code
	}
	rateErrors := 0
	for len(named) < n {
		ev := wc.event()
		switch {
		case ev["type"] == "status":
		case ev["type"] == "error" && ev["code"] == "rate_limited" && ev["id"] == nil:
			t.Fatalf("rate_limited naming no message while only numbered ones were dropped: %v", ev)
		case ev["type"] == "error":
			id, _ := ev["id"].(float64)
			if id < 1 || id > n {
				t.Fatalf("error names no message of the run: %v", ev)
			}
			if ev["code"] == "rate_limited" {
				rateErrors++
			}
			name(int(id), ev["code"].(string))
		case ev["type"] == "notice" && ev["code"] == "rate_limited":
			first, _ := ev["first_id"].(float64)
			last, _ := ev["last_id"].(float64)
			if first < 1 || last < first || last > n {
				t.Fatalf("notice names no run of messages: %v", ev)
			}
			for id := int(first); id <= int(last); id++ {
				name(id, "rate_limited")
			}
		default:
			t.Fatalf("unexpected %v", ev)
		}
	}
	limited := 0
	for _, code := range named {
		if code == "rate_limited" {
			limited++
		}
	}
	// A burst of 20 (one spent on the login, some on the commands) is
	// answered one by one; the rest were dropped, and told with one
	// error, once.
	if limited < n-25 || rateErrors != 1 {
		t.Errorf("%d messages named rate_limited, %d by an error: %v", limited, rateErrors, named)
	}
}

// TestFragmentedMessageCutAtIdleTimeout: a client that begins a
// fragmented message and never finishes it, answering every ping, is
// cut at limits.idle_timeout as an idle one is, its unfinished message
// with it. Before, each pong counted as a sign of life, and the message
// (up to limits.max_frame) was held for as long as the client liked.
func TestFragmentedMessageCutAtIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 3 * time.Second
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.PingInterval = time.Second
		o.Limits.IdleTimeout = idle
	})
	wc := dialWS(t, d, "127.0.0.1")
	wc.sendJSON(map[string]any{"type": "login", "name": "slowpoke"})
	start := time.Now()
	wc.write(clientFrame(0x01, bytes.Repeat([]byte("x"), 60000), true)) // text, not final
	for time.Since(start) < 3*idle {
		f, err := wc.frame(enginetest.Timeout)
		if err != nil {
			t.Fatalf("read after %v: %v", time.Since(start), err)
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			wc.write(clientFrame(0x8A, nil, true))
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if code != ws.StatusGoingAway || reason != "idle timeout" {
				t.Fatalf("closed %d %q", code, reason)
			}
			if took := time.Since(start); took > idle+2*time.Second {
				t.Fatalf("cut after %v, idle timeout %v", took, idle)
			}
			return
		}
	}
	t.Fatalf("a message begun and never finished was held %v past the idle timeout %v, its client answering every ping", 3*idle-idle, idle)
}
