package line

import (
	"unicode/utf8"

	"duet/proto"
)

// NotUTF8 is the error a client on the line port is told for line, which
// is not UTF-8; binary is whether the client sends in telnet's BINARY
// (Framer.Binary). Outside BINARY, a line that telnet itself broke
// (TelnetMangled) is told to press Ctrl-C and type it again, which asks
// telnet for BINARY; any other is the terminal's doing, which Ctrl-C
// cannot mend, and is told so. Both have the code invalid_utf8.
func NotUTF8(line []byte, binary bool) *proto.Error {
	if !binary && TelnetMangled(line) {
		return proto.ErrInvalidUTF8Telnet
	}
	return proto.ErrInvalidUTF8Terminal
}

// Telnet's marks on UTF-8 (docs/PROTOCOL.md, "Letters"): outside BINARY,
// inetutils telnet drops a byte 0x85, and a byte 0x9d opens its command
// prompt, which takes the rest of the line, so that what came before it
// goes out at the start of the user's next line. Its other changes
// (0x83, 0x8f, 0x9a, 0x9c) the framer undoes (restoredByte).
const (
	telnetDropped = 0x85
	telnetCut     = 0x9d
)

// TelnetMangled reports whether line, which is not UTF-8, is UTF-8 text
// as inetutils telnet sends it outside BINARY: every place where it is
// not UTF-8 is a character that lost a byte 0x85 (one byte short, and
// whole with 0x85 put back among its continuation bytes), or that was
// cut where a 0x9d came next (its bytes so far a valid start, and 0x9d a
// valid next byte). It is false for a line that is UTF-8.
//
// A character short by more than one byte, which only a cut leaves
// (Korean 은, EC 9D 80, leaves EC), counts only in a line that holds
// some other UTF-8 beyond ASCII, as a UTF-8 terminal's lines do: alone,
// such a byte is what a terminal in Latin-1 or another single-byte
// encoding sends for a letter (caf\xe9, "café"), which telnet passes as
// it is, and which a Ctrl-C would not mend. A Latin-1 capital (Â to ß,
// C2 to DF) before a byte that continues no character is one byte
// short of a character, as Cyrillic х (D1 85) is without its 0x85: the
// bytes cannot say which it was, and the line counts as telnet's. A
// byte that starts no character (0xff, which telnet sends doubled as
// IAC IAC; 0xc0, 0xc1, 0xf5 and up) or one that continues none is never
// telnet's.
func TelnetMangled(line []byte) bool {
	mangled, wide, cutLong := false, false, false
	for i := 0; i < len(line); {
		if line[i] < utf8.RuneSelf {
			i++
			continue
		}
		if r, size := utf8.DecodeRune(line[i:]); r != utf8.RuneError || size > 1 {
			wide = true
			i += size
			continue
		}
		n, short := shortRune(line[i:])
		if n == 0 {
			return false
		}
		mangled = true
		cutLong = cutLong || short > 1
		i += n
	}
	return mangled && (wide || !cutLong)
}

// shortRune looks at b, which starts with bytes that are not a UTF-8
// character, for a character telnet broke: it returns how many bytes of
// it b holds, n, and by how many bytes it is short, or n 0 if b holds
// no such character.
func shortRune(b []byte) (n, short int) {
	size := runeSize(b[0])
	if size == 0 {
		return 0, 0
	}
	var c [utf8.UTFMax]byte
	// 0x85 dropped: all the character's other bytes are there, and it
	// is whole with 0x85 put back before one of its continuation bytes,
	// or after them. Its bytes after the gap may not be a valid start
	// without it (Hangul 녠, ed 85 a0, leaves ed a0).
	if n = size - 1; n <= len(b) {
		for at := 1; at <= n; at++ {
			copy(c[:at], b[:at])
			c[at] = telnetDropped
			copy(c[at+1:size], b[at:n])
			if utf8.Valid(c[:size]) {
				return n, 1
			}
		}
	}
	// Cut at 0x9d: the bytes before it are a valid start, and 0x9d
	// would have continued it; the rest of the character was lost. (A
	// whole character would have decoded: n < size.)
	n = 1
	for n < size && n < len(b) && validStart(b[:n+1]) {
		n++
	}
	copy(c[:], b[:n])
	c[n] = telnetCut
	if validStart(c[:n+1]) {
		return n, size - n
	}
	return 0, 0
}

// runeSize is the length of the UTF-8 character that lead byte c starts,
// or 0 if c starts none.
func runeSize(c byte) int {
	switch {
	case c >= 0xc2 && c <= 0xdf:
		return 2
	case c >= 0xe0 && c <= 0xef:
		return 3
	case c >= 0xf0 && c <= 0xf4:
		return 4
	}
	return 0
}

// validStart reports whether b, a lead byte and fewer continuation bytes
// than it announces, or all of them, can begin a UTF-8 character: each
// continuation byte in its range, the second in the narrower one some
// lead bytes allow (no overlong form, no surrogate, nothing past
// U+10FFFF).
func validStart(b []byte) bool {
	if len(b) > runeSize(b[0]) {
		return false
	}
	for i, c := range b[1:] {
		lo, hi := byte(0x80), byte(0xbf)
		if i == 0 {
			switch b[0] {
			case 0xe0:
				lo = 0xa0
			case 0xed:
				hi = 0x9f
			case 0xf0:
				lo = 0x90
			case 0xf4:
				hi = 0x8f
			}
		}
		if c < lo || c > hi {
			return false
		}
	}
	return true
}
