package line

import (
	"strings"
	"testing"

	"duet/proto"
)

// BenchmarkNextDecodeSay is the inbound relay path: frame a message line
// from the read buffer and decode it, as the engine does, with the
// Framer's Decode. It must not allocate.
func BenchmarkNextDecodeSay(b *testing.B) {
	benchNextDecodeSay(b, "hello bob, this is a fairly ordinary chat message.\r\n")
}

// BenchmarkNextDecodeSayTelnet is the same with telnet commands in the
// line, the slow path of cleaning.
func BenchmarkNextDecodeSayTelnet(b *testing.B) {
	benchNextDecodeSay(b, "hello bob,\xff\xf1 this is a fairly ordinary chat message.\r\n")
}

// BenchmarkNextDecodeSayLong frames and decodes a message of 8 KiB.
func BenchmarkNextDecodeSayLong(b *testing.B) {
	benchNextDecodeSay(b, strings.Repeat("lorem ipsum ", 8<<10/12)+"\r\n")
}

// BenchmarkAppendEventMessage is the outbound relay path: render a
// message into the connection's buffer. It must not allocate.
func BenchmarkAppendEventMessage(b *testing.B) {
	ev := &proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("hello bob, this is a fairly ordinary chat message.")}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Text)))
	for b.Loop() {
		dst = AppendEvent(dst[:0], ev)
	}
}

// BenchmarkAppendEventMessageUnicode renders a message that takes the
// slow path of sanitizing: non-ASCII text and a line break.
func BenchmarkAppendEventMessageUnicode(b *testing.B) {
	ev := &proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("héllo bob ✓,\nthis is a fairly ordinary chat message 🙂")}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Text)))
	for b.Loop() {
		dst = AppendEvent(dst[:0], ev)
	}
}

// BenchmarkFramerByteAtATime frames a 4 KiB line that arrives one byte
// per read, as from telnet in character mode. Next remembers how far it
// looked, so this stays linear.
func BenchmarkFramerByteAtATime(b *testing.B) {
	input := []byte(strings.Repeat("x", 4<<10) + "\n")
	f := Framer{Max: DefaultMaxLine}
	b.ReportAllocs()
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		for end := 1; end <= len(input); end++ {
			if _, n, _ := f.Next(input[:end]); n != 0 && end != len(input) {
				b.Fatal("line ended early")
			}
		}
	}
}

// BenchmarkNextDecodeSayUnicode frames and decodes a message that is not
// plain ASCII, which takes the slow path: the line is scanned for telnet
// commands and keys, then checked to be UTF-8 without control
// characters.
func BenchmarkNextDecodeSayUnicode(b *testing.B) {
	benchNextDecodeSay(b, "привет, Боб: это вполне обычное сообщение в чате.\r\n")
}

// benchNextDecodeSay frames and decodes input, one message line, as the
// engine does.
func benchNextDecodeSay(b *testing.B, input string) {
	buf := make([]byte, len(input))
	f := Framer{Max: DefaultMaxLine}
	b.ReportAllocs()
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		copy(buf, input) // Next cleans in place
		line, n, err := f.Next(buf)
		if n != len(input) || err != nil {
			b.Fatalf("Next = %q, %d, %v", line, n, err)
		}
		if cmd, derr := f.Decode(line); cmd.Op != proto.OpSay || derr != nil {
			b.Fatalf("Decode = %v, %v", cmd.Op, derr)
		}
	}
}
