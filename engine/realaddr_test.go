package engine_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine"
	"duet/engine/enginetest"
)

// dialFrom connects to addr from the loopback source address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: enginetest.Timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(enginetest.Timeout))
	return c
}

func startBehindProxy(t *testing.T) *enginetest.Daemon {
	return enginetest.Start(t, func(o *engine.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
}

// waitAddrs waits until the daemon's view of client addresses is want.
func waitAddrs(t *testing.T, d *enginetest.Daemon, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		got := d.RemoteAddrs()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote addresses %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProxyHeaderFromTrustedProxy: the header may arrive in pieces, the
// greeting waits for it, and the client's address replaces the proxy's.
func TestProxyHeaderFromTrustedProxy(t *testing.T) {
	d := startBehindProxy(t)
	for _, tc := range []struct {
		name, header, want string
	}{
		{"v1", "PROXY TCP4 192.0.2.7 127.0.0.1 40000 7070\r\n", "192.0.2.7"},
		{"v2", "\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24" +
			"\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x09" +
			"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01" +
			"\x9c\x40\x1b\x9e", "2001:db8::9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", d.TCP)
			r := bufio.NewReader(c)
			// Nothing is said before the header is complete.
			c.Write([]byte(tc.header[:7]))
			c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
			if b, err := r.Peek(1); err == nil {
				t.Fatalf("greeted before the PROXY header: %q", b)
			}
			c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
			c.Write([]byte(tc.header[7:] + "/login x" + tc.name + "\r\n"))
			if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "* welcome to duet") {
				t.Fatalf("greeting %q", l)
			}
			if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "* you are x"+tc.name) {
				t.Fatalf("login reply %q", l)
			}
			waitAddrs(t, d, tc.want)
			c.Close()
			waitAddrs(t, d)
		})
	}
}

func TestProxyHeaderRefused(t *testing.T) {
	d := startBehindProxy(t)
	for _, tc := range []struct {
		name, src, send, want string
	}{
		{"untrusted v1", "127.0.0.5", "PROXY TCP4 192.0.2.7 127.0.0.1 40000 7070\r\n", "! untrusted_proxy:"},
		{"untrusted v2", "127.0.0.5", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", "! untrusted_proxy:"},
		{"trusted, no header", "127.0.0.1", "/login alice\r\n", "! bad_proxy_header:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, tc.src, d.TCP)
			r := bufio.NewReader(c)
			if tc.src != "127.0.0.1" {
				if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "* welcome") {
					t.Fatalf("greeting %q", l)
				}
			}
			c.Write([]byte(tc.send))
			l, _ := r.ReadString('\n')
			if !strings.HasPrefix(l, tc.want) {
				t.Fatalf("got %q, want %q", l, tc.want)
			}
			if _, err := r.ReadString('\n'); err == nil {
				t.Fatal("connection still open")
			}
		})
	}
	// An untrusted user whose first line merely starts like one is fine.
	c := dialFrom(t, "127.0.0.5", d.TCP)
	r := bufio.NewReader(c)
	r.ReadString('\n')
	c.Write([]byte("PRO\r\n"))
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "! not_logged_in") {
		t.Fatalf("got %q", l)
	}
}

// TestForwardedFor: X-Forwarded-For names the client only when a trusted
// proxy sends it.
func TestForwardedFor(t *testing.T) {
	d := startBehindProxy(t)
	upgrade := func(src, xff string) net.Conn {
		c := dialFrom(t, src, d.WS)
		req := "GET /ws HTTP/1.1\r\nHost: " + d.WS + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
		if xff != "" {
			req += "X-Forwarded-For: " + xff + "\r\n"
		}
		c.Write([]byte(req + "\r\n"))
		l, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.Contains(l, "101") {
			t.Fatalf("upgrade: %q", l)
		}
		return c
	}
	a := upgrade("127.0.0.1", "203.0.113.9, 198.51.100.4, 127.0.0.1")
	b := upgrade("127.0.0.6", "203.0.113.10")
	waitAddrs(t, d, "198.51.100.4", "127.0.0.6")
	a.Close()
	b.Close()
	waitAddrs(t, d)
}

