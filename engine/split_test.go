package engine_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"duet/engine/enginetest"
)

// TestWebSocketSplitAcrossReads sends the upgrade request and then frames
// in small pieces, so that each arrives in a read of its own: the engine
// must put them back together.
func TestWebSocketSplitAcrossReads(t *testing.T) {
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")

	c, err := net.DialTimeout("tcp", d.WS, enginetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(enginetest.Timeout))
	trickle := func(b []byte, piece int) {
		for len(b) > 0 {
			n := min(piece, len(b))
			if _, err := c.Write(b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
			time.Sleep(2 * time.Millisecond)
		}
	}
	req := "GET /ws HTTP/1.1\r\nHost: " + d.WS + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	trickle([]byte(req), 7)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("upgrade: %q %v", status, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	rw := struct {
		io.Reader
		io.Writer
	}{br, c}
	read := func() string {
		b, err := wsutil.ReadServerText(rw)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); !strings.Contains(got, `"type":"hello"`) {
		t.Fatalf("hello: %s", got)
	}
	frame := func(text string) []byte {
		var buf bytes.Buffer
		if err := wsutil.WriteClientText(&buf, []byte(text)); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	// A login split byte by byte, then a connect and a message sent in
	// one write together with half of the next frame.
	trickle(frame(`{"type":"login","name":"bob"}`), 1)
	if got := read(); !strings.Contains(got, `"type":"welcome"`) {
		t.Fatalf("welcome: %s", got)
	}
	both := append(frame(`{"type":"connect","token":"`+alice.Token+`"}`), frame(`{"type":"say","text":"split hello"}`)...)
	last := frame(`{"type":"say","text":"and the rest"}`)
	trickle(append(both, last[:5]...), len(both)+5)
	trickle(last[5:], 3)
	alice.Expect(`^\* bob is connected$`)
	alice.Expect(`^<bob> split hello$`)
	alice.Expect(`^<bob> and the rest$`)
	if got := read(); !strings.Contains(got, `"type":"paired"`) {
		t.Fatalf("paired: %s", got)
	}
	// A fragmented message with a ping between its fragments.
	var frag bytes.Buffer
	for _, f := range []ws.Frame{
		ws.MaskFrame(ws.NewFrame(ws.OpText, false, []byte(`{"type":"say",`))),
		ws.MaskFrame(ws.NewPingFrame([]byte("p"))),
		ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte(`"text":"fragmented"}`))),
	} {
		if err := ws.WriteFrame(&frag, f); err != nil {
			t.Fatal(err)
		}
	}
	trickle(frag.Bytes(), 4)
	alice.Expect(`^<bob> fragmented$`)
}
