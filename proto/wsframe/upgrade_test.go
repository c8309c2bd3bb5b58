package wsframe

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"duet/proto/httphead"
)

// sameOrigin allows a browser page only from the host it connects to,
// which is what the engine does when no origins are configured.
func sameOrigin(origin, host []byte) bool {
	return origin == nil || string(origin) == "http://"+string(host)
}

// testConfig is the engine's configuration.
var testConfig = UpgradeConfig{Path: "/ws", CheckOrigin: sameOrigin, Subprotocols: []string{"duet.v1"}}

// TestUpgradeWithGobwasDialer runs a real client handshake over a pipe,
// serves it the way the engine will (accumulate until httphead.End, Upgrade,
// write the response), then exchanges one message each way.
func TestUpgradeWithGobwasDialer(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	deadline := time.Now().Add(5 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)

	serverErr := make(chan error, 1)
	go func() {
		serverErr <- serveOne(server)
	}()

	dialer := ws.Dialer{
		Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"http://duet.test"}}),
	}
	u, _ := url.Parse("ws://duet.test/ws?v=1")
	br, _, err := dialer.Upgrade(client, u)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if br != nil {
		t.Fatal("server sent bytes after the handshake response")
	}
	if err := wsutil.WriteClientText(client, []byte("ping from client")); err != nil {
		t.Fatal(err)
	}
	reply, err := wsutil.ReadServerText(client)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply) != "echo: ping from client" {
		t.Fatalf("reply %q", reply)
	}
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
}

// serveOne plays the engine for one connection: it reads in small pieces
// so that the head and the frame arrive split.
func serveOne(conn net.Conn) error {
	var inbound []byte
	chunk := make([]byte, 7)
	read := func() error {
		n, err := conn.Read(chunk)
		inbound = append(inbound, chunk[:n]...)
		return err
	}
	for httphead.End(inbound) == 0 {
		if err := read(); err != nil {
			return err
		}
	}
	end := httphead.End(inbound)
	resp, err := Upgrade(inbound[:end], testConfig)
	if err != nil {
		// The engine answers with web.ErrorResponse; the status line is
		// what a client reads of it.
		var refused *HandshakeError
		if !errors.As(err, &refused) {
			return fmt.Errorf("Upgrade failed with %T, not a HandshakeError", err)
		}
		resp = fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n", refused.Status, http.StatusText(refused.Status))
	}
	if _, werr := conn.Write(resp); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	inbound = inbound[end:]

	var r Reader
	for {
		msg, ok, n, err := r.Next(inbound)
		if err != nil {
			return err
		}
		if n == 0 {
			if err := read(); err != nil {
				return err
			}
			continue
		}
		inbound = inbound[n:]
		if ok {
			_, err := conn.Write(AppendFrame(nil, ws.OpText, append([]byte("echo: "), msg.Payload...)))
			return err
		}
	}
}

// TestUpgradeDialerRefused checks that a refused handshake reaches the
// client as the HTTP status it should.
func TestUpgradeDialerRefused(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	deadline := time.Now().Add(5 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)

	serverErr := make(chan error, 1)
	go func() {
		err := serveOne(server)
		server.Close()
		serverErr <- err
	}()

	dialer := ws.Dialer{
		Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"http://elsewhere.test"}}),
	}
	u, _ := url.Parse("ws://duet.test/ws")
	_, _, err := dialer.Upgrade(client, u)
	var status ws.StatusError
	if !errors.As(err, &status) || int(status) != http.StatusForbidden {
		t.Fatalf("client got %v, want status 403", err)
	}
	if err := <-serverErr; !errors.Is(err, ErrOriginRefused) {
		t.Fatalf("server got %v, want ErrOriginRefused", err)
	}
}

// dialerRequest captures the exact request head gobwas's dialer writes.
func dialerRequest(t *testing.T, header http.Header) []byte {
	t.Helper()
	var out bytes.Buffer
	// The dialer reads a response after writing; an empty one ends it.
	conn := struct {
		io.Reader
		io.Writer
	}{strings.NewReader(""), &out}
	dialer := ws.Dialer{Header: ws.HandshakeHeaderHTTP(header)}
	u, _ := url.Parse("ws://duet.test/ws")
	dialer.Upgrade(conn, u)
	if httphead.End(out.Bytes()) != out.Len() {
		t.Fatalf("dialer wrote %q, not one request head", out.Bytes())
	}
	return out.Bytes()
}

const goodRequest = "GET /ws HTTP/1.1\r\n" +
	"Host: duet.test\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: keep-alive, Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Origin: http://duet.test\r\n" +
	"\r\n"

