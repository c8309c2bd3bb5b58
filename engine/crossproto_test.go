package engine_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestHTTPOnLinePortRunsNothing is what a web page can do with fetch():
// send an HTTP request to the line port, with a body of duet commands.
// None may run: no login, no connect. The connection is refused at the
// request's first line, counted and logged, and a netcat user beside it
// is not affected.
func TestHTTPOnLinePortRunsNothing(t *testing.T) {
	m := &countingMetrics{counts: map[string]int{}}
	core, logs := observer.New(zap.WarnLevel)
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Metrics = m
		o.Logger = zap.New(core)
		o.Limits.MaxLine = 128
	})
	bob := d.DialLine(t).Login("bob")
	body := "/login mallory\n/connect " + bob.Token + "\nhello from a web page\n"

	// A real HTTP client, as a browser's fetch sends it. Whether its
	// request is even sent is a race with the greeting, which the client
	// takes for a malformed response: it must fail either way.
	client := &http.Client{Timeout: enginetest.Timeout}
	req, err := http.NewRequest("POST", "http://"+d.TCP+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the line port answered HTTP: %s", resp.Status)
	}

	// The requests as Go's client writes them, on a raw socket, read to
	// the end: one is refused at its request line; one whose request
	// line is too long to be read (a long URL) at the Host line after it.
	// The answer names the web port, where an HTTP client belongs.
	short, _ := http.NewRequest("POST", "http://"+d.TCP+"/", strings.NewReader(body))
	long, _ := http.NewRequest("POST", "http://"+d.TCP+"/"+strings.Repeat("a", 300), strings.NewReader(body))
	_, webPort, _ := net.SplitHostPort(d.WS)
	refused := "! http_request: this port speaks duet's line protocol, not HTTP\r\n" +
		"* browsers and HTTP clients use the web port, port " + webPort + "\r\n"
	for _, tt := range []struct {
		req  *http.Request
		want string
	}{
		{short, refused},
		{long, "! too_long: message too long; it was not sent\r\n" + refused},
	} {
		var head bytes.Buffer
		if err := tt.req.Write(&head); err != nil {
			t.Fatal(err)
		}
		c, err := net.DialTimeout("tcp", d.TCP, enginetest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(enginetest.Timeout))
		if _, err := c.Write(head.Bytes()); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("the connection was not closed: %v (read %q)", err, got)
		}
		if _, after, _ := strings.Cut(string(got), "\r\n"); after != tt.want {
			t.Fatalf("after the greeting the server said %q, want %q", after, tt.want)
		}
	}
	waitCount(t, m, "rejected http_request", func(n int) bool { return n >= 2 })

	// Nothing ran: mallory never logged in, and bob, whom the body tried
	// to connect to, was never told of anyone.
	if users := d.Hub.Stats().Users; users != 1 {
		t.Fatalf("%d users online, want 1 (bob)", users)
	}
	bob.Send("/who")
	bob.Expect(`^\* you are bob, your token is [0-9a-f]{32}, not connected$`)

	// A netcat user is not affected.
	carol := d.DialLine(t).Login("carol")
	carol.Send("/connect " + bob.Token)
	carol.Expect(`^\* you are connected with bob$`)
	bob.Expect(`^\* carol is connected$`)
	carol.Send("Host: this is a message, not a header")
	bob.Expect(`^<carol> Host: this is a message, not a header$`)

	// Refusals are logged (sampled: at most one a second).
	if n := logs.FilterMessage("connection refused: an HTTP request on the line port").Len(); n < 1 {
		t.Fatal("the refusal was not logged")
	}
}

// TestHTTPOnLinePortWithoutWebPort: a server with no web port names
// none.
func TestHTTPOnLinePortWithoutWebPort(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) { o.WSListen = "" })
	c := d.DialLine(t)
	c.Send("GET / HTTP/1.1")
	c.Expect(`^! http_request: this port speaks duet's line protocol, not HTTP$`)
	if l, err := c.TryLine(enginetest.Timeout); err == nil {
		t.Fatalf("then %q, want the close", l)
	}
}

// TestLineOnWebPort: netcat or telnet connected to the web port is told
// at its first command where to go instead: the line port, by its port,
// or, on a server without one, that there is none and what to use.
func TestLineOnWebPort(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tcp     string // tcp.listen
		wantEnd func(d *enginetest.Daemon) string
	}{
		{"line port on", "127.0.0.1:0", func(d *enginetest.Daemon) string {
			_, port, _ := net.SplitHostPort(d.TCP)
			return "; netcat and telnet speak to the line port, port " + port
		}},
		{"line port off", "", func(*enginetest.Daemon) string {
			return "; this server has no line port for netcat and telnet: use a browser or a WebSocket client"
		}},
		// From a trusted proxy, whose client knows the proxy's ports,
		// not duetd's own, which it may not reach.
		{"through a proxy", "127.0.0.1:0", func(*enginetest.Daemon) string {
			return "; netcat and telnet speak to the line port"
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := enginetest.Start(t, func(o *engine.Options) {
				o.TCPListen = tt.tcp
				if tt.name == "through a proxy" {
					o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
				}
			})
			c, err := net.DialTimeout("tcp", d.WS, enginetest.Timeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(enginetest.Timeout))
			if _, err := c.Write([]byte("/login alice\n")); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c) // to the close
			if err != nil {
				t.Fatal(err)
			}
			want := "this is duet's web port, for browsers and WebSocket clients" + tt.wantEnd(d)
			if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) || !bytes.HasSuffix(bytes.TrimRight(got, "\r\n"), []byte(want)) {
				t.Errorf("answered %q, want a 400 ending %q", got, want)
			}
		})
	}
}

// TestSilentOnWebPort: netcat or telnet connected to the web port that
// types nothing, waiting for a greeting, is answered 408 at the
// handshake timeout with where to go instead, as one that types a
// command is (TestLineOnWebPort); before, the 408 said only "request
// timeout".
func TestSilentOnWebPort(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.HandshakeTimeout = 300 * time.Millisecond })
	c, err := net.DialTimeout("tcp", d.WS, enginetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(enginetest.Timeout))
	got, err := io.ReadAll(c) // to the close
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(d.TCP)
	want := "request timeout: this is duet's web port, for browsers and WebSocket clients; netcat and telnet speak to the line port, port " + port
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 408 ")) || !bytes.HasSuffix(bytes.TrimRight(got, "\r\n"), []byte(want)) {
		t.Errorf("answered %q, want a 408 ending %q", got, want)
	}
}

// waitCount waits until m's count of key is as ok wants.
func waitCount(t *testing.T, m *countingMetrics, key string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(enginetest.Timeout)
	for !ok(m.snapshot()[key]) {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d", key, m.snapshot()[key])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
