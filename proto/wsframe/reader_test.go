package wsframe

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

type readerCase struct {
	name  string
	max   int
	input []byte
	want  []event
}

func readerCases(t *testing.T) []readerCase {
	// Past every length the cases take.
	long := strings.Repeat("x", DefaultMaxMessage+1)
	snowman := "\u2603" // three bytes: e2 98 83
	ping := clientFrame(t, true, ws.OpPing, []byte("are you there"))
	return []readerCase{
		{
			name:  "text",
			input: text(t, "hello"),
			want:  []event{message(ws.OpText, "hello")},
		},
		{
			name:  "text from wsutil",
			input: wsutilText(t, "héllo wörld"),
			want:  []event{message(ws.OpText, "héllo wörld")},
		},
		{
			name:  "binary with invalid UTF-8",
			input: clientFrame(t, true, ws.OpBinary, []byte{0xff, 0xfe, 0x00}),
			want:  []event{message(ws.OpBinary, "\xff\xfe\x00")},
		},
		{
			name:  "empty text",
			input: text(t, ""),
			want:  []event{message(ws.OpText, "")},
		},
		{
			name:  "125 bytes in the short length",
			input: text(t, long[:125]),
			want:  []event{message(ws.OpText, long[:125])},
		},
		{
			name:  "126 bytes in the 16-bit length",
			input: text(t, long[:126]),
			want:  []event{message(ws.OpText, long[:126])},
		},
		{
			name:  "65536 bytes in the 64-bit length",
			max:   1 << 17,
			input: text(t, long[:65536]),
			want:  []event{message(ws.OpText, long[:65536])},
		},
		{
			name:  "several frames in one buffer",
			input: concat(text(t, "one"), ping, clientFrame(t, true, ws.OpBinary, []byte{1, 2}), text(t, "two"), clientFrame(t, true, ws.OpClose, closeBody(ws.StatusNormalClosure, "bye"))),
			want: []event{
				message(ws.OpText, "one"),
				message(ws.OpPing, "are you there"),
				message(ws.OpBinary, "\x01\x02"),
				message(ws.OpText, "two"),
				message(ws.OpClose, "\x03\xe8bye"),
			},
		},
		{
			name: "fragmented text with a ping between fragments",
			input: concat(
				clientFrame(t, false, ws.OpText, []byte("Hel")),
				ping,
				clientFrame(t, false, ws.OpContinuation, []byte("lo, ")),
				clientFrame(t, true, ws.OpPong, nil),
				clientFrame(t, true, ws.OpContinuation, []byte("world")),
				text(t, "after"),
			),
			want: []event{
				message(ws.OpPing, "are you there"),
				message(ws.OpPong, ""),
				message(ws.OpText, "Hello, world"),
				message(ws.OpText, "after"),
			},
		},
		{
			name:  "fragmented text from wsutil.Writer",
			input: fragmentedByWriter(t, "first part|", "second part"),
			want:  []event{message(ws.OpText, "first part|second part")},
		},
		{
			name: "fragmented text splitting a rune",
			input: concat(
				clientFrame(t, false, ws.OpText, []byte("snow"+snowman[:1])),
				clientFrame(t, false, ws.OpContinuation, []byte(snowman[1:2])),
				clientFrame(t, true, ws.OpContinuation, []byte(snowman[2:]+"man")),
			),
			want: []event{message(ws.OpText, "snow"+snowman+"man")},
		},
		{
			name: "fragmented binary with empty fragments",
			input: concat(
				clientFrame(t, false, ws.OpBinary, nil),
				clientFrame(t, false, ws.OpContinuation, []byte{0xff}),
				clientFrame(t, true, ws.OpContinuation, nil),
			),
			want: []event{message(ws.OpBinary, "\xff")},
		},
		{
			name:  "close without a body",
			input: clientFrame(t, true, ws.OpClose, nil),
			want:  []event{message(ws.OpClose, "")},
		},
		{
			name:  "close 1012 registered after the RFC",
			input: clientFrame(t, true, ws.OpClose, closeBody(1012, "")),
			want:  []event{message(ws.OpClose, "\x03\xf4")},
		},
		{
			name:  "close with a private code",
			input: clientFrame(t, true, ws.OpClose, closeBody(4999, "")),
			want:  []event{message(ws.OpClose, "\x13\x87")},
		},
		{
			name:  "ping of 125 bytes",
			input: clientFrame(t, true, ws.OpPing, []byte(long[:125])),
			want:  []event{message(ws.OpPing, long[:125])},
		},

		// Protocol errors: 1002.
		{
			name:  "unmasked text",
			input: rawFrame(t, ws.Header{Fin: true, OpCode: ws.OpText, Length: 2}, []byte("hi")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "RSV1",
			input: rawFrame(t, ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText, Masked: true, Mask: testMask, Length: 2}, []byte("hi")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "RSV2",
			input: rawFrame(t, ws.Header{Fin: true, Rsv: ws.Rsv(false, true, false), OpCode: ws.OpText, Masked: true, Mask: testMask, Length: 2}, []byte("hi")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "RSV3 after a good frame",
			input: concat(text(t, "ok"), rawFrame(t, ws.Header{Fin: true, Rsv: ws.Rsv(false, false, true), OpCode: ws.OpBinary, Masked: true, Mask: testMask}, nil)),
			want:  []event{message(ws.OpText, "ok"), failure(ws.StatusProtocolError)},
		},
		{
			name:  "reserved data opcode 3",
			input: clientFrame(t, true, 0x3, []byte("x")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "reserved data opcode 7",
			input: clientFrame(t, true, 0x7, nil),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "reserved control opcode 0xB",
			input: clientFrame(t, true, 0xb, nil),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "reserved control opcode 0xF",
			input: clientFrame(t, true, 0xf, []byte("x")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "fragmented ping",
			input: clientFrame(t, false, ws.OpPing, []byte("x")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "ping of 126 bytes",
			input: clientFrame(t, true, ws.OpPing, []byte(long[:126])),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "close of 126 bytes",
			input: clientFrame(t, true, ws.OpClose, closeBody(ws.StatusNormalClosure, long[:124])),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "continuation without a start",
			input: clientFrame(t, true, ws.OpContinuation, []byte("x")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "text inside a fragmented message",
			input: concat(clientFrame(t, false, ws.OpText, []byte("a")), text(t, "b")),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "binary inside a fragmented message",
			input: concat(clientFrame(t, false, ws.OpText, []byte("a")), clientFrame(t, false, ws.OpBinary, []byte("b"))),
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "64-bit length with its top bit set",
			input: []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
			want:  []event{failure(ws.StatusProtocolError)},
		},
		{
			name:  "close body of one byte",
			input: clientFrame(t, true, ws.OpClose, []byte{0x03}),
			want:  []event{failure(ws.StatusProtocolError)},
		},

		// Invalid UTF-8: 1007.
		{
			name:  "text with invalid UTF-8",
			input: text(t, "bad \xc3\x28 byte"),
			want:  []event{failure(ws.StatusInvalidFramePayloadData)},
		},
		{
			name:  "text with a surrogate",
			input: text(t, "\xed\xa0\x80"),
			want:  []event{failure(ws.StatusInvalidFramePayloadData)},
		},
		{
			name: "fragmented text invalid in the middle fails at once",
			input: concat(
				clientFrame(t, false, ws.OpText, []byte("ok")),
				clientFrame(t, false, ws.OpContinuation, []byte{0xff}),
			),
			want: []event{failure(ws.StatusInvalidFramePayloadData)},
		},
		{
			name: "fragmented text ending inside a rune",
			input: concat(
				clientFrame(t, false, ws.OpText, []byte("snow")),
				clientFrame(t, true, ws.OpContinuation, []byte(snowman[:2])),
			),
			want: []event{failure(ws.StatusInvalidFramePayloadData)},
		},
		{
			name:  "close reason with invalid UTF-8",
			input: clientFrame(t, true, ws.OpClose, closeBody(ws.StatusNormalClosure, "\xff")),
			want:  []event{failure(ws.StatusInvalidFramePayloadData)},
		},

		// Message limits: 1009.
		{
			name:  "text of exactly MaxMessage",
			max:   200,
			input: text(t, long[:200]),
			want:  []event{message(ws.OpText, long[:200])},
		},
		{
			name:  "text one byte over MaxMessage",
			max:   200,
			input: text(t, long[:201]),
			want:  []event{failure(ws.StatusMessageTooBig)},
		},
		{
			name:  "over MaxMessage known from the header alone",
			max:   200,
			input: text(t, long[:70000])[:14],
			want:  []event{failure(ws.StatusMessageTooBig)},
		},
		{
			name:  "over the default limit",
			input: text(t, long[:DefaultMaxMessage+1])[:14],
			want:  []event{failure(ws.StatusMessageTooBig)},
		},
		{
			name: "fragmented message of exactly MaxMessage",
			max:  200,
			input: concat(
				clientFrame(t, false, ws.OpText, []byte(long[:100])),
				ping,
				clientFrame(t, true, ws.OpContinuation, []byte(long[:100])),
			),
			want: []event{message(ws.OpPing, "are you there"), message(ws.OpText, long[:200])},
		},
		{
			name: "fragmented message one byte over MaxMessage",
			max:  200,
			input: concat(
				clientFrame(t, false, ws.OpText, []byte(long[:100])),
				clientFrame(t, true, ws.OpContinuation, []byte(long[:101])),
			),
			want: []event{failure(ws.StatusMessageTooBig)},
		},
		{
			name:  "control frames do not count against a small MaxMessage",
			max:   4,
			input: concat(ping, text(t, "four")),
			want:  []event{message(ws.OpPing, "are you there"), message(ws.OpText, "four")},
		},
	}
}

// fragmentedByWriter sends parts as fragments of one text message through
// gobwas's client-side writer.
func fragmentedByWriter(t *testing.T, parts ...string) []byte {
	var buf bytes.Buffer
	w := wsutil.NewWriter(&buf, ws.StateClientSide, ws.OpText)
	for i, part := range parts {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		flush := w.FlushFragment
		if i == len(parts)-1 {
			flush = w.Flush
		}
		if err := flush(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestReaderWhole(t *testing.T) {
	for _, tc := range readerCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			r := &Reader{MaxMessage: tc.max}
			got := readWhole(t, r, tc.input)
			checkEvents(t, got, tc.want)
		})
	}
}

func TestReaderBytewise(t *testing.T) {
	for _, tc := range readerCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			r := &Reader{MaxMessage: tc.max}
			got := readBytewise(t, r, tc.input)
			checkEvents(t, got, tc.want)
		})
	}
}

// TestReaderEverySplit feeds each case in two reads split at every
// position, the way two TCP segments would bring it.
func TestReaderEverySplit(t *testing.T) {
	for _, tc := range readerCases(t) {
		if len(tc.input) > 300 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			for split := 0; split <= len(tc.input); split++ {
				r := &Reader{MaxMessage: tc.max}
				data := bytes.Clone(tc.input)
				var got []event
				start := 0
			reads:
				for _, end := range []int{split, len(data)} {
					for start < end {
						msg, ok, n, err := r.Next(data[start:end])
						checkStep(t, r, end-start, ok, n, err)
						if err != nil {
							got = append(got, failure(err.(*CloseError).Code))
							break reads
						}
						if n == 0 {
							break
						}
						if ok {
							got = append(got, message(msg.Op, string(msg.Payload)))
						}
						start += n
					}
				}
				checkEvents(t, got, tc.want)
			}
		})
	}
}

func checkEvents(t *testing.T, got, want []event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events %s, want %d %s", len(got), summarize(got), len(want), summarize(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %s, want %s", i, summarize(got[i:i+1]), summarize(want[i:i+1]))
		}
	}
}

