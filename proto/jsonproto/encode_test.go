package jsonproto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"duet/proto"
)

var testToken = proto.Token{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}

const testTokenHex = "0123456789abcdef0123456789abcdef"

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name string
		ev   proto.Event
		want string
	}{
		{"hello open", proto.Event{Kind: proto.EvHello, Auth: "open"}, `{"type":"hello","auth":"open","server":"duet"}`},
		{"hello default", proto.Event{Kind: proto.EvHello}, `{"type":"hello","auth":"open","server":"duet"}`},
		{"hello accounts", proto.Event{Kind: proto.EvHello, Auth: "accounts"}, `{"type":"hello","auth":"accounts","server":"duet"}`},
		{"welcome", proto.Event{Kind: proto.EvWelcome, Name: "alice", Token: testToken},
			`{"type":"welcome","name":"alice","token":"` + testTokenHex + `"}`},
		{"paired initiator", proto.Event{Kind: proto.EvPaired, Peer: "bob", Initiator: true},
			`{"type":"paired","peer":"bob","initiator":true}`},
		{"paired holder", proto.Event{Kind: proto.EvPaired, Peer: "bob"},
			`{"type":"paired","peer":"bob","initiator":false}`},
		{"message", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("hi there")},
			`{"type":"message","from":"alice","text":"hi there"}`},
		{"message escaped", proto.Event{Kind: proto.EvMessage, From: "alice", Text: []byte("a \"q\" \\ </script> é\n\x1b\u2028\xff")},
			`{"type":"message","from":"alice","text":"a \"q\" \\ </script> é\n\u001b\u2028\ufffd"}`},
		{"message empty", proto.Event{Kind: proto.EvMessage, From: "alice"},
			`{"type":"message","from":"alice","text":""}`},
		{"peer left", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonLeft},
			`{"type":"peer_left","peer":"bob","reason":"left"}`},
		{"peer slow", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonSlow, Count: 42},
			`{"type":"peer_left","peer":"bob","reason":"slow","undelivered":42}`},
		{"peer link lost", proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonLinkLost, Count: 1},
			`{"type":"peer_left","peer":"bob","reason":"link_lost","undelivered":1}`},
		{"left", proto.Event{Kind: proto.EvLeft, Peer: "bob"}, `{"type":"left","peer":"bob"}`},
		{"resumed with no key", proto.Event{Kind: proto.EvResumed, Name: "alice", Token: testToken, ID: proto.IDUnknown},
			`{"type":"resumed","name":"alice","token":"` + testTokenHex + `","replayed":0,"missed":0}`},
		{"status paired", proto.Event{Kind: proto.EvStatus, Name: "alice", Token: testToken, Peer: "bob"},
			`{"type":"status","name":"alice","token":"` + testTokenHex + `","peer":"bob"}`},
		{"status alone", proto.Event{Kind: proto.EvStatus, Name: "alice", Token: testToken},
			`{"type":"status","name":"alice","token":"` + testTokenHex + `"}`},
		{"help", proto.Event{Kind: proto.EvHelp}, string(appendString([]byte(`{"type":"help","text":`), helpText)) + "}"},
		{"error", proto.Event{Kind: proto.EvError, Err: proto.ErrRoomFull},
			`{"type":"error","code":"room_full","text":"Room is Full: that user is already talking with someone. Try the same token again when they are free"}`},
		{"error with a time to retry", proto.Event{Kind: proto.EvError, Err: proto.ErrTooManyAttempts, RetryAfter: 2500 * time.Millisecond},
			`{"type":"error","code":"too_many_attempts","text":"too many failed logins from your address or for that name; try again later","retry_after":3}`},
		{"error without an error", proto.Event{Kind: proto.EvError},
			`{"type":"error","code":"unavailable","text":"the server cannot do that right now; try again shortly"}`},
		{"shutdown", proto.Event{Kind: proto.EvShutdown}, `{"type":"shutdown","text":"the server is shutting down; goodbye"}`},
		{"bye", proto.Event{Kind: proto.EvBye}, `{"type":"bye"}`},
		{"notice", proto.Event{Kind: proto.EvNotice, Text: []byte("slow down")}, `{"type":"notice","text":"slow down"}`},
		{"none", proto.Event{}, ""},
		{"unknown kind", proto.Event{Kind: 200}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendEvent([]byte("prefix:"), &tt.ev)
			if !bytes.HasPrefix(got, []byte("prefix:")) {
				t.Fatalf("AppendEvent lost what dst held: %q", got)
			}
			got = got[len("prefix:"):]
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if tt.want == "" {
				return
			}
			var obj map[string]any
			if err := json.Unmarshal(got, &obj); err != nil {
				t.Fatalf("not a JSON object: %v", err)
			}
			if obj["type"] != tt.ev.Kind.String() {
				t.Errorf("type = %v, want %s", obj["type"], tt.ev.Kind)
			}
		})
	}
}

func TestAppendEventHelpListsEveryType(t *testing.T) {
	for _, typ := range []string{"login", "connect", "say", "leave", "who", "newtoken", "help", "quit"} {
		if !strings.Contains(helpText, typ+" ") && !strings.Contains(helpText, typ+":") {
			t.Errorf("help does not mention %s", typ)
		}
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`"\`, `"\"\\"`},
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00\x01\x1f\x7f", `"\u0000\u0001\u001f` + "\x7f" + `"`},
		{"<&>", `"<&>"`},
		{"é✓🙂", `"é✓🙂"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe2\x82", `"\ufffd\ufffd"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
	}
	for _, tt := range tests {
		if got := string(appendString(nil, tt.in)); got != tt.want {
			t.Errorf("appendString(%q) = %s, want %s", tt.in, got, tt.want)
		}
		if got := string(appendString(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("appendString([]byte(%q)) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
