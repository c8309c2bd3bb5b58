package wsframe

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

var payloadLengths = []int{0, 1, 125, 126, 127, 65535, 65536, 70000}

// TestAppendFrameReadByGobwas checks our frames with gobwas's client-side
// reader: final, unmasked, shortest length, payload intact.
func TestAppendFrameReadByGobwas(t *testing.T) {
	for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
		for _, n := range payloadLengths {
			payload := bytes.Repeat([]byte("z"), n)
			frame := AppendFrame([]byte("prefix"), op, payload)
			if !bytes.HasPrefix(frame, []byte("prefix")) {
				t.Fatal("AppendFrame overwrote dst")
			}
			frame = frame[len("prefix"):]

			f, err := ws.ReadFrame(bytes.NewReader(frame))
			if err != nil {
				t.Fatalf("op %d length %d: %v", op, n, err)
			}
			if err := ws.CheckHeader(f.Header, ws.StateClientSide); err != nil {
				t.Fatalf("op %d length %d: %v", op, n, err)
			}
			if !f.Header.Fin || f.Header.OpCode != op || !bytes.Equal(f.Payload, payload) {
				t.Fatalf("op %d length %d: read back %+v", op, n, f.Header)
			}
			if want := ws.HeaderSize(f.Header) + n; len(frame) != want {
				t.Fatalf("length %d: frame of %d bytes, want %d", n, len(frame), want)
			}
		}
	}
}

func TestAppendFrameMatchesGobwas(t *testing.T) {
	for _, n := range payloadLengths {
		payload := bytes.Repeat([]byte("q"), n)
		var want bytes.Buffer
		if err := wsutil.WriteServerMessage(&want, ws.OpBinary, payload); err != nil {
			t.Fatal(err)
		}
		if got := AppendFrame(nil, ws.OpBinary, payload); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("length %d: frame differs from gobwas's", n)
		}
	}
}

func TestAppendFrameControlTooLong(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a 126-byte ping did not panic")
		}
	}()
	AppendFrame(nil, ws.OpPing, make([]byte, 126))
}

func TestAppendClose(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes; 123 would cut a rune in half
	cases := []struct {
		name   string
		code   ws.StatusCode
		reason string
	}{
		{"normal", ws.StatusNormalClosure, ""},
		{"with reason", ws.StatusProtocolError, "unmasked client frame"},
		{"long reason", ws.StatusGoingAway, long},
		{"private code", 4000, "room closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frame := AppendClose(nil, tc.code, tc.reason)
			f, err := ws.ReadFrame(bytes.NewReader(frame))
			if err != nil {
				t.Fatal(err)
			}
			if err := ws.CheckHeader(f.Header, ws.StateClientSide); err != nil {
				t.Fatal(err)
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if err := ws.CheckCloseFrameData(code, reason); err != nil {
				t.Fatalf("gobwas rejects the close body: %v", err)
			}
			if code != tc.code || !strings.HasPrefix(tc.reason, reason) {
				t.Fatalf("read back %d %q", code, reason)
			}
			if len(tc.reason) <= maxCloseReason {
				if want := ws.NewCloseFrameBody(tc.code, tc.reason); !bytes.Equal(f.Payload, want) {
					t.Fatalf("body %q, gobwas builds %q", f.Payload, want)
				}
			} else if len(reason) < maxCloseReason-utf8.UTFMax {
				t.Fatalf("reason cut to %d bytes, more than needed", len(reason))
			}
		})
	}
}

func TestAppendCloseWithoutCode(t *testing.T) {
	for _, code := range []ws.StatusCode{0, ws.StatusNoStatusRcvd} {
		if got := AppendClose(nil, code, "ignored"); !bytes.Equal(got, []byte{0x88, 0x00}) {
			t.Fatalf("code %d: % x, want an empty close frame", code, got)
		}
	}
}

// TestCloseRoundTrip replies to each close the way the engine will: read
// it, echo its status. The reply must be a close frame the client accepts.
func TestCloseRoundTrip(t *testing.T) {
	for _, body := range [][]byte{nil, closeBody(ws.StatusNormalClosure, "bye"), closeBody(4321, "")} {
		var r Reader
		msg, ok, _, err := r.Next(clientFrame(t, true, ws.OpClose, body))
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		code, _ := msg.CloseStatus()
		reply := AppendClose(nil, code, "")
		f, err := ws.ReadFrame(bytes.NewReader(reply))
		if err != nil {
			t.Fatal(err)
		}
		if len(body) == 0 {
			if len(f.Payload) != 0 {
				t.Fatalf("reply to an empty close carries % x", f.Payload)
			}
			continue
		}
		if !bytes.Equal(f.Payload, body[:2]) {
			t.Fatalf("reply % x does not echo % x", f.Payload, body[:2])
		}
	}
}

func TestAppendTextHeader(t *testing.T) {
	for _, n := range payloadLengths {
		payload := bytes.Repeat([]byte("t"), n)
		got := append(AppendTextHeader([]byte("pre"), n), payload...)
		want := AppendFrame([]byte("pre"), ws.OpText, payload)
		if !bytes.Equal(got, want) {
			t.Fatalf("length %d: header plus payload differs from AppendFrame", n)
		}
	}
}