// TestForwardedForGarbledLine: a client that sends X-Forwarded-For lines
// of its own through a trusted proxy cannot pick its address, even when
// the entry after them is one duetd cannot read: it is then counted, and
// logged, under the proxy's address.
func TestForwardedForGarbledLine(t *testing.T) {
	d := startBehindProxy(t)
	for _, tc := range []struct{ name, lines string }{
		{"garbled last line", "X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-For: unknown\r\n"},
		{"address with a port", "X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-For: 198.51.100.4:4711\r\n"},
		{"empty last line", "X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-For:\r\n"},
		{"garbled before a trusted hop", "X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-For: junk, 127.0.0.1\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", d.WS)
			c.Write([]byte("GET /ws HTTP/1.1\r\nHost: " + d.WS + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + tc.lines + "\r\n"))
			if l, _ := bufio.NewReader(c).ReadString('\n'); !strings.Contains(l, "101") {
				t.Fatalf("upgrade: %q", l)
			}
			waitAddrs(t, d, "127.0.0.1")
			c.Close()
			waitAddrs(t, d)
		})
	}
}

// TestProxyHeaderDeadline: a trusted proxy that sends no header is cut
// off after limits.handshake_timeout.
func TestProxyHeaderDeadline(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.Limits.HandshakeTimeout = time.Second
	})
	// Timed from before the dial: the server's deadline runs from its
	// accept, which a client slow to read its clock after the dial
	// returns may see well before it reads it.
	start := time.Now()
	c := dialFrom(t, "127.0.0.1", d.TCP)
	c.Write([]byte("PROXY TCP4 192.0.2.7")) // and nothing more
	// An admin's nc from the proxy's host looks just like this: the
	// answer says where connections from there must come from.
	l, _ := bufio.NewReader(c).ReadString('\n')
	if want := "! bad_proxy_header: this port expects connections through the proxy: " +
		"one from a trusted_proxies address must begin with a PROXY protocol header, and this one's was malformed or missing\r\n"; l != want {
		t.Fatalf("got %q, want %q", l, want)
	}
	if waited := time.Since(start); waited < time.Second || waited > 8*time.Second {
		t.Fatalf("cut off after %v, want a little over 1s", waited)
	}
}

// TestLoginTimeoutFromProxyHeader: behind a proxy, the time to log in
// runs from the PROXY header, not from the proxy's connection, which
// may have been open a while before its client's first bytes came.
func TestLoginTimeoutFromProxyHeader(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.Limits.LoginTimeout = 2 * time.Second
	})
	c := dialFrom(t, "127.0.0.1", d.TCP)
	time.Sleep(1500 * time.Millisecond)
	header := time.Now()
	c.Write([]byte("PROXY TCP4 192.0.2.7 192.0.2.1 5555 7070\r\n"))
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "* welcome to duet") {
		t.Fatalf("greeting %q", l)
	}
	l, _ := r.ReadString('\n')
	if !strings.HasPrefix(l, "! login_timeout:") {
		t.Fatalf("got %q, want login_timeout", l)
	}
	if waited := time.Since(header); waited < 2*time.Second {
		t.Fatalf("login_timeout %v after the PROXY header, want 2s or more", waited)
	}
}

// TestTrustedProxiesChange: SetTrustedProxies (config reload) applies to
// the next connection.
func TestTrustedProxiesChange(t *testing.T) {
	d := startBehindProxy(t)
	d.SetTrustedProxies(nil)
	c := dialFrom(t, "127.0.0.1", d.TCP)
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "* welcome") {
		t.Fatalf("greeting %q", l)
	}
	c.Write([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\n"))
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "! untrusted_proxy:") {
		t.Fatalf("got %q", l)
	}
}

