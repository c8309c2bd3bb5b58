package wsframe

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// testMask is fixed so that test frames, and the corpus built from them,
// are the same on every run.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame encodes one masked client frame with gobwas.
func clientFrame(tb testing.TB, fin bool, op ws.OpCode, payload []byte) []byte {
	tb.Helper()
	f := ws.MaskFrameWith(ws.NewFrame(op, fin, payload), testMask)
	var buf bytes.Buffer
	if err := ws.WriteFrame(&buf, f); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// rawFrame encodes a frame from an explicit header, for the violations
// that gobwas's frame constructors would not produce. A masked header
// gets a masked payload.
func rawFrame(tb testing.TB, h ws.Header, payload []byte) []byte {
	tb.Helper()
	p := bytes.Clone(payload)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	var buf bytes.Buffer
	if err := ws.WriteFrame(&buf, ws.Frame{Header: h, Payload: p}); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// wsutilText encodes a text message the way gobwas's client helpers do,
// with a random mask.
func wsutilText(tb testing.TB, text string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := wsutil.WriteClientText(&buf, []byte(text)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func text(tb testing.TB, s string) []byte {
	return clientFrame(tb, true, ws.OpText, []byte(s))
}

func closeBody(code ws.StatusCode, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func concat(frames ...[]byte) []byte {
	return bytes.Join(frames, nil)
}

// event is what a caller of Next observes: a complete message, or the
// status of the error that ended the stream.
type event struct {
	Op      ws.OpCode
	Payload string
	Close   ws.StatusCode
}

func message(op ws.OpCode, payload string) event {
	return event{Op: op, Payload: payload}
}

func failure(code ws.StatusCode) event {
	return event{Close: code}
}

// readWhole feeds all of input to r in one buffer, the way a read that
// brought several frames at once does.
func readWhole(tb testing.TB, r *Reader, input []byte) []event {
	tb.Helper()
	buf := bytes.Clone(input)
	var events []event
	for len(buf) > 0 {
		msg, ok, n, err := r.Next(buf)
		checkStep(tb, r, len(buf), ok, n, err)
		if err != nil {
			return append(events, failure(err.(*CloseError).Code))
		}
		if n == 0 {
			break
		}
		if ok {
			events = append(events, message(msg.Op, string(msg.Payload)))
		}
		buf = buf[n:]
	}
	return events
}

// readBytewise feeds input to r one byte at a time, the way a connection
// that splits every frame at every boundary would. The pending bytes
// stay in place between calls, as in a connection's inbound buffer.
func readBytewise(tb testing.TB, r *Reader, input []byte) []event {
	tb.Helper()
	data := bytes.Clone(input)
	var events []event
	start := 0
	for end := 1; end <= len(data); end++ {
		for start < end {
			msg, ok, n, err := r.Next(data[start:end])
			checkStep(tb, r, end-start, ok, n, err)
			if err != nil {
				return append(events, failure(err.(*CloseError).Code))
			}
			if n == 0 {
				break
			}
			if ok {
				events = append(events, message(msg.Op, string(msg.Payload)))
			}
			start += n
		}
	}
	return events
}

// checkStep holds the invariants of every call to Next.
func checkStep(tb testing.TB, r *Reader, buffered int, ok bool, n int, err error) {
	tb.Helper()
	if n < 0 || n > buffered {
		tb.Fatalf("Next consumed %d of %d bytes", n, buffered)
	}
	if err != nil {
		if _, isClose := err.(*CloseError); !isClose {
			tb.Fatalf("Next returned %T %v, want *CloseError", err, err)
		}
		if n != 0 || ok {
			tb.Fatalf("Next returned n=%d ok=%v with error %v", n, ok, err)
		}
	}
	if ok && n == 0 {
		tb.Fatal("Next returned a message without consuming bytes")
	}
	if len(r.assembly) > r.limit() || cap(r.assembly) > r.limit() {
		tb.Fatalf("assembly buffer len %d cap %d beyond limit %d", len(r.assembly), cap(r.assembly), r.limit())
	}
}
