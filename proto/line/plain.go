package line

import "encoding/binary"

// plainPrefix returns how many bytes at the start of b are plain
// printable ASCII (0x20 to 0x7e), counted in whole eight-byte words: a
// result equal to len(b) means all of b is plain.
//
// Nearly all chat text is plain, and plain text needs nothing done on
// any path: it holds no line end, no telnet command, no control
// character, and is valid UTF-8. One pass of this replaces several
// searches, each of which would otherwise walk the whole message.
func plainPrefix(b []byte) int {
	n := len(b)
	for len(b) >= 16 {
		if !plainWord(binary.LittleEndian.Uint64(b)) {
			return n - len(b)
		}
		if !plainWord(binary.LittleEndian.Uint64(b[8:])) {
			return n - len(b) + 8
		}
		b = b[16:]
	}
	if len(b) >= 8 {
		if !plainWord(binary.LittleEndian.Uint64(b)) {
			return n - len(b)
		}
		b = b[8:]
	}
	if len(b) == 0 {
		return n
	}
	// The tail, shorter than a word: padded with spaces, which are plain.
	var tail [8]byte
	copy(tail[:], "        ")
	copy(tail[:], b)
	if !plainWord(binary.LittleEndian.Uint64(tail[:])) {
		return n - len(b)
	}
	return n
}

// plainWord reports whether all eight bytes of w are in 0x20..0x7e.
// w+1 sets a byte's high bit if it was 0x7f, w-0x20 if it was below
// 0x20, and w has it if the byte was 0x80 or above. Plain bytes neither
// carry nor borrow, so the lowest byte that is not plain is computed
// exactly and fails the word; what its carry or borrow does to the bytes
// above it cannot change that.
func plainWord(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	return ((w+ones)|(w-0x20*ones)|w)&highs == 0
}