// TestRefusalsAfterOpenSampled: a connection refused for what it sends
// first (a PROXY header from a peer not trusted, a trusted proxy's
// malformed one, a client the proxy names that has too many connections
// already, on either port) is logged through the same samplers as one
// refused as it opens: a client opening such connections in a loop
// costs a line a second for each reason, not one each, and the lines
// let through count the ones of their reason held back. Every client
// is still told why.
func TestRefusalsAfterOpenSampled(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Logger = zap.New(core)
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.Limits.MaxConnsPerIP = 1
	})
	// The one connection each proxied client may have, held open.
	held := dialFrom(t, "127.0.0.1", d.TCP)
	held.Write([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 40000 7070\r\n"))
	if l, _ := bufio.NewReader(held).ReadString('\n'); !strings.HasPrefix(l, "* welcome to duet") {
		t.Fatalf("greeting %q", l)
	}
	if _, status := dialWSRaw(t, d, "127.0.0.1", "X-Forwarded-For: 203.0.113.9\r\n"); status != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d", status)
	}
	waitAddrs(t, d, "192.0.2.7", "203.0.113.9")

	// refused returns the lines logged so far for the refusals the test
	// makes.
	refused := func() []observer.LoggedEntry {
		return logs.Filter(func(e observer.LoggedEntry) bool {
			switch e.ContextMap()["reason"] {
			case "untrusted_proxy", "bad_proxy_header", "too_many_connections":
				return true
			}
			return false
		}).All()
	}
	lineRefused := func(src, send, want string) {
		t.Helper()
		c := dialFrom(t, src, d.TCP)
		r := bufio.NewReader(c)
		if src != "127.0.0.1" {
			if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "* welcome") {
				t.Fatalf("greeting %q", l)
			}
		}
		c.Write([]byte(send))
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, want) {
			t.Fatalf("got %q, want %q", l, want)
		}
		c.Close()
	}
	attacks := []func(i int){
		func(i int) {
			// From a new address each time: the peer's own connection
			// counts against its address until it closes.
			lineRefused(fmt.Sprintf("127.0.1.%d", 1+i%250), "PROXY TCP4 1.2.3.4 127.0.0.1 1111 7070\r\n", "! untrusted_proxy:")
		},
		func(int) { lineRefused("127.0.0.1", "/login mallory\r\n", "! bad_proxy_header:") },
		func(int) {
			lineRefused("127.0.0.1", "PROXY TCP4 192.0.2.7 127.0.0.1 40001 7070\r\n", "! too_many_connections:")
		},
		func(int) {
			wc := refusedWS(t, d, "127.0.0.1", "X-Forwarded-For: 203.0.113.9\r\n")
			if ev := wc.event(); ev["type"] != "error" || ev["code"] != "too_many_connections" {
				t.Fatalf("upgrade behind the proxy past the limit: told %v", ev)
			}
			wc.c.Close()
		},
	}
	const rounds = 50
	start := time.Now()
	for i := range rounds {
		for _, attack := range attacks {
			attack(i)
		}
	}
	total := rounds * len(attacks)
	// Three reasons: untrusted_proxy, bad_proxy_header and
	// too_many_connections (the last two attacks).
	const reasons = 3
	if n := len(refused()); n > reasons*(int(time.Since(start)/time.Second)+1) {
		t.Fatalf("%d refusals logged of %d in %v; want them sampled, one a second for each reason", n, total, time.Since(start))
	}
	// Once the sampler lets a reason's line through again, it counts all
	// those of that reason it held back: no refusal goes uncounted.
	deadline := time.Now().Add(enginetest.Timeout)
	for _, attack := range attacks[:reasons] {
		for n := len(refused()); len(refused()) == n; total++ {
			if time.Now().After(deadline) {
				t.Fatal("no refusal logged after the flood")
			}
			time.Sleep(100 * time.Millisecond)
			attack(0)
		}
	}
	lines := refused()
	notLogged := 0
	for _, e := range lines {
		// One level and one kind of message, whichever way the
		// connection was refused.
		if e.Level != zap.WarnLevel || !strings.HasPrefix(e.Message, "connection refused: ") {
			t.Errorf("refusal logged at %v as %q, want a warning like those refused as they open", e.Level, e.Message)
		}
		if n, ok := e.ContextMap()["refusals_not_logged"].(int64); ok {
			notLogged += int(n)
		}
	}
	if len(lines)+notLogged != total {
		t.Errorf("%d refusals logged and %d counted as not logged; want %d in all", len(lines), notLogged, total)
	}
}
