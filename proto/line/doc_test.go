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
		{Kind: proto.EvPeerAway, Peer: "alice", Window: 2 * time.Minute, Count: 588},
		{Kind: proto.EvPeerBack, Peer: "alice"},
		{Kind: proto.EvError, Err: proto.PeerAwayFull("alice", 2520, 2520*40)},
	} {
		for _, l := range strings.SplitAfter(string(AppendEvent(nil, &ev)), "\r\n") {
			if l = strings.TrimSuffix(l, "\r\n"); l != "" && !strings.Contains(doc, "< "+l+"\n") {
				t.Errorf("docs/PROTOCOL.md has no transcript line %q", l)
			}
		}
	}
	// The transcripts' logins, answered as a server with the default
	// configuration (resume on) answers them: each welcome is followed
	// by its resume key. The last is the accounts mode transcript's.
	for _, u := range []struct{ login, name, token, key string }{
		{"/login alice", "alice", "5366c6d06ecff31059750e8cf80a97de", "hx3m9qz0v4c8t2kj7nwb5r1e6d"},
		{"/login bob", "bob", "d86013ddf4f4d27c7763408d6e774a91", "2p8wq5m1x9d3v7kc0hr4njt6fb"},
		{"/login carol", "carol", "04f312d988c25a753c37a198e6dc0114", "m6t1c9v3q8x0z5k2wj7dh4rnpb"},
		{"/login alice hunter2", "alice", "5366c6d06ecff31059750e8cf80a97de", "4twbh8jpxdztd20yqqk7thfb79"},
	} {
		want := "> " + u.login + "\n" + welcomeLines(t, "< ", u.name, u.token, u.key)
		if !strings.Contains(doc, want) {
			t.Errorf("docs/PROTOCOL.md does not show %s's login as answered:\n%s", u.name, want)
		}
	}
	help := strings.ReplaceAll(string(appendHelp(nil, &proto.Event{Kind: proto.EvHelp, Window: time.Minute})), "\r\n", "\n")
	if !strings.Contains(doc, help) {
		t.Errorf("docs/PROTOCOL.md does not show the help text as sent")
	}
	if !strings.Contains(doc, "```\n"+strings.ReplaceAll(helpLoginAccounts, "\r\n", "\n")+"```") {
		t.Errorf("docs/PROTOCOL.md does not show the login line of the help text with accounts as sent: %q", helpLoginAccounts)
	}
}

// TestAuthDocShowsLogin keeps the login in docs/AUTH.md answered as a
// server with the default configuration (resume on) answers it.
func TestAuthDocShowsLogin(t *testing.T) {
	data, err := os.ReadFile("../../docs/AUTH.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "/login alice correct horse battery staple\n" +
		welcomeLines(t, "", "alice", "3f9c2d7a0b8e4f6a9c1d5e7b2a4f80e1", "k7m2qv0c9x4t8ghj3nwp5rbe6d")
	if !strings.Contains(string(data), want) {
		t.Errorf("docs/AUTH.md does not show the login as answered:\n%s", want)
	}
}

// welcomeLines is a welcome with its resume key, a window of 2m, as the
// codec writes it, each line after prefix and ending in LF as the
// transcripts show them.
func welcomeLines(t *testing.T, prefix, name, token, key string) string {
	t.Helper()
	tok, err := proto.ParseToken([]byte(token))
	if err != nil {
		t.Fatal(err)
	}
	lines := string(AppendEvent(nil, &proto.Event{Kind: proto.EvWelcome, Name: name, Token: tok, ResumeKey: key, Window: 2 * time.Minute}))
	return prefix + strings.ReplaceAll(strings.TrimSuffix(lines, "\r\n"), "\r\n", "\n"+prefix) + "\n"
}

// docToken is alice's token in the netcat transcripts.
var docToken = func() proto.Token {
	t, err := proto.ParseToken([]byte("5366c6d06ecff31059750e8cf80a97de"))
	if err != nil {
		panic(err)
	}
	return t
}()
