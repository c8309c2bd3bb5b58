package wsframe

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// MaxServerHeaderSize is the longest header a server frame can have: two
// bytes, an 8-byte extended length, and no mask.
const MaxServerHeaderSize = 10

// maxCloseReason is what is left of a control frame's 125 bytes after the
// two-byte status code.
const maxCloseReason = ws.MaxControlFramePayloadSize - 2

// AppendFrame appends one server frame, final and unmasked, carrying
// payload. A control frame (close, ping, pong) may carry at most 125 bytes;
// a longer one is a bug in the caller and panics, since the peer would
// have to fail the connection over it.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	if op.IsControl() && len(payload) > ws.MaxControlFramePayloadSize {
		panic("wsframe: control frame payload longer than 125 bytes")
	}
	return append(appendHeader(dst, op, len(payload)), payload...)
}

// AppendClose appends a close frame with code and reason. The codes that
// RFC 6455 forbids on the wire because they stand for "no code" (0 and
// ws.StatusNoStatusRcvd) produce a close frame with an empty body, which is
// the right reply to a close that carried none. A reason longer than 123
// bytes is cut at a rune boundary so that the frame stays valid.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if code == 0 || code == ws.StatusNoStatusRcvd {
		return appendHeader(dst, ws.OpClose, 0)
	}
	if len(reason) > maxCloseReason {
		cut := maxCloseReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	dst = appendHeader(dst, ws.OpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}

// AppendTextHeader appends the header of a final text frame whose payload
// is n bytes long. The caller appends exactly n bytes of UTF-8 after it.
// When the length is not known before encoding, use StartFrame and
// FinishFrame instead.
func AppendTextHeader(dst []byte, n int) []byte {
	if n < 0 {
		panic("wsframe: negative payload length")
	}
	return appendHeader(dst, ws.OpText, n)
}

// StartFrame begins a frame whose payload the caller will append to dst
// without knowing its length in advance, as an encoder does. It reserves
// MaxServerHeaderSize bytes and returns dst with them and the mark that
// FinishFrame needs:
//
//	out, mark := wsframe.StartFrame(out)
//	out = encodeEvent(out, ev)
//	out = wsframe.FinishFrame(out, mark, ws.OpText)
//
// Reserving the largest header means FinishFrame only ever moves the
// payload towards the front, within the same array, so neither call
// allocates once dst has capacity for the frame.
func StartFrame(dst []byte) (out []byte, mark int) {
	var reserve [MaxServerHeaderSize]byte
	return append(dst, reserve[:]...), len(dst)
}

// FinishFrame completes the frame begun at mark: everything appended after
// the reservation becomes the payload of a final frame of type op. The
// header is written at mark and the payload moved up against it, so dst is
// left holding dst[:mark] followed directly by the frame. The move costs
// one copy of the payload; callers that know the length up front avoid it
// with AppendTextHeader or AppendFrame.
func FinishFrame(dst []byte, mark int, op ws.OpCode) []byte {
	start := mark + MaxServerHeaderSize
	if mark < 0 || start > len(dst) {
		panic("wsframe: FinishFrame without a matching StartFrame")
	}
	payload := len(dst) - start
	if payload <= ws.MaxControlFramePayloadSize {
		// Most events, and every control frame: a header of two bytes,
		// written in place as appendHeader would write it.
		dst[mark], dst[mark+1] = 0x80|byte(op), byte(payload)
		copy(dst[mark+2:], dst[start:])
		return dst[:len(dst)-(MaxServerHeaderSize-2)]
	}
	if op.IsControl() {
		panic("wsframe: control frame payload longer than 125 bytes")
	}
	var header [MaxServerHeaderSize]byte
	h := appendHeader(header[:0], op, payload)
	copy(dst[mark+len(h):], dst[start:])
	copy(dst[mark:], h)
	return dst[:len(dst)-(MaxServerHeaderSize-len(h))]
}

// AppendMaskedHeader appends the header of a final client frame of type
// op whose payload is n bytes long, masked with mask. The caller appends
// the payload with the mask applied (ws.Cipher). A server never masks;
// this is for clients, such as duet's load generator.
func AppendMaskedHeader(dst []byte, op ws.OpCode, n int, mask [4]byte) []byte {
	if n < 0 {
		panic("wsframe: negative payload length")
	}
	dst = appendLength(append(dst, 0x80|byte(op)), 0x80, n)
	return append(dst, mask[:]...)
}

// appendHeader appends a final, unmasked frame header.
func appendHeader(dst []byte, op ws.OpCode, n int) []byte {
	return appendLength(append(dst, 0x80|byte(op)), 0, n)
}

// appendLength appends a header's second byte, with maskBit (0x80 or 0),
// and the extended length. The length takes the shortest encoding, as
// RFC 6455 section 5.2 requires.
func appendLength(dst []byte, maskBit byte, n int) []byte {
	switch {
	case n <= ws.MaxControlFramePayloadSize:
		return append(dst, maskBit|byte(n))
	case n <= 0xffff:
		return append(dst, maskBit|126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, maskBit|127), uint64(n))
	}
}
