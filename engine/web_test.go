package engine_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"duet/config"
	"duet/engine"
	"duet/engine/enginetest"
	"duet/proto"
	"duet/web"
)

// TestWSLoginDeadline: a WebSocket that never logs in is told
// login_timeout and closed after limits.login_timeout, as a line
// connection is; one that logged in stays.
func TestWSLoginDeadline(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) { o.Limits.LoginTimeout = time.Second })

	// Logged in before the deadline: still there after it.
	stays := dialWS(t, d, "127.0.0.1")
	stays.sendJSON(map[string]string{"type": "login", "name": "prompt"})
	if ev := stays.event(); ev["type"] != "welcome" {
		t.Fatalf("login answered %v", ev)
	}

	start := time.Now()
	idle := dialWS(t, d, "127.0.0.1")
	ev := idle.event()
	if ev["type"] != "error" || ev["code"] != "login_timeout" {
		t.Fatalf("a WebSocket that did not log in got %v, want a login_timeout error", ev)
	}
	code, reason := idle.expectClose()
	took := time.Since(start)
	if code != ws.StatusPolicyViolation || reason != "login timeout" {
		t.Fatalf("closed with %d %q, want 1008 \"login timeout\"", code, reason)
	}
	// The deadline is checked once a second; the slack is for a loaded
	// machine.
	if took < time.Second-50*time.Millisecond || took > 9*time.Second {
		t.Fatalf("closed after %v, want a little over 1s", took)
	}

	stays.sendJSON(map[string]string{"type": "who"})
	if ev := stays.event(); ev["type"] != "status" || ev["name"] != "prompt" {
		t.Fatalf("after the deadline the logged-in connection answered %v", ev)
	}
}

// TestWSOriginRules: an Origin header that is present must name an
// allowed origin; an empty one, and "null" against an empty Host, name
// none and are refused. A request with no Origin header at all (not a
// browser) is let in.
func TestWSOriginRules(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	star := startDaemon(t, func(o *engine.Options) { o.AllowedOrigins = []string{"*"} })
	upgrade := func(d *enginetest.Daemon, hostLine, originLine string) int {
		t.Helper()
		c := dialFrom(t, "127.0.0.1", d.WS)
		req := "GET /ws HTTP/1.1\r\n" + hostLine + "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + originLine + "\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("upgrade response: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name             string
		daemon           *enginetest.Daemon
		hostLine, origin string
		want             int
	}{
		{"no Origin", d, "Host: " + d.WS + "\r\n", "", http.StatusSwitchingProtocols},
		{"same origin", d, "Host: " + d.WS + "\r\n", "Origin: http://" + d.WS + "\r\n", http.StatusSwitchingProtocols},
		{"same origin over https", d, "Host: " + d.WS + "\r\n", "Origin: https://" + d.WS + "\r\n", http.StatusSwitchingProtocols},
		{"empty Origin", d, "Host: " + d.WS + "\r\n", "Origin:\r\n", http.StatusForbidden},
		{"blank Origin", d, "Host: " + d.WS + "\r\n", "Origin:   \r\n", http.StatusForbidden},
		{"null with an empty Host", d, "Host:\r\n", "Origin: null\r\n", http.StatusForbidden},
		{"empty Origin and Host", d, "Host:\r\n", "Origin:\r\n", http.StatusForbidden},
		{"null", d, "Host: " + d.WS + "\r\n", "Origin: null\r\n", http.StatusForbidden},
		{"a path after the host", d, "Host: " + d.WS + "\r\n", "Origin: http://" + d.WS + "/x\r\n", http.StatusForbidden},
		{"another scheme", d, "Host: " + d.WS + "\r\n", "Origin: ftp://" + d.WS + "\r\n", http.StatusForbidden},
		{"a user before the host", d, "Host: " + d.WS + "\r\n", "Origin: http://u@" + d.WS + "\r\n", http.StatusForbidden},
		// "*" allows every origin, but an empty header is none.
		{"star, another site", star, "Host: " + star.WS + "\r\n", "Origin: http://elsewhere.example\r\n", http.StatusSwitchingProtocols},
		{"star, empty Origin", star, "Host: " + star.WS + "\r\n", "Origin:\r\n", http.StatusForbidden},
		{"star, no Origin", star, "Host: " + star.WS + "\r\n", "", http.StatusSwitchingProtocols},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := upgrade(tc.daemon, tc.hostLine, tc.origin); got != tc.want {
				t.Fatalf("%q %q: status %d, want %d", strings.TrimSpace(tc.hostLine), strings.TrimSpace(tc.origin), got, tc.want)
			}
		})
	}
}

