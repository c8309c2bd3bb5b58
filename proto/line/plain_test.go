package line

import (
	"strings"
	"testing"
)

// TestPlainPrefix puts every byte value at every position of strings of
// every length up to three words, and checks plainPrefix against a
// byte-by-byte count.
func TestPlainPrefix(t *testing.T) {
	isPlain := func(c byte) bool { return c >= 0x20 && c <= 0x7e }
	for n := 0; n <= 24; n++ {
		for pos := 0; pos < max(n, 1); pos++ {
			for c := 0; c < 256; c++ {
				b := []byte(strings.Repeat("x", n))
				if n > 0 {
					b[pos] = byte(c)
				}
				want := 0
				for want < len(b) && isPlain(b[want]) {
					want++
				}
				got := plainPrefix(b)
				if want == len(b) {
					if got != len(b) {
						t.Fatalf("plainPrefix(%q) = %d, want %d (all plain)", b, got, len(b))
					}
					continue
				}
				// Counted in whole words: the word holding the first
				// byte that is not plain is not counted.
				if got != want/8*8 {
					t.Fatalf("plainPrefix(%q) = %d, want %d", b, got, want/8*8)
				}
			}
		}
	}
}
