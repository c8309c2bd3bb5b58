package jsonproto

import (
	"strings"
	"testing"

	"duet/proto"
)

// BenchmarkDecodeSay is the inbound relay path: decode a say frame with
// a warm Decoder. It must not allocate.
func BenchmarkDecodeSay(b *testing.B) {
	benchmarkDecodeSay(b, []byte(`{"type":"say","text":"hello bob, this is a fairly ordinary chat message."}`))
}

// BenchmarkDecodeSayEscaped decodes a say whose text has escapes to undo,
// a surrogate pair among them.
func BenchmarkDecodeSayEscaped(b *testing.B) {
	benchmarkDecodeSay(b, []byte(`{"type":"say","text":"h\u00e9llo bob,\nthis is a \"fairly\" ordinary chat message \ud83d\ude42"}`))
}

// BenchmarkDecodeSayMembers decodes a say with members duet does not
// read, which must still be checked as JSON: a number, nesting, literals.
func BenchmarkDecodeSayMembers(b *testing.B) {
	benchmarkDecodeSay(b, []byte(`{"type":"say","id":17,"meta":{"sent":[2026,11,24.5e0],"draft":false,"to":null},"text":"hello bob, this is a fairly ordinary chat message."}`))
}

// BenchmarkDecodeSayLong decodes a say of 8 KiB.
func BenchmarkDecodeSayLong(b *testing.B) {
	benchmarkDecodeSay(b, []byte(`{"type":"say","text":"`+strings.Repeat("lorem ipsum ", 8<<10/12)+`"}`))
}

// benchmarkDecodeSay decodes msg, a say, with a warm Decoder.
func benchmarkDecodeSay(b *testing.B, msg []byte) {
	var d Decoder
	d.Decode(msg) // warm up: the first Decode sizes the Decoder's buffers
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if cmd, err := d.Decode(msg); cmd.Op != proto.OpSay || err != nil {
			b.Fatalf("Decode = %v, %v", cmd.Op, err)
		}
	}
}

// BenchmarkAppendEventMessage is the outbound relay path: render a
// message event into the connection's buffer. It must not allocate.
func BenchmarkAppendEventMessage(b *testing.B) {
	ev := &proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("hello bob, this is a fairly ordinary chat message.")}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Text)))
	for b.Loop() {
		dst = AppendEvent(dst[:0], ev)
	}
}

// BenchmarkAppendEventMessageEscaped renders a message with characters
// to escape and non-ASCII text.
func BenchmarkAppendEventMessageEscaped(b *testing.B) {
	ev := &proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("héllo bob,\nthis is a \"fairly\" ordinary chat message 🙂")}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Text)))
	for b.Loop() {
		dst = AppendEvent(dst[:0], ev)
	}
}