func summarize(events []event) string {
	var b strings.Builder
	for _, e := range events {
		if e.Close != 0 {
			fmt.Fprintf(&b, "[close %d]", e.Close)
			continue
		}
		p := e.Payload
		if len(p) > 20 {
			p = p[:20] + "..."
		}
		fmt.Fprintf(&b, "[op %#x %q]", byte(e.Op), p)
	}
	return b.String()
}

func TestReaderInvalidCloseCodes(t *testing.T) {
	for _, code := range []ws.StatusCode{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		r := &Reader{}
		got := readWhole(t, r, clientFrame(t, true, ws.OpClose, closeBody(code, "")))
		checkEvents(t, got, []event{failure(ws.StatusProtocolError)})
	}
	for _, code := range []ws.StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		r := &Reader{}
		frame := clientFrame(t, true, ws.OpClose, closeBody(code, "reason"))
		msg, ok, n, err := r.Next(frame)
		if err != nil || !ok || n != len(frame) {
			t.Fatalf("code %d: ok=%v n=%d err=%v", code, ok, n, err)
		}
		gotCode, reason := msg.CloseStatus()
		if gotCode != code || string(reason) != "reason" {
			t.Fatalf("code %d: CloseStatus = %d %q", code, gotCode, reason)
		}
	}
}

