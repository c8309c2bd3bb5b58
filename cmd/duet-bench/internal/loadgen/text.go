package loadgen

import (
	"encoding/binary"
	"math/bits"
	"slices"
)

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
//
// The 24 header digits are written as three words of eight: seq's top
// 32 bits; seq's low 8 bits and stamp's top 24; stamp's low 32. The
// sender writes one text per message, so this runs eight digits at a
// time rather than one.
func appendText(dst []byte, seq uint64, stamp int64, padding []byte) []byte {
	st := uint64(stamp)
	n := len(dst)
	dst = slices.Grow(dst, MinTextSize+len(padding))[:n+MinTextSize]
	binary.LittleEndian.PutUint64(dst[n:], hex8(uint32(seq>>8)))
	binary.LittleEndian.PutUint64(dst[n+8:], hex8(uint32(seq)<<24|uint32(st>>32)&0xffffff))
	binary.LittleEndian.PutUint64(dst[n+16:], hex8(uint32(st)))
	return append(dst, padding...)
}

// hex8 returns v as eight lowercase hex digits, most significant first,
// packed for a little-endian store.
func hex8(v uint32) uint64 {
	const ones = 0x0101010101010101
	// Spread the nibbles out to one a byte, least significant in byte 0.
	x := uint64(v)
	x = (x | x<<16) & 0x0000ffff0000ffff
	x = (x | x<<8) & 0x00ff00ff00ff00ff
	x = (x | x<<4) & 0x0f0f0f0f0f0f0f0f
	x = bits.ReverseBytes64(x)
	// A nibble of 10 or more gains bit 4 when 6 is added; those become
	// letters. No byte carries into the next: 15+6 and '0'+15+39 fit.
	letters := (x + 6*ones) >> 4 & ones
	return x + '0'*ones + letters*('a'-'0'-10)
}

// parseText reads the sequence number and send time back from a message
// text. ok is false when the text is too short or its header is not
// lowercase hex, which means the relay corrupted it. Like appendText it
// takes the header eight digits at a time, as three words.
func parseText(text []byte) (seq uint64, stamp int64, ok bool) {
	if len(text) < MinTextSize {
		return 0, 0, false
	}
	v0, ok0 := unhex8(binary.LittleEndian.Uint64(text))
	v1, ok1 := unhex8(binary.LittleEndian.Uint64(text[8:]))
	v2, ok2 := unhex8(binary.LittleEndian.Uint64(text[16:]))
	if !ok0 || !ok1 || !ok2 {
		return 0, 0, false
	}
	seq = uint64(v0)<<8 | uint64(v1>>24)
	stamp = int64(uint64(v1&0xffffff)<<32 | uint64(v2))
	return seq, stamp, true
}

// unhex8 reads the eight bytes of w, as loaded little-endian, as eight
// lowercase hex digits, most significant first: the inverse of hex8. ok
// is false unless every byte is one of 0-9 a-f.
func unhex8(w uint64) (v uint32, ok bool) {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	digits := byteBetween(w, '0'-1, '9'+1)
	letters := byteBetween(w, 'a'-1, 'f'+1)
	ok = w&highs == 0 && digits|letters == highs
	// A digit's low nibble is its value; a letter's is its value less 9.
	x := w&(0x0f*ones) + (letters>>7)*9
	// Gather the nibbles, least significant digit (the last byte) first.
	x = bits.ReverseBytes64(x)
	x = (x | x>>4) & 0x00ff00ff00ff00ff
	x = (x | x>>8) & 0x0000ffff0000ffff
	x = (x | x>>16) & 0xffffffff
	return uint32(x), ok
}

// byteBetween sets the high bit of each byte b of w with lo < b < hi and
// clears the others. It is exact for bytes below 0x80, whose high bits are
// free to carry the answer; callers reject the rest on their own.
func byteBetween(w uint64, lo, hi byte) uint64 {
	const ones, highs, lows = 0x0101010101010101, 0x8080808080808080, 0x7f7f7f7f7f7f7f7f
	low7 := w & lows
	below := (127+uint64(hi))*ones - low7 // high bit set where b < hi
	above := low7 + (127-uint64(lo))*ones // high bit set where b > lo
	return below & above &^ w & highs
}
