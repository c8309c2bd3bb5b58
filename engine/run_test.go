package engine_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestFramesReadTogether is TestMessagesReadTogether for WebSocket: many
// frames in one write, among them messages whose text the server cannot
// keep in the read buffer (escaped, or reassembled from fragments), a
// ping, a refused frame and a command. The partner, on the line protocol,
// must get every good message in order; the sender every answer.
func TestFramesReadTogether(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxText = 100 })
	alice := d.DialWS(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	alice.Connect(bob.Token)
	alice.Expect("paired")
	bob.Expect("alice is connected")

	var in []byte
	var want []string
	say := func(text string) {
		b, _ := json.Marshal(map[string]string{"type": "say", "text": text})
		in = append(in, clientFrame(0x81, b, true)...)
		want = append(want, "<alice> "+text)
	}
	for i := range 100 {
		say(fmt.Sprintf("message %d", i))
		if i%10 == 3 {
			say(fmt.Sprintf("quoted \"%d\" \\ and tab\t", i)) // unescaped outside the read buffer
		}
	}
	// A message in two fragments, reassembled outside the read buffer.
	whole := []byte(`{"type":"say","text":"in two parts"}`)
	in = append(in, clientFrame(0x01, whole[:10], true)...)
	in = append(in, clientFrame(0x80, whole[10:], true)...)
	want = append(want, "<alice> in two parts")
	say("after the fragments")
	in = append(in, clientFrame(0x89, []byte("p"), true)...)
	say("after the ping")
	in = append(in, clientFrame(0x81, []byte(`{"type":"say","text":1}`), true)...)
	say("after the refused frame")
	in = append(in, clientFrame(0x81, []byte(`{"type":"who"}`), true)...)
	say("after who")

	alice.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := alice.Conn.Write(in); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got := bob.Line(); got != w {
			t.Fatalf("bob's line %d = %q, want %q", i, got, w)
		}
	}
	alice.ExpectError("bad_message")
	if st := alice.Expect("status"); st["peer"] != "bob" {
		t.Fatalf("status: %v", st)
	}
}
