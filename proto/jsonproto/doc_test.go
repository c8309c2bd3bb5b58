package jsonproto

import (
	"os"
	"strings"
	"testing"
	"time"

	"duet/proto"
)

// TestProtocolDocShowsHelp keeps the help text in docs/PROTOCOL.md the
// one the server sends. proto/line checks the rest of the document.
func TestProtocolDocShowsHelp(t *testing.T) {
	data, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "```\n"+helpText+"\n```") {
		t.Errorf("docs/PROTOCOL.md does not show the JSON help text as sent")
	}
}

// TestProtocolDocShowsResumeFrames keeps the frames of session resume in
// docs/PROTOCOL.md's JSON transcript the ones the codec writes.
func TestProtocolDocShowsResumeFrames(t *testing.T) {
	data, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	token := docToken(t, "2711929ec8e0355f5114f12de5370c65")
	bobToken := docToken(t, "f277a513462178957108e42bdb8de761")
	accountsToken := docToken(t, "0b1e5bd3ad6c4d4c9f0e6e0f2a1f4c55")
	for _, ev := range []proto.Event{
		{Kind: proto.EvWelcome, Name: "alice", Token: token, ResumeKey: "k7m2qv0c9x4t8ghj3nwp5rbe6d", Window: 2 * time.Minute},
		{Kind: proto.EvMessage, From: "bob", Text: []byte("still there?"), Seq: 2},
		// The transcript before, from a server with the default
		// configuration (resume on): keys in welcomes, numbered messages.
		{Kind: proto.EvWelcome, Name: "bob", Token: bobToken, ResumeKey: "c4r8n2w6j0x5m9t3q7v1kd8hzb", Window: 2 * time.Minute},
		{Kind: proto.EvMessage, From: "bob", Text: []byte("hi alice!\nsecond line"), Seq: 1},
		{Kind: proto.EvMessage, From: "alice", Text: []byte("hello \"bob\" 🙂"), Seq: 1},
		{Kind: proto.EvResumed, Name: "alice", Token: token, Peer: "bob", PeerProto: proto.ProtoJSON, PairID: 0x5f0c8d4904365c44,
			Count: 1, ID: 1, ResumeKey: "7f3xw9q2m8vd4kc6h0n1prt5jb", Window: 2 * time.Minute},
		{Kind: proto.EvMessage, From: "alice", Text: []byte("yes"), Seq: 1},
		{Kind: proto.EvPeerAway, Peer: "alice", Window: 2 * time.Minute},
		{Kind: proto.EvPeerBack, Peer: "alice", PeerProto: proto.ProtoJSON},
		{Kind: proto.EvPaired, Peer: "bob", PeerProto: proto.ProtoJSON, PairID: 0x5f0c8d4904365c44},
		{Kind: proto.EvPaired, Peer: "alice", Initiator: true, PeerProto: proto.ProtoJSON, PairID: 0x5f0c8d4904365c44},
		// The accounts mode transcript's, a server with resume on too.
		{Kind: proto.EvWelcome, Name: "alice", Token: accountsToken, ResumeKey: "4575b4hfrz9752hmek5ws60ats", Window: 2 * time.Minute},
	} {
		if frame := string(AppendEvent(nil, &ev)); !strings.Contains(string(data), "< "+frame+"\n") {
			t.Errorf("docs/PROTOCOL.md has no transcript line for %s", frame)
		}
	}
}

// TestAuthDocShowsWelcome keeps the welcome in docs/AUTH.md the one the
// codec writes for a server with the default configuration (resume on).
func TestAuthDocShowsWelcome(t *testing.T) {
	data, err := os.ReadFile("../../docs/AUTH.md")
	if err != nil {
		t.Fatal(err)
	}
	ev := proto.Event{Kind: proto.EvWelcome, Name: "alice", Token: docToken(t, "3f9c2d7a0b8e4f6a9c1d5e7b2a4f80e1"), ResumeKey: "k7m2qv0c9x4t8ghj3nwp5rbe6d", Window: 2 * time.Minute}
	if frame := string(AppendEvent(nil, &ev)); !strings.Contains(string(data), "`"+frame+"`") {
		t.Errorf("docs/AUTH.md does not show the welcome %s", frame)
	}
}

// docToken is a token the documents show, as the codec takes it.
func docToken(t *testing.T, hex string) proto.Token {
	t.Helper()
	token, err := proto.ParseToken([]byte(hex))
	if err != nil {
		t.Fatal(err)
	}
	return token
}
