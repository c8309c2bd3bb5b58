package engine_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestNothingActedOnAfterTheEnd: input that comes behind what ended a
// connection (a quit, a WebSocket close or binary frame, a flood past
// the rate limit) is not acted on, even when it arrives in the same
// read: the partner gets the says before the end, then the news that
// the sender is gone, and nothing of what came after. (Before, the
// close acted on the input still buffered, as it does for a client that
// ends its input: a say right behind a close frame reached the partner,
// then the partner was told the sender left.)
func TestNothingActedOnAfterTheEnd(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) {
		// A flood is told from a burst of 20 dropped ten times over.
		o.Limits.MessageRate = 10
		o.Limits.MessageBurst = 20
	})
	ws := func(payloads ...[]byte) []byte { // each a masked text frame
		var b []byte
		for _, p := range payloads {
			b = append(b, clientFrame(0x81, p, true)...)
		}
		return b
	}
	say := func(text string) []byte { return []byte(`{"type":"say","text":"` + text + `"}`) }
	for i, tc := range []struct {
		name string
		web  bool
		// input is what the sender writes at once: a say, what ends its
		// connection, and a say after it.
		input []byte
	}{
		{"line quit", false, []byte("before the end\n/quit\nafter the end\n")},
		{"line flood", false, []byte("before the end\n" + strings.Repeat("/bogus\n", 1000) + "after the end\n")},
		{"ws quit", true, ws(say("before the end"), []byte(`{"type":"quit"}`), say("after the end"))},
		{"ws close 1000", true, concat(ws(say("before the end")), clientFrame(0x88, []byte{0x03, 0xe8}, true), ws(say("after the end")))},
		{"ws close 1001", true, concat(ws(say("before the end")), clientFrame(0x88, []byte{0x03, 0xe9}, true), ws(say("after the end")))},
		{"ws close 4001", true, concat(ws(say("before the end")), clientFrame(0x88, []byte{0x0f, 0xa1}, true), ws(say("after the end")))},
		{"ws close without a code", true, concat(ws(say("before the end")), clientFrame(0x88, nil, true), ws(say("after the end")))},
		{"ws binary", true, concat(ws(say("before the end")), clientFrame(0x82, say("binary"), true), ws(say("after the end")))},
		{"ws ping flood", true, concat(ws(say("before the end")), bytes.Repeat(clientFrame(0x89, nil, true), 1000), ws(say("after the end")))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Names of their own: a session gone away keeps its name.
			alice := d.DialLine(t).Login(fmt.Sprint("alice", i))
			name := fmt.Sprint("bob", i)
			var sender io.Writer
			if tc.web {
				bob := d.DialWS(t).Login(name)
				bob.Connect(alice.Token)
				bob.Expect("paired")
				sender = bob.Conn
			} else {
				bob := d.DialLine(t).Login(name)
				bob.Send("/connect " + alice.Token)
				bob.Expect(`^\* you are connected with ` + alice.Name + `$`)
				sender = bob.Conn
			}
			alice.Expect(`^\* ` + name + ` is connected$`)
			if _, err := sender.Write(tc.input); err != nil {
				t.Fatal(err)
			}
			alice.Expect(`^<` + name + `> before the end$`)
			// The next line says bob is gone (left, disconnected, lost
			// the connection); a say after the end would come before it.
			if got := alice.Line(); !strings.HasPrefix(got, "* "+name+" ") {
				t.Fatalf("after bob's ending, alice got %q", got)
			}
			alice.Send("/quit")
			alice.Expect(`^\* bye$`)
		})
	}
}

// concat joins byte slices.
func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
