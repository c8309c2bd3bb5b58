package jsonproto

import (
	"math/rand/v2"
	"testing"
)

// plainByte is plainBytes8's rule for one byte.
func plainByte(b byte) bool {
	return b >= 0x20 && b < 0x80 && b != '"' && b != '\\'
}

// TestPlainBytes8 puts every byte value at every position of a plain
// word, and then a second one above it, which must not change the count.
func TestPlainBytes8(t *testing.T) {
	for b := range 256 {
		for pos := range 8 {
			var w uint64 = 0x6161616161616161 // "aaaaaaaa"
			w &^= 0xff << (8 * pos)
			w |= uint64(b) << (8 * pos)
			want := 8
			if !plainByte(byte(b)) {
				want = pos
			}
			if got := plainBytes8(w); got != want {
				t.Fatalf("byte %#x at %d: got %d, want %d", b, pos, got, want)
			}
			for above := pos + 1; above < 8; above++ {
				for _, c := range []byte{0x00, 0x1f, '"', '\\', 0x80, 0xff} {
					w2 := w&^(0xff<<(8*above)) | uint64(c)<<(8*above)
					if got := plainBytes8(w2); got != min(want, above) {
						t.Fatalf("byte %#x at %d, %#x at %d: got %d, want %d", b, pos, c, above, got, min(want, above))
					}
				}
			}
		}
	}
}

// TestPlainBytes8Random checks words of bytes drawn mostly near the
// edges of the rule, where a borrow between bytes could go wrong.
func TestPlainBytes8Random(t *testing.T) {
	edges := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, '"', 0x23, 0x5b, '\\', 0x5d, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff, 'a'}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		var w uint64
		want := 8
		for pos := range 8 {
			b := edges[r.IntN(len(edges))]
			if r.IntN(4) == 0 {
				b = byte(r.IntN(256))
			}
			w |= uint64(b) << (8 * pos)
			if want == 8 && !plainByte(b) {
				want = pos
			}
		}
		if got := plainBytes8(w); got != want {
			t.Fatalf("plainBytes8(%#016x) = %d, want %d", w, got, want)
		}
	}
}
