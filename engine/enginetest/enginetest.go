// Package enginetest starts a real duet engine on loopback for tests and
// gives them clients that speak its protocols the way users' programs do:
// a line client like netcat, and a WebSocket client like a browser.
package enginetest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"duet/config"
	"duet/engine"
	"duet/engine/hub"
	"duet/web"
)

// Timeout bounds every wait in these helpers, so a broken server fails a
// test instead of hanging it.
const Timeout = 10 * time.Second

// Daemon is a running engine on random loopback ports.
type Daemon struct {
	*engine.Server
	Hub *hub.Hub
	TCP string // host:port of the line protocol
	WS  string // host:port of HTTP/WebSocket
	// Resume is set when resume is on (resume.window > 0): a login is
	// then told its resume key.
	Resume bool
}

// Start runs an engine on 127.0.0.1 with both listeners on free ports and
// stops it when the test ends. Its limits and resume section are the
// defaults (resume on, a 2-minute window); edit may change the options
// first.
func Start(t testing.TB, edit func(*engine.Options)) *Daemon {
	t.Helper()
	site, err := web.NewSite(web.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Options{})
	opts := engine.Options{
		TCPListen: "127.0.0.1:0",
		WSListen:  "127.0.0.1:0",
		Limits:    config.Defaults().Limits,
		Resume:    config.Defaults().Resume,
		Hub:       h,
		Site:      site,
		Logger:    zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		Loops:     2,
	}
	if edit != nil {
		edit(&opts)
	}
	srv, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// One engine starts or stops at a time in a test process: tests that
	// run in parallel once saw a starting engine's new listener socket
	// closed under it (EBADF from setsockopt) while another engine shut
	// down. Starting and stopping are quick; serializing them costs
	// nothing and keeps each engine's sockets its own.
	lifecycle.Lock()
	err = srv.Start()
	lifecycle.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Server: srv, Hub: opts.Hub, Resume: opts.Resume.Window > 0}
	if a := srv.TCPAddr(); a != nil {
		d.TCP = a.String()
	}
	if a := srv.WSAddr(); a != nil {
		d.WS = a.String()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lifecycle.Lock()
		defer lifecycle.Unlock()
		_ = srv.Shutdown(ctx)
	})
	return d
}

// lifecycle serializes engine starts and shutdowns within a test process.
var lifecycle sync.Mutex

// Stop shuts the daemon down (engine.Server.Shutdown) as a test's end
// would, one engine start or stop at a time; a test that stops its
// daemon itself calls this rather than Shutdown.
func (d *Daemon) Stop(ctx context.Context) error {
	lifecycle.Lock()
	defer lifecycle.Unlock()
	return d.Shutdown(ctx)
}

// LineClient is a netcat-like client of the line protocol.
type LineClient struct {
	t    testing.TB
	Conn net.Conn
	r    *bufio.Reader
	Name string
	// Token is set by Login; Key too, when the server has resume on
	// (and by Resume).
	Token, Key string
	resume     bool // the server has resume on: a login is told a key
}

// DialLine connects to the line port and reads the greeting.
func (d *Daemon) DialLine(t testing.TB) *LineClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", d.TCP, Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lc := &LineClient{t: t, Conn: c, r: bufio.NewReaderSize(c, 64<<10), resume: d.Resume}
	if g := lc.Line(); !strings.HasPrefix(g, "* welcome to duet") || !strings.Contains(g, "/login") {
		t.Fatalf("greeting: %q", g)
	}
	return lc
}

// Send writes one line.
func (lc *LineClient) Send(line string) {
	lc.t.Helper()
	lc.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := lc.Conn.Write([]byte(line + "\n")); err != nil {
		lc.t.Fatalf("send %q: %v", line, err)
	}
}

// Line reads one line without its terminator; it fails the test on
// timeout or a stray '\r'.
func (lc *LineClient) Line() string {
	lc.t.Helper()
	lc.Conn.SetReadDeadline(time.Now().Add(Timeout))
	s, err := lc.r.ReadString('\n')
	if err != nil {
		lc.t.Fatalf("read (after %q): %v", s, err)
	}
	if !strings.HasSuffix(s, "\r\n") {
		lc.t.Fatalf("line not ended by CRLF: %q", s)
	}
	s = strings.TrimSuffix(s, "\r\n")
	if strings.ContainsRune(s, '\r') {
		lc.t.Fatalf("stray CR in %q", s)
	}
	return s
}