// without removes the header line that starts with name.
func without(request, name string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(request, "\r\n") {
		if !strings.HasPrefix(line, name+":") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// withKey is goodRequest with another Sec-WebSocket-Key value.
func withKey(key string) string {
	return strings.Replace(goodRequest, "dGhlIHNhbXBsZSBub25jZQ==", key, 1)
}

// with adds header lines just before the blank line.
func with(request string, lines ...string) string {
	return strings.TrimSuffix(request, "\r\n") + strings.Join(lines, "\r\n") + "\r\n\r\n"
}

func TestUpgrade(t *testing.T) {
	cases := []struct {
		name    string
		head    string
		status  int
		err     error
		headers map[string]string
	}{
		{name: "good", head: goodRequest, status: 101, headers: map[string]string{"Sec-WebSocket-Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}},
		{name: "query string", head: strings.Replace(goodRequest, "/ws", "/ws?x=1", 1), status: 101},
		{name: "no Origin, not a browser", head: without(goodRequest, "Origin"), status: 101},
		{name: "lowercase method", head: "get" + goodRequest[3:], status: 405, err: ws.ErrHandshakeBadMethod, headers: map[string]string{"Allow": "GET"}},
		{name: "lowercase header names", head: "GET /ws HTTP/1.1\r\nhost: duet.test\r\nupgrade: WebSocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n", status: 101},
		{name: "missing Host", head: without(goodRequest, "Host"), status: 400, err: ws.ErrHandshakeBadHost},
		{name: "missing Upgrade", head: without(goodRequest, "Upgrade"), status: 400, err: ws.ErrHandshakeBadUpgrade},
		{name: "missing Connection", head: without(goodRequest, "Connection"), status: 400, err: ws.ErrHandshakeBadConnection},
		{name: "missing key", head: without(goodRequest, "Sec-WebSocket-Key"), status: 400, err: ws.ErrHandshakeBadSecKey},
		{name: "short key", head: strings.Replace(goodRequest, "dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1), status: 400, err: ws.ErrHandshakeBadSecKey},
		// RFC 6455 section 4.2.1: the key is the base64 of 16 bytes.
		// gobwas checks only that it is 24 characters long.
		{name: "key not base64", head: withKey("!!!!!!!!!!!!!!!!!!!!!!=="), status: 400, err: ws.ErrHandshakeBadSecKey},
		{name: "key of 17 bytes", head: withKey("dGhlIHNhbXBsZSBub25jISE="), status: 400, err: ws.ErrHandshakeBadSecKey},
		{name: "key of 18 bytes", head: withKey("dGhlIHNhbXBsZSBub25jZSEh"), status: 400, err: ws.ErrHandshakeBadSecKey},
		{name: "key in the URL alphabet", head: withKey("-__7__v_-__7__v_-__7_w=="), status: 400, err: ws.ErrHandshakeBadSecKey},
		{name: "key with stray bits", head: withKey("dGhlIHNhbXBsZSBub25jZR=="), status: 400, err: ws.ErrHandshakeBadSecKey},
		{name: "key in the standard alphabet", head: withKey("+//7//v/+//7//v/+//7/w=="), status: 101, headers: map[string]string{"Sec-WebSocket-Accept": "/s236q/Ln8uUc71+9TrXBaf0/uc="}},
		{name: "key among spaces", head: withKey(" \tdGhlIHNhbXBsZSBub25jZQ== "), status: 101, headers: map[string]string{"Sec-WebSocket-Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}},
		{name: "two keys", head: with(goodRequest, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), status: 400, err: ErrDuplicateHeader},
		{name: "two keys, the second lowercase", head: with(goodRequest, "sec-websocket-key: +//7//v/+//7//v/+//7/w=="), status: 400, err: ErrDuplicateHeader},
		{name: "a name that is the key's only in Unicode", head: with(goodRequest, "Sec-WebSocket-\u212aey: !"), status: 101},
		{name: "two keys, the first bad", head: with(withKey("!!!!!!!!!!!!!!!!!!!!!!=="), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), status: 400, err: ErrDuplicateHeader},
		{name: "missing version", head: without(goodRequest, "Sec-WebSocket-Version"), status: 400, err: ws.ErrHandshakeBadSecVersion},
		{
			name: "wrong version", head: strings.Replace(goodRequest, "Version: 13", "Version: 8", 1),
			status: 426, err: ws.ErrHandshakeUpgradeRequired, headers: map[string]string{"Sec-WebSocket-Version": "13"},
		},
		{name: "Origin refused", head: strings.Replace(goodRequest, "http://duet.test", "https://evil.test", 1), status: 403, err: ErrOriginRefused},
		{name: "Origin before Host refused", head: "GET /ws HTTP/1.1\r\nOrigin: http://a.test\r\nHost: b.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", status: 403, err: ErrOriginRefused},
		{name: "two Origins", head: with(goodRequest, "Origin: http://duet.test"), status: 400, err: ErrDuplicateHeader},
		{name: "two Hosts", head: with(goodRequest, "Host: other.test"), status: 400, err: ErrDuplicateHeader},
		{name: "wrong path", head: strings.Replace(goodRequest, "/ws", "/chat", 1), status: 404, err: ErrPathNotFound},
		{name: "absolute form", head: strings.Replace(goodRequest, "/ws", "http://duet.test/ws?v=1", 1), status: 101},
		{name: "absolute form, wrong path", head: strings.Replace(goodRequest, "/ws", "http://duet.test/chat", 1), status: 404, err: ErrPathNotFound},
		{name: "absolute form, no path", head: strings.Replace(goodRequest, "/ws", "http://duet.test", 1), status: 404, err: ErrPathNotFound},
		{name: "absolute form, the path in its query", head: strings.Replace(goodRequest, "/ws", "http://duet.test?/ws", 1), status: 404, err: ErrPathNotFound},
		{name: "POST", head: strings.Replace(goodRequest, "GET", "POST", 1), status: 405, err: ws.ErrHandshakeBadMethod, headers: map[string]string{"Allow": "GET"}},
		{name: "HTTP/1.0", head: strings.Replace(goodRequest, "HTTP/1.1", "HTTP/1.0", 1), status: 505, err: ws.ErrHandshakeBadProtocol},
		{name: "header line without colon", head: with(goodRequest, "nonsense"), status: 400, err: ws.ErrMalformedRequest},
		{name: "garbage request line", head: "\x00\x01\x02\r\n\r\n", status: 400, err: ws.ErrMalformedRequest},
		{name: "head cut short", head: goodRequest[:40], status: 400, err: ws.ErrMalformedRequest},
		{name: "empty", head: "", status: 400, err: ws.ErrMalformedRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			head := []byte(tc.head)
			resp, err := Upgrade(head, testConfig)
			if string(head) != tc.head {
				t.Fatal("Upgrade modified the request head")
			}
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil {
				checkResponse(t, resp, tc.status, tc.headers)
				return
			}
			checkRefusal(t, resp, err, tc.status, tc.headers)
		})
	}
}

// checkRefusal checks a failed Upgrade: no response of its own, and a
// HandshakeError that says how to answer, agreeing with the gobwas
// rejection it wraps.
func checkRefusal(t *testing.T, resp []byte, err error, status int, headers map[string]string) {
	t.Helper()
	if resp != nil {
		t.Fatalf("a refused handshake returned a response: %q", resp)
	}
	var refused *HandshakeError
	if !errors.As(err, &refused) {
		t.Fatalf("err %T %v is not a HandshakeError", err, err)
	}
	var rejected *ws.ConnectionRejectedError
	if !errors.As(err, &rejected) || rejected.StatusCode() != status || refused.Status != status {
		t.Fatalf("err %v does not carry status %d (HandshakeError says %d)", err, status, refused.Status)
	}
	if refused.Reason == "" || refused.Error() != refused.Reason {
		t.Fatalf("reason %q, Error %q", refused.Reason, refused.Error())
	}
	got := map[string]string{}
	for line := range strings.SplitSeq(refused.Header, "\r\n") {
		if name, value, ok := strings.Cut(line, ": "); ok {
			got[name] = value
		}
	}
	if len(got) != len(headers) {
		t.Fatalf("header lines %q, want %v", refused.Header, headers)
	}
	for name, value := range headers {
		if got[name] != value {
			t.Fatalf("%s: %q, want %q", name, got[name], value)
		}
	}
}

// checkResponse parses resp as a whole 101 response, with nothing after
// it.
func checkResponse(t *testing.T, resp []byte, status int, headers map[string]string) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(resp))
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("response %q: %v", resp, err)
	}
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d; response %q", res.StatusCode, status, resp)
	}
	for name, value := range headers {
		if got := res.Header.Get(name); got != value {
			t.Fatalf("%s: %q, want %q", name, got, value)
		}
	}
	if br.Buffered() != 0 {
		t.Fatalf("response followed by %d stray bytes", br.Buffered())
	}
}

func TestUpgradeDialerRequest(t *testing.T) {
	head := dialerRequest(t, http.Header{"Origin": {"http://duet.test"}})
	resp, err := Upgrade(head, testConfig)
	if err != nil {
		t.Fatal(err)
	}
	checkResponse(t, resp, http.StatusSwitchingProtocols, nil)
}

func TestUpgradeWithoutChecks(t *testing.T) {
	head := strings.Replace(goodRequest, "http://duet.test", "https://anywhere.test", 1)
	head = strings.Replace(head, "/ws", "/anything", 1)
	resp, err := Upgrade([]byte(head), UpgradeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	checkResponse(t, resp, http.StatusSwitchingProtocols, nil)
}

func TestUpgradeOriginArguments(t *testing.T) {
	var gotOrigin, gotHost string
	var originNil bool
	cfg := UpgradeConfig{CheckOrigin: func(origin, host []byte) bool {
		gotOrigin, gotHost, originNil = string(origin), string(host), origin == nil
		return true
	}}
	if _, err := Upgrade([]byte(goodRequest), cfg); err != nil {
		t.Fatal(err)
	}
	if gotOrigin != "http://duet.test" || gotHost != "duet.test" || originNil {
		t.Fatalf("CheckOrigin(%q, %q)", gotOrigin, gotHost)
	}
	if _, err := Upgrade([]byte(with(without(goodRequest, "Origin"), "Origin:")), cfg); err != nil {
		t.Fatal(err)
	}
	if originNil {
		t.Fatal("an empty Origin header reached CheckOrigin as no header")
	}
	if _, err := Upgrade([]byte(without(goodRequest, "Origin")), cfg); err != nil {
		t.Fatal(err)
	}
	if !originNil {
		t.Fatal("a request without Origin reached CheckOrigin with one")
	}
}

// TestUpgradeSplitHead feeds the head in two reads at every split: the
// result is the same wherever the split fell.
func TestUpgradeSplitHead(t *testing.T) {
	want, err := Upgrade([]byte(goodRequest), testConfig)
	if err != nil {
		t.Fatal(err)
	}
	for split := 0; split < len(goodRequest); split++ {
		inbound := []byte(goodRequest[:split])
		if httphead.End(inbound) != 0 {
			t.Fatalf("head complete after %d of %d bytes", split, len(goodRequest))
		}
		inbound = append(inbound, goodRequest[split:]...)
		end := httphead.End(inbound)
		got, err := Upgrade(inbound[:end], testConfig)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("split at %d: %q, %v", split, got, err)
		}
	}
}

// TestUpgradeSubprotocols: a client that offers duet.v1 gets it named in
// the 101; one that offers nothing gets nothing; one that offers only
// others is refused with 400, saying what is spoken, rather than given a
// 101 its browser would then fail without a reason.
func TestUpgradeSubprotocols(t *testing.T) {
	cases := []struct {
		name   string
		lines  []string
		status int
		chosen string
	}{
		{"none offered", nil, 101, ""},
		{"duet.v1", []string{"Sec-WebSocket-Protocol: duet.v1"}, 101, "duet.v1"},
		{"among others", []string{"Sec-WebSocket-Protocol: chat, duet.v2,duet.v1"}, 101, "duet.v1"},
		{"on a second line", []string{"Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Protocol: duet.v1"}, 101, "duet.v1"},
		{"lowercase header name", []string{"sec-websocket-protocol: duet.v1"}, 101, "duet.v1"},
		{"empty items only", []string{"Sec-WebSocket-Protocol: , ,"}, 101, ""},
		{"unversioned", []string{"Sec-WebSocket-Protocol: duet"}, 400, ""},
		{"other case", []string{"Sec-WebSocket-Protocol: DUET.V1"}, 400, ""},
		{"others only", []string{"Sec-WebSocket-Protocol: chat, superchat"}, 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			head := goodRequest
			if tc.lines != nil {
				head = with(goodRequest, tc.lines...)
			}
			resp, err := Upgrade([]byte(head), testConfig)
			if tc.status == 400 {
				if !errors.Is(err, ErrSubprotocol) {
					t.Fatalf("err = %v, want ErrSubprotocol", err)
				}
				checkRefusal(t, resp, err, 400, nil)
				if !strings.Contains(err.Error(), "unsupported subprotocol; this server speaks duet.v1") {
					t.Fatalf("the refusal does not say what is spoken: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkResponse(t, resp, 101, map[string]string{"Sec-WebSocket-Protocol": tc.chosen})
		})
	}

	// Without Subprotocols the header is ignored, as before they existed.
	resp, err := Upgrade([]byte(with(goodRequest, "Sec-WebSocket-Protocol: duet")), UpgradeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	checkResponse(t, resp, 101, map[string]string{"Sec-WebSocket-Protocol": ""})
}

// TestUpgradeDialerSubprotocol: gobwas's dialer, which checks the server's
// choice as a browser does, gets duet.v1 when it asks for it.
func TestUpgradeDialerSubprotocol(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	deadline := time.Now().Add(5 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	serverErr := make(chan error, 1)
	go func() { serverErr <- serveOne(server) }()

	dialer := ws.Dialer{Protocols: []string{"duet.v2", "duet.v1"}}
	u, _ := url.Parse("ws://duet.test/ws")
	_, hs, err := dialer.Upgrade(client, u)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if hs.Protocol != "duet.v1" {
		t.Fatalf("subprotocol %q, want duet.v1", hs.Protocol)
	}
	if err := wsutil.WriteClientText(client, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if reply, err := wsutil.ReadServerText(client); err != nil || string(reply) != "echo: hi" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
}
