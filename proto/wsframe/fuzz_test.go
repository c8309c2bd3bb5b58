package wsframe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// readerSeed is a starting input for FuzzReader: a byte stream and the
// message limit to read it with.
type readerSeed struct {
	name       string
	data       []byte
	maxMessage uint16
}

func readerSeeds(tb testing.TB) []readerSeed {
	ping := clientFrame(tb, true, ws.OpPing, []byte("hi"))
	return []readerSeed{
		{"text", clientFrame(tb, true, ws.OpText, []byte("hello")), 0},
		{"several_frames", concat(
			clientFrame(tb, true, ws.OpText, []byte("one")),
			ping,
			clientFrame(tb, true, ws.OpBinary, []byte{0, 1, 2}),
			clientFrame(tb, true, ws.OpClose, closeBody(ws.StatusNormalClosure, "bye")),
		), 0},
		{"fragmented_text_with_ping", concat(
			clientFrame(tb, false, ws.OpText, []byte("snow\xe2")),
			ping,
			clientFrame(tb, false, ws.OpContinuation, []byte("\x98")),
			clientFrame(tb, true, ws.OpContinuation, []byte("\x83man")),
		), 64},
		{"text_16bit_length", clientFrame(tb, true, ws.OpText, bytes.Repeat([]byte("a"), 300)), 300},
		{"over_limit_header", clientFrame(tb, true, ws.OpBinary, bytes.Repeat([]byte("b"), 70000))[:14], 1000},
		{"unmasked", rawFrame(tb, ws.Header{Fin: true, OpCode: ws.OpText, Length: 1}, []byte("x")), 0},
		{"rsv1", rawFrame(tb, ws.Header{Fin: true, Rsv: 4, OpCode: ws.OpText, Masked: true, Mask: testMask, Length: 1}, []byte("x")), 0},
		{"bad_close_code", clientFrame(tb, true, ws.OpClose, closeBody(1005, "")), 0},
		{"invalid_utf8", clientFrame(tb, true, ws.OpText, []byte{0xc3, 0x28}), 0},
		{"length_msb", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 0},
	}
}

// FuzzReader holds Next to its contract on any input: no panic, never
// more consumed than given, never more assembled than the limit, and the
// same messages and error whether the stream comes at once or one byte at
// a time (readWhole and readBytewise check the first two at every step).
func FuzzReader(f *testing.F) {
	for _, seed := range readerSeeds(f) {
		f.Add(seed.data, seed.maxMessage)
	}
	f.Fuzz(func(t *testing.T, data []byte, maxMessage uint16) {
		whole := readWhole(t, &Reader{MaxMessage: int(maxMessage)}, data)
		if len(data) > 4096 {
			// Feeding byte by byte is quadratic in the header re-reads.
			return
		}
		bytewise := readBytewise(t, &Reader{MaxMessage: int(maxMessage)}, data)
		checkEvents(t, bytewise, whole)
	})
}

// FuzzReaderShortWay holds next, which reads a whole short text frame
// itself, to nextFrame, which parses and checks every frame's header: on
// any stream, at any cut of what has arrived, the two give the same
// messages, byte counts and errors in the same order.
func FuzzReaderShortWay(f *testing.F) {
	for _, seed := range readerSeeds(f) {
		f.Add(seed.data, seed.maxMessage, uint8(3))
	}
	f.Add(clientFrame(f, true, ws.OpText, bytes.Repeat([]byte("m"), 126)), uint16(0), uint8(7))
	f.Add(clientFrame(f, true, ws.OpText, bytes.Repeat([]byte("m"), 300)), uint16(200), uint8(0))
	f.Add(rawFrame(f, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: testMask, Length: 5}, []byte("short")), uint16(0), uint8(9))
	f.Add(concat(clientFrame(f, false, ws.OpText, []byte("frag")), clientFrame(f, true, ws.OpText, []byte("new"))), uint16(0), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, maxMessage uint16, cut uint8) {
		short, long := &Reader{MaxMessage: int(maxMessage)}, &Reader{MaxMessage: int(maxMessage)}
		a, b := bytes.Clone(data), bytes.Clone(data)
		same := func(a, b []byte) (int, error) {
			m1, ok1, n1, e1 := short.next(a)
			m2, ok2, n2, e2 := long.nextFrame(b)
			if fmt.Sprint(e1) != fmt.Sprint(e2) || ok1 != ok2 || n1 != n2 || m1.Op != m2.Op || !bytes.Equal(m1.Payload, m2.Payload) {
				t.Fatalf("on %q:\nnext      = %v %q, %v, %d, %v\nnextFrame = %v %q, %v, %d, %v", a, m1.Op, m1.Payload, ok1, n1, e1, m2.Op, m2.Payload, ok2, n2, e2)
			}
			return n1, e1
		}
		for {
			// First what has arrived so far, cut short. Both must read a
			// frame in it, or wait, or fail alike; waiting, they leave it
			// as it was, and the whole is read next.
			c := int(cut) % (len(a) + 1)
			n, err := same(a[:c], b[:c])
			if err == nil && n == 0 && c < len(a) {
				n, err = same(a, b)
			}
			if err != nil || n == 0 {
				return
			}
			a, b = a[n:], b[n:]
		}
	})
}

