package loadgen

import (
	"bytes"
	"encoding/binary"
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

// plainHex appends v as exactly width lowercase hex digits, one at a
// time: the reference appendText's eight-at-a-time digits are held to.
func plainHex(dst []byte, v uint64, width int) []byte {
	for i := width - 1; i >= 0; i-- {
		dst = append(dst, hexDigits[v>>(4*i)&0xf])
	}
	return dst
}

func TestTextDigits(t *testing.T) {
	values := []uint64{0, 1, 9, 10, 15, 16, 0x99, 0xaa, 0xff, 0x0123456789abcdef, 0xfedcba9876543210, 1<<40 - 1, 1<<56 - 1, 1<<64 - 1}
	for i := range 64 {
		values = append(values, 1<<i, 1<<i-1, 0xa<<(i&^3))
	}
	for _, seq := range values {
		for _, stamp := range values {
			got := appendText(nil, seq, int64(stamp), nil)
			want := plainHex(plainHex(nil, seq, seqDigits), stamp, stampDigits)
			if !bytes.Equal(got, want) {
				t.Fatalf("appendText(%#x, %#x) = %q, want %q", seq, stamp, got, want)
			}
		}
	}
}

// TestUnhex8EveryByte puts every byte value in every position of a word
// of digits, next to digits and next to bytes with the high bit set, and
// holds unhex8 to a byte-at-a-time reading.
func TestUnhex8EveryByte(t *testing.T) {
	for _, word := range []string{"0123abcd", "9fa0f9af", "\xff\x80\xaa00000", "ffffffff"} {
		for pos := range 8 {
			for c := range 256 {
				b := []byte(word)
				b[pos] = byte(c)
				var want uint32
				wantOK := true
				for _, d := range b {
					i := bytes.IndexByte([]byte(hexDigits), d)
					wantOK = wantOK && i >= 0
					want = want<<4 | uint32(i&0xf)
				}
				v, ok := unhex8(binary.LittleEndian.Uint64(b))
				if ok != wantOK || (ok && v != want) {
					t.Fatalf("unhex8(%q) = %#x, %v; want %#x, %v", b, v, ok, want, wantOK)
				}
			}
		}
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