func TestCloseStatusWithoutBody(t *testing.T) {
	code, reason := Message{Op: ws.OpClose}.CloseStatus()
	if code != ws.StatusNoStatusRcvd || reason != nil {
		t.Fatalf("CloseStatus = %d %q, want 1005 and no reason", code, reason)
	}
}

func TestReaderPayloadAliasesBuffer(t *testing.T) {
	frame := text(t, "in place")
	var r Reader
	msg, ok, n, err := r.Next(frame)
	if err != nil || !ok || n != len(frame) {
		t.Fatalf("ok=%v n=%d err=%v", ok, n, err)
	}
	if &msg.Payload[0] != &frame[n-len("in place")] {
		t.Fatal("payload of a single frame was copied instead of unmasked in place")
	}
}

func TestReaderLeavesIncompleteFrameAlone(t *testing.T) {
	frame := text(t, "not yet")
	want := bytes.Clone(frame)
	var r Reader
	for i := 0; i < len(frame); i++ {
		_, ok, n, err := r.Next(frame[:i])
		if ok || n != 0 || err != nil {
			t.Fatalf("prefix %d: ok=%v n=%d err=%v", i, ok, n, err)
		}
	}
	if !bytes.Equal(frame, want) {
		t.Fatal("Next changed a frame it did not consume")
	}
}

