package loadgen

import "slices"

// A benchmark message's text carries its own sequence number and send
// time, so the receiver can check order and measure latency without any
// shared state with the sender:
//
//	SSSSSSSSSSTTTTTTTTTTTTTTxxxxxxxx...
//
// S is the sequence number (10 lowercase hex digits, 0-based per sender),
// T the send time in nanoseconds since the run's clock started (14 hex
// digits, good for over two years), and the rest is padding up to the
// requested size. Only hex digits and 'x' appear, so the text needs no
// escaping in JSON and never starts with '/', which the line protocol
// would read as a command.

const (
	seqDigits   = 10
	stampDigits = 14

	// MinTextSize is the smallest message text that can carry a sequence
	// number and a send time.
	MinTextSize = seqDigits + stampDigits

	// MaxTextSize bounds -size: far above any chat line, low enough that a
	// window of messages still fits comfortably in memory.
	MaxTextSize = 1 << 20

	paddingByte = 'x'
)

const hexDigits = "0123456789abcdef"

// appendText appends a message text of len(padding)+MinTextSize bytes
// carrying seq and stamp. padding is a run-wide slice of paddingByte, so
// building a message copies bytes and allocates nothing.
func appendText(dst []byte, seq uint64, stamp int64, padding []byte) []byte {
	dst = appendFixedHex(dst, seq, seqDigits)
	dst = appendFixedHex(dst, uint64(stamp), stampDigits)
	return append(dst, padding...)
}

// appendFixedHex appends v as exactly width lowercase hex digits, keeping
// only the low 4*width bits.
func appendFixedHex(dst []byte, v uint64, width int) []byte {
	n := len(dst)
	dst = slices.Grow(dst, width)[:n+width]
	for i := n + width - 1; i >= n; i-- {
		dst[i] = hexDigits[v&0xf]
		v >>= 4
	}
	return dst
}

// parseText reads the sequence number and send time back from a message
// text. ok is false when the text is too short or its header is not hex,
// which means the relay corrupted it.
func parseText(text []byte) (seq uint64, stamp int64, ok bool) {
	if len(text) < MinTextSize {
		return 0, 0, false
	}
	seq, ok = parseFixedHex(text[:seqDigits])
	if !ok {
		return 0, 0, false
	}
	st, ok := parseFixedHex(text[seqDigits:MinTextSize])
	if !ok {
		return 0, 0, false
	}
	return seq, int64(st), true
}

func parseFixedHex(b []byte) (uint64, bool) {
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}
