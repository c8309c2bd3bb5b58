package line

import (
	"bytes"
	"strings"
	"testing"
)

func isPlainByte(c byte) bool { return c >= 0x20 && c <= 0x7e }

// refPlainRun is plainRun a byte at a time.
func refPlainRun(b []byte) int {
	n := 0
	for n < len(b) && isPlainByte(b[n]) {
		n++
	}
	return n
}

// refPlainText is plainText a byte at a time.
func refPlainText(text []byte, peer bool) bool {
	return refPlainRun(text) == len(text) && (!peer || !bytes.ContainsAny(text, "*!"))
}

// TestPlainRun puts every byte value at every position of strings of
// every length up to three words, alone and followed by a second byte
// that is not plain (whose carry or borrow must not move the verdict),
// and checks plainRun and plainText against a byte-by-byte look.
func TestPlainRun(t *testing.T) {
	for n := 0; n <= 24; n++ {
		for pos := 0; pos < max(n, 1); pos++ {
			for c := 0; c < 256; c++ {
				for _, second := range []int{-1, 0x00, 0x1f, 0x7f, 0x80, 0xff, '*', '!'} {
					b := []byte(strings.Repeat("x", n))
					if n > 0 {
						b[pos] = byte(c)
						if second >= 0 && pos+1 < n {
							b[pos+1] = byte(second)
						}
					}
					if got, want := plainRun(b), refPlainRun(b); got != want {
						t.Fatalf("plainRun(%q) = %d, want %d", b, got, want)
					}
					for _, peer := range []bool{false, true} {
						if got, want := plainText(b, peer), refPlainText(b, peer); got != want {
							t.Fatalf("plainText(%q, %v) = %v, want %v", b, peer, got, want)
						}
					}
				}
			}
		}
	}
}

// FuzzPlainRun holds plainRun and plainText to their byte-at-a-time
// forms, on which the framer's, Decode's and the encoder's fast paths
// rest, and checks what appendLines' fast path assumes of a text
// plainText passes: that the slow path, appendFiltered, would copy it
// unchanged.
func FuzzPlainRun(f *testing.F) {
	f.Add([]byte("hello bob, this is a fairly ordinary chat message.\r\n"))
	f.Add([]byte("* not a server line"))
	f.Add([]byte("abcdefg\x7f"))
	f.Add([]byte("caf\xc3\xa9"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := plainRun(b), refPlainRun(b); got != want {
			t.Fatalf("plainRun(%q) = %d, want %d", b, got, want)
		}
		for _, peer := range []bool{false, true} {
			if got, want := plainText(b, peer), refPlainText(b, peer); got != want {
				t.Fatalf("plainText(%q, %v) = %v, want %v", b, peer, got, want)
			}
			if plainText(b, peer) {
				if got := appendFiltered(nil, b, peer); !bytes.Equal(got, b) {
					t.Fatalf("appendFiltered(%q, %v) = %q, but plainText passes it as it is", b, peer, got)
				}
			}
		}
	})
}