func TestReaderErrorIsSticky(t *testing.T) {
	var r Reader
	_, _, _, first := r.Next(clientFrame(t, true, ws.OpContinuation, nil))
	_, ok, n, again := r.Next(text(t, "fine"))
	if first == nil || again != first || ok || n != 0 {
		t.Fatalf("first %v, then ok=%v n=%d err=%v", first, ok, n, again)
	}
	var closeErr *CloseError
	if !errors.As(again, &closeErr) || closeErr.Code != ws.StatusProtocolError {
		t.Fatalf("error %v is not a 1002 CloseError", again)
	}
}

// TestReaderReleasesLargeAssembly checks that a connection that once sent
// a big fragmented message does not keep its buffer while idle.
func TestReaderReleasesLargeAssembly(t *testing.T) {
	big := strings.Repeat("y", 3*retainAssembly)
	input := concat(
		clientFrame(t, false, ws.OpText, []byte(big[:retainAssembly])),
		clientFrame(t, true, ws.OpContinuation, []byte(big[retainAssembly:])),
	)
	r := &Reader{}
	checkEvents(t, readWhole(t, r, input), []event{message(ws.OpText, big)})
	if r.assembly != nil {
		t.Fatalf("kept an assembly buffer of %d bytes", cap(r.assembly))
	}

	small := concat(clientFrame(t, false, ws.OpText, []byte("a")), clientFrame(t, true, ws.OpContinuation, []byte("b")))
	checkEvents(t, readWhole(t, r, small), []event{message(ws.OpText, "ab")})
	if cap(r.assembly) == 0 {
		t.Fatal("dropped a small assembly buffer that the next message could reuse")
	}
}

