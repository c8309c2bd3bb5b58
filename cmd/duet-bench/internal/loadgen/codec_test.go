package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/gobwas/ws"
)

func TestClassifyLine(t *testing.T) {
	tests := []struct {
		line string
		kind eventKind
		text string // message text or token
		code string
	}{
		{"* welcome to duet; log in with /login NAME", evNotice, "", ""},
		{"* you are alice, your token is 0123456789abcdef0123456789abcdef", evWelcome, "0123456789abcdef0123456789abcdef", ""},
		{"* you are alice, your token is 0123456789abcdef0123456789abcdef.", evWelcome, "0123456789abcdef0123456789abcdef", ""},
		{"* you are connected with alice", evPaired, "", ""},
		{"* bob is connected", evPaired, "", ""},
		{"* bob left; 3 messages were not delivered", evPeerLeft, "", ""},
		{"<alice> hello there", evMessage, "hello there", ""},
		{"<alice> > quoted", evMessage, "> quoted", ""},
		{"<alice> ", evMessage, "", ""},
		{"! rate_limited: too many requests; slow down: those past the limit are dropped unanswered", evError, "", "rate_limited"},
		{"! room_full: Room is Full", evError, "", "room_full"},
		{"! odd", evError, "", "odd"},
		{"<no end of name", evNotice, "", ""},
		{"", evNotice, "", ""},
		{"plain", evNotice, "", ""},
	}
	for _, tt := range tests {
		ev := classifyLine([]byte(tt.line))
		if ev.kind != tt.kind || string(ev.text) != tt.text || string(ev.code) != tt.code {
			t.Errorf("classifyLine(%q) = %v %q %q; want %v %q %q", tt.line, ev.kind, ev.text, ev.code, tt.kind, tt.text, tt.code)
		}
	}
}

func TestLineCodecRead(t *testing.T) {
	long := strings.Repeat("y", 5000)
	input := "* hi\r\n<bob> abc\r\n" + long + "\r\n<bob> def\n"
	br := bufio.NewReaderSize(strings.NewReader(input), 4096)
	var c lineCodec
	want := []struct {
		kind eventKind
		text string
	}{{evNotice, ""}, {evMessage, "abc"}, {evOversize, ""}, {evMessage, "def"}}
	for i, w := range want {
		ev, err := c.read(br)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.kind != w.kind || string(ev.text) != w.text {
			t.Fatalf("event %d = %v %q, want %v %q", i, ev.kind, ev.text, w.kind, w.text)
		}
	}
	if _, err := c.read(br); err != io.EOF {
		t.Fatalf("after the last line: %v, want EOF", err)
	}
}

func TestClassifyJSON(t *testing.T) {
	tests := []struct {
		obj  string
		kind eventKind
		text string
		code string
	}{
		{`{"type":"hello","auth":"open"}`, evNotice, "", ""},
		{`{"type":"welcome","name":"alice","token":"0123456789abcdef0123456789abcdef"}`, evWelcome, "0123456789abcdef0123456789abcdef", ""},
		{`{"type":"paired","peer":"bob","initiator":true}`, evPaired, "", ""},
		{`{"type":"message","from":"alice","text":"abc"}`, evMessage, "abc", ""},
		{`{"from":"alice", "text" : "abc", "type" : "message"}`, evMessage, "abc", ""},
		{`{"type":"message","from":"text","text":"a\"b\u0041"}`, evMessage, `a"bA`, ""},
		{`{"type":"error","code":"rate_limited","text":"slow down"}`, evError, "", "rate_limited"},
		{`{"type":"peer_left","peer":"bob","reason":"left","count":0}`, evPeerLeft, "", ""},
		{`{"type":"future"}`, evNotice, "", ""},
		{`not json`, evNotice, "", ""},
		{`{"type":`, evNotice, "", ""},
		// What the shortcut declines, the full parse still reads.
		{`{"type":"message","from":"alice","text":"abc"} `, evMessage, "abc", ""},
		{`{"type":"message","from":"al\u0069ce","text":"abc"}`, evMessage, "abc", ""},
		{`{"type":"message","from":"alice","text":"café"}`, evMessage, "café", ""},
		{`{"type":"message","from":"alice","text":"abc","text":"def"}`, evMessage, "def", ""},
		{`{"type":"message","from":"alice"}`, evMessage, "", ""},
		// ... and refuses what is not JSON, or not this protocol's.
		{`{"type":"message","from":"alice","text":"abc"}}`, evNotice, "", ""},
		{`{"type":"message","from":"alice","text":"a` + "\x01" + `c"}`, evNotice, "", ""},
		{`{"TYPE":"error","code":"x"}`, evNotice, "", ""},
		{`{"type":"error","code":7}`, evError, "", ""},
	}
	for _, tt := range tests {
		ev := classifyJSON([]byte(tt.obj))
		if ev.kind != tt.kind || string(ev.text) != tt.text || string(ev.code) != tt.code {
			t.Errorf("classifyJSON(%s) = %v %q %q; want %v %q %q", tt.obj, ev.kind, ev.text, ev.code, tt.kind, tt.text, tt.code)
		}
	}
}