// TryLine reads one line without its terminator, or says why it could
// not (a timeout after d, the connection closed): unlike Line it does
// not fail the test, so it may run on a goroutine of the test's own.
func (lc *LineClient) TryLine(d time.Duration) (string, error) {
	lc.Conn.SetReadDeadline(time.Now().Add(d))
	s, err := lc.r.ReadString('\n')
	if err != nil {
		return s, err
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}

// Expect reads one line and checks it against a regular expression.
func (lc *LineClient) Expect(pattern string) string {
	lc.t.Helper()
	s := lc.Line()
	if !regexp.MustCompile(pattern).MatchString(s) {
		lc.t.Fatalf("got %q, want match for %q", s, pattern)
	}
	return s
}

var (
	tokenRE = regexp.MustCompile(`your token is ([0-9a-f]{32})`)
	keyRE   = regexp.MustCompile(`^\* resume key: ([0-9a-z]{26}) \(if your connection drops, reconnect and type /resume ([0-9a-z]{26}) within [0-9hms]+\)$`)
)

// ExpectLines reads the next lines, which must be want, in order.
func (lc *LineClient) ExpectLines(want ...string) {
	lc.t.Helper()
	for i, w := range want {
		if got := lc.Line(); got != w {
			lc.t.Fatalf("line %d of %d: got %q, want %q", i+1, len(want), got, w)
		}
	}
}

// Login logs in as name and records the token, and the resume key when
// the server has resume on.
func (lc *LineClient) Login(name string) *LineClient {
	lc.t.Helper()
	lc.Send("/login " + name)
	s := lc.Line()
	m := tokenRE.FindStringSubmatch(s)
	if m == nil || !strings.Contains(s, name) {
		lc.t.Fatalf("login %s: %q", name, s)
	}
	lc.Name, lc.Token = name, m[1]
	lc.readKey()
	return lc
}

// readKey reads the line that tells a resume key, when the server has
// resume on, and records the key.
func (lc *LineClient) readKey() {
	lc.t.Helper()
	if !lc.resume {
		return
	}
	lc.Key = lc.ExpectKey()
}

// ExpectKey reads the line that tells a resume key and returns the key.
func (lc *LineClient) ExpectKey() string {
	lc.t.Helper()
	s := lc.Line()
	m := keyRE.FindStringSubmatch(s)
	if m == nil || m[1] != m[2] {
		lc.t.Fatalf("want a resume key line, got %q", s)
	}
	return m[1]
}

// ExpectClosed checks that the server closes the connection (after any
// lines still in flight).
func (lc *LineClient) ExpectClosed() {
	lc.t.Helper()
	lc.Conn.SetReadDeadline(time.Now().Add(Timeout))
	for {
		if _, err := lc.r.ReadString('\n'); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				lc.t.Fatal("connection not closed")
			}
			return
		}
	}
}

// WSClient is a browser-like client of the JSON protocol.
type WSClient struct {
	t     testing.TB
	Conn  net.Conn
	Name  string
	Token string
	Key   string // the resume key, when the server has resume on
	Hello map[string]any
	rw    io.ReadWriter
}

// DialWS upgrades to WebSocket at /ws and reads the hello event.
func (d *Daemon) DialWS(t testing.TB) *WSClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, "ws://"+d.WS+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	wc := &WSClient{t: t, Conn: c, rw: c}
	if br != nil {
		// Frames that arrived with the handshake response wait in br.
		wc.rw = struct {
			io.Reader
			io.Writer
		}{io.MultiReader(br, c), c}
	}
	wc.Hello = wc.Expect("hello")
	return wc
}

// Send writes one JSON message.
func (wc *WSClient) Send(v any) {
	wc.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		wc.t.Fatal(err)
	}
	wc.SendRaw(b)
}

// SendRaw writes one text frame as given.
func (wc *WSClient) SendRaw(b []byte) {
	wc.t.Helper()
	wc.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	if err := wsutil.WriteClientText(wc.Conn, b); err != nil {
		wc.t.Fatalf("send: %v", err)
	}
}

