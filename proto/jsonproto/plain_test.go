package jsonproto

import (
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// plainByte is notPlain's rule for one byte.
func plainByte(b byte) bool {
	return b >= 0x20 && b < 0x80 && b != '"' && b != '\\'
}

// plainBytes8 returns how many of the eight bytes of w, from the lowest,
// notPlain finds plain: where the first marked byte is, or 8.
func plainBytes8(w uint64) int {
	return bits.TrailingZeros64(notPlain(w)) / 8
}

// refPlainRun is plainRun a byte at a time.
func refPlainRun(b []byte) int {
	n := 0
	for n < len(b) && plainByte(b[n]) {
		n++
	}
	return n
}

// TestPlainRun puts every byte value at every position of strings of
// every length up to three words, alone and before a second byte that
// is not plain, and checks plainRun, on a []byte and on a string,
// against a look at each byte.
func TestPlainRun(t *testing.T) {
	for n := 0; n <= 24; n++ {
		for pos := 0; pos < max(n, 1); pos++ {
			for c := range 256 {
				for _, second := range []int{-1, 0x00, 0x1f, '"', '\\', 0x80, 0xff} {
					b := []byte(strings.Repeat("x", n))
					if n > 0 {
						b[pos] = byte(c)
						if second >= 0 && pos+1 < n {
							b[pos+1] = byte(second)
						}
					}
					want := refPlainRun(b)
					if got := plainRun(b); got != want {
						t.Fatalf("plainRun(%q) = %d, want %d", b, got, want)
					}
					if got := plainRun(string(b)); got != want {
						t.Fatalf("plainRun(string %q) = %d, want %d", b, got, want)
					}
				}
			}
		}
	}
}

// FuzzPlainRun holds plainRun to a look at each byte, on which the
// encoder's copying of a whole string and decodeSay's reading of a text
// rest.
func FuzzPlainRun(f *testing.F) {
	f.Add([]byte("hello bob, this is a fairly ordinary chat message."))
	f.Add([]byte(`a "quoted" word`))
	f.Add([]byte("caf\xc3\xa9 \x7f\x1f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		want := refPlainRun(b)
		if got := plainRun(b); got != want {
			t.Fatalf("plainRun(%q) = %d, want %d", b, got, want)
		}
		if got := plainRun(string(b)); got != want {
			t.Fatalf("plainRun(string %q) = %d, want %d", b, got, want)
		}
	})
}

// TestPlainBytes8 puts every byte value at every position of a plain
// word, and then a second one above it, which must not change where
// notPlain finds the first byte that is not plain.
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
