package engine_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"duet/config"
	"duet/engine"
	"duet/engine/enginetest"
)

// Loopback has a single IPv6 address, so these tests reach the engine
// with many IPv6 clients the way production does behind a TLS front: a
// trusted proxy on 127.0.0.1 names each client in a PROXY header. The
// address the header names is what every limit counts.

// dialAs opens a line connection through the trusted proxy path as
// client src, and returns it once the greeting (or a refusal) can be read.
func dialAs(t *testing.T, d *enginetest.Daemon, src string) *lineConn {
	t.Helper()
	family, dst := "TCP4", "127.0.0.1"
	if strings.Contains(src, ":") {
		family, dst = "TCP6", "::1"
	}
	lc := newLineConn(t, dialFrom(t, "127.0.0.1", d.TCP))
	if _, err := fmt.Fprintf(lc.c, "PROXY %s %s %s 40000 7070\r\n", family, src, dst); err != nil {
		t.Fatal(err)
	}
	return lc
}

// admitted reports whether a connection through the proxy as src is
// greeted (true) or refused with too_many_connections (false).
func admitted(t *testing.T, d *enginetest.Daemon, src string) (*lineConn, bool) {
	t.Helper()
	lc := dialAs(t, d, src)
	l, err := lc.read(enginetest.Timeout)
	switch {
	case err == nil && strings.HasPrefix(l, "* welcome to duet"):
		return lc, true
	case err == nil && strings.HasPrefix(l, "! too_many_connections:"):
		lc.expectClosed(enginetest.Timeout)
		return nil, false
	}
	t.Fatalf("connection as %s: %q, %v", src, l, err)
	return nil, false
}

// TestIPv6PrefixSharesTheConnectionCap: one host holding a /64 cannot
// take more than limits.max_conns_per_ip connections by using a new
// address for each; the next /64 is another client; limits.ipv6_prefix
// 128 counts addresses one by one; IPv4 written as IPv4-mapped IPv6 is
// the same client as plain IPv4.
func TestIPv6PrefixSharesTheConnectionCap(t *testing.T) {
	const perIP = 3
	d := enginetest.Start(t, func(o *engine.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.Limits.MaxConnsPerIP = perIP
	})
	var held []*lineConn
	for i := range perIP {
		lc, ok := admitted(t, d, fmt.Sprintf("2001:db8:1:2:%x::1", i+1))
		if !ok {
			t.Fatalf("connection %d from the /64 refused under the cap", i+1)
		}
		held = append(held, lc)
	}
	for _, src := range []string{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::", "2001:db8:1:2:1234:5678::9"} {
		if _, ok := admitted(t, d, src); ok {
			t.Fatalf("%s admitted: one /64 took more than %d connections", src, perIP)
		}
	}
	if _, ok := admitted(t, d, "2001:db8:1:3::1"); !ok {
		t.Fatal("the next /64 was refused")
	}
	// A closed connection frees its place for any address of the /64.
	held[0].c.Close()
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		if _, ok := admitted(t, d, "2001:db8:1:2:abcd::1"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the /64's place was not freed by a close")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// IPv4 and IPv4-mapped IPv6 are one client.
	for i := range perIP {
		src := "192.0.2.7"
		if i%2 == 1 {
			src = "::ffff:192.0.2.7"
		}
		if _, ok := admitted(t, d, src); !ok {
			t.Fatalf("connection %d from 192.0.2.7 refused under the cap", i+1)
		}
	}
	if _, ok := admitted(t, d, "::ffff:192.0.2.7"); ok {
		t.Fatal("IPv4-mapped connections were counted apart from IPv4 ones")
	}
	if _, ok := admitted(t, d, "192.0.2.8"); !ok {
		t.Fatal("the next IPv4 address was refused")
	}

	// With limits.ipv6_prefix 128 (a reload), each address is a client:
	// the /64 that is full gets new connections from new addresses.
	lim := config.Defaults().Limits
	lim.MaxConnsPerIP = perIP
	lim.IPv6Prefix = 128
	d.SetLimits(lim)
	for i := range perIP + 1 {
		if _, ok := admitted(t, d, fmt.Sprintf("2001:db8:1:2:eeee::%x", i+1)); !ok {
			t.Fatalf("with ipv6_prefix 128, address %d of the /64 refused", i+1)
		}
	}
	// Connections counted under the old prefix are released under it:
	// once two of the three held from the /64 close, back at prefix 64
	// the /64 has room for exactly two more.
	held[1].c.Close()
	held[2].c.Close()
	lim.IPv6Prefix = 64
	d.SetLimits(lim)
	deadline = time.Now().Add(enginetest.Timeout)
	for n := 0; n < 2; {
		if _, ok := admitted(t, d, fmt.Sprintf("2001:db8:1:2:dddd::%x", n+1)); ok {
			n++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatal("closed connections did not free their places in the /64")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := admitted(t, d, "2001:db8:1:2:dddd::ff"); ok {
		t.Fatal("the /64 took more than its cap after the prefix changed back")
	}
}

// TestIPv6PrefixSharesTheConnectThrottle: failed connects from different
// addresses of one /64 add up to one address's failures.
func TestIPv6PrefixSharesTheConnectThrottle(t *testing.T) {
	const limit = 2
	d := enginetest.Start(t, func(o *engine.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.Limits.ConnectFailures = limit
	})
	wrong := "0123456789abcdef0123456789abcdef"
	for i := range limit {
		lc, ok := admitted(t, d, fmt.Sprintf("2001:db8:7:7::%x", i+1))
		if !ok {
			t.Fatal("refused")
		}
		lc.login(fmt.Sprintf("guess%d", i))
		lc.send("/connect " + wrong)
		lc.expect(`^! unknown_token: `)
	}
	lc, _ := admitted(t, d, "2001:db8:7:7:ffff::1")
	lc.login("guess9")
	lc.send("/connect " + wrong)
	lc.expect(`^! throttled: `)
	// Another /64 is not slowed.
	other, _ := admitted(t, d, "2001:db8:7:8::1")
	other.login("elsewhere")
	other.send("/connect " + wrong)
	other.expect(`^! unknown_token: `)
}
