package cluster

import (
	"bytes"
	"fmt"
	"testing"
)

var testHeader = header{
	src: "node-1", srcInc: incarnation{1, 2, 3, 4, 5, 6, 7, 8}, seq: 1<<40 + 3, srcEpoch: 7,
	dstInc: incarnation{9, 9, 9, 9, 9, 9, 9, 9}, dstEpoch: 1<<63 + 1,
}

func TestBatchRoundTrip(t *testing.T) {
	frames := []frame{
		{kind: framePaired, pair: 1, to: "alice", a: "bob", b: []byte("Bob")},
		{kind: frameMessage, pair: 1, to: "alice", a: "bob", b: []byte("hi\nthere \x00 \xff")},
		{kind: frameMessage, pair: 1<<63 + 5, to: "alice", a: "bob", b: nil},
		{kind: frameLeft, pair: 1, to: "alice", a: "link_lost", n: 42},
		{kind: frameAway, pair: 1, to: "alice", n: 120000},
		{kind: frameBack, pair: 1, to: "alice"},
		{kind: frameError, pair: 1, to: "alice", a: "peer_away_full", b: []byte("bob is away")},
	}
	b := appendHeader(nil, &testHeader)
	hdrLen := len(b)
	for _, f := range frames {
		b = appendFrame(b, f.kind, f.pair, f.to, f.a, f.b, f.n)
	}
	h, n, err := parseHeader(b)
	if err != nil || h != testHeader || n != hdrLen {
		t.Fatalf("header: %+v, %d, %v", h, n, err)
	}
	r := batchReader{b: b[n:]}
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
	hdr := appendHeader(nil, &testHeader)
	for cut := range len(hdr) {
		if _, _, err := parseHeader(hdr[:cut]); err == nil {
			t.Fatalf("header cut at %d of %d parsed", cut, len(hdr))
		}
	}
	other := bytes.Clone(hdr)
	other[0] = batchVersion + 1
	if _, _, err := parseHeader(other); err == nil {
		t.Fatal("another version parsed")
	}
	b := appendFrame(nil, frameMessage, 7, "alice", "bob", []byte("hello"), 0)
	for cut := range len(b) {
		r := batchReader{b: b[:cut]}
		// Empty, the frames end; anywhere inside the frame, they are
		// malformed.
		_, ok, err := r.next()
		if ok || (err == nil) != (cut == 0) {
			t.Fatalf("cut at %d of %d: ok %v, err %v", cut, len(b), ok, err)
		}
	}
}

// FuzzBatch feeds arbitrary bytes to the batch readers, which read what
// Redis hands over (the header) and what the node decrypted (the
// frames): they must never panic, and what they read must encode back to
// something that reads the same.
func FuzzBatch(f *testing.F) {
	seed := appendHeader(nil, &testHeader)
	seed = appendFrame(seed, framePaired, 3, "alice", "bob", []byte("Bob"), 0)
	seed = appendFrame(seed, frameLeft, 3, "alice", "left", nil, 2)
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{batchVersion})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseHeader(b)
		if err == nil {
			// Varints may be written longer than needed; compare by
			// reading the re-encoding again rather than byte for byte.
			h2, n2, err := parseHeader(appendHeader(nil, &h))
			if err != nil || h2 != h || n2 > n {
				t.Fatalf("header %+v did not survive: %+v, %v", h, h2, err)
			}
			b = b[n:]
		}
		r := batchReader{b: b}
		var out []byte
		var read []frame
		for {
			fr, ok, err := r.next()
			if err != nil {
				return
			}
			if !ok {
				break
			}
			read = append(read, fr)
			out = appendFrame(out, fr.kind, fr.pair, fr.to, fr.a, fr.b, fr.n)
		}
		r2 := batchReader{b: out}
		for i, want := range read {
			got, ok, err := r2.next()
			if err != nil || !ok || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("frame %d did not survive: %+v, %v", i, got, err)
			}
		}
	})
}

// TestFrameCount: a count carried in a frame's b (a left frame's
// arrivals, an away frame's undelivered) reads back as written, and
// one with none (a node from before it) or a bad one says none.
func TestFrameCount(t *testing.T) {
	for _, want := range []uint64{0, 1, 127, 128, 1<<63 + 9} {
		if got, ok := parseCount(appendCount(want)); !ok || got != want {
			t.Errorf("count %d read back as %d, %v", want, got, ok)
		}
	}
	for _, b := range [][]byte{nil, {0x80}, {1, 2}} {
		if got, ok := parseCount(b); ok {
			t.Errorf("count %x read as %d", b, got)
		}
	}
}