// Next reads one event. Pings are answered by wsutil; a close fails.
func (wc *WSClient) Next() map[string]any {
	wc.t.Helper()
	wc.Conn.SetReadDeadline(time.Now().Add(Timeout))
	for {
		b, op, err := wsutil.ReadServerData(wc.rw)
		if err != nil {
			wc.t.Fatalf("read: %v", err)
		}
		if op != ws.OpText {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal(b, &ev); err != nil {
			wc.t.Fatalf("bad JSON %q: %v", b, err)
		}
		return ev
	}
}

// Expect reads one event and checks its type.
func (wc *WSClient) Expect(typ string) map[string]any {
	wc.t.Helper()
	ev := wc.Next()
	if ev["type"] != typ {
		wc.t.Fatalf("got %v, want type %q", ev, typ)
	}
	return ev
}

// ExpectClose reads frames until the server's close frame, skipping
// any other, and returns its code and reason.
func (wc *WSClient) ExpectClose() (ws.StatusCode, string) {
	wc.t.Helper()
	wc.Conn.SetReadDeadline(time.Now().Add(Timeout))
	for {
		f, err := ws.ReadFrame(wc.rw)
		if err != nil {
			wc.t.Fatalf("no close frame: %v", err)
		}
		if f.Header.OpCode == ws.OpClose {
			return ws.ParseCloseFrameData(f.Payload)
		}
	}
}

// TryNext reads one event, or the server's close frame (code is then
// not 0), or says why it could not, without failing the test: it may
// run on a goroutine of the test's own.
func (wc *WSClient) TryNext(d time.Duration) (ev map[string]any, code ws.StatusCode, err error) {
	wc.Conn.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := ws.ReadFrame(wc.rw)
		if err != nil {
			return nil, 0, err
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return nil, max(code, 1), nil
		case ws.OpText:
			if err := json.Unmarshal(f.Payload, &ev); err != nil {
				return nil, 0, fmt.Errorf("bad JSON %q: %w", f.Payload, err)
			}
			return ev, 0, nil
		}
	}
}

// ReadUntilClose reads events up to the server's close frame, handing
// each to each, and returns the close's code and reason. Unlike the
// other readers it does not fail the test from its own goroutine: a read
// that fails is reported with t.Errorf and returns code 0, so it may run
// in a goroutine of its own.
func (wc *WSClient) ReadUntilClose(each func(ev map[string]any)) (ws.StatusCode, string) {
	wc.Conn.SetReadDeadline(time.Now().Add(Timeout))
	for {
		f, err := ws.ReadFrame(wc.rw)
		if err != nil {
			wc.t.Errorf("%s: no close frame: %v", wc, err)
			return 0, ""
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			return ws.ParseCloseFrameData(f.Payload)
		case ws.OpText:
			var ev map[string]any
			if err := json.Unmarshal(f.Payload, &ev); err != nil {
				wc.t.Errorf("%s: bad JSON %q", wc, f.Payload)
				continue
			}
			each(ev)
		}
	}
}

// ExpectError reads one event and checks it is the error code.
func (wc *WSClient) ExpectError(code string) {
	wc.t.Helper()
	ev := wc.Expect("error")
	if ev["code"] != code {
		wc.t.Fatalf("got %v, want code %q", ev, code)
	}
}

// Login logs in as name and records the token.
func (wc *WSClient) Login(name string) *WSClient {
	wc.t.Helper()
	wc.Send(map[string]string{"type": "login", "name": name})
	ev := wc.Expect("welcome")
	tok, _ := ev["token"].(string)
	if ev["name"] != name || len(tok) != 32 {
		wc.t.Fatalf("welcome: %v", ev)
	}
	wc.Name, wc.Token = name, tok
	wc.Key, _ = ev["resume_key"].(string)
	return wc
}

// PairWS logs alice and bob in to d over WebSocket, and bob connects to
// alice's token; both have read that they are paired.
func PairWS(t testing.TB, d *Daemon) (alice, bob *WSClient) {
	t.Helper()
	alice = d.DialWS(t).Login("alice")
	bob = d.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	alice.Expect("paired")
	bob.Expect("paired")
	return alice, bob
}

// Say sends a message.
func (wc *WSClient) Say(text string) {
	wc.Send(map[string]string{"type": "say", "text": text})
}

// Connect asks to pair with token.
func (wc *WSClient) Connect(token string) {
	wc.Send(map[string]string{"type": "connect", "token": token})
}

// Describe is a short label for failure messages.
func (wc *WSClient) String() string { return fmt.Sprintf("ws:%s", wc.Name) }