// TestWSOriginRefusalLogged: a WebSocket refused for its origin is
// logged at info level or above, naming the origin and the key that
// would allow it, so that an operator whose page is served from another
// host finds why its users cannot connect. The log is sampled, as other
// refusals are: a flood of them costs a line a second.
func TestWSOriginRefusalLogged(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	d := startDaemon(t, func(o *engine.Options) { o.Logger = zap.New(core) })
	start := time.Now()
	for range 20 {
		if _, status := dialWSRaw(t, d, "127.0.0.1", "Origin: https://chat.example\r\n"); status != http.StatusForbidden {
			t.Fatalf("status %d, want 403", status)
		}
	}
	refusals := logs.FilterMessageSnippet("ws.allowed_origins").All()
	if len(refusals) == 0 {
		t.Fatalf("the refusal was not logged: %v", logs.All())
	}
	if most := int(time.Since(start)/time.Second) + 1; len(refusals) > most {
		t.Errorf("%d refusals logged in %v; want them sampled, one a second", len(refusals), time.Since(start))
	}
	fields := refusals[0].ContextMap()
	if fields["origin"] != "https://chat.example" || fields["reason"] != "origin" || fields["remote"] != "127.0.0.1" {
		t.Errorf("logged %q with %v", refusals[0].Message, fields)
	}
}

// TestWSOriginRefusalLogIsPrintable: any client may write the Origin
// header; the log line of its refusal shows it cut short and escaped, so
// a bidi override or kilobytes of header do not reach the operator's
// terminal as they were sent.
func TestWSOriginRefusalLogIsPrintable(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	d := startDaemon(t, func(o *engine.Options) { o.Logger = zap.New(core) })
	origin := "http://evil.example/\u202e\"} fake" + strings.Repeat("A", 7000)
	if _, status := dialWSRaw(t, d, "127.0.0.1", "Origin: "+origin+"\r\n"); status != http.StatusForbidden {
		t.Fatalf("status %d, want 403", status)
	}
	refusals := logs.FilterMessageSnippet("ws.allowed_origins").All()
	if len(refusals) != 1 {
		t.Fatalf("%d refusals logged, want 1: %v", len(refusals), logs.All())
	}
	got, _ := refusals[0].ContextMap()["origin"].(string)
	if want := `http://evil.example/\u202e\"} fake` + strings.Repeat("A", 64-len("http://evil.example/\u202e\"} fake")) + "…"; got != want {
		t.Errorf("logged origin %.120q (%d bytes), want %q", got, len(got), want)
	}
}

// TestWebHeaders: over the wire, every page answer carries the security
// headers and, when configured, HSTS; an error answered before a request
// could be read, and a refused WebSocket handshake, carry the security
// headers too.
func TestWebHeaders(t *testing.T) {
	t.Parallel()
	site, err := web.NewSite(web.Options{HSTSMaxAge: 180 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, func(o *engine.Options) { o.Site = site })
	security := map[string]string{
		"X-Content-Type-Options":     "nosniff",
		"Referrer-Policy":            "no-referrer",
		"X-Frame-Options":            "DENY",
		"Cross-Origin-Opener-Policy": "same-origin",
	}
	const upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, tc := range []struct {
		name, req string
		status    int
		hsts      bool
		header    [2]string // a further header the answer must carry
	}{
		{"page", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, true, [2]string{}},
		{"share link", "GET /?utm=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, true, [2]string{}},
		{"script", "GET /app.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", 200, true, [2]string{}},
		{"not found", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, true, [2]string{}},
		{"method", "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, true, [2]string{}},
		{"malformed", "NOT HTTP AT ALL\r\n\r\n", 400, false, [2]string{}},
		{"ws, origin refused", upgrade + "Origin: http://evil.example\r\n\r\n", 403, false, [2]string{}},
		{"ws, not an upgrade", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400, false, [2]string{}},
		{"ws, another version", strings.Replace(upgrade, "Version: 13", "Version: 8", 1) + "\r\n", 426, false,
			[2]string{"Sec-WebSocket-Version", "13"}},
		{"ws, another method", strings.Replace(upgrade, "GET", "POST", 1) + "\r\n", 405, false, [2]string{"Allow", "GET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", d.WS)
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			for k, v := range security {
				if got := resp.Header.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q, want %q once", k, got, v)
				}
			}
			csp := resp.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy = %q", csp)
			}
			if name := tc.header[0]; name != "" && resp.Header.Get(name) != tc.header[1] {
				t.Errorf("%s = %q, want %q", name, resp.Header.Get(name), tc.header[1])
			}
			if !tc.hsts && !resp.Close {
				// An error answer, not one of the site's pages: it ends the
				// connection.
				t.Errorf("status %d without Connection: close", resp.StatusCode)
			}
			hsts := resp.Header.Values("Strict-Transport-Security")
			if tc.hsts && (len(hsts) != 1 || hsts[0] != "max-age=15552000") {
				t.Errorf("Strict-Transport-Security = %q, want max-age=15552000 once", hsts)
			}
		})
	}
}