func TestParseMessage(t *testing.T) {
	tests := []struct {
		obj  string
		text string
		ok   bool
	}{
		{`{"type":"message","from":"alice","text":"abc"}`, "abc", true},
		{`{"type":"message","from":"bench1f2e-7","text":"0000000001000000000badcxxxxxxxxxxxxxxxxxxxxxxxx"}`, "0000000001000000000badcxxxxxxxxxxxxxxxxxxxxxxxx", true},
		{`{"type":"message","from":"","text":""}`, "", true},
		{`{"type":"message","from":"a b~!","text":" }{,:"}`, " }{,:", true},
		// Numbered, as a resumable session's messages are.
		{`{"type":"message","from":"alice","text":"abc","seq":1}`, "abc", true},
		{`{"type":"message","from":"alice","text":"abc","seq":0}`, "abc", true},
		{`{"type":"message","from":"alice","text":"abc","seq":18446744073709551615}`, "abc", true},
		{`{"type":"message","from":"alice","text":"","seq":7}`, "", true},
		{`{"type":"message","from":"alice","text":"a,\"seq\":1","seq":2}`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":01}`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":-1}`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":1.5}`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":}`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":"1"}`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":1 }`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":1}}`, "", false},
		{`{"type":"message","from":"alice","text":"abc","seq":1,"x":2}`, "", false},
		// Anything needing a decoder goes to the full parse.
		{`{"type":"message","from":"alice","text":"a\"b"}`, "", false},
		{`{"type":"message","from":"alice","text":"a\\"}`, "", false},
		{`{"type":"message","from":"al\"ice","text":"abc"}`, "", false},
		{`{"type":"message","from":"alice","text":"aé"}`, "", false},
		{`{"type":"message","from":"alice","text":"a` + "\x7f" + `"}`, "", false},
		{`{"type":"message","from":"alice","text":"a` + "\t" + `"}`, "", false},
		{`{"type":"message","from":"a` + "\n" + `","text":"abc"}`, "", false},
		// So does any other shape.
		{`{"type":"message","from":"alice","text":"abc"} `, "", false},
		{`{"type":"message","from":"alice","text":"abc"`, "", false},
		{`{"type":"message","from":"alice","text":"abc","x":1}`, "", false},
		{`{"type":"message","text":"abc","from":"alice"}`, "", false},
		{`{"type": "message","from":"alice","text":"abc"}`, "", false},
		{`{"type":"message","from":"alice"}`, "", false},
		{`{"type":"message","from":"alice","text":"}`, "", false},
		{`{"type":"message","from":"alice","text":"`, "", false},
		{`{"type":"welcome","name":"alice","token":"abc"}`, "", false},
	}
	for _, tt := range tests {
		text, ok := parseMessage([]byte(tt.obj))
		if ok != tt.ok || string(text) != tt.text {
			t.Errorf("parseMessage(%s) = %q, %v; want %q, %v", tt.obj, text, ok, tt.text, tt.ok)
		}
	}
}