// TestReaderRefusesInvalidUTF8Anywhere puts a byte that can start no
// UTF-8 character at every position of text messages of every length up
// to three words: wherever unmask meets it, in a whole word or in the
// last few bytes, the message is not ASCII, and Next refuses it.
func TestReaderRefusesInvalidUTF8Anywhere(t *testing.T) {
	for n := 1; n <= 24; n++ {
		for pos := range n {
			for _, bad := range []byte{0x80, 0xc0, 0xff} {
				payload := bytes.Repeat([]byte("a"), n)
				payload[pos] = bad
				var r Reader
				_, _, _, err := r.Next(clientFrame(t, true, ws.OpText, payload))
				var ce *CloseError
				if !errors.As(err, &ce) || ce.Code != ws.StatusInvalidFramePayloadData {
					t.Fatalf("Next(text %q) = %v, want close %d", payload, err, ws.StatusInvalidFramePayloadData)
				}
			}
		}
	}
}

// TestReaderRefusesInvalidUTF8InFragments does the same for a text in
// two fragments, cut at every place: an ASCII fragment after one that
// ends inside a character is refused too, and one after a character
// finished across the cut is not.
func TestReaderRefusesInvalidUTF8InFragments(t *testing.T) {
	read := func(payload []byte, cut int) error {
		var r Reader
		buf := concat(clientFrame(t, false, ws.OpText, payload[:cut]), clientFrame(t, true, ws.OpContinuation, payload[cut:]))
		for len(buf) > 0 {
			_, _, n, err := r.Next(buf)
			if err != nil || n == 0 {
				return err
			}
			buf = buf[n:]
		}
		return nil
	}
	for n := 1; n <= 20; n++ {
		for pos := range n {
			for cut := range n + 1 {
				payload := bytes.Repeat([]byte("a"), n)
				payload[pos] = 0xc3 // a lead byte followed by ASCII
				var ce *CloseError
				if err := read(payload, cut); !errors.As(err, &ce) || ce.Code != ws.StatusInvalidFramePayloadData {
					t.Fatalf("text %q cut at %d: %v, want close %d", payload, cut, err, ws.StatusInvalidFramePayloadData)
				}
				payload = append(payload[:pos:pos], append([]byte("é"), payload[pos+1:]...)...)
				if err := read(payload, cut); err != nil {
					t.Fatalf("text %q cut at %d: %v", payload, cut, err)
				}
			}
		}
	}
}