// TestWSHeldSenderIsNotIdle: a WebSocket whose input back-pressure holds
// (its partner reads slower than it sends) is not cut as idle, however
// long the hold lasts: its frames, pongs included, wait unread because
// the server stopped reading them, not because the client went quiet.
// Once the partner reads, every message arrives and the sender is still
// there.
func TestWSHeldSenderIsNotIdle(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) {
		o.Limits.OutboundHigh = 64 << 10
		o.Limits.PingInterval = time.Second
		o.Limits.IdleTimeout = 2 * time.Second
		o.Limits.SlowTimeout = time.Minute
	})
	alice := d.DialWS(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	alice.Expect("paired")
	bob.Expect(`connected with alice`)

	// alice answers pings, as a browser does, and notes a close.
	var mu sync.Mutex
	closed := make(chan ws.StatusCode, 1)
	go func() {
		for {
			alice.Conn.SetReadDeadline(time.Now().Add(time.Minute))
			f, err := ws.ReadFrame(alice.Conn)
			if err != nil {
				return
			}
			switch f.Header.OpCode {
			case ws.OpPing:
				mu.Lock()
				_ = wsutil.WriteClientMessage(alice.Conn, ws.OpPong, f.Payload)
				mu.Unlock()
			case ws.OpClose:
				code, _ := ws.ParseCloseFrameData(f.Payload)
				closed <- code
				return
			}
		}
	}()
	const count, size = 2000, 10_000 // 20 MB, far more than the sockets hold
	pad := strings.Repeat("x", size)
	go func() {
		for i := 0; i < count; i++ {
			b, _ := json.Marshal(map[string]string{"type": "say", "text": strconv.Itoa(i) + " " + pad})
			mu.Lock()
			alice.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
			err := wsutil.WriteClientText(alice.Conn, b)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	// bob does not read for well past limits.idle_timeout: alice is held
	// all that while.
	time.Sleep(6 * time.Second)
	for i := 0; i < count; i++ {
		if got, want := bob.Line(), "<alice> "+strconv.Itoa(i)+" "+pad; got != want {
			t.Fatalf("line %d: got %.40q", i, got)
		}
	}
	select {
	case code := <-closed:
		t.Fatalf("alice, held while bob did not read, was closed with %d", code)
	default:
	}
}

// TestWebPipelinedAnswersWhole: a client that pipelines requests and
// reads their answers slower than limits.handshake_timeout gets every
// answer whole. The requests behind the answers being written wait
// unread because the server stopped reading them (it holds a client that
// does not read), so the time to the next request does not run out
// meanwhile, and no answer is cut off by a 408 and a close.
func TestWebPipelinedAnswersWhole(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) { o.Limits.HandshakeTimeout = time.Second })
	c := dialFrom(t, "127.0.0.1", d.WS)
	// More than the sockets' buffers hold on their own (tcp_wmem's
	// largest is 4 MiB by default): the daemon holds some of it.
	const requests = 200 // 10 MB of app.js
	go func() {
		c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		io.WriteString(c, strings.Repeat("GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n", requests))
	}()
	time.Sleep(3 * time.Second) // a slow link: nothing read for a while
	r := bufio.NewReader(c)
	for i := 0; i < requests; i++ {
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("answer %d: status %d, %d bytes of %d: %v", i, resp.StatusCode, len(body), resp.ContentLength, err)
		}
	}
}

