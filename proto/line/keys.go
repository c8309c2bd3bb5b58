package line

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// Keys a terminal user presses that reach the server as bytes. Debian's
// nc and telnet leave a line's editing to the terminal (the kernel's
// canonical mode): it acts on its own erase (DEL, ^?), kill (Ctrl-U) and
// word erase (Ctrl-W) keys, and on Ctrl-C, Ctrl-\ and Ctrl-Z (telnet
// sends commands for those, telnet.go). What else is typed is sent as
// it is, and a partner's terminal could only show it as U+FFFD:
//
//   - Ctrl-D on an empty line is the terminal's end of input. nc stops
//     reading the keyboard; telnet sends an EOT byte for it. At the
//     start of a line an EOT is the user saying they are done, and is
//     a line of its own, read at once: Decode makes it a quit.
//     Anywhere else it stands for nothing the user sees (the terminal
//     shows no trace of it: telnet sends one for a second Ctrl-D
//     pressed after part of a line was sent by the first), and is
//     dropped.
//   - Backspace is ^H on some terminals and ^? (DEL) on others; the
//     terminal acts on only one of them, its erase character, and the
//     other arrives. Either erases the character before it, as the
//     user meant: one UTF-8 character, as a terminal in UTF-8 mode
//     erases.
//   - Any other control character (an arrow or another key that sends
//     an escape sequence, Escape itself, Ctrl-L, ...) refuses the
//     line with control_character (Decode): it is no part of a
//     message, and an arrow stands for an edit the server cannot know.
const (
	keyEOT = 0x04 // Ctrl-D: end of transmission
	keyBS  = 0x08 // Ctrl-H: backspace
	keyDEL = 0x7f // the other backspace
)

// isEOT reports whether line is an EOT alone: Ctrl-D on an empty line,
// as Next returns it.
func isEOT(line []byte) bool { return len(line) == 1 && line[0] == keyEOT }

// hasEditKey reports whether b holds a byte clean acts on as a key: an
// EOT, or either backspace.
func hasEditKey(b []byte) bool {
	return bytes.IndexByte(b, keyEOT) >= 0 || bytes.IndexByte(b, keyBS) >= 0 || bytes.IndexByte(b, keyDEL) >= 0
}

// erase drops the last UTF-8 character of b (one byte, if b does not end
// in a whole one) and returns what is left.
func erase(b []byte) []byte {
	_, size := utf8.DecodeLastRune(b)
	return b[:len(b)-size]
}

// hasControl reports whether b, valid UTF-8, holds a control character
// (Unicode category Cc) other than tab: a C0 control, DEL, or a C1
// control U+0080 to U+009F. It looks at eight bytes at a time, as
// plainRun does: every line that is not plain ASCII passes here.
func hasControl(b []byte) bool {
	i := 0
	for ; i <= len(b)-8; i += 8 {
		if controlBytes(binary.LittleEndian.Uint64(b[i:i+8:i+8])) != 0 && hasC0(b[i:i+8]) {
			return true
		}
	}
	if hasC0(b[i:]) {
		return true
	}
	// In valid UTF-8, 0xc2 is followed by 0x80 to 0xbf; below 0xa0 it is
	// a C1 control. Text with 0xc2 in it at all is rare (©, «, a no-break
	// space).
	for {
		j := bytes.IndexByte(b, 0xc2)
		if j < 0 || j+1 >= len(b) {
			return false
		}
		if b[j+1] < 0xa0 {
			return true
		}
		b = b[j+2:]
	}
}

// hasC0 reports whether b holds a C0 control other than tab, or DEL.
func hasC0(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == keyDEL {
			return true
		}
	}
	return false
}

// controlBytes returns w with the high bit of some byte set if a byte of
// w is below 0x20 or is DEL, and zero if none is. Which bytes are marked
// is not exact (a borrow may mark the byte above one that is), whether
// any is, is.
func controlBytes(w uint64) uint64 {
	del := w ^ 0x7f*ones
	return ((w-0x20*ones)&^w | (del-ones)&^del) & highs
}
