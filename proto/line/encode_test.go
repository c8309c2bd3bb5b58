package line

import (
	"strings"
	"testing"
	"time"

	"duet/proto"
)

var testToken = proto.Token{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}

const testTokenHex = "0123456789abcdef0123456789abcdef"

func TestAppendEvent(t *testing.T) {
	const free = "; you are free to be joined again\r\n"
	tests := []struct {
		name string
		ev   proto.Event
		want string
	}{
		{"hello open", proto.Event{Kind: proto.EvHello, Auth: "open"},
			"* welcome to duet. Log in with /login NAME, then share your token or /connect to someone's. /help lists the commands.\r\n"},
		{"hello default", proto.Event{Kind: proto.EvHello},
			"* welcome to duet. Log in with /login NAME, then share your token or /connect to someone's. /help lists the commands.\r\n"},
		{"hello accounts", proto.Event{Kind: proto.EvHello, Auth: "accounts"},
			"* welcome to duet. Log in with /login NAME PASSWORD, then share your token or /connect to someone's. /help lists the commands.\r\n"},
		{"welcome", proto.Event{Kind: proto.EvWelcome, Name: "alice", Token: testToken},
			"* you are alice, your token is " + testTokenHex + "\r\n"},
		{"paired initiator", proto.Event{Kind: proto.EvPaired, Peer: "bob", Initiator: true},
			"* you are connected with bob\r\n"},
		{"paired holder", proto.Event{Kind: proto.EvPaired, Peer: "bob"},
			"* bob is connected\r\n"},

		{"message", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("hi there")},
			"<alice> hi there\r\n"},
		{"message keeps spaces and tabs", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("  a\tb  ")},
			"<alice>   a\tb  \r\n"},
		{"message keeps Unicode", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("héllo ✓ 🙂")},
			"<alice> héllo ✓ 🙂\r\n"},
		{"empty message", proto.Event{Kind: proto.EvMessage, From: "alice"},
			"<alice> \r\n"},
		{"message lines", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("one\ntwo\r\nthree")},
			"<alice> one\r\n<alice> two\r\n<alice> three\r\n"},
		{"message final newline", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("one\r\n")},
			"<alice> one\r\n"},
		{"message blank lines", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("\n\nx")},
			"<alice> \r\n<alice> \r\n<alice> x\r\n"},
		{"message bare CR", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("a\rb")},
			"<alice> a\uFFFDb\r\n"},
		{"message escape sequence", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("\x1b[2J\x1b]0;pwned\x07")},
			"<alice> \uFFFD[2J\uFFFD]0;pwned\uFFFD\r\n"},
		{"message C1 CSI", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("a\u009b2Jb\u0085c")},
			"<alice> a\uFFFD2Jb\uFFFDc\r\n"},
		{"message DEL and NUL", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("a\x7fb\x00c")},
			"<alice> a\uFFFDb\uFFFDc\r\n"},
		{"message invalid UTF-8", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("a\xffb\xe2\x82")},
			"<alice> a\uFFFDb\uFFFD\uFFFD\r\n"},
		{"message from a strange name", proto.Event{Kind: proto.EvMessage, From: "ev\x1bil", Text: []byte("x")},
			"<ev\uFFFDil> x\r\n"},

		{"peer left", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonLeft},
			"* bob left" + free},
		{"peer disconnected", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonDisconnected},
			"* bob disconnected" + free},
		{"peer shutdown", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonShutdown},
			"* bob's server is shutting down" + free},
		{"peer slow", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonSlow, Count: 42},
			"* bob stopped reading and was cut off; 42 of your messages were not delivered" + free},
		{"peer slow, one lost", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonSlow, Count: 1},
			"* bob stopped reading and was cut off; 1 of your messages was not delivered" + free},
		{"peer slow, none lost", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonSlow},
			"* bob stopped reading and was cut off" + free},
		{"peer timeout", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonTimeout},
			"* bob timed out" + free},
		{"peer replaced", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonReplaced},
			"* bob logged in elsewhere" + free},
		{"peer link lost", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonLinkLost, Count: 3},
			"* lost the link to bob's server; 3 of your messages were not delivered" + free},
		{"peer disconnected with losses", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonDisconnected, Count: 2},
			"* bob disconnected; 2 of your messages were not delivered" + free},
		{"peer gone, unknown reason", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: "eaten_by_grue"},
			"* bob is gone (eaten_by_grue)" + free},
		{"peer gone, no reason", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob"},
			"* bob is gone" + free},

		{"left", proto.Event{Kind: proto.EvLeft, Peer: "bob"}, "* you left bob\r\n"},
		{"status paired", proto.Event{Kind: proto.EvStatus, Name: "alice", Token: testToken, Peer: "bob"},
			"* you are alice, your token is " + testTokenHex + ", connected with bob\r\n"},
		{"status alone", proto.Event{Kind: proto.EvStatus, Name: "alice", Token: testToken},
			"* you are alice, your token is " + testTokenHex + ", not connected\r\n"},
		{"help", proto.Event{Kind: proto.EvHelp, Window: time.Minute}, helpHead + helpLogin + helpCommands + helpResume + helpTail},
		{"help with accounts", proto.Event{Kind: proto.EvHelp, Auth: "accounts", Window: time.Minute}, helpHead + helpLoginAccounts + helpCommands + helpResume + helpTail},
		// A server that keeps no sessions has nothing to resume.
		{"help with resume off", proto.Event{Kind: proto.EvHelp}, helpHead + helpLogin + helpCommands + helpTail},
		{"error", proto.Event{Kind: proto.EvError, Err: proto.ErrRoomFull},
			"! room_full: Room is Full: that user is already talking with someone. Try the same token again when they are free\r\n"},
		{"error without an error", proto.Event{Kind: proto.EvError},
			"! unavailable: the server cannot do that right now; try again shortly\r\n"},
		{"shutdown", proto.Event{Kind: proto.EvShutdown}, "* the server is shutting down; goodbye\r\n"},
		{"bye", proto.Event{Kind: proto.EvBye}, "* bye\r\n"},
		{"notice", proto.Event{Kind: proto.EvNotice, Text: []byte("slow down")}, "* slow down\r\n"},
		{"notice lines", proto.Event{Kind: proto.EvNotice, Text: []byte("one\ntwo\x1b")}, "* one\r\n* two\uFFFD\r\n"},
		{"none", proto.Event{}, ""},
		{"unknown kind", proto.Event{Kind: 200}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendEvent(nil, &tt.ev))
			if got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			checkLines(t, got)
		})
	}
}