// TestPlainJSON8 holds the eight-byte test to the byte-at-a-time rule for
// every byte value in every position, next to bytes that are fine and
// next to bytes that are not (where a borrow could spill over).
func TestPlainJSON8(t *testing.T) {
	plainByte := func(c byte) bool { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' }
	for _, fill := range []byte{'x', ' ', '~', 0x00, 0x1f, 0x80, 0xff} {
		for pos := range 8 {
			for c := range 256 {
				w := bytes.Repeat([]byte{fill}, 8)
				w[pos] = byte(c)
				want := true
				for _, b := range w {
					want = want && plainByte(b)
				}
				if got := plainJSON(w); got != want {
					t.Fatalf("plainJSON(%q) = %v, want %v", w, got, want)
				}
				if got := plainJSON(w[:7]); got != want && pos < 7 {
					t.Fatalf("plainJSON(%q) = %v, want %v", w[:7], got, want)
				}
			}
		}
	}
}

// referenceJSON is what classifyJSON must answer, worked out with
// encoding/json alone: the fuzz target holds the shortcut to it.
func referenceJSON(obj []byte) (kind eventKind, text, code string) {
	var members map[string]any
	if json.Unmarshal(obj, &members) != nil {
		return evNotice, "", ""
	}
	str := func(name string) string { s, _ := members[name].(string); return s }
	switch str("type") {
	case "message":
		return evMessage, str("text"), ""
	case "welcome":
		return evWelcome, str("token"), ""
	case "paired":
		return evPaired, "", ""
	case "error":
		return evError, "", str("code")
	case "peer_left":
		return evPeerLeft, "", ""
	}
	return evNotice, "", ""
}

// FuzzClassifyJSON checks the hand-written message shortcut, and the
// classification as a whole, against encoding/json on arbitrary objects.
func FuzzClassifyJSON(f *testing.F) {
	f.Add([]byte(`{"type":"message","from":"alice","text":"abc"}`))
	f.Add([]byte(`{"type":"message","from":"bench00ff-1","text":"0000000000000000000001e2xxxxxxxx"}`))
	f.Add([]byte(`{"type":"message","from":"alice","text":"a\"b"}`))
	f.Add([]byte(`{"type":"message","from":"alice","text":"abc","seq":42}`))
	f.Add([]byte(`{"type":"message","from":"alice","text":"abc","seq":042}`))
	f.Add([]byte(`{"type":"message","from":"alice","text":"a\u00e9"}`))
	f.Add([]byte(`{"type":"welcome","name":"alice","token":"0123456789abcdef0123456789abcdef"}`))
	f.Add([]byte(`{"type":"error","code":"rate_limited","text":"slow down"}`))
	f.Add([]byte(`{"type":"paired","peer":"bob","initiator":true}`))
	f.Add([]byte(`{"type":"peer_left","peer":"bob","reason":"left"}`))
	f.Fuzz(func(t *testing.T, obj []byte) {
		kind, text, code := referenceJSON(obj)
		if got, ok := parseMessage(obj); ok && (kind != evMessage || string(got) != text) {
			t.Fatalf("parseMessage(%q) = %q; encoding/json reads %v %q", obj, got, kind, text)
		}
		ev := classifyJSON(obj)
		if ev.kind != kind || string(ev.text) != text || string(ev.code) != code {
			t.Fatalf("classifyJSON(%q) = %v %q %q; encoding/json reads %v %q %q", obj, ev.kind, ev.text, ev.code, kind, text, code)
		}
	})
}

func BenchmarkClassifyJSONMessage(b *testing.B) {
	obj := message(string(appendText(nil, 12345, 67890, padding(64))))
	b.ReportAllocs()
	for b.Loop() {
		if ev := classifyJSON(obj); ev.kind != evMessage || len(ev.text) != 64 {
			b.Fatal(ev)
		}
	}
}

func TestMaskPayload(t *testing.T) {
	mask := [4]byte{0x12, 0x9a, 0xff, 0x01}
	for n := range 70 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 3)
		}
		want := bytes.Clone(b)
		ws.Cipher(want, mask, 0)
		maskPayload(b, mask)
		if !bytes.Equal(b, want) {
			t.Fatalf("%d bytes: got %x, want %x", n, b, want)
		}
	}
}