func TestStartFinishFrame(t *testing.T) {
	for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpPong} {
		for _, n := range payloadLengths {
			if op.IsControl() && n > ws.MaxControlFramePayloadSize {
				continue
			}
			payload := bytes.Repeat([]byte("s"), n)
			dst, mark := StartFrame([]byte("earlier frames"))
			if mark != len("earlier frames") {
				t.Fatalf("mark %d", mark)
			}
			dst = append(dst, payload...)
			dst = FinishFrame(dst, mark, op)
			if want := AppendFrame([]byte("earlier frames"), op, payload); !bytes.Equal(dst, want) {
				t.Fatalf("op %d length %d: differs from AppendFrame", op, n)
			}
		}
	}
}

// FuzzStartFinishFrame holds StartFrame and FinishFrame, whose short
// frames take a way of their own, to AppendFrame, after any bytes already
// in the buffer.
func FuzzStartFinishFrame(f *testing.F) {
	f.Add([]byte("earlier"), []byte("payload"), byte(ws.OpText))
	f.Add([]byte{}, bytes.Repeat([]byte("p"), 125), byte(ws.OpPong))
	f.Add([]byte("x"), bytes.Repeat([]byte("p"), 126), byte(ws.OpBinary))
	f.Fuzz(func(t *testing.T, before, payload []byte, op byte) {
		code := ws.OpCode(op & 0x0f)
		if code.IsControl() && len(payload) > ws.MaxControlFramePayloadSize {
			return
		}
		dst, mark := StartFrame(bytes.Clone(before))
		dst = append(dst, payload...)
		got := FinishFrame(dst, mark, code)
		if want := AppendFrame(bytes.Clone(before), code, payload); !bytes.Equal(got, want) {
			t.Fatalf("op %d, %d bytes: FinishFrame gives %x, AppendFrame %x", code, len(payload), got, want)
		}
	})
}

func TestFinishFrameWithoutStart(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("FinishFrame past the end of dst did not panic")
		}
	}()
	FinishFrame(make([]byte, 5), 0, ws.OpText)
}

func TestWriterAllocations(t *testing.T) {
	payload := bytes.Repeat([]byte("p"), 300)
	dst := make([]byte, 0, 1024)
	cases := map[string]func(){
		"AppendFrame": func() { dst = AppendFrame(dst[:0], ws.OpText, payload) },
		"AppendClose": func() { dst = AppendClose(dst[:0], ws.StatusGoingAway, "server shutting down") },
		"AppendTextHeader": func() {
			dst = append(AppendTextHeader(dst[:0], len(payload)), payload...)
		},
		"AppendMaskedHeader": func() {
			dst = append(AppendMaskedHeader(dst[:0], ws.OpText, len(payload), [4]byte{1, 2, 3, 4}), payload...)
		},
		"StartFrame and FinishFrame": func() {
			var mark int
			dst, mark = StartFrame(dst[:0])
			dst = append(dst, payload...)
			dst = FinishFrame(dst, mark, ws.OpText)
		},
	}
	for name, write := range cases {
		if allocs := testing.AllocsPerRun(100, write); allocs != 0 {
			t.Errorf("%s allocated %v times", name, allocs)
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := bytes.Repeat([]byte("p"), 64)
	dst := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		dst = AppendFrame(dst[:0], ws.OpText, payload)
	}
}

func BenchmarkStartFinishFrame(b *testing.B) {
	payload := bytes.Repeat([]byte("p"), 64)
	dst := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		var mark int
		dst, mark = StartFrame(dst[:0])
		dst = append(dst, payload...)
		dst = FinishFrame(dst, mark, ws.OpText)
	}
}

// TestAppendMaskedHeader checks client headers against gobwas's, and
// that a client frame built with them reads back through gobwas.
func TestAppendMaskedHeader(t *testing.T) {
	mask := [4]byte{0xa1, 0x02, 0xf3, 0x40}
	for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpPong} {
		for _, n := range payloadLengths {
			if op.IsControl() && n > ws.MaxControlFramePayloadSize {
				continue
			}
			var want bytes.Buffer
			if err := ws.WriteHeader(&want, ws.Header{Fin: true, OpCode: op, Masked: true, Mask: mask, Length: int64(n)}); err != nil {
				t.Fatal(err)
			}
			got := AppendMaskedHeader([]byte("pre"), op, n, mask)
			if !bytes.Equal(got[3:], want.Bytes()) || string(got[:3]) != "pre" {
				t.Fatalf("op %d length %d: % x, gobwas writes % x", op, n, got[3:], want.Bytes())
			}
			payload := bytes.Repeat([]byte("m"), n)
			masked := append([]byte(nil), payload...)
			ws.Cipher(masked, mask, 0)
			f, err := ws.ReadFrame(bytes.NewReader(append(got[3:], masked...)))
			if err != nil {
				t.Fatal(err)
			}
			if err := ws.CheckHeader(f.Header, ws.StateServerSide); err != nil {
				t.Fatalf("op %d length %d: a server refuses it: %v", op, n, err)
			}
			ws.Cipher(f.Payload, f.Header.Mask, 0)
			if !bytes.Equal(f.Payload, payload) {
				t.Fatalf("op %d length %d: payload differs", op, n)
			}
		}
	}
}
