package gorelay

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Listen(Config{LineAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type lineClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialLine(t *testing.T, s *Server) *lineClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.LineAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	lc := &lineClient{t: t, c: c, r: bufio.NewReader(c)}
	lc.expect(`^\* welcome`)
	return lc
}

func (lc *lineClient) send(line string) {
	lc.t.Helper()
	if _, err := io.WriteString(lc.c, line+"\n"); err != nil {
		lc.t.Fatal(err)
	}
}

// expect reads one line and matches it against pattern; it returns the
// pattern's first group, if any.
func (lc *lineClient) expect(pattern string) string {
	lc.t.Helper()
	line, err := lc.r.ReadString('\n')
	if err != nil {
		lc.t.Fatalf("waiting for %q: %v", pattern, err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		lc.t.Fatalf("line %q does not end in CRLF", line)
	}
	m := regexp.MustCompile(pattern).FindStringSubmatch(strings.TrimSuffix(line, "\r\n"))
	if m == nil {
		lc.t.Fatalf("got %q, want %q", line, pattern)
	}
	if len(m) > 1 {
		return m[1]
	}
	return ""
}

const tokenPattern = `^\* you are \w+, your token is ([0-9a-f]{32})$`

func TestLineTranscript(t *testing.T) {
	s := start(t)
	alice, bob, carol := dialLine(t, s), dialLine(t, s), dialLine(t, s)

	alice.send("hello")
	alice.expect(`^! not_logged_in: `)
	alice.send("/connect 0123456789abcdef0123456789abcdef")
	alice.expect(`^! bad_token: |^! unknown_token: |^! not_logged_in: `)
	alice.send("/login al ice")
	alice.expect(`^! bad_name: `)
	token := func() string { alice.send("/login alice"); return alice.expect(tokenPattern) }()
	alice.send("/login alice")
	alice.expect(`^! already_logged_in: `)
	bob.send("/login alice")
	bob.expect(`^! name_taken: `)
	bob.send("/login bob")
	bob.expect(tokenPattern)
	bob.send("hi")
	bob.expect(`^! not_paired: `)
	bob.send("/connect nothex")
	bob.expect(`^! bad_token: `)
	bob.send("/connect 0123456789abcdef0123456789abcdef")
	bob.expect(`^! unknown_token: `)
	alice.send("/connect " + token)
	alice.expect(`^! self_connect: `)

	bob.send("/connect " + token)
	bob.expect(`^\* you are connected with alice$`)
	alice.expect(`^\* bob is connected$`)
	if n := s.Paired(); n != 2 {
		t.Fatalf("%d sessions paired, want 2", n)
	}
	bob.send("/connect " + token)
	bob.expect(`^! already_paired: `)

	carol.send("/login carol")
	carol.expect(tokenPattern)
	carol.send("/connect " + token)
	carol.expect(`^! room_full: Room is Full`)

	alice.send("hi bob")
	bob.expect(`^<alice> hi bob$`)
	bob.send("//slash")
	alice.expect(`^<bob> /slash$`)
	bob.send("/dance")
	bob.expect(`^! unknown_command: `)

	// A burst read in one go arrives whole and in order.
	var burst strings.Builder
	for i := 1; i <= 100; i++ {
		burst.WriteString(strings.Repeat("x", i) + "\n")
	}
	if _, err := io.WriteString(alice.c, burst.String()); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		bob.expect(`^<alice> ` + strings.Repeat("x", i) + `$`)
	}

	bob.send("/quit")
	bob.expect(`^\* bye$`)
	alice.expect(`^\* bob left; `)
	alice.send("anyone?")
	alice.expect(`^! not_paired: `)
}

func TestLongLineRejected(t *testing.T) {
	s := start(t)
	c := dialLine(t, s)
	c.send(strings.Repeat("y", 3*maxLineLen))
	c.expect(`^! too_long: `)
	c.send("/login after")
	c.expect(tokenPattern)
}

type wsClient struct {
	t *testing.T
	c net.Conn
	r io.Reader // the handshake's reader while it holds early frames, then c
}

func dialWS(t *testing.T, s *Server, path string) (*wsClient, error) {
	t.Helper()
	c, br, _, err := ws.Dial(context.Background(), "ws://"+s.WSAddr().String()+path)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	wc := &wsClient{t: t, c: c, r: c}
	if br != nil {
		wc.r = io.MultiReader(br, c)
	}
	wc.expect("hello")
	return wc, nil
}

func (wc *wsClient) send(obj string) {
	wc.t.Helper()
	if err := wsutil.WriteClientText(wc.c, []byte(obj)); err != nil {
		wc.t.Fatal(err)
	}
}

func (wc *wsClient) expect(typ string) map[string]any {
	wc.t.Helper()
	data, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{wc.r, wc.c})
	if err != nil {
		wc.t.Fatalf("waiting for %s: %v", typ, err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		wc.t.Fatalf("%q: %v", data, err)
	}
	if m["type"] != typ {
		wc.t.Fatalf("got %s, want type %s", data, typ)
	}
	return m
}

func TestWebSocketWithLinePeer(t *testing.T) {
	s := start(t)
	if _, err := dialWS(t, s, "/elsewhere"); err == nil {
		t.Fatal("upgrade on a wrong path accepted")
	}
	alice, err := dialWS(t, s, "/ws")
	if err != nil {
		t.Fatal(err)
	}
	alice.send(`{"type":"login","name":"alice"}`)
	token := alice.expect("welcome")["token"].(string)
	alice.send(`{"type":"dance"}`)
	if e := alice.expect("error"); e["code"] != "unknown_type" {
		t.Fatalf("error %v", e)
	}
	alice.send(`{not json`)
	if e := alice.expect("error"); e["code"] != "bad_json" {
		t.Fatalf("error %v", e)
	}

	bob := dialLine(t, s)
	bob.send("/login bob")
	bob.expect(tokenPattern)
	bob.send("/connect " + token)
	bob.expect(`^\* you are connected with alice$`)
	if p := alice.expect("paired"); p["peer"] != "bob" || p["initiator"] != false {
		t.Fatalf("paired %v", p)
	}

	bob.send(`say "hi" <tag>`)
	if m := alice.expect("message"); m["from"] != "bob" || m["text"] != `say "hi" <tag>` {
		t.Fatalf("message %v", m)
	}
	alice.send(`{"type":"say","text":"hello, bob"}`)
	bob.expect(`^<alice> hello, bob$`)

	bob.send("/quit")
	bob.expect(`^\* bye$`)
	if l := alice.expect("peer_left"); l["peer"] != "bob" {
		t.Fatalf("peer_left %v", l)
	}
}