// TestWSClientFrames checks the hand-built client frames with gobwas/ws's
// own reader, as a server would see them.
func TestWSClientFrames(t *testing.T) {
	c := newWSCodec(42)
	pad := padding(200) // payload over 125 bytes: 16-bit length
	var buf []byte
	buf = c.appendLogin(buf, "alice")
	buf = c.appendConnect(buf, []byte("0123456789abcdef0123456789abcdef"))
	buf = c.appendMessage(buf, 7, 99, pad)
	buf = c.appendMessage(buf, 8, 100, padding(70000)) // 64-bit length

	r := bytes.NewReader(buf)
	var got []string
	for r.Len() > 0 {
		h, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatal(err)
		}
		if !h.Fin || h.OpCode != ws.OpText || !h.Masked {
			t.Fatalf("header %+v: want a final, masked text frame", h)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(r, payload); err != nil {
			t.Fatal(err)
		}
		ws.Cipher(payload, h.Mask, 0)
		got = append(got, string(payload))
	}
	want := []string{
		`{"type":"login","name":"alice"}`,
		`{"type":"connect","token":"0123456789abcdef0123456789abcdef"}`,
		`{"type":"say","text":"` + string(appendText(nil, 7, 99, pad)) + `"}`,
		`{"type":"say","text":"` + string(appendText(nil, 8, 100, padding(70000))) + `"}`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("frame %d = %.80q..., want %.80q...", i, got[i], want[i])
		}
	}
}