// FuzzUnmask holds unmask to ws.Cipher, the unmasking it replaces, and
// its ASCII verdict to a look at every byte, on which Next's skipping of
// utf8.Valid rests.
func FuzzUnmask(f *testing.F) {
	f.Add([]byte(`{"type":"say","text":"a 64-byte chat message, the size the relay benchmarks all use.."}`), uint32(0x3d21fa37))
	f.Add([]byte("snow\xe2\x98\x83man"), uint32(0))
	f.Add([]byte("abcdefghijk\x80"), uint32(0xffffffff))
	f.Fuzz(func(t *testing.T, payload []byte, mask32 uint32) {
		var mask [4]byte
		binary.LittleEndian.PutUint32(mask[:], mask32)
		want := bytes.Clone(payload)
		ws.Cipher(want, mask, 0)
		got := bytes.Clone(payload)
		ascii := unmask(got, mask)
		if !bytes.Equal(got, want) {
			t.Fatalf("unmask(%q, %x) = %q, ws.Cipher gives %q", payload, mask, got, want)
		}
		wantASCII := !slices.ContainsFunc(want, func(c byte) bool { return c >= utf8.RuneSelf })
		if ascii != wantASCII {
			t.Fatalf("unmask(%q, %x) says ASCII %v, want %v", payload, mask, ascii, wantASCII)
		}
	})
}

// FuzzParseHeader holds ParseHeader to gobwas's ws.ReadHeader, which
// reads headers from an io.Reader: on any input both read the same
// header and size, or both find it incomplete, or both refuse it.
func FuzzParseHeader(f *testing.F) {
	for _, seed := range readerSeeds(f) {
		f.Add(seed.data)
	}
	f.Add(AppendMaskedHeader(nil, ws.OpText, 70000, [4]byte{1, 2, 3, 4}))
	f.Add(appendHeader(nil, ws.OpPong, 126))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, size, err := ParseHeader(data)
		r := bytes.NewReader(data)
		want, werr := ws.ReadHeader(r)
		switch {
		case err != nil:
			if !errors.Is(werr, ws.ErrHeaderLengthMSB) {
				t.Fatalf("ParseHeader refused % x (%v); gobwas: %+v, %v", data, err, want, werr)
			}
		case size == 0:
			if werr == nil {
				t.Fatalf("ParseHeader found % x incomplete; gobwas read %+v", data, want)
			}
		default:
			if werr != nil || h != want || size != len(data)-r.Len() {
				t.Fatalf("% x: ParseHeader %+v size %d; gobwas %+v size %d, %v", data, h, size, want, len(data)-r.Len(), werr)
			}
		}
	})
}

func upgradeSeeds(tb testing.TB) map[string]string {
	return map[string]string{
		"good":           goodRequest,
		"wrong_version":  strings.Replace(goodRequest, "Version: 13", "Version: 8", 1),
		"origin_refused": strings.Replace(goodRequest, "http://duet.test", "http://evil.test", 1),
		"missing_key":    without(goodRequest, "Sec-WebSocket-Key"),
		"key_not_base64": withKey("!!!!!!!!!!!!!!!!!!!!!!=="),
		"key_17_bytes":   withKey("dGhlIHNhbXBsZSBub25jISE="),
		"two_keys":       with(goodRequest, "sec-websocket-key: +//7//v/+//7//v/+//7/w=="),
		"wrong_path":     strings.Replace(goodRequest, "/ws", "/x?y", 1),
		"cut_short":      goodRequest[:50],
		"bare_newlines":  strings.ReplaceAll(goodRequest, "\r\n", "\n"),
		"subprotocol":    with(goodRequest, "Sec-WebSocket-Protocol: chat, duet.v1"),
		"no_subprotocol": with(goodRequest, "Sec-WebSocket-Protocol: duet", "Sec-WebSocket-Protocol: ,"),
	}
}

// FuzzUpgrade holds Upgrade to its contract on any head: no panic, the
// head left as it was, and either a complete 101 response or a
// HandshakeError whose status is an error's and agrees with the gobwas
// rejection it wraps.
func FuzzUpgrade(f *testing.F) {
	for _, head := range upgradeSeeds(f) {
		f.Add([]byte(head))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		original := bytes.Clone(head)
		resp, err := Upgrade(head, testConfig)
		if !bytes.Equal(head, original) {
			t.Fatal("Upgrade modified the head")
		}
		if err != nil {
			var refused *HandshakeError
			var rejected *ws.ConnectionRejectedError
			if !errors.As(err, &refused) || !errors.As(err, &rejected) {
				t.Fatalf("error %T %v carries no HTTP status", err, err)
			}
			if resp != nil || refused.Status < 400 || refused.Status != rejected.StatusCode() || refused.Reason == "" {
				t.Fatalf("refused with status %d (gobwas says %d), reason %q, response %q",
					refused.Status, rejected.StatusCode(), refused.Reason, resp)
			}
			return
		}
		res, perr := http.ReadResponse(bufio.NewReader(bytes.NewReader(resp)), nil)
		if perr != nil {
			t.Fatalf("response %q: %v", resp, perr)
		}
		if res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d without an error", res.StatusCode)
		}
		if p := res.Header.Values("Sec-WebSocket-Protocol"); len(p) > 1 || len(p) == 1 && p[0] != "duet.v1" {
			t.Fatalf("subprotocol %q", p)
		}
	})
}
