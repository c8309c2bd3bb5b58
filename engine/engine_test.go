package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/config"
	"duet/engine"
	"duet/engine/enginetest"
	"duet/proto"
)

// TestSeedStoryLine is the original app's whole story over netcat-style
// connections: login, token, pair (both told), a third user refused,
// messages both ways, a leave told, the freed user joined again.
func TestSeedStoryLine(t *testing.T) {
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	carol := d.DialLine(t).Login("carol")

	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)

	carol.Send("/connect " + alice.Token)
	carol.Expect(`^! room_full: Room is Full.*same token again when they are free`)
	carol.Send("/connect " + bob.Token)
	carol.Expect(`^! room_full: Room is Full`)

	alice.Send("hello bob")
	bob.Expect(`^<alice> hello bob$`)
	bob.Send("hi alice")
	alice.Expect(`^<bob> hi alice$`)
	alice.Send("//not a command")
	bob.Expect(`^<alice> /not a command$`)

	alice.Send("/leave")
	alice.Expect(`^\* you left bob$`)
	bob.Expect(`^\* alice left; .*free`)

	// carol never heard anything of the pair: her next line is the answer
	// to her own command.
	carol.Send("/who")
	carol.Expect(`^\* you are carol, your token is [0-9a-f]{32}, not connected$`)

	carol.Send("/connect " + bob.Token)
	bob.Expect(`^\* carol is connected$`)
	carol.Expect(`^\* you are connected with bob$`)
	dave := d.DialLine(t).Login("dave")
	dave.Send("/connect " + alice.Token)
	alice.Expect(`^\* dave is connected$`)
	dave.Expect(`^\* you are connected with alice$`)
}

