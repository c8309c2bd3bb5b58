package loadgen

import (
	"bytes"
	"testing"
)

func padding(size int) []byte { return bytes.Repeat([]byte{paddingByte}, size-MinTextSize) }

func TestTextRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		seq   uint64
		stamp int64
		size  int
	}{
		{"zero", 0, 0, MinTextSize},
		{"typical", 12345, 987654321, 64},
		{"largest seq", 1<<40 - 1, 1, 64},
		{"largest stamp", 7, 1<<56 - 1, 100},
		{"large text", 99, 123, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := appendText(nil, tt.seq, tt.stamp, padding(tt.size))
			if len(text) != tt.size {
				t.Fatalf("len = %d, want %d", len(text), tt.size)
			}
			seq, stamp, ok := parseText(text)
			if !ok || seq != tt.seq || stamp != tt.stamp {
				t.Fatalf("parseText(%q) = %d, %d, %v; want %d, %d, true", text, seq, stamp, ok, tt.seq, tt.stamp)
			}
		})
	}
}

func TestTextLayout(t *testing.T) {
	got := string(appendText([]byte("> "), 0x1f, 0xabc, padding(30)))
	want := "> " + "000000001f" + "00000000000abc" + "xxxxxx"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseTextRejects(t *testing.T) {
	for _, text := range []string{
		"",
		"000000001f00000000000ab",   // one byte short
		"000000001G00000000000abc",  // not hex
		"000000001F00000000000abc",  // upper case is not what the sender writes
		"hello 12",                  // a bare hello line
		" 00000001f00000000000abcx", // leading space
	} {
		if _, _, ok := parseText([]byte(text)); ok {
			t.Errorf("parseText(%q) accepted", text)
		}
	}
}

func TestAppendMessageDoesNotAllocate(t *testing.T) {
	pad := padding(64)
	for name, c := range map[string]codec{"line": lineCodec{}, "bare": bareCodec{}, "ws": newWSCodec(1)} {
		buf := make([]byte, 0, 4096)
		allocs := testing.AllocsPerRun(100, func() {
			buf = buf[:0]
			for i := range 16 {
				buf = c.appendMessage(buf, uint64(i), 12345, pad)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per batch, want 0", name, allocs)
		}
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	pad := padding(64)
	for name, c := range map[string]codec{"line": lineCodec{}, "ws": newWSCodec(1)} {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				buf = c.appendMessage(buf[:0], uint64(i), 12345, pad)
			}
		})
	}
}

func BenchmarkParseText(b *testing.B) {
	text := appendText(nil, 123456, 987654321, padding(64))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := parseText(text); !ok {
			b.Fatal("not parsed")
		}
	}
}

func FuzzParseText(f *testing.F) {
	f.Add(uint64(0), int64(0), 24, []byte("000000000000000000000000"))
	f.Add(uint64(1<<40-1), int64(1<<56-1), 64, []byte("zz"))
	f.Fuzz(func(t *testing.T, seq uint64, stamp int64, size int, junk []byte) {
		// Whatever the bytes, parsing must not panic.
		parseText(junk)
		seq &= 1<<40 - 1
		stamp &= 1<<56 - 1
		size = MinTextSize + (size&0xffff)%1024
		text := appendText(nil, seq, stamp, padding(size))
		gotSeq, gotStamp, ok := parseText(text)
		if !ok || gotSeq != seq || gotStamp != stamp || len(text) != size {
			t.Fatalf("round trip of %d, %d (size %d): %q -> %d, %d, %v", seq, stamp, size, text, gotSeq, gotStamp, ok)
		}
	})
}