// checkLines checks the promise every reader of the line protocol relies
// on: whole lines, each ending in "\r\n", with no other '\r' or '\n' and
// no control character but tab.
func checkLines(t *testing.T, out string) {
	t.Helper()
	if out == "" {
		return
	}
	if !strings.HasSuffix(out, "\r\n") {
		t.Errorf("output does not end in CRLF: %q", out)
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		for _, r := range l {
			if r < 0x20 && r != '\t' || r >= 0x7f && r <= 0x9f {
				t.Errorf("line has control character %U: %q", r, l)
			}
		}
	}
}

// TestAppendEventHelpListsEveryCommand keeps the help text in step with
// Decode: every command it names must decode.
func TestAppendEventHelpListsEveryCommand(t *testing.T) {
	help := string(AppendEvent(nil, &proto.Event{Kind: proto.EvHelp}))
	for _, cmd := range []string{"/login", "/connect", "/leave", "/who", "/newtoken", "/help", "/quit", "//"} {
		if !strings.Contains(help, cmd) {
			t.Errorf("help does not mention %s", cmd)
		}
	}
	for l := range strings.SplitSeq(strings.TrimSuffix(help, "\r\n"), "\r\n") {
		if !strings.HasPrefix(l, "* ") {
			t.Errorf("help line does not start with \"* \": %q", l)
		}
	}
}

// TestAppendEventAppends checks that AppendEvent keeps what dst already
// holds, including when a multi-line message makes dst grow while its
// prefix is being repeated.
func TestAppendEventAppends(t *testing.T) {
	ev := &proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("a\nb\nc")}
	for _, capacity := range []int{0, 3, 12, 20, 100} {
		dst := append(make([]byte, 0, capacity), "xyz"...)
		got := string(AppendEvent(dst, ev))
		want := "xyz<alice> a\r\n<alice> b\r\n<alice> c\r\n"
		if got != want {
			t.Errorf("cap %d: got %q, want %q", capacity, got, want)
		}
	}
}

func TestPlainWord(t *testing.T) {
	for b := 0; b < 256; b++ {
		for pos := 0; pos < 8; pos++ {
			var w uint64 = 0x6161616161616161 // "aaaaaaaa"
			w &^= 0xff << (8 * pos)
			w |= uint64(b) << (8 * pos)
			want := b >= 0x20 && b < 0x7f
			if got := plainWord(w); got != want {
				t.Fatalf("byte %#x at %d: got %v, want %v", b, pos, got, want)
			}
		}
	}
}