// TestWebAnswersWholeBeforeClose: the answers to requests pipelined
// before one that closes the connection (Connection: close), that one's
// included, are written whole before the close, however slowly the
// client reads: a client whose receive window is small and that reads
// nothing until all were sent gets each of them whole.
func TestWebAnswersWholeBeforeClose(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	dl := net.Dialer{Timeout: enginetest.Timeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			// A small window, and segments of an Ethernet's size: on
			// loopback's own (64 KiB) the server's kernel would take
			// megabytes at once.
			serr = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096),
				syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460))
		})
		return errors.Join(err, serr)
	}}
	c, err := dl.Dial("tcp", d.WS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const requests = 3
	c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	io.WriteString(c, strings.Repeat("GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n", requests-1)+
		"GET /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	time.Sleep(500 * time.Millisecond) // the server answers all three meanwhile
	r := bufio.NewReader(c)
	for i := range requests {
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || int64(len(body)) != resp.ContentLength {
			t.Fatalf("answer %d: status %d, %d bytes of %d: %v", i, resp.StatusCode, len(body), resp.ContentLength, err)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the last answer: %v, want the connection closed", err)
	}
}

// TestLongestMessagesFitAFrame: under any limits the configuration
// accepts, a browser's longest message fits in limits.max_frame and is
// relayed, rather than closing the sender's WebSocket with 1009: a say
// of limits.max_text bytes that JSON writes six bytes each (control
// characters, \u0001, as every encoder escapes them), or its sealed form
// (proto.SealedLimit), each numbered with the longest id. (Before, the
// defaults let a say of 16,384 control characters through validation
// as a 98 KB frame, over the 64 KiB max_frame: the sender was closed
// with 1009 and its partner told it disconnected.)
func TestLongestMessagesFitAFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		maxText, maxFrame int // maxFrame 0: the default
		accepted          bool
	}{
		{16 << 10, 0, true},
		{10914, 64 << 10, true}, // the longest text a 64 KiB frame carries escaped
		{10915, 64 << 10, false},
		{16 << 10, 64 << 10, false},
	} {
		cfg := config.Defaults()
		cfg.Limits.MaxText = tc.maxText
		if tc.maxFrame != 0 {
			cfg.Limits.MaxFrame = tc.maxFrame
		}
		cfg.Limits.MaxLine = max(cfg.Limits.MaxLine, tc.maxText)
		cfg.Resume.Buffer = max(cfg.Resume.Buffer, 2*tc.maxText)
		if err := cfg.Validate(); (err == nil) != tc.accepted {
			t.Fatalf("max_text %d, max_frame %d: validation says %v", tc.maxText, cfg.Limits.MaxFrame, err)
		} else if err != nil {
			continue
		}
		d := startDaemon(t, func(o *engine.Options) { o.Limits = cfg.Limits })
		alice, bob := enginetest.PairWS(t, d)
		text := strings.Repeat("\x01", tc.maxText)
		data := strings.Repeat("A", int(proto.SealedLimit(tc.maxText)))
		// In one write, as json.Marshal writes them: the answer to the
		// first is read even if it closes the connection.
		var frames []byte
		for _, m := range []map[string]any{
			{"type": "say", "text": text, "id": uint64(math.MaxUint64)},
			{"type": "seal", "data": data, "id": uint64(math.MaxUint64)},
			{"type": "say", "text": "after"},
		} {
			b, _ := json.Marshal(m)
			frames = append(frames, clientFrame(0x81, b, true)...)
		}
		write(t, bob.Conn, frames)
		ev, code, err := alice.TryNext(enginetest.Timeout)
		if err != nil || code != 0 || ev["text"] != text {
			t.Fatalf("max_text %d, max_frame %d: the longest say came as %.60v, close %d, %v", tc.maxText, cfg.Limits.MaxFrame, ev, code, err)
		}
		ev, code, err = alice.TryNext(enginetest.Timeout)
		if err != nil || code != 0 || ev["data"] != data {
			t.Fatalf("max_text %d, max_frame %d: the longest seal came as %.60v, close %d, %v", tc.maxText, cfg.Limits.MaxFrame, ev, code, err)
		}
		if text, _ := enginetest.WSMessage(t, alice); text != "after" {
			t.Fatalf("max_text %d, max_frame %d: then %q", tc.maxText, cfg.Limits.MaxFrame, text)
		}
	}
}

