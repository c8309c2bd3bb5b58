package engine

import (
	"bytes"
	"strings"
	"testing"

	"duet/proto"
)

// FuzzWebEncoderRun checks that webEncoder encodes a run of messages,
// whose JSON head it makes once, to exactly the frames AppendEvent gives
// for each message in turn, after any bytes already in the buffer. The
// fuzzer's text is cut into the run's texts at each '|'.
func FuzzWebEncoderRun(f *testing.F) {
	f.Add("alice", []byte("hi|there"), []byte("x"))
	f.Add("b\"o\\b\x01", []byte("a\nb|\u2028|\xff||"+strings.Repeat("long ", 40)), []byte{})
	f.Add(strings.Repeat("n", 200), []byte("a name longer than the head's room"), []byte{})
	f.Fuzz(func(t *testing.T, from string, joined, before []byte) {
		texts := bytes.Split(joined, []byte("|"))
		var enc webEncoder
		want := bytes.Clone(before)
		for _, text := range texts {
			want = enc.AppendEvent(want, &proto.Event{Kind: proto.EvMessage, From: from, Text: text})
		}
		got := enc.AppendMessages(bytes.Clone(before), &proto.Event{Kind: proto.EvMessage, From: from}, texts)
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendMessages(%q, %q) = %q, want %q", from, texts, got, want)
		}
	})
}