func TestSeedStoryWS(t *testing.T) {
	d := enginetest.Start(t, nil)
	alice := d.DialWS(t)
	if alice.Hello["auth"] != "open" {
		t.Fatalf("hello: %v", alice.Hello)
	}
	alice.Login("alice")
	bob := d.DialWS(t).Login("bob")
	carol := d.DialWS(t).Login("carol")

	bob.Connect(alice.Token)
	if ev := alice.Expect("paired"); ev["peer"] != "bob" || ev["initiator"] != false {
		t.Fatalf("alice: %v", ev)
	}
	if ev := bob.Expect("paired"); ev["peer"] != "alice" || ev["initiator"] != true {
		t.Fatalf("bob: %v", ev)
	}
	carol.Connect(bob.Token)
	carol.ExpectError("room_full")

	alice.Say("hello <b>bob</b>")
	if ev := bob.Expect("message"); ev["from"] != "alice" || ev["text"] != "hello <b>bob</b>" {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say("hi\nthere")
	if ev := alice.Expect("message"); ev["from"] != "bob" || ev["text"] != "hi\nthere" {
		t.Fatalf("alice: %v", ev)
	}
	bob.Send(map[string]string{"type": "leave"})
	if ev := bob.Expect("left"); ev["peer"] != "alice" {
		t.Fatalf("bob: %v", ev)
	}
	if ev := alice.Expect("peer_left"); ev["peer"] != "bob" || ev["reason"] != "left" {
		t.Fatalf("alice: %v", ev)
	}
	carol.Connect(alice.Token)
	carol.Expect("paired")
	alice.Expect("paired")
}

func TestCrossProtocol(t *testing.T) {
	d := enginetest.Start(t, nil)
	nc := d.DialLine(t).Login("netcat")
	br := d.DialWS(t).Login("browser")
	br.Connect(nc.Token)
	nc.Expect(`^\* browser is connected$`)
	br.Expect("paired")

	nc.Send("héllo from the terminal")
	if ev := br.Expect("message"); ev["text"] != "héllo from the terminal" || ev["from"] != "netcat" {
		t.Fatalf("browser got %v", ev)
	}
	br.Say("two\nlines")
	nc.Expect(`^<browser> two$`)
	nc.Expect(`^<browser> lines$`)
	br.Say("bell\a and escape \x1b[2J")
	got := nc.Line()
	if strings.ContainsAny(got, "\a\x1b") || !strings.HasPrefix(got, "<browser> bell") {
		t.Fatalf("control characters reached the terminal: %q", got)
	}
	nc.Send("/quit")
	nc.Expect(`^\* bye$`)
	nc.ExpectClosed()
	if ev := br.Expect("peer_left"); ev["reason"] != "left" || ev["peer"] != "netcat" {
		t.Fatalf("browser got %v", ev)
	}
}

// TestDroppedSocketTellsPeer: a partner whose connection ends without a
// goodbye is told at once. A line client's end of input ends its
// session (that is how netcat is quit); a WebSocket gone without a close
// frame has dropped, and with resume off ends its session too, but with
// resume on goes away to wait for a resume.
func TestDroppedSocketTellsPeer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		window  time.Duration
		wsDrops string // what alice is told when bob's socket goes
	}{
		{"resume off", 0, `^\* bob disconnected; `},
		{"resume on", 2 * time.Minute, `^\* bob lost the connection; waiting up to 2m for bob to come back$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := enginetest.Start(t, func(o *engine.Options) { o.Resume.Window = tc.window })
			alice := d.DialLine(t).Login("alice")
			bob := d.DialWS(t).Login("bob")
			bob.Connect(alice.Token)
			alice.Expect(`is connected`)
			bob.Expect("paired")

			alice.Conn.Close()
			if ev := bob.Expect("peer_left"); ev["peer"] != "alice" || ev["reason"] != "disconnected" {
				t.Fatalf("bob got %v", ev)
			}
			// No ghost: the name is free at once, and bob can be joined again.
			alice2 := d.DialLine(t).Login("alice")
			alice2.Send("/connect " + bob.Token)
			alice2.Expect(`^\* you are connected with bob$`)
			bob.Expect("paired")

			bob.Conn.Close()
			alice2.Expect(tc.wsDrops)
		})
	}
}

func TestLineErrors(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.MaxLine = 200
		o.Limits.MaxText = 100
	})
	bob := d.DialLine(t).Login("bob")
	c := d.DialLine(t)
	steps := []struct{ send, want string }{
		{"hello?", `^! not_logged_in: log in first: /login NAME$`},
		{"/connect " + bob.Token, `^! not_logged_in: `},
		{"/login", `^! bad_name: `},
		{"/login bad name!", `^! bad_name: `},
		// A password on a server without accounts: the answer says so,
		// not only what a name is.
		{"/login carol secret", `^! bad_name: a name is one word .*; this server has no accounts, so give no password$`},
		{"/login " + strings.Repeat("x", 33), `^! bad_name: `},
		{"/login BOB", `^! name_taken: `},
		{"/login alice", `^\* you are alice, your token is [0-9a-f]{32}$`},
		{"/login alice2", `^! already_logged_in: `},
		{"hello?", `^! not_paired: `},
		{"/leave", `^! not_paired: `},
		{"/connect", `^! bad_token: `},
		{"/connect 1234", `^! bad_token: `},
		{"/connect " + strings.Repeat("0", 31) + "1", `^! unknown_token: `},
		// Well formed, though no one is ever given it: unknown, not bad.
		{"/connect " + strings.Repeat("0", 32), `^! unknown_token: `},
		{"/dance", `^! unknown_command: `},
	}
	for _, s := range steps {
		c.Send(s.send)
		c.Expect(s.want)
		if s.send == "/login alice" {
			c.ExpectKey()
		}
	}
	c.Send("/help")
	c.Send("/who")
	var status string
	for !strings.HasPrefix(status, "* you are alice") {
		status = c.Line()
	}
	tok := strings.Fields(strings.TrimPrefix(status, "* you are alice, your token is "))[0]
	c.Send("/connect " + strings.TrimSuffix(tok, ","))
	c.Expect(`^! self_connect: `)
	c.Send("/connect " + bob.Token)
	c.Expect(`connected with bob`)
	bob.Expect(`alice is connected`)
	c.Send("/connect " + bob.Token)
	c.Expect(`^! already_paired: you are already connected with bob; /leave first to connect to someone else$`)
	c.Send(strings.Repeat("y", 101)) // longer than max_text
	c.Expect(`^! too_long: `)
	c.Send(strings.Repeat("z", 300)) // longer than max_line
	c.Expect(`^! too_long: `)
	c.Conn.Write([]byte("bad \xc3\x28 utf8 \x80\n")) // (0xff would be telnet IAC)
	c.Expect(`^! invalid_utf8: `)
	// After every error the connection still works, and the peer got
	// nothing but the one good message.
	c.Send("still here")
	bob.Expect(`^<alice> still here$`)
}

// TestNetcatByte255: a netcat user's text in a single-byte encoding,
// with a byte 255 (Latin-1 "ÿ", cp1251 "я"), is refused as not UTF-8,
// its line feed ending its line even right after the 255: the partner
// gets neither the line without the 255 and the byte after it, nor it
// run into the next line.
func TestNetcatByte255(t *testing.T) {
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")
	alice.Conn.Write([]byte("I say \xffes\n\xff\nok then\n"))
	alice.Expect(`^! invalid_utf8: `)
	alice.Expect(`^! invalid_utf8: `)
	bob.Expect(`^<alice> ok then$`)
}

// TestLineErrorsInOrder: lines that arrive together are answered in the
// order they were sent, an over-long line among them included.
func TestLineErrorsInOrder(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxLine = 200 })
	c := d.DialLine(t).Login("alice")
	c.Conn.Write([]byte("hello?\n" + strings.Repeat("z", 300) + "\nbad \xc3\x28\n"))
	c.Expect(`^! not_paired: `)
	c.Expect(`^! too_long: `)
	c.Expect(`^! invalid_utf8: `)
}

func TestJSONErrors(t *testing.T) {
	d := enginetest.Start(t, nil)
	c := d.DialWS(t)
	c.SendRaw([]byte(`{"type":"say","text":"hi"}`))
	c.ExpectError("not_logged_in")
	c.SendRaw([]byte(`{"type":`))
	c.ExpectError("bad_json")
	c.SendRaw([]byte(`[1,2]`))
	c.ExpectError("bad_json")
	c.SendRaw([]byte(`{"type":"dance"}`))
	c.ExpectError("unknown_type")
	c.SendRaw([]byte(`{"type":"login","name":"has space"}`))
	c.ExpectError("bad_name")
	c.SendRaw([]byte(`{"type":"login","name":"alice","password":"secret"}`))
	if ev := c.Expect("error"); ev["code"] != "bad_name" || ev["text"] != proto.ErrNoAccounts.Text {
		t.Fatalf("a password in open mode: %v", ev)
	}
	c.Login("alice")
	c.SendRaw([]byte(`{"type":"say","text":""}`))
	c.ExpectError("empty_message")
	c.SendRaw([]byte(`{"type":"say","text":"x"}`))
	c.ExpectError("not_paired")
	c.SendRaw([]byte(`{"type":"connect","token":"nope"}`))
	c.ExpectError("bad_token")
	c.SendRaw([]byte(`{"type":"connect","token":"00000000000000000000000000000000"}`))
	c.ExpectError("unknown_token")
	c.Send(map[string]string{"type": "say", "text": strings.Repeat("x", 20000)})
	c.ExpectError("too_long")
	c.Send(map[string]string{"type": "who"})
	if ev := c.Expect("status"); ev["name"] != "alice" || ev["token"] != c.Token {
		t.Fatalf("status %v", ev)
	}
}

// TestTelnet sends what a telnet client sends: CRLF line ends and IAC
// option negotiation, some of it split across writes, and checks the
// server's answers: BINARY asked for at the first command, every other
// option refused.
func TestTelnet(t *testing.T) {
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	tn := d.DialLine(t)
	write := func(b string) {
		if _, err := tn.Conn.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // let each piece arrive on its own
	}
	// The answers come before any line, so they can be read off the
	// socket, past the client's buffer, which holds nothing yet.
	answer := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		tn.Conn.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		if _, err := io.ReadFull(tn.Conn, got); err != nil || string(got) != want {
			t.Fatalf("telnet answer %q, %v; want %q", got, err, want)
		}
	}
	write("\xff\xfd\x03\xff\xfb\x18") // IAC DO SGA, IAC WILL TTYPE
	// DO BINARY, WONT SGA and why, DONT TTYPE.
	answer("\xff\xfd\x00\xff\xfc\x03* duet reads a line at a time: type a line and press Enter; telnet stays in line mode\r\n\xff\xfe\x18")
	write("/login al\xff")   // IAC split across reads...
	write("\xfb\x01ice\r\n") // ...IAC WILL ECHO completed here
	answer("\xff\xfe\x01")   // DONT ECHO
	tn.Expect(`^\* you are alice, your token is [0-9a-f]{32}$`)
	tn.ExpectKey()
	write("/connect " + bob.Token + "\r\n")
	tn.Expect(`connected with bob`)
	bob.Expect(`alice is connected`)
	write("hi\xff\xfa\x18\x00xterm\xff\xf0 there\r\n") // IAC SB ... IAC SE inside a line
	bob.Expect(`^<alice> hi there$`)
	write("stray\r\x00cr\r\n")
	bob.Expect(`^<alice> straycr$`)
}

// TestManyMessagesBothWays sends 5,000 messages each way at once over one
// pair, for each combination of protocols, and checks every one arrives
// in order.
func TestManyMessagesBothWays(t *testing.T) {
	const n = 5000
	for _, kinds := range [][2]string{{"line", "line"}, {"ws", "ws"}, {"line", "ws"}} {
		t.Run(kinds[0]+"-"+kinds[1], func(t *testing.T) {
			d := enginetest.Start(t, nil)
			a := newPeer(t, d, kinds[0], "alice")
			b := newPeer(t, d, kinds[1], "bob")
			pair(a, b)
			var wg sync.WaitGroup
			for _, p := range []*peer{a, b} {
				wg.Add(2)
				go func() { defer wg.Done(); p.sendNumbered(n) }()
				go func() { defer wg.Done(); p.receiveNumbered(n) }()
			}
			wg.Wait()
		})
	}
}

// TestManyPairs runs 200 pairs at once; each hears only its own peer.
func TestManyPairs(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxConnsPerIP = 1000 })
	const pairs, msgs = 200, 20
	var wg sync.WaitGroup
	for i := 0; i < pairs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kind := "line"
			if i%2 == 1 {
				kind = "ws"
			}
			a := newPeer(t, d, kind, fmt.Sprintf("a%d", i))
			b := newPeer(t, d, "line", fmt.Sprintf("b%d", i))
			pair(a, b)
			var inner sync.WaitGroup
			for _, p := range []*peer{a, b} {
				inner.Add(2)
				go func() { defer inner.Done(); p.sendNumbered(msgs) }()
				go func() { defer inner.Done(); p.receiveNumbered(msgs) }()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	if st := d.Hub.Stats(); st.Pairs != pairs || st.Users != 2*pairs {
		t.Fatalf("stats %+v", st)
	}
}

// TestShutdownTellsEveryone: every connected user hears the server is
// shutting down, and the connections close.
func TestShutdownTellsEveryone(t *testing.T) {
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")
	bob := d.DialWS(t).Login("bob")
	anon := d.DialLine(t)
	bob.Connect(alice.Token)
	alice.Expect(`is connected`)
	bob.Expect("paired")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Stop(ctx) }()

	sawShutdown := func(lc *enginetest.LineClient) {
		for {
			l := lc.Line()
			if l == "* the server is shutting down; goodbye" {
				lc.ExpectClosed()
				return
			}
		}
	}
	sawShutdown(alice)
	sawShutdown(anon)
	for {
		if ev := bob.Next(); ev["type"] == "shutdown" {
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", d.TCP, time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

// peer drives one user over either protocol for the bulk tests.
type peer struct {
	t       *testing.T
	name    string
	token   string
	partner string // whose messages it must receive
	line    *enginetest.LineClient
	ws      *enginetest.WSClient
}

func newPeer(t *testing.T, d *enginetest.Daemon, kind, name string) *peer {
	p := &peer{t: t, name: name}
	if kind == "line" {
		p.line = d.DialLine(t).Login(name)
		p.token = p.line.Token
	} else {
		p.ws = d.DialWS(t).Login(name)
		p.token = p.ws.Token
	}
	return p
}

// pair connects b to a and waits until both are told.
func pair(a, b *peer) {
	b.connect(a.token)
	a.waitPaired()
	b.waitPaired()
	a.partner, b.partner = b.name, a.name
}

func (p *peer) connect(token string) {
	if p.line != nil {
		p.line.Send("/connect " + token)
	} else {
		p.ws.Connect(token)
	}
}

func (p *peer) waitPaired() {
	if p.line != nil {
		p.line.Expect(`connected`)
	} else {
		p.ws.Expect("paired")
	}
}

// sendNumbered sends "name i" for i in [0,n), in big writes for the line
// protocol (as a paste or a pipe would).
func (p *peer) sendNumbered(n int) {
	if p.line != nil {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "%s %d\n", p.name, i)
		}
		p.line.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		if _, err := p.line.Conn.Write([]byte(b.String())); err != nil {
			p.t.Errorf("%s send: %v", p.name, err)
		}
		return
	}
	for i := 0; i < n; i++ {
		p.ws.Say(p.name + " " + strconv.Itoa(i))
	}
}

// receiveNumbered checks that the peer's n numbered messages arrive in order.
func (p *peer) receiveNumbered(n int) {
	for i := 0; i < n; i++ {
		var from, text string
		if p.line != nil {
			l := p.line.Line()
			end := strings.Index(l, "> ")
			if !strings.HasPrefix(l, "<") || end < 0 {
				p.t.Errorf("%s: unexpected line %q", p.name, l)
				return
			}
			from, text = l[1:end], l[end+2:]
		} else {
			ev := p.ws.Expect("message")
			from, _ = ev["from"].(string)
			text, _ = ev["text"].(string)
		}
		want := p.partner + " " + strconv.Itoa(i)
		if text != want || from != p.partner {
			p.t.Errorf("%s: message %d is %q from %s, want %q", p.name, i, text, from, want)
			return
		}
	}
}

// TestMessagesReadTogether sends messages, commands and refused lines in
// one write, so the server reads them together and relays the messages
// as runs (see addToRun): the partner must get every good message, in
// order, and the sender every answer, in order.
func TestMessagesReadTogether(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxText = 100 })
	alice, bob := d.DialLine(t).Login("alice"), d.DialLine(t).Login("bob")
	alice.Send("/connect " + bob.Token)
	alice.Expect("connected with bob")
	bob.Expect("alice is connected")

	var in strings.Builder
	var want []string
	n := 0
	msg := func() {
		n++
		s := fmt.Sprintf("message %d", n)
		in.WriteString(s + "\n")
		want = append(want, "<alice> "+s)
	}
	for range 150 { // more than one run
		msg()
	}
	in.WriteString("/who\n")
	msg()
	in.WriteString(strings.Repeat("y", 101) + "\n") // longer than max_text
	msg()
	in.WriteString("\n") // blank: ignored
	msg()
	if _, err := alice.Conn.Write([]byte(in.String())); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got := bob.Line(); got != w {
			t.Fatalf("bob's line %d = %q, want %q", i, got, w)
		}
	}
	alice.Expect(`^\* you are alice, your token is [0-9a-f]{32}, connected with bob$`)
	alice.Expect(`^! too_long: `)

	// The runs leave nothing behind: a message sent alone still goes.
	alice.Send("last")
	bob.Expect(`^<alice> last$`)
}

// TestMaxLineReloadReachesTelnet: a reload of limits.max_line applies to
// a connection that keeps its framer between reads (a telnet client's,
// which holds its telnet session, or one with a line begun) as to any
// other. Raised, it lets longer lines through; lowered below a line
// already coming in, it makes that line too long, and the server goes on.
func TestMaxLineReloadReachesTelnet(t *testing.T) {
	lim := config.Defaults().Limits
	lim.MaxLine, lim.MaxText = 200, 200
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits = lim })
	bob := d.DialLine(t).Login("bob")
	alice := d.DialLine(t)
	alice.Conn.Write([]byte{255, 241}) // IAC NOP: alice speaks telnet
	alice.Login("alice")
	alice.Send("/connect " + bob.Token)
	alice.Expect(`connected with bob`)
	bob.Expect(`alice is connected`)

	lim.MaxLine, lim.MaxText = 1000, 1000
	d.SetLimits(lim)
	long := strings.Repeat("x", 500)
	alice.Send(long)
	bob.Expect(`^<alice> ` + long + `$`)

	// Lowered while a line is coming in that is already longer.
	alice.Conn.Write([]byte(strings.Repeat("y", 150)))
	time.Sleep(100 * time.Millisecond) // let the server read it
	lim.MaxLine, lim.MaxText = 100, 100
	d.SetLimits(lim)
	alice.Send("y")
	alice.Expect(`^! too_long: `)
	alice.Send("ok")
	bob.Expect(`^<alice> ok$`)
}

// TestMaxFrameReloadReachesWebSockets: a reload that raises
// limits.max_frame (as raising max_text does) applies to the WebSockets
// already open, as it does to new ones: a frame that fits the new limit
// is read, where it closed the page's connection with 1009.
func TestMaxFrameReloadReachesWebSockets(t *testing.T) {
	lim := config.Defaults().Limits
	lim.MaxFrame = 32 << 10
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits = lim })
	old := dialWS(t, d, "127.0.0.1")
	lim.MaxFrame = 64 << 10
	d.SetLimits(lim)
	big := append([]byte(`{"type":"who","pad":"`), bytes.Repeat([]byte("x"), 40<<10)...)
	big = append(big, `"}`...)
	old.write(clientFrame(0x81, big, true))
	if ev := old.event(); ev["type"] != "error" || ev["code"] != "not_logged_in" {
		t.Fatalf("a frame within the raised limit, on a WebSocket open before the reload: %v", ev)
	}
}
