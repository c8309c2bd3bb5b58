package jsonproto

import "math/bits"

// notPlain returns w with the high bit set in each of its bytes that may
// not stand as it is inside a JSON string, exactly for the lowest such
// byte, and all other bits clear. A plain byte, which may, is ASCII from
// 0x20 up (DEL included) other than '"' and '\\', both as the decoder
// reads strings and as the encoder writes them. A control character, a
// quote, a backslash or a byte of a multi-byte sequence needs a look of
// its own.
func notPlain(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	belowSpace := w - 0x20*ones
	quote := (w ^ '"'*ones) - ones
	backslash := (w ^ '\\'*ones) - ones
	// A byte that is not plain sets its high bit in one of the four
	// terms. The subtractions borrow only out of bytes that are not
	// plain, so the bytes below the first such byte set no high bit, and
	// the lowest bit set marks that first byte exactly. (Bytes above it
	// may be marked wrongly; they are not looked at.)
	return (w | belowSpace | quote | backslash) & highs
}

// plainRun returns the index of the first byte of s that is not plain
// (notPlain), or len(s) if there is none. It takes eight bytes at a
// time, and ends on a word that overlaps the one before it rather than
// on a loop over the last few bytes.
func plainRun[Bytes []byte | string](s Bytes) int {
	i := 0
	for ; i <= len(s)-8; i += 8 {
		if m := notPlain(load8(s, i)); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	switch {
	case i == len(s):
		return i
	case len(s) >= 8:
		// The bytes that overlap the word before are plain, so the first
		// byte marked is the first not plain.
		if m := notPlain(load8(s, len(s)-8)); m != 0 {
			return len(s) - 8 + bits.TrailingZeros64(m)/8
		}
		return len(s)
	}
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\' {
		i++
	}
	return i
}

// load8 reads the eight bytes at s[i:] as a little-endian word. The
// compiler turns the byte-by-byte form into a single load.
func load8[Bytes []byte | string](s Bytes, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
