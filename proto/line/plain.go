package line

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// Nearly all chat text is plain printable ASCII (0x20 to 0x7e), and plain
// text needs nothing done on any path: it holds no line end, no telnet
// command, no control character, and is valid UTF-8. One pass that finds
// the first byte that is not plain replaces several searches, each of
// which would otherwise walk the whole message. The passes here take
// eight bytes at a time, and end on a word that overlaps the one before
// it rather than on a loop over the last few bytes.

const ones, highs = 0x0101010101010101, 0x8080808080808080

// plainRun returns the index of the first byte of b that is not plain
// printable ASCII, or len(b) if all of b is plain.
func plainRun(b []byte) int {
	i := 0
	// Slicing b[i:i+8:i+8] under this bound lets the compiler drop the
	// bounds checks, which would nearly double the loop.
	for ; i <= len(b)-8; i += 8 {
		if m := notPlain(binary.LittleEndian.Uint64(b[i : i+8 : i+8])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	switch {
	case i == len(b):
		return i
	case len(b) >= 8:
		// The last eight bytes: those that overlap the word before are
		// plain, so the first byte marked is the first not plain.
		if m := notPlain(binary.LittleEndian.Uint64(b[len(b)-8:])); m != 0 {
			return len(b) - 8 + bits.TrailingZeros64(m)/8
		}
		return len(b)
	}
	for i < len(b) && b[i] >= 0x20 && b[i] < 0x7f {
		i++
	}
	return i
}

// plainText reports whether all of text is plain printable ASCII and,
// with peer set, holds no '*' or '!' either: text that appendLines may
// copy as it is, since no part of it can read as a server line
// (appendFiltered). Both are checked in one pass of whole words, which
// costs less than plainRun followed by a search for each character.
func plainText(text []byte, peer bool) bool {
	n := len(text)
	if !peer || n < 8 {
		return plainRun(text) == n && (!peer || bytes.IndexByte(text, '*') < 0 && bytes.IndexByte(text, '!') < 0)
	}
	i := 0
	for ; i < n-8; i += 8 {
		if w := binary.LittleEndian.Uint64(text[i : i+8 : i+8]); notPlain(w)|starOrBang(w) != 0 {
			return false
		}
	}
	// The last eight bytes, which may overlap the word before.
	w := binary.LittleEndian.Uint64(text[n-8:])
	return notPlain(w)|starOrBang(w) == 0
}

// notPlain returns w with the high bit of a byte set where that byte is
// not in 0x20..0x7e, and all other bits clear, exactly for the lowest
// such byte: w+1 sets a byte's high bit if it was 0x7f, w-0x20 if it was
// below 0x20, and w has it if the byte was 0x80 or above. Plain bytes
// neither carry nor borrow, so the lowest byte that is not plain is
// computed exactly; what its carry or borrow does to the bytes above it
// may mark them wrongly, which changes neither which byte is marked
// lowest nor whether any is.
func notPlain(w uint64) uint64 {
	return ((w + ones) | (w - 0x20*ones) | w) & highs
}

// plainWord reports whether all eight bytes of w are in 0x20..0x7e.
func plainWord(w uint64) bool {
	return notPlain(w) == 0
}

// starOrBang is hasStarOrBang for a word none of whose bytes has its high
// bit set, in fewer operations: a byte v below 0x80 is zero exactly when
// v+0x7f leaves its high bit clear, and no byte carries into the next. It
// marks a byte of w that is '*' or '!', and may mark bytes wrongly only
// in a word that notPlain marks too.
func starOrBang(w uint64) uint64 {
	const low7 = 0x7f7f7f7f7f7f7f7f
	return ^(((w ^ '*'*ones) + low7) & ((w ^ '!'*ones) + low7)) & highs
}
