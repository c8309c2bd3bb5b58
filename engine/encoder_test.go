package engine

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"duet/proto"
)

// FuzzWebEncoderRun checks that webEncoder encodes a run of messages,
// whose JSON head it makes once, to exactly the frames AppendEvent gives
// for each message in turn, after any bytes already in the buffer, with
// each message numbered from the run's first seq (none when it is 0),
// and says where each ends. The fuzzer's text is cut into the run's texts at each '|'.
func FuzzWebEncoderRun(f *testing.F) {
	f.Add("alice", []byte("hi|there"), []byte("x"), uint64(0))
	f.Add("b\"o\\b\x01", []byte("a\nb|\u2028|\xff||"+strings.Repeat("long ", 40)), []byte{}, uint64(7))
	f.Add(strings.Repeat("n", 200), []byte("a name longer than the head's room"), []byte{}, uint64(1))
	f.Fuzz(func(t *testing.T, from string, joined, before []byte, seq uint64) {
		texts := bytes.Split(joined, []byte("|"))
		if seq > ^uint64(0)-uint64(len(texts)) {
			seq = 1 // a session numbers its messages from 1 and never wraps
		}
		var enc webEncoder
		want := bytes.Clone(before)
		var wantEnds []int32
		for i, text := range texts {
			ev := &proto.Event{Kind: proto.EvMessage, From: from, Text: text}
			if seq != 0 {
				ev.Seq = seq + uint64(i)
			}
			want = enc.AppendEvent(want, ev)
			wantEnds = append(wantEnds, int32(len(want)))
		}
		got, ends := enc.AppendMessages(bytes.Clone(before), nil, &proto.Event{Kind: proto.EvMessage, From: from, Seq: seq}, texts)
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendMessages(%q, %q) = %q, want %q", from, texts, got, want)
		}
		if !slices.Equal(ends, wantEnds) {
			t.Fatalf("AppendMessages(%q, %q) ends %v, want %v", from, texts, ends, wantEnds)
		}
	})
}
