package wsframe

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// DefaultMaxMessage is the message size limit of a Reader whose MaxMessage
// is zero or negative. It matches the default of limits.max_frame.
const DefaultMaxMessage = 128 << 10

// retainAssembly is the largest assembly buffer a Reader keeps for the next
// fragmented message. Browsers rarely fragment, so holding a message-sized
// buffer on every idle connection would cost far more than the occasional
// reallocation.
const retainAssembly = 4 << 10

// minAssembly is the first allocation for a fragmented message, so that a
// message sent in many small fragments does not regrow on every one.
const minAssembly = 512

// Message is one complete client message or one control frame.
type Message struct {
	Op ws.OpCode
	// Payload is unmasked. For a message that arrived in a single frame, and
	// for every control frame, it aliases the buffer given to Next; for a
	// fragmented message it aliases the Reader's assembly buffer. It is
	// valid until the next call to Next or until that buffer is reused.
	Payload []byte
}

// CloseStatus returns the status code and reason of a close message. A
// close frame without a body reports ws.StatusNoStatusRcvd (1005), as RFC
// 6455 section 7.1.5 says; AppendClose turns that code back into an empty
// body, so echoing the code always produces a valid reply. The reason
// aliases Payload. Next has already checked both, so they are valid.
func (m Message) CloseStatus() (code ws.StatusCode, reason []byte) {
	if len(m.Payload) < 2 {
		return ws.StatusNoStatusRcvd, nil
	}
	return ws.StatusCode(binary.BigEndian.Uint16(m.Payload)), m.Payload[2:]
}

// CloseError is a protocol violation by the client. Code is the status to
// send in the closing frame and Reason a short text for it and for the log;
// AppendClose(dst, e.Code, e.Reason) writes that frame.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	return "websocket: " + e.Reason + " (close " + strconv.Itoa(int(e.Code)) + ")"
}

func protocolError(reason string) *CloseError {
	return &CloseError{Code: ws.StatusProtocolError, Reason: reason}
}

func invalidPayload(reason string) *CloseError {
	return &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: reason}
}

// Reader assembles client messages from a byte stream. The zero value is
// ready to use with DefaultMaxMessage. A Reader belongs to one connection
// and, like the connection's buffers, is used only on its event loop.
type Reader struct {
	// MaxMessage bounds the payload of a whole message, fragmented or not.
	// Zero or negative means DefaultMaxMessage.
	MaxMessage int

	// fragmented is set between the first and the final frame of a
	// fragmented message; op is that message's opcode.
	fragmented bool
	op         ws.OpCode
	// fragments counts the frames of the fragmented message so far
	// (MaxFragments), empty those of them that carried nothing
	// (MaxEmptyFragments); they fit where the two fields above leave
	// room.
	fragments uint16
	empty     uint8
	// assembly holds the payload of the fragmented message so far. It is
	// never longer, nor allocated larger, than the message limit.
	assembly []byte
	// validated is how much of assembly is known to be complete, valid
	// UTF-8, so a text message is checked once and fails on the fragment
	// that breaks it rather than at its end.
	validated int
	// err is the violation that ended the stream; Next keeps returning it.
	err error
}

// MaxFragments bounds the frames of one fragmented message. Browsers
// send a message in one frame, and libraries that fragment do so in
// pieces of kilobytes; without a bound, a client could send empty
// continuation frames for ever, each read and checked at no cost to it,
// as the message they never finish never grows.
const MaxFragments = 1024

// MaxEmptyFragments bounds the frames of one fragmented message that
// carry nothing but its final one: legal, and of no use, they would
// let a client send MaxFragments frames for every message it says.
const MaxEmptyFragments = 16

// InMessage reports whether a fragmented message has begun and not yet
// ended: the frames read since its first belong to it, or are control
// frames read between its fragments.
func (r *Reader) InMessage() bool { return r.fragmented }

func (r *Reader) limit() int {
	if r.MaxMessage <= 0 {
		return DefaultMaxMessage
	}
	return r.MaxMessage
}

// Next consumes at most one frame from the front of buf.
//
// n == 0 with a nil error means buf does not yet hold a whole frame; buf is
// then left untouched, so the caller may call again with the same bytes and
// more behind them. Otherwise the first n bytes of buf are consumed, and
// the payload inside them has been unmasked in place.
//
// A frame that completes a data message, and every control frame, returns
// ok == true and the message. A control frame may arrive between the
// fragments of a data message and is returned on its own. A non-final
// fragment returns ok == false with n > 0; the caller discards n bytes and
// calls again.
//
// Every error is a *CloseError naming the status to close with. After an
// error the stream cannot be resynchronised: the Reader returns the same
// error from then on, and the caller should send the close frame and close
// the connection. The failing frame's payload may have been unmasked.
//
// The message limit is checked against the length in the frame header,
// before any payload is waited for, so the caller's inbound buffer never
// needs to grow beyond one frame header plus MaxMessage bytes.
func (r *Reader) Next(buf []byte) (msg Message, ok bool, n int, err error) {
	if r.err != nil {
		return Message{}, false, 0, r.err
	}
	msg, ok, n, err = r.next(buf)
	if err != nil {
		r.err = err
		return Message{}, false, 0, err
	}
	return msg, ok, n, nil
}

