//go:build linux

package engine_test

import (
	"bufio"
	"crypto/tls"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestNginxFrontFindsVanishedClients: behind nginx, duetd's TCP
// keepalive and TCP_USER_TIMEOUT probe only nginx, on loopback, which
// always answers; a client that vanishes without a word (its machine
// off, its network gone) is found only by nginx's own keepalive on its
// side, so scripts/nginx/duet.conf must turn it on, on both ports, with
// duetd's own settings (limits.tcp_keepalive at its default, and the
// probes gnet derives from it), which the test reads from a socket of
// duetd's. Without it nginx kept such a client's connection for its
// proxy_timeout (24 h on the line port), and its partner was never told.
//
// Then the file runs in a real nginx, with the keepalive times made
// short, and a TLS line client and a wss:// client go deaf (a socket
// filter drops all that reaches them): nginx's probes go unanswered, it
// closes its connection to duetd, and each partner is told its peer
// lost the connection. The daemon's own WebSocket pings are made rare,
// so that only nginx's keepalive can find the page.
func TestNginxFrontFindsVanishedClients(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.Limits.PingInterval = time.Hour
		o.Limits.IdleTimeout = 2 * time.Hour
	})
	conf, err := os.ReadFile("../scripts/nginx/duet.conf")
	if err != nil {
		t.Fatal(err)
	}
	var edit [][2]string
	for _, port := range []struct {
		listen string // in duet.conf
		duetd  string // what it proxies to
		// hello is what the client sends and then reads a line of, so
		// that duetd has its connection
		hello string
	}{{"7443", d.TCP, ""}, {"443", d.WS, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}} {
		// duetd's keepalive, as it sets it on a connection of its own.
		c := dialFrom(t, "127.0.0.5", port.duetd)
		c.Write([]byte(port.hello))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		fd := d.ServerFD(c.LocalAddr())
		if fd < 0 {
			t.Fatalf("no connection from %v", c.LocalAddr())
		}
		var want [3]int
		for i, opt := range []int{unix.TCP_KEEPIDLE, unix.TCP_KEEPINTVL, unix.TCP_KEEPCNT} {
			if want[i], err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, opt); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()

		m := regexp.MustCompile(`listen ` + port.listen + ` ssl[^;]*?(so_keepalive=(\w*):(\w*):(\d*))[^;]*;`).FindSubmatch(conf)
		if m == nil {
			t.Fatalf("scripts/nginx/duet.conf: listen %s sets no so_keepalive=IDLE:INTERVAL:COUNT: a client that vanishes is never found, since duetd's keepalive (%d s, then every %d s, %d times) probes only nginx",
				port.listen, want[0], want[1], want[2])
		}
		got := [3]int{nginxSeconds(t, string(m[2])), nginxSeconds(t, string(m[3]))}
		got[2], _ = strconv.Atoi(string(m[4]))
		if got != want {
			t.Errorf("scripts/nginx/duet.conf: listen %s has %s; duetd probes after %d s, every %d s, %d times",
				port.listen, m[1], want[0], want[1], want[2])
		}
		edit = append(edit, [2]string{string(m[0]), strings.Replace(string(m[0]), string(m[1]), "so_keepalive=1s:1s:2", 1)})
	}
	if t.Failed() {
		return
	}
	front := startNginxFront(t, d, edit...)

	// alice, a TLS line client, is paired with carol, straight to duetd.
	raw := dialFrom(t, "127.0.0.2", front.tls)
	alice := newLineConn(t, tls.Client(raw, front.client))
	alice.expect(`^\* welcome to duet`)
	aliceToken := alice.login("alice")
	carol := dialLine(t, d, "127.0.0.5")
	carol.login("carol")
	carol.send("/connect " + aliceToken)
	carol.expect(`^\* you are connected with alice$`)
	alice.expect(`^\* carol is connected$`)

	// bob, in a browser, is paired with dave, straight to duetd.
	page, next, send := front.dialWS(t, "127.0.0.3", nil)
	next() // hello
	send(`{"type":"login","name":"bob"}`)
	bobToken := regexp.MustCompile(`"token":"([0-9a-f]{32})"`).FindStringSubmatch(next())
	if bobToken == nil {
		t.Fatal("bob's welcome has no token")
	}
	dave := dialLine(t, d, "127.0.0.6")
	dave.login("dave")
	dave.send("/connect " + bobToken[1])
	dave.expect(`^\* you are connected with bob$`)
	for {
		// What the page is sent after its welcome, up to its pairing.
		if regexp.MustCompile(`"type":"paired"`).MatchString(next()) {
			break
		}
	}

	deafen(t, raw)
	deafen(t, page)
	carol.expect(`^\* alice lost the connection; waiting up to 2m for alice to come back$`)
	dave.expect(`^\* bob lost the connection; waiting up to 2m for bob to come back$`)
}

// nginxSeconds reads an nginx time of whole seconds ("60", "60s", "1m").
func nginxSeconds(t *testing.T, s string) int {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	d, err := time.ParseDuration(s)
	if err != nil || d%time.Second != 0 {
		t.Fatalf("so_keepalive time %q: not whole seconds", s)
	}
	return int(d / time.Second)
}
