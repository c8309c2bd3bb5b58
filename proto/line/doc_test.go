package line

import (
	"os"
	"strings"
	"testing"
	"time"

	"duet/proto"
)

// TestProtocolDocIsComplete keeps docs/PROTOCOL.md in step with proto:
// every error code, peer_left reason and event type must be documented,
// along with the help text exactly as sent.
func TestProtocolDocIsComplete(t *testing.T) {
	data, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, e := range proto.Errors {
		if !strings.Contains(doc, "| `"+e.Code+"` | "+e.Text+" |") {
			t.Errorf("docs/PROTOCOL.md has no row for error %s with its current text", e.Code)
		}
	}
	reasons := []proto.Reason{
		proto.ReasonLeft, proto.ReasonDisconnected, proto.ReasonShutdown, proto.ReasonSlow,
		proto.ReasonTimeout, proto.ReasonReplaced, proto.ReasonLinkLost,
	}
	for _, r := range reasons {
		if !strings.Contains(doc, "| `"+string(r)+"` |") {
			t.Errorf("docs/PROTOCOL.md has no row for reason %s", r)
		}
	}
	for k := proto.EvHello; k.String() != "unknown"; k++ {
		if k == proto.EvReplayEnd {
			// JSON sends nothing for it; the line protocol's is shown.
			if !strings.Contains(doc, "`* end of missed messages`") {
				t.Errorf("docs/PROTOCOL.md shows no end of a replay")
			}
			continue
		}
		if !strings.Contains(doc, `{"type":"`+k.String()+`"`) {
			t.Errorf("docs/PROTOCOL.md shows no %s event", k)
		}
	}
	// The lines of a resume, as the codec writes them.
	for _, ev := range []proto.Event{
		{Kind: proto.EvWelcome, Name: "alice", Token: docToken, ResumeKey: "k7m2qv0c9x4t8ghj3nwp5rbe6d", Window: 2 * time.Minute},
		{Kind: proto.EvResumed, Name: "alice", Token: docToken, Peer: "bob", Count: 2, ResumeKey: "7f3xw9q2m8vd4kc6h0n1prt5jb", Window: 2 * time.Minute},
		{Kind: proto.EvReplayEnd, Count: 2, ResumeKey: "7f3xw9q2m8vd4kc6h0n1prt5jb", Window: 2 * time.Minute},
		{Kind: proto.EvPeerAway, Peer: "alice", Window: 2 * time.Minute},
		{Kind: proto.EvPeerBack, Peer: "alice"},
		{Kind: proto.EvError, Err: proto.PeerAwayFull("alice", 3514, 250<<10)},
	} {
		for _, l := range strings.SplitAfter(string(AppendEvent(nil, &ev)), "\r\n") {
			if l = strings.TrimSuffix(l, "\r\n"); l != "" && !strings.Contains(doc, "< "+l+"\n") {
				t.Errorf("docs/PROTOCOL.md has no transcript line %q", l)
			}
		}
	}
	help := strings.ReplaceAll(helpText, "\r\n", "\n")
	if !strings.Contains(doc, help) {
		t.Errorf("docs/PROTOCOL.md does not show the help text as sent")
	}
}

// docToken is alice's token in the netcat transcripts.
var docToken = func() proto.Token {
	t, err := proto.ParseToken([]byte("5366c6d06ecff31059750e8cf80a97de"))
	if err != nil {
		panic(err)
	}
	return t
}()
