package e2e

import (
	"strings"
	"testing"
)

// BenchmarkHandshake is one whole exchange: both sides' key pairs,
// commitment, hellos, keys and confirmations.
func BenchmarkHandshake(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		handshake(b, nil, nil)
	}
}

// BenchmarkSealOpen seals a 64-byte text and opens it on the other side.
func BenchmarkSealOpen(b *testing.B) {
	ini, res := handshake(b, nil, nil)
	text := strings.Repeat("x", 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		env, err := ini.Seal(text)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := res.Receive(env); err != nil {
			b.Fatal(err)
		}
	}
}