func TestNextAllocations(t *testing.T) {
	frame := text(t, strings.Repeat("a", 64))
	buf := make([]byte, len(frame))
	var r Reader
	allocs := testing.AllocsPerRun(100, func() {
		copy(buf, frame)
		if _, ok, _, err := r.Next(buf); !ok || err != nil {
			t.Fatal(ok, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Next allocated %v times per frame", allocs)
	}
}

func BenchmarkNextMaskedText64(b *testing.B) {
	frame := clientFrame(b, true, ws.OpText, bytes.Repeat([]byte("a"), 64))
	buf := make([]byte, len(frame))
	var r Reader
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		// Next unmasks in place, so every round starts from the masked frame.
		copy(buf, frame)
		if _, ok, _, err := r.Next(buf); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkNextFragmentedText(b *testing.B) {
	input := concat(
		clientFrame(b, false, ws.OpText, bytes.Repeat([]byte("a"), 512)),
		clientFrame(b, true, ws.OpContinuation, bytes.Repeat([]byte("b"), 512)),
	)
	buf := make([]byte, len(input))
	var r Reader
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		copy(buf, input)
		rest := buf
		for len(rest) > 0 {
			_, _, n, err := r.Next(rest)
			if err != nil || n == 0 {
				b.Fatal(n, err)
			}
			rest = rest[n:]
		}
	}
}

// TestParseHeaderBothSides reads server headers (AppendFrame) and
// client headers (AppendMaskedHeader) back, whole and cut short.
func TestParseHeaderBothSides(t *testing.T) {
	mask := [4]byte{9, 8, 7, 6}
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 1 << 20} {
		for _, masked := range []bool{false, true} {
			var hdr []byte
			if masked {
				hdr = AppendMaskedHeader(nil, ws.OpBinary, n, mask)
			} else {
				hdr = appendHeader(nil, ws.OpBinary, n)
			}
			for cut := range len(hdr) {
				if h, size, err := ParseHeader(hdr[:cut]); size != 0 || err != nil {
					t.Fatalf("length %d masked %v: %d of %d bytes parsed as %+v, %d, %v", n, masked, cut, len(hdr), h, size, err)
				}
			}
			if got := HeaderLen(hdr); got != len(hdr) {
				t.Fatalf("length %d masked %v: HeaderLen %d, want %d", n, masked, got, len(hdr))
			}
			h, size, err := ParseHeader(append(hdr, "payload"...))
			want := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: masked, Length: int64(n)}
			if masked {
				want.Mask = mask
			}
			if err != nil || size != len(hdr) || h != want {
				t.Fatalf("length %d masked %v: %+v, %d, %v; want %+v, %d", n, masked, h, size, err, want, len(hdr))
			}
		}
	}
	if _, _, err := ParseHeader([]byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("a length with its most significant bit set was accepted")
	}
}

// TestReaderBoundsFragments: a message may come in up to MaxFragments
// frames, MaxEmptyFragments of them empty but its last, and the frame
// past either closes the stream 1008: before, empty continuation frames
// could be sent for ever, each read at no cost, the message never
// growing to its limit. A message after one at both bounds counts
// afresh.
func TestReaderBoundsFragments(t *testing.T) {
	// n frames: "a", then empty ones, then "x" ones, then "b".
	fragments := func(n, empty int, fin bool) []byte {
		b := clientFrame(t, false, ws.OpText, []byte("a"))
		for i := range n - 2 {
			var p []byte
			if i >= empty {
				p = []byte("x")
			}
			b = append(b, clientFrame(t, false, ws.OpContinuation, p)...)
		}
		return append(b, clientFrame(t, fin, ws.OpContinuation, []byte("b"))...)
	}
	want := "a" + strings.Repeat("x", MaxFragments-2-MaxEmptyFragments) + "b"
	r := &Reader{}
	checkEvents(t, readWhole(t, r, concat(fragments(MaxFragments, MaxEmptyFragments, true), fragments(MaxFragments, MaxEmptyFragments, true))),
		[]event{message(ws.OpText, want), message(ws.OpText, want)})

	for _, tc := range []struct {
		name     string
		n, empty int
	}{
		{"frames", MaxFragments + 1, 0},
		{"empty frames", MaxEmptyFragments + 3, MaxEmptyFragments + 1},
	} {
		r = &Reader{}
		input := fragments(tc.n, tc.empty, false)
		var err error
		for len(input) > 0 && err == nil {
			var n int
			_, _, n, err = r.Next(input)
			input = input[n:]
		}
		var closeErr *CloseError
		if !errors.As(err, &closeErr) || closeErr.Code != ws.StatusPolicyViolation || len(input) == 0 {
			t.Errorf("a message of %d %s: %v, with %d bytes left unread", tc.n, tc.name, err, len(input))
		}
	}
}
