package cluster

import (
	"bytes"
	"testing"
)

func TestBatchRoundTrip(t *testing.T) {
	frames := []frame{
		{kind: framePaired, pair: 1, to: "alice", a: "bob", b: []byte("Bob")},
		{kind: frameMessage, pair: 1, to: "alice", a: "bob", b: []byte("hi\nthere \x00 \xff")},
		{kind: frameMessage, pair: 1<<63 + 5, to: "alice", a: "bob", b: nil},
		{kind: frameLeft, pair: 1, to: "alice", a: "link_lost", n: 42},
	}
	b := appendStr(nil, "node-1")
	for _, f := range frames {
		b = appendFrame(b, f.kind, f.pair, f.to, f.a, f.b, f.n)
	}
	r := batchReader{b: b}
	if src, err := r.header(); err != nil || src != "node-1" {
		t.Fatalf("header: %q, %v", src, err)
	}
	for i, want := range frames {
		got, ok, err := r.next()
		if err != nil || !ok {
			t.Fatalf("frame %d: ok %v, %v", i, ok, err)
		}
		if got.kind != want.kind || got.pair != want.pair || got.to != want.to || got.a != want.a ||
			!bytes.Equal(got.b, want.b) || got.n != want.n {
			t.Fatalf("frame %d: got %+v, want %+v", i, got, want)
		}
	}
	if _, ok, err := r.next(); ok || err != nil {
		t.Fatalf("after the last frame: ok %v, %v", ok, err)
	}
}

func TestBatchTruncated(t *testing.T) {
	header := appendStr(nil, "n")
	b := appendFrame(header, frameMessage, 7, "alice", "bob", []byte("hello"), 0)
	for cut := len(header); cut < len(b); cut++ {
		r := batchReader{b: b[:cut]}
		if _, err := r.header(); err != nil {
			t.Fatalf("cut at %d: header: %v", cut, err)
		}
		// Right after the header the batch is empty; anywhere inside
		// the frame, it is malformed.
		_, ok, err := r.next()
		if ok || (err == nil) != (cut == len(header)) {
			t.Fatalf("cut at %d of %d: ok %v, err %v", cut, len(b), ok, err)
		}
	}
}

// FuzzBatch feeds arbitrary bytes to the batch reader, which reads what
// Redis hands over: it must never panic, and what it reads must encode
// back to the bytes it came from.
func FuzzBatch(f *testing.F) {
	seed := appendStr(nil, "node-1")
	seed = appendFrame(seed, framePaired, 3, "alice", "bob", []byte("Bob"), 0)
	seed = appendFrame(seed, frameLeft, 3, "alice", "left", nil, 2)
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := batchReader{b: b}
		src, err := r.header()
		if err != nil {
			return
		}
		out := appendStr(nil, src)
		for {
			fr, ok, err := r.next()
			if err != nil {
				return
			}
			if !ok {
				break
			}
			out = appendFrame(out, fr.kind, fr.pair, fr.to, fr.a, fr.b, fr.n)
		}
		// Varints may be written longer than needed; compare by reading
		// the re-encoding again rather than byte for byte.
		r2 := batchReader{b: out}
		if src2, err := r2.header(); err != nil || src2 != src {
			t.Fatalf("header did not survive: %q, %v", src2, err)
		}
	})
}
