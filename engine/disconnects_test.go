package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine"
	"duet/engine/auth"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
	"duet/engine/service"
)

// TestEveryEndingCounted provokes each way a connection ends over the
// wire, on a daemon of its own, and reads duet_disconnects_total from a
// real /metrics endpoint: the connection is counted once, under its
// ending's label, and the line the log writes for it carries the same
// label as reason. docs/LIMITS.md lists the endings; what each tells its
// client and its partner is checked by the tests of each (hostile_test.go
// and the others).
func TestEveryEndingCounted(t *testing.T) {
	t.Parallel()
	upgrade := func(d *enginetest.Daemon, extra string) string {
		return "GET /ws HTTP/1.1\r\nHost: " + d.WS + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
	}
	send := func(t *testing.T, addr, data string) net.Conn {
		c := dialFrom(t, "127.0.0.1", addr)
		if _, err := io.WriteString(c, data); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		reason  string
		edit    func(*testing.T, *engine.Options)
		provoke func(t *testing.T, d *enginetest.Daemon)
	}{
		{"quit", nil, func(t *testing.T, d *enginetest.Daemon) {
			a := d.DialLine(t).Login("alice")
			a.Send("/quit")
			a.Expect(`^\* bye$`)
			a.ExpectClosed()
		}},
		{"closed", nil, func(t *testing.T, d *enginetest.Daemon) {
			d.DialLine(t).Login("alice").Conn.Close()
		}},
		{"normal_closure", nil, func(t *testing.T, d *enginetest.Daemon) {
			w := d.DialWS(t).Login("alice")
			write(t, w.Conn, clientFrame(0x88, []byte{0x03, 0xe8}, true)) // close, 1000 normal closure
		}},
		{"going_away", nil, func(t *testing.T, d *enginetest.Daemon) {
			w := d.DialWS(t).Login("alice")
			write(t, w.Conn, clientFrame(0x88, []byte{0x03, 0xe9}, true)) // close, 1001 going away
		}},
		{"lost", nil, func(t *testing.T, d *enginetest.Daemon) {
			// A browser whose network went: the socket ends with no close frame.
			d.DialWS(t).Login("alice").Conn.Close()
		}},
		{"slow", func(t *testing.T, o *engine.Options) {
			o.Limits.OutboundHigh = 64 << 10
			o.Limits.SlowTimeout = time.Second
		}, func(t *testing.T, d *enginetest.Daemon) {
			alice := d.DialLine(t).Login("alice")
			bob := d.DialLine(t).Login("bob")
			bob.Send("/connect " + alice.Token)
			alice.Expect(`is connected`)
			go func() {
				alice.Conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
				_ = numberedLines(alice.Conn, "alice", 200_000, 200)
			}()
			// bob's session goes away: a stalled reader may be a phone.
			// What resume.buffer could not keep of what was held for
			// him is counted.
			alice.Expect(`^\* bob lost the connection; waiting up to 2m for bob to come back(?:; \d+ of your messages were not delivered)?$`)
		}},
		{"idle", func(t *testing.T, o *engine.Options) {
			o.Limits.IdleTimeout = time.Second
			o.Limits.PingInterval = time.Hour
		}, func(t *testing.T, d *enginetest.Daemon) {
			d.DialWS(t).Login("alice")
		}},
		{"shutdown", nil, func(t *testing.T, d *enginetest.Daemon) {
			a := d.DialLine(t).Login("alice")
			go shutdown(d)
			a.Expect(`shutting down`)
		}},
		{"replaced", func(t *testing.T, o *engine.Options) {
			accounts, err := auth.Load(authtest.Users(t, "alice", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			o.AuthMode, o.Auth.Accounts, o.Auth.Takeover = "accounts", accounts, true
		}, func(t *testing.T, d *enginetest.Daemon) {
			first := d.DialLine(t).LoginPassword("alice", "s3cret")
			d.DialLine(t).LoginPassword("alice", "s3cret")
			first.Expect(`logged in on another connection`)
		}},
		{"resumed", nil, func(t *testing.T, d *enginetest.Daemon) {
			// The first connection is still open when a second resumes
			// its session: the first is closed, told why.
			first := d.DialLine(t).Login("alice")
			second := d.DialLine(t)
			second.Send("/resume " + first.Key)
			second.Expect(`^\* resumed: you are alice`)
			first.Expect(`^\* your session was resumed on another connection; this one is closed$`)
			first.Expect(`^\* bye$`)
			first.ExpectClosed()
		}},
		{"flood", func(t *testing.T, o *engine.Options) {
			o.Limits.MessageRate, o.Limits.MessageBurst = 1, 1
		}, func(t *testing.T, d *enginetest.Daemon) {
			a := d.DialLine(t)
			a.Send(strings.Repeat("/who\n", 100))
			for !strings.Contains(a.Line(), "too many requests for too long") {
			}
		}},
		{"protocol", nil, func(t *testing.T, d *enginetest.Daemon) {
			write(t, d.DialWS(t).Conn, clientFrame(0x81, []byte(`{"type":"help"}`), false)) // unmasked
		}},
		{"binary", nil, func(t *testing.T, d *enginetest.Daemon) {
			write(t, d.DialWS(t).Conn, clientFrame(0x82, []byte{1, 2, 3}, true))
		}},
		{"origin", nil, func(t *testing.T, d *enginetest.Daemon) {
			expectStatus(t, send(t, d.WS, upgrade(d, "Origin: http://evil.example\r\n")), http.StatusForbidden)
		}},
		{"too_many_requests", func(t *testing.T, o *engine.Options) {
			o.Limits.MessageRate, o.Limits.MessageBurst = 1, 1
		}, func(t *testing.T, d *enginetest.Daemon) {
			c := send(t, d.WS, strings.Repeat("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 2))
			expectStatus(t, c, http.StatusNotFound)
		}},
		{"served", nil, func(t *testing.T, d *enginetest.Daemon) {
			expectStatus(t, send(t, d.WS, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), http.StatusOK)
		}},
		{"login_timeout", func(t *testing.T, o *engine.Options) {
			o.Limits.LoginTimeout = time.Second
		}, func(t *testing.T, d *enginetest.Daemon) {
			// Not a byte sent, not even a first line: told all the same.
			d.DialLine(t).Expect(`^! login_timeout: no login within 1s; goodbye$`)
		}},
		{"handshake_timeout", func(t *testing.T, o *engine.Options) {
			o.Limits.HandshakeTimeout = time.Second
		}, func(t *testing.T, d *enginetest.Daemon) {
			expectStatus(t, send(t, d.WS, "GET / HT"), http.StatusRequestTimeout)
		}},
		{"http_request", nil, func(t *testing.T, d *enginetest.Daemon) {
			a := d.DialLine(t)
			a.Send("POST / HTTP/1.1")
			a.Expect(`^! http_request: `)
		}},
		{"untrusted_proxy", nil, func(t *testing.T, d *enginetest.Daemon) {
			send(t, d.TCP, "PROXY TCP4 192.0.2.7 127.0.0.1 40000 7070\r\n")
		}},
		{"bad_proxy_header", func(t *testing.T, o *engine.Options) {
			o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		}, func(t *testing.T, d *enginetest.Daemon) {
			send(t, d.TCP, "PROXY SOMETHING ELSE\r\n")
		}},
		{"too_many_connections", func(t *testing.T, o *engine.Options) {
			o.Limits.MaxConnsPerIP = 1
		}, func(t *testing.T, d *enginetest.Daemon) {
			d.DialLine(t)
			dialFrom(t, "127.0.0.1", d.TCP)
		}},
		{"server_full", func(t *testing.T, o *engine.Options) {
			o.Limits.MaxConns = 1
		}, func(t *testing.T, d *enginetest.Daemon) {
			d.DialLine(t)
			dialFrom(t, "127.0.0.1", d.TCP)
		}},
		{"shutting_down", nil, refusedWhileShuttingDown},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			t.Parallel()
			var m *service.Metrics
			core, logs := observer.New(zapcore.DebugLevel)
			d := enginetest.Start(t, func(o *engine.Options) {
				m = service.NewMetrics(o.Hub)
				o.Metrics = m
				o.Logger = zap.New(core)
				if tc.edit != nil {
					tc.edit(t, o)
				}
			})
			admin, err := service.StartAdmin("127.0.0.1:0", m.Registry, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = admin.Close(context.Background()) })
			// Before any connection, the series shows at zero: its
			// first count is an increase a rate or an alert sees.
			zero := fmt.Sprintf("\nduet_disconnects_total{reason=%q} 0\n", tc.reason)
			body := scrape(t, &http.Client{Timeout: enginetest.Timeout}, admin.Addr().String())
			if !strings.Contains(string(body), zero) {
				t.Fatalf("a fresh server's /metrics lacks %q:\n%s", zero, grepLines(body, "duet_disconnects_total"))
			}
			if strings.Contains(string(body), `reason=""`) {
				t.Errorf("a fresh server's /metrics has a series with no reason:\n%s", grepLines(body, `reason=""`))
			}
			tc.provoke(t, d)
			if n := waitDisconnects(t, admin.Addr().String(), tc.reason); n != 1 {
				t.Fatalf("duet_disconnects_total{reason=%q} is %d, want 1", tc.reason, n)
			}
			if logs.FilterField(zap.String("reason", tc.reason)).Len() == 0 {
				t.Errorf("no log line with reason %q; the log has %v", tc.reason, messages(logs))
			}
		})
	}
}

// waitDisconnects scrapes /metrics until the connection ended for reason
// is counted, and returns the count then.
func waitDisconnects(t *testing.T, admin, reason string) int {
	t.Helper()
	series := regexp.MustCompile(`(?m)^duet_disconnects_total\{reason="` + regexp.QuoteMeta(reason) + `"\} (\d+)$`)
	client := &http.Client{Timeout: enginetest.Timeout}
	for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(50 * time.Millisecond) {
		body := scrape(t, client, admin)
		// Every series shows from the start, at zero (MetricsDeclarer).
		if m := series.FindSubmatch(body); m == nil {
			t.Fatalf("no duet_disconnects_total series for %s; /metrics has:\n%s", reason, grepLines(body, "duet_disconnects_total"))
		} else if string(m[1]) != "0" {
			// A second count, should there be one, has had time to come.
			time.Sleep(100 * time.Millisecond)
			m := series.FindSubmatch(scrape(t, client, admin))
			n, _ := strconv.Atoi(string(m[1]))
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection counted as %s; /metrics has:\n%s", reason, grepLines(body, "duet_disconnects_total"))
		}
	}
}

func scrape(t *testing.T, client *http.Client, admin string) []byte {
	t.Helper()
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func grepLines(body []byte, prefix string) string {
	var out []string
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func messages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, fmt.Sprintf("%s %v", e.Message, e.ContextMap()["reason"]))
	}
	return out
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// expectStatus reads an HTTP response from c and checks its status.
func expectStatus(t *testing.T, c net.Conn, status int) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d", resp.StatusCode, status)
	}
}

