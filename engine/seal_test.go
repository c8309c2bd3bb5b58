package engine_test

import (
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine"
	"duet/engine/enginetest"
	"duet/proto"
)

// TestSealRelayedOpaque runs sealed frames (docs/E2E.md) through a real
// server: between two browsers they are relayed as sent, numbered with
// the messages and replayed on a resume; malformed or oversized data is
// refused; a terminal partner is never sent one, and its sender is told
// why; both sides of a pairing learn the other's protocol and the same
// pairing id; nothing of the data reaches the log, at any level.
func TestSealRelayedOpaque(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	d := enginetest.Start(t, func(o *engine.Options) { o.Logger = zap.New(core) })
	alice := d.DialWS(t).Login("alice")
	bob := d.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	ap, bp := alice.Expect("paired"), bob.Expect("paired")
	id, _ := ap["pair_id"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) || bp["pair_id"] != id ||
		ap["peer_proto"] != "json" || bp["peer_proto"] != "json" || ap["initiator"] != false || bp["initiator"] != true {
		t.Fatalf("paired: alice %v, bob %v", ap, bp)
	}

	const data = "AQQAAAAAAAAAAfo_eEKPDsp2p1I9GsiZCiqINQ"
	bob.Say("plain first")
	bob.Send(map[string]string{"type": "seal", "data": data})
	if text, seq := enginetest.WSMessage(t, alice); text != "plain first" || seq != 1 {
		t.Fatalf("alice got %q seq %d", text, seq)
	}
	if ev := alice.Expect("sealed"); ev["from"] != "bob" || ev["data"] != data || ev["seq"] != float64(2) {
		t.Fatalf("alice got %v", ev)
	}

	// Not base64url, or past the limit: refused, and nothing relayed.
	bob.Send(map[string]string{"type": "seal", "data": "AQ=="})
	bob.ExpectError("bad_message")
	bob.Send(map[string]string{"type": "seal", "data": strings.Repeat("A", int(proto.SealedLimit(16<<10))+1)})
	bob.ExpectError("too_long")

	// Sealed frames are replayed on a resume like messages, in order.
	bob.Send(map[string]string{"type": "seal", "data": "c2Vjb25k"})
	if ev := alice.Expect("sealed"); ev["data"] != "c2Vjb25k" || ev["seq"] != float64(3) {
		t.Fatalf("alice got %v", ev)
	}
	back, ev := enginetest.ResumeWS(t, d, alice.Key, 1)
	if ev["peer"] != "bob" || ev["replayed"] != float64(2) || ev["pair_id"] != id || ev["peer_proto"] != "json" || ev["initiator"] != false {
		t.Fatalf("resumed %v", ev)
	}
	for _, want := range []string{data, "c2Vjb25k"} {
		if got := back.Expect("sealed"); got["data"] != want {
			t.Fatalf("replayed %v, want data %s", got, want)
		}
	}

	// A terminal partner: the page is told before anything is sent,
	// a seal is refused, and the terminal sees nothing of it.
	carol := d.DialLine(t).Login("carol")
	dave := d.DialWS(t).Login("dave")
	dave.Connect(carol.Token)
	if ev := dave.Expect("paired"); ev["peer_proto"] != "line" {
		t.Fatalf("dave was told %v", ev)
	}
	carol.Expect(`^\* dave is connected$`)
	dave.Send(map[string]string{"type": "seal", "data": data})
	dave.ExpectError("peer_cannot_decrypt")
	dave.Say("in the clear")
	carol.Expect(`^<dave> in the clear$`)

	// The hub counts a message once its delivery returns, which may be
	// after the reader's socket took it (a direct write): wait for it.
	waitFor(t, "two sealed frames and two messages counted", func() bool {
		st := d.Hub.Stats()
		return st.Sealed == 2 && st.SealedBytes == uint64(len(data)+len("c2Vjb25k")) && st.Messages == 2
	})
	for _, e := range logs.All() {
		line := e.Message
		for _, f := range e.Context {
			line += " " + f.String
			if s, ok := f.Interface.(interface{ String() string }); ok {
				line += " " + s.String()
			}
		}
		if strings.Contains(line, data) || strings.Contains(line, "c2Vjb25k") {
			t.Fatalf("sealed data in the log: %q", line)
		}
	}
}