// next reads the frame at the front of buf for Next. The frame nearly
// every message comes in, a whole text masked as a client must mask it,
// outside a fragmented message, with a length of 16 bits at most, is read
// here from its first bytes, which say all that parsing and checking its
// header would (FuzzReaderShortWay holds the two to the same answers).
// Any other frame, or one not all in buf, is nextFrame's.
func (r *Reader) next(buf []byte) (Message, bool, int, error) {
	if len(buf) >= 6 && buf[0] == 0x80|byte(ws.OpText) && buf[1] >= 0x80 && buf[1] != 0x80|127 && !r.fragmented {
		size, n := 6, int(buf[1]&0x7f)
		if n == 126 {
			size = 8
			if len(buf) >= size {
				n = int(binary.BigEndian.Uint16(buf[2:4]))
			}
		}
		if end := size + n; end <= len(buf) && n <= r.limit() {
			payload := buf[size:end]
			if !unmask(payload, [4]byte(buf[size-4:size])) && !utf8.Valid(payload) {
				return Message{}, false, 0, invalidPayload("text message is not valid UTF-8")
			}
			return Message{Op: ws.OpText, Payload: payload}, true, end, nil
		}
	}
	return r.nextFrame(buf)
}

// nextFrame reads any frame at the front of buf for Next.
func (r *Reader) nextFrame(buf []byte) (Message, bool, int, error) {
	h, size, err := ParseHeader(buf)
	if err != nil || size == 0 {
		return Message{}, false, 0, err
	}

	state := ws.StateServerSide
	if r.fragmented {
		state = state.Set(ws.StateFragmented)
	}
	if err := ws.CheckHeader(h, state); err != nil {
		return Message{}, false, 0, protocolError(err.Error())
	}

	// Control frames are at most 125 bytes by CheckHeader and are never
	// buffered, so only data frames count against the message limit.
	if h.OpCode.IsData() && h.Length > int64(r.limit()-len(r.assembly)) {
		return Message{}, false, 0, &CloseError{
			Code:   ws.StatusMessageTooBig,
			Reason: "message exceeds " + strconv.Itoa(r.limit()) + " bytes",
		}
	}
	if int64(len(buf)-size) < h.Length {
		return Message{}, false, 0, nil
	}
	end := size + int(h.Length)
	payload := buf[size:end]
	ascii := unmask(payload, h.Mask)

	switch {
	case h.OpCode.IsControl():
		if h.OpCode == ws.OpClose {
			if err := checkClosePayload(payload); err != nil {
				return Message{}, false, 0, err
			}
		}
		return Message{Op: h.OpCode, Payload: payload}, true, end, nil

	case h.OpCode != ws.OpContinuation && h.Fin:
		// The common case: a whole message in one frame, returned in place.
		// ASCII, as unmasking found nearly every chat message to be, is
		// UTF-8 without a closer look.
		if h.OpCode == ws.OpText && !ascii && !utf8.Valid(payload) {
			return Message{}, false, 0, invalidPayload("text message is not valid UTF-8")
		}
		return Message{Op: h.OpCode, Payload: payload}, true, end, nil

	case h.OpCode != ws.OpContinuation:
		r.fragmented = true
		r.op = h.OpCode
		r.assembly = r.assembly[:0]
		r.validated = 0
		r.fragments, r.empty = 0, 0
	}
	if r.fragments++; r.fragments > MaxFragments {
		return Message{}, false, 0, &CloseError{
			Code:   ws.StatusPolicyViolation,
			Reason: "message in more than " + strconv.Itoa(MaxFragments) + " fragments",
		}
	}
	if len(payload) == 0 && !h.Fin {
		if r.empty++; r.empty > MaxEmptyFragments {
			return Message{}, false, 0, &CloseError{
				Code:   ws.StatusPolicyViolation,
				Reason: "message in more than " + strconv.Itoa(MaxEmptyFragments) + " empty fragments",
			}
		}
	}

	r.appendFragment(payload)
	switch {
	case r.op != ws.OpText:
	case ascii && r.validated == len(r.assembly)-len(payload):
		// What came before ended on a whole character, and this
		// fragment is ASCII: the text is still UTF-8 to its end.
		r.validated = len(r.assembly)
	default:
		if err := r.validateText(h.Fin); err != nil {
			return Message{}, false, 0, err
		}
	}
	if !h.Fin {
		return Message{}, false, end, nil
	}
	msg := Message{Op: r.op, Payload: r.assembly}
	r.fragmented = false
	if cap(r.assembly) > retainAssembly {
		// msg keeps the large buffer alive for as long as the caller needs it.
		r.assembly = nil
	} else {
		r.assembly = r.assembly[:0]
	}
	r.validated = 0
	return msg, true, end, nil
}

