package enginetest

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/auth"
)

// StartAccounts runs an engine in accounts mode with the accounts loaded
// from the htpasswd file at path (see package auth/authtest to write
// one). edit may change the options further.
func StartAccounts(t testing.TB, path string, edit func(*engine.Options)) (*Daemon, *auth.Accounts) {
	t.Helper()
	accounts, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := Start(t, func(o *engine.Options) {
		o.AuthMode = "accounts"
		o.Auth.Accounts = accounts
		if edit != nil {
			edit(o)
		}
	})
	return d, accounts
}

// LoginPassword logs in with a password and records the token.
func (lc *LineClient) LoginPassword(name, password string) *LineClient {
	lc.t.Helper()
	lc.Send("/login " + name + " " + password)
	s := lc.Line()
	m := tokenRE.FindStringSubmatch(s)
	if m == nil || !strings.Contains(strings.ToLower(s), strings.ToLower(name)) {
		lc.t.Fatalf("login %s: %q", name, s)
	}
	lc.Name, lc.Token = name, m[1]
	lc.readKey()
	return lc
}

// LoginPassword logs in with a password and records the token.
func (wc *WSClient) LoginPassword(name, password string) *WSClient {
	wc.t.Helper()
	wc.Send(map[string]string{"type": "login", "name": name, "password": password})
	ev := wc.Expect("welcome")
	tok, _ := ev["token"].(string)
	if n, _ := ev["name"].(string); !strings.EqualFold(n, name) || len(tok) != 32 {
		wc.t.Fatalf("welcome: %v", ev)
	}
	wc.Name, wc.Token = name, tok
	wc.Key, _ = ev["resume_key"].(string)
	return wc
}

// DialLineFrom is DialLine from another loopback address (127.0.0.2,
// say), so a test can play a second client machine: limits and throttles
// count per address.
func (d *Daemon) DialLineFrom(t testing.TB, localIP string) *LineClient {
	t.Helper()
	return d.dialLine(t, localIP, "")
}

// DialLineVia is DialLine through a proxy at proxyIP (another loopback
// address, which the daemon must list in trusted_proxies): the
// connection comes from proxyIP and opens with the PROXY protocol
// header (version 1) that names client, as nginx's stream proxy with
// proxy_protocol on sends it.
func (d *Daemon) DialLineVia(t testing.TB, proxyIP, client string) *LineClient {
	t.Helper()
	return d.dialLine(t, proxyIP, "PROXY TCP4 "+client+" "+proxyIP+" 40000 7070\r\n")
}

// dialLine connects to the line port from localIP, sends preamble, and
// reads the greeting.
func (d *Daemon) dialLine(t testing.TB, localIP, preamble string) *LineClient {
	t.Helper()
	dialer := net.Dialer{Timeout: Timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := dialer.Dial("tcp", d.TCP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lc := &LineClient{t: t, Conn: c, r: bufio.NewReaderSize(c, 64<<10), resume: d.Resume}
	if preamble != "" {
		c.SetWriteDeadline(time.Now().Add(Timeout))
		if _, err := c.Write([]byte(preamble)); err != nil {
			t.Fatal(err)
		}
	}
	if g := lc.Line(); !strings.HasPrefix(g, "* welcome to duet") {
		t.Fatalf("greeting: %q", g)
	}
	return lc
}