func serverFrames(t *testing.T, frames ...ws.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, f := range frames {
		if err := ws.WriteFrame(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func message(text string) []byte {
	return []byte(`{"type":"message","from":"alice","text":"` + text + `"}`)
}

func TestWSCodecRead(t *testing.T) {
	big := strings.Repeat("z", 10000) // larger than the read buffer
	masked := ws.MaskFrame(ws.NewTextFrame(message("masked")))
	input := serverFrames(t,
		ws.NewTextFrame([]byte(`{"type":"hello","auth":"open"}`)),
		ws.NewTextFrame(message("one")),
		ws.NewPingFrame([]byte("p")),
		ws.NewFrame(ws.OpText, false, message("fragmented")[:10]),
		ws.NewPongFrame(nil),
		ws.NewFrame(ws.OpContinuation, false, message("fragmented")[10:20]),
		ws.NewFrame(ws.OpContinuation, true, message("fragmented")[20:]),
		ws.NewTextFrame(message(big)),
		masked,
		ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")),
	)
	br := bufio.NewReaderSize(bytes.NewReader(input), 4096)
	c := newWSCodec(1)
	want := []struct {
		kind eventKind
		text string
	}{
		{evNotice, ""}, {evMessage, "one"}, {evPing, "p"}, {evMessage, "fragmented"},
		{evMessage, big}, {evMessage, "masked"}, {evClosed, ""},
	}
	for i, w := range want {
		ev, err := c.read(br)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.kind != w.kind || string(ev.text) != w.text {
			t.Fatalf("event %d = %v %.40q, want %v %.40q", i, ev.kind, ev.text, w.kind, w.text)
		}
	}
}

func TestWSCodecRejectsHugeFrame(t *testing.T) {
	hdr := []byte{0x81, 127, 0, 0, 0, 1, 0, 0, 0, 0} // 4 GiB
	br := bufio.NewReader(bytes.NewReader(hdr))
	if _, err := newWSCodec(1).read(br); err != errOversize {
		t.Fatalf("err = %v, want errOversize", err)
	}
}

func TestMessageBuffered(t *testing.T) {
	frame := serverFrames(t, ws.NewTextFrame(message("abc")))
	tests := []struct {
		name     string
		c        codec
		first    []byte // read first
		rest     []byte // left in the buffer
		buffered bool
	}{
		{"line whole", lineCodec{}, []byte("<a> x\n"), []byte("<a> y\n"), true},
		{"line partial", lineCodec{}, []byte("<a> x\n"), []byte("<a> y"), false},
		{"line empty", lineCodec{}, []byte("<a> x\n"), nil, false},
		{"ws whole", newWSCodec(1), frame, frame, true},
		{"ws partial payload", newWSCodec(1), frame, frame[:len(frame)-1], false},
		{"ws partial header", newWSCodec(1), frame, frame[:1], false},
		{"ws empty", newWSCodec(1), frame, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := append(append([]byte(nil), tt.first...), tt.rest...)
			br := bufio.NewReaderSize(bytes.NewReader(input), 4096)
			if _, err := tt.c.read(br); err != nil {
				t.Fatal(err)
			}
			if got := tt.c.messageBuffered(br); got != tt.buffered {
				t.Fatalf("messageBuffered = %v, want %v", got, tt.buffered)
			}
		})
	}
}

func TestParseHello(t *testing.T) {
	for _, tt := range []struct {
		text string
		n    int
		ok   bool
	}{
		{"hello 0", 0, true}, {"hello 17", 17, true}, {"hello ", 0, false},
		{"hello x", 0, false}, {"hello 1234567890", 0, false}, {"hi 1", 0, false},
	} {
		n, ok := parseHello([]byte(tt.text))
		if n != tt.n || ok != tt.ok {
			t.Errorf("parseHello(%q) = %d, %v; want %d, %v", tt.text, n, ok, tt.n, tt.ok)
		}
	}
	if got := string(appendHello(nil, 42)); got != "hello 42\n" {
		t.Errorf("appendHello = %q", got)
	}
}

// FuzzServerBytes feeds arbitrary server bytes to every codec: each must
// return events or an error, never panic or loop, and must return the
// same events whether the bytes arrive at once (frames are then taken
// whole from the buffer) or one byte per read (they are then assembled
// piece by piece).
func FuzzServerBytes(f *testing.F) {
	f.Add([]byte("* hi\r\n<bob> 0000000000000000000000\r\n! x: y\r\n"))
	f.Add(append([]byte{0x81, 5}, "hello"...))
	f.Add([]byte{0x01, 3, 'a', 'b', 'c', 0x80, 1, 'd'})
	f.Add([]byte{0x81, 126, 0, 200})
	f.Add(append([]byte{0x81, 0x85, 1, 2, 3, 4}, "hello"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		codecs := map[string]func() codec{
			"line": func() codec { return lineCodec{} },
			"bare": func() codec { return bareCodec{} },
			"ws":   func() codec { return newWSCodec(1) },
		}
		for name, newCodec := range codecs {
			whole := readAll(newCodec(), bytes.NewReader(data), len(data)+1)
			piecemeal := readAll(newCodec(), iotest.OneByteReader(bytes.NewReader(data)), len(data)+1)
			if whole != piecemeal {
				t.Fatalf("%s codec on %q:\nat once:     %s\nbyte a read: %s", name, data, whole, piecemeal)
			}
		}
	})
}

// readAll reads events until an error or limit reads, and describes them.
func readAll(c codec, r io.Reader, limit int) string {
	br := bufio.NewReaderSize(r, 4096)
	var out strings.Builder
	for range limit {
		c.messageBuffered(br)
		ev, err := c.read(br)
		if err != nil {
			fmt.Fprintf(&out, "error %v", err)
			break
		}
		fmt.Fprintf(&out, "%v %q %q; ", ev.kind, ev.text, ev.code)
	}
	return out.String()
}