// unmask applies a client frame's mask to its payload in place (RFC 6455
// section 5.3), and reports whether the payload it leaves is all ASCII.
// It takes eight bytes at a time, with the mask repeated across the word:
// a payload of a chat message's size costs about half of what ws.Cipher
// does, whose setup pays off only on longer ones, and the check for a
// byte with its high bit set comes nearly free with it, where utf8.Valid
// would take another pass.
func unmask(p []byte, mask [4]byte) (ascii bool) {
	m32 := binary.LittleEndian.Uint32(mask[:])
	m := uint64(m32) | uint64(m32)<<32
	var seen uint64 // every unmasked word ORed together
	i := 0
	for ; i <= len(p)-8; i += 8 {
		w := binary.LittleEndian.Uint64(p[i:i+8:i+8]) ^ m
		binary.LittleEndian.PutUint64(p[i:i+8:i+8], w)
		seen |= w
	}
	// Each step leaves i a multiple of four, where the mask starts over.
	if i <= len(p)-4 {
		w := binary.LittleEndian.Uint32(p[i:i+4:i+4]) ^ m32
		binary.LittleEndian.PutUint32(p[i:i+4:i+4], w)
		seen |= uint64(w)
		i += 4
	}
	for ; i < len(p); i++ {
		p[i] ^= mask[i&3]
		seen |= uint64(p[i])
	}
	return seen&0x8080808080808080 == 0
}

// appendFragment adds p to the assembly buffer. Next has checked that the
// result fits the message limit, and the buffer grows no further than that
// limit, so a peer cannot make a Reader hold more memory than it allows.
func (r *Reader) appendFragment(p []byte) {
	need := len(r.assembly) + len(p)
	if need > cap(r.assembly) {
		size := min(max(need, 2*cap(r.assembly), minAssembly), r.limit())
		grown := make([]byte, len(r.assembly), size)
		copy(grown, r.assembly)
		r.assembly = grown
	}
	r.assembly = append(r.assembly, p...)
}

// validateText checks the assembled text that has not been checked yet. A
// rune may be split between fragments, so unless the message is complete
// an unfinished rune at the end is left for the next fragment to finish.
func (r *Reader) validateText(final bool) error {
	rest := r.assembly[r.validated:]
	complete := len(rest)
	if !final {
		complete = completeRunes(rest)
	}
	if !utf8.Valid(rest[:complete]) {
		return invalidPayload("text message is not valid UTF-8")
	}
	r.validated += complete
	return nil
}

// completeRunes returns the length of p without a trailing rune that has
// started but not finished. Bytes that can never become a valid rune count
// as complete, so that utf8.Valid rejects them at once.
func completeRunes(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if utf8.FullRune(p[i:]) {
				return len(p)
			}
			return i
		}
	}
	return len(p)
}

// checkClosePayload checks a close frame's body: empty, or a status code
// that may appear on the wire followed by a UTF-8 reason.
func checkClosePayload(p []byte) error {
	switch {
	case len(p) == 0:
		return nil
	case len(p) == 1:
		return protocolError("close frame body of one byte")
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return protocolError("invalid close code " + strconv.Itoa(int(code)))
	}
	if !utf8.Valid(p[2:]) {
		return invalidPayload("close reason is not valid UTF-8")
	}
	return nil
}

// validCloseCode reports whether a peer may send code in a close frame.
func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 5000:
		// RFC 6455 section 7.4.2 defines no codes past 4999, but
		// ws.CheckCloseFrameData lets them through.
		return false
	case code >= 1012 && code <= 1014:
		// Service Restart, Try Again Later and Bad Gateway were registered
		// with IANA after RFC 6455, and gobwas does not know them yet.
		return true
	}
	// The reason is checked separately: its failure has its own status.
	return ws.CheckCloseFrameData(code, "") == nil
}

// HeaderLen returns the length of the frame header at the front of buf,
// known from its first two bytes, or 0 while buf holds fewer.
func HeaderLen(buf []byte) int {
	if len(buf) < ws.MinHeaderSize {
		return 0
	}
	size := 2
	switch buf[1] & 0x7f {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if buf[1]&0x80 != 0 {
		size += 4
	}
	return size
}

// ParseHeader decodes the frame header at the front of buf, a client's
// or a server's, and returns it with its size. It returns size 0 and no
// error while buf does not hold the whole header yet. The one header it
// refuses, whatever the side, is a 64-bit length with its most
// significant bit set (a *CloseError); the rules of a side are
// ws.CheckHeader's.
func ParseHeader(buf []byte) (h ws.Header, size int, err error) {
	size = HeaderLen(buf)
	if size == 0 || len(buf) < size {
		return h, 0, nil
	}
	b0, b1 := buf[0], buf[1]
	h.Fin = b0&0x80 != 0
	h.Rsv = (b0 & 0x70) >> 4
	h.OpCode = ws.OpCode(b0 & 0x0f)
	h.Masked = b1&0x80 != 0
	switch length := b1 & 0x7f; length {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(buf[2:4]))
	case 127:
		long := binary.BigEndian.Uint64(buf[2:10])
		if long>>63 != 0 {
			return h, 0, protocolError("frame length has its most significant bit set")
		}
		h.Length = int64(long)
	default:
		h.Length = int64(length)
	}
	if h.Masked {
		copy(h.Mask[:], buf[size-4:size])
	}
	return h, size, nil
}
