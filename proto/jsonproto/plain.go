package jsonproto

import "math/bits"

// plainBytes8 returns how many of the eight bytes of w, from the lowest,
// may stand as they are inside a JSON string, both as the decoder reads
// it and as the encoder writes it: ASCII from 0x20 up (DEL included)
// other than '"' and '\\'. It returns 8 when all of them may. A control
// character, a quote, a backslash or a byte of a multi-byte sequence
// stops the run; the callers look at that byte on its own.
func plainBytes8(w uint64) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	belowSpace := w - 0x20*ones
	quote := (w ^ '"'*ones) - ones
	backslash := (w ^ '\\'*ones) - ones
	// A byte that is not plain sets its high bit in one of the four
	// terms. The subtractions borrow only out of bytes that are not
	// plain, so the bytes below the first such byte set no high bit, and
	// the lowest bit set marks that first byte exactly. (Bytes above it
	// may be marked wrongly; they are not looked at.)
	return bits.TrailingZeros64((w|belowSpace|quote|backslash)&highs) / 8
}

// load8 reads the eight bytes at s[i:] as a little-endian word. The
// compiler turns the byte-by-byte form into a single load.
func load8[Bytes []byte | string](s Bytes, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