func shutdown(d *enginetest.Daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	_ = d.Stop(ctx)
}

// dialSmallReceiveBuffer connects to addr with a 4 KiB receive buffer,
// so that a client that does not read is soon behind, and the server
// holds output for it.
func dialSmallReceiveBuffer(t *testing.T, addr string) net.Conn {
	t.Helper()
	return dialReceiveBuffer(t, addr, 4096)
}

// dialReceiveBuffer connects to addr with a receive buffer of size
// bytes, which the kernel does not grow.
func dialReceiveBuffer(t *testing.T, addr string, size int) net.Conn {
	t.Helper()
	dialer := net.Dialer{Timeout: enginetest.Timeout, Control: receiveBuffer(size)}
	raw, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// receiveBuffer is a dialer's Control that gives the socket a receive
// buffer of size bytes, which the kernel does not grow.
func receiveBuffer(size int) func(_, _ string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size) })
		if err != nil {
			return err
		}
		return serr
	}
}

// refusedWhileShuttingDown opens a connection while the server shuts
// down. A shutdown waits for every connection's goodbye to be written, so
// a reader whose socket is full keeps the server draining, and its
// listeners open, long enough to try: bob does not read, with a small
// receive buffer, while alice sends until the server holds output for
// him.
func refusedWhileShuttingDown(t *testing.T, d *enginetest.Daemon) {
	alice := d.DialLine(t).Login("alice")
	raw := dialSmallReceiveBuffer(t, d.TCP)
	bob := newLineConn(t, raw)
	bob.expect(`^\* welcome`)
	bob.login("bob")
	bob.send("/connect " + alice.Token)
	alice.Expect(`is connected`)
	sent := make(chan int, 1)
	go func() {
		alice.Conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n := 0
		for {
			if _, err := fmt.Fprintf(alice.Conn, "%0200d\n", n); err != nil {
				break
			}
			n++
		}
		sent <- n // alice is held back: the server holds what bob does not read
	}()
	<-sent
	go shutdown(d)
	for deadline := time.Now().Add(enginetest.Timeout); ; {
		c, err := net.DialTimeout("tcp", d.TCP, enginetest.Timeout)
		if err != nil {
			t.Fatalf("listener closed before a connection was refused: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		first, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.HasPrefix(first, "! shutting_down: ") {
			// A shutdown that hands no session on is not a restart.
			if first != "! shutting_down: the server is shutting down\r\n" {
				t.Errorf("refused while shutting down with %q", first)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never refused while shutting down; last greeting %q", first)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLateCloseLogsItsEnding: a client that ends its input while its
// login is checked, with a /quit behind it, is logged closed for the
// reason its input gave (quit), with its user, once that input is acted
// on; not as closed, with no user, at the hang-up.
func TestLateCloseLogsItsEnding(t *testing.T) {
	path := t.TempDir() + "/users"
	authtest.RunExact(t, "-B", "-C", "10", "-c", "-b", path, "alice", "s3cret")
	core, logs := observer.New(zapcore.DebugLevel)
	d, _ := enginetest.StartAccounts(t, path, func(o *engine.Options) { o.Logger = zap.New(core) })
	c, err := net.Dial("tcp", d.TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("/login alice s3cret\n/quit\n")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	io.Copy(io.Discard, c)
	closed := logs.FilterMessage("connection closed")
	for deadline := time.Now().Add(enginetest.Timeout); closed.Len() == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		closed = logs.FilterMessage("connection closed")
	}
	if closed.Len() != 1 || closed.FilterField(zap.String("reason", "quit")).FilterField(zap.String("user", "alice")).Len() != 1 {
		t.Fatalf("logged %v", closed.All())
	}
}

// TestLoginLogsCarryTheConnection: every line an accounts-mode login
// writes names the connection (conn) and its address (remote), as every
// line about a connection does, and a login that succeeds adds the debug
// line "logged in", as in open mode. (Before, the lines came from the
// server's logger, without conn, and "logged in" was never written.)
func TestLoginLogsCarryTheConnection(t *testing.T) {
	path := t.TempDir() + "/users"
	authtest.RunExact(t, "-B", "-C", "10", "-c", "-b", path, "alice", "s3cret")
	core, logs := observer.New(zapcore.DebugLevel)
	d, _ := enginetest.StartAccounts(t, path, func(o *engine.Options) { o.Logger = zap.New(core) })
	d.DialLine(t).LoginPassword("alice", "s3cret")
	again := d.DialLine(t)
	again.Send("/login alice s3cret")
	again.Expect(`^! already_online: `)
	wrong := d.DialLine(t)
	wrong.Send("/login alice guess")
	wrong.Expect(`^! auth_failed: `)
	for _, msg := range []string{"login", "logged in", "login refused", "login failed"} {
		lines := logs.FilterMessage(msg).All()
		if len(lines) != 1 {
			t.Errorf("%d lines %q; the log has %v", len(lines), msg, messages(logs))
			continue
		}
		f := lines[0].ContextMap()
		if _, ok := f["conn"].(uint64); !ok || f["remote"] != "127.0.0.1" {
			t.Errorf("%q: %v", msg, f)
		}
	}
}

// TestIdleKeepAliveClosedQuietly: a keep-alive connection on the web
// port, answered and then idle past limits.handshake_timeout, is closed
// without a word, as an HTTP/1.1 server closes an idle connection, and
// counted as handshake_timeout. An answer nobody asked for would race
// the client's next request, which would take it for its own answer.
// (Before, it was sent a 408.) One with part of its next head in is
// still answered 408, as a first request never finished is.
func TestIdleKeepAliveClosedQuietly(t *testing.T) {
	t.Parallel()
	var m *service.Metrics
	core, logs := observer.New(zapcore.DebugLevel)
	d := enginetest.Start(t, func(o *engine.Options) {
		m = service.NewMetrics(o.Hub)
		o.Metrics = m
		o.Logger = zap.New(core)
		o.Limits.HandshakeTimeout = time.Second
	})
	admin, err := service.StartAdmin("127.0.0.1:0", m.Registry, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	// answered opens a connection and reads the answer to one request
	// on it, kept open.
	answered := func() (net.Conn, *bufio.Reader) {
		c := dialFrom(t, "127.0.0.1", d.WS)
		c.SetDeadline(time.Now().Add(enginetest.Timeout))
		write(t, c, []byte("GET /favicon.svg HTTP/1.1\r\nHost: x\r\n\r\n"))
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("the first answer: %v, %v", resp, err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		return c, r
	}

	idle, r := answered()
	start := time.Now()
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) != 0 {
		t.Fatalf("the idle connection was sent %q (%v) as it closed", rest, err)
	}
	if took := time.Since(start); took < time.Second-50*time.Millisecond {
		t.Fatalf("the idle connection was closed after %v, before limits.handshake_timeout", took)
	}
	idle.Close()
	if n := waitDisconnects(t, admin.Addr().String(), "handshake_timeout"); n != 1 {
		t.Fatalf("duet_disconnects_total{reason=\"handshake_timeout\"} is %d, want 1", n)
	}
	if logs.FilterField(zap.String("reason", "handshake_timeout")).Len() == 0 {
		t.Errorf("no log line with reason handshake_timeout; the log has %v", messages(logs))
	}

	begun, r := answered()
	write(t, begun, []byte("GET /style.css HT"))
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("a next request begun: %v, %v; want 408", resp, err)
	}

	first := dialFrom(t, "127.0.0.1", d.WS)
	first.SetDeadline(time.Now().Add(enginetest.Timeout))
	write(t, first, []byte("GET / HT"))
	expectStatus(t, first, http.StatusRequestTimeout)
}

// TestRefusalReachesNetcatThatSentFirst: a line client refused as it
// opens that sends at once, as `nc -N < file` does, reads its refusal.
// Before, the server closed the socket as it wrote the refusal; the
// client's first line, arriving after, was answered with a reset, and
// netcat, which looks at a socket's error before its input, exited
// without printing it: two runs in three printed nothing.
func TestRefusalReachesNetcatThatSentFirst(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxConnsPerIP = 1 })
	d.DialLine(t).Login("held") // the one connection 127.0.0.1 may have
	for i := range 10 {
		var out strings.Builder
		finished := enginetest.PipeNetcat(t, d.TCP, strings.NewReader("/login eager\n"), &out)
		finished()
		if !strings.HasPrefix(out.String(), "! too_many_connections: ") {
			t.Fatalf("run %d: nc printed %q, want the refusal", i, out.String())
		}
	}
}