// TestWebBareLFHeads: a request head whose lines end in bare LFs, which
// http.ReadRequest reads as any other, ends at its first empty line as
// it does for ReadRequest: it is answered at once, and a request
// pipelined behind it is answered next. (Before, the head was taken to
// run on to the first CRLF CRLF: the request behind it was swallowed
// into it and never answered, and a bare-LF request alone waited for
// the 408.)
func TestWebBareLFHeads(t *testing.T) {
	t.Parallel()
	// A short limit, so that a request not seen to end is answered 408
	// soon rather than left waiting.
	d := startDaemon(t, func(o *engine.Options) { o.Limits.HandshakeTimeout = time.Second })
	for _, tc := range []struct {
		name, req string
		want      []string // each answer's status and Content-Type
	}{
		{"alone", "GET /favicon.svg HTTP/1.1\nHost: x\n\n", []string{"200 image/svg+xml"}},
		{"pipelined", "GET /favicon.svg HTTP/1.1\nHost: x\n\nGET /style.css HTTP/1.1\r\nHost: x\r\n\r\n",
			[]string{"200 image/svg+xml", "200 text/css; charset=utf-8"}},
		{"CRLF lines, bare LF blank line", "GET /favicon.svg HTTP/1.1\r\nHost: x\r\n\nGET /style.css HTTP/1.1\nHost: x\n\n",
			[]string{"200 image/svg+xml", "200 text/css; charset=utf-8"}},
		{"upgrade", strings.ReplaceAll(upgradeRequest("x", ""), "\r\n", "\n"), []string{"101 "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", d.WS)
			c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(c)
			for i, want := range tc.want {
				c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					t.Fatalf("answer %d: %v", i+1, err)
				}
				if resp.StatusCode != http.StatusSwitchingProtocols {
					io.Copy(io.Discard, resp.Body)
				}
				if got := strconv.Itoa(resp.StatusCode) + " " + resp.Header.Get("Content-Type"); got != want {
					t.Fatalf("answer %d: %q, want %q", i+1, got, want)
				}
			}
		})
	}
}

// TestWebHeadAnswersHaveNoBody: an error answer to a HEAD request, a
// refused WebSocket handshake's or one past the rate limit, carries no
// body (RFC 9110 section 9.3.2), and the Content-Length a GET's (or a
// POST's) has for the same answer. (Before, HEAD /ws was sent "handshake
// error: bad HTTP request method" after its head.)
func TestWebHeadAnswersHaveNoBody(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(o *engine.Options) { o.Limits.MessageRate, o.Limits.MessageBurst = 1, 1 })
	// last sends the requests on a connection of their own and reads
	// count answers to method, then what follows the last one's head
	// until the server closes the connection.
	last := func(t *testing.T, method, requests string, count int) (*http.Response, []byte) {
		t.Helper()
		c := dialFrom(t, "127.0.0.1", d.WS)
		c.SetDeadline(time.Now().Add(enginetest.Timeout))
		if _, err := io.WriteString(c, requests); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		var resp *http.Response
		for i := range count {
			var err error
			if resp, err = http.ReadResponse(r, &http.Request{Method: method}); err != nil {
				t.Fatalf("answer %d: %v", i+1, err)
			}
			if i < count-1 {
				io.Copy(io.Discard, resp.Body)
			}
		}
		rest, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("after the last answer: %v", err)
		}
		return resp, rest
	}
	for _, tc := range []struct {
		name     string
		requests func(method string) string
		count    int
		twin     string // the method whose answer has the body HEAD's leaves out
		status   int
	}{
		{"refused upgrade", func(m string) string { return m + strings.TrimPrefix(upgradeRequest("x", ""), "GET") }, 1,
			http.MethodPost, http.StatusMethodNotAllowed},
		{"past the rate limit", func(m string) string { return strings.Repeat(m+" / HTTP/1.1\r\nHost: x\r\n\r\n", 2) }, 2,
			http.MethodGet, http.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			twin, body := last(t, tc.twin, tc.requests(tc.twin), tc.count)
			if twin.StatusCode != tc.status || len(body) == 0 || int64(len(body)) != twin.ContentLength {
				t.Fatalf("%s: status %d, Content-Length %d, body %q", tc.twin, twin.StatusCode, twin.ContentLength, body)
			}
			head, rest := last(t, http.MethodHead, tc.requests(http.MethodHead), tc.count)
			if head.StatusCode != tc.status || head.ContentLength != twin.ContentLength {
				t.Fatalf("HEAD: status %d, Content-Length %d; want %d, %d", head.StatusCode, head.ContentLength, tc.status, twin.ContentLength)
			}
			if len(rest) != 0 {
				t.Fatalf("HEAD answered with a %d-byte body %q", len(rest), rest)
			}
		})
	}
}

// TestWSUpgradeWithBodyRefused: a WebSocket upgrade request that
// declares a body, by a Content-Length other than 0 or by any
// Transfer-Encoding, is refused with 400 and closed, before any upgrade:
// its body is not read as frames. (Before, it was answered 101, and the
// body then read as a frame closed it with 1002.) Content-Length: 0
// declares none, and upgrades.
func TestWSUpgradeWithBodyRefused(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	for _, tc := range []struct {
		name, extra, body string
		status            int
	}{
		{"Content-Length", "Content-Length: 5\r\n", "hello", http.StatusBadRequest},
		{"chunked", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", http.StatusBadRequest},
		{"chunked, empty", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n", http.StatusBadRequest},
		{"Content-Length: 0", "Content-Length: 0\r\n", "", http.StatusSwitchingProtocols},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upgradeAnswered(t, d, upgradeRequest("x", tc.extra)+tc.body, tc.status, "body")
		})
	}
}

// upgradeAnswered sends req to the web port and checks the answer's
// status; an answer other than 101 must say why (its body holds why)
// and close the connection.
func upgradeAnswered(t *testing.T, d *enginetest.Daemon, req string, status int, why string) {
	t.Helper()
	c := dialFrom(t, "127.0.0.1", d.WS)
	c.SetDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d", resp.StatusCode, status)
	}
	if status == http.StatusSwitchingProtocols {
		return
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(body), why) {
		t.Fatalf("the %d says %q (%v), not why", status, body, err)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("after the %d: %q (%v), want the connection closed", status, rest, err)
	}
}

// TestWSUpgradeBadKeyRefused: a WebSocket handshake whose
// Sec-WebSocket-Key is not the base64 of 16 bytes (RFC 6455 section
// 4.2.1), or that sends the key twice, is refused with 400 and closed,
// counted as a protocol ending like the other refused handshakes, and
// does not upgrade. A good key written with '+' and '/', which the URL
// alphabet lacks, upgrades.
func TestWSUpgradeBadKeyRefused(t *testing.T) {
	t.Parallel()
	m := &countingMetrics{counts: map[string]int{}}
	d := startDaemon(t, func(o *engine.Options) { o.Metrics = m })
	const good = "dGhlIHNhbXBsZSBub25jZQ=="
	refused := 0
	for _, tc := range []struct {
		name, keys string // the Sec-WebSocket-Key lines
		status     int
	}{
		{"not base64", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n", http.StatusBadRequest},
		{"17 bytes", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jISE=\r\n", http.StatusBadRequest},
		{"URL alphabet", "Sec-WebSocket-Key: -__7__v_-__7__v_-__7_w==\r\n", http.StatusBadRequest},
		{"twice", "Sec-WebSocket-Key: " + good + "\r\nSec-WebSocket-Key: " + good + "\r\n", http.StatusBadRequest},
		{"twice, one bad", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\nsec-websocket-key: " + good + "\r\n", http.StatusBadRequest},
		{"standard alphabet", "Sec-WebSocket-Key: +//7//v/+//7//v/+//7/w==\r\n", http.StatusSwitchingProtocols},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				tc.keys + "Sec-WebSocket-Version: 13\r\n\r\n"
			upgradeAnswered(t, d, req, tc.status, "Sec-WebSocket-Key")
			if tc.status != http.StatusSwitchingProtocols {
				refused++
			}
		})
	}
	deadline := time.Now().Add(enginetest.Timeout)
	for m.snapshot()["disconnected protocol"] != refused {
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v, want %d protocol endings", m.snapshot(), refused)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
