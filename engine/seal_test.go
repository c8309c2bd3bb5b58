package engine_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
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
	past := int(proto.SealedLimit(16<<10)) + 1
	if past%4 == 1 {
		past++ // base64url of whole bytes, only too long
	}
	bob.Send(map[string]string{"type": "seal", "data": strings.Repeat("A", past)})
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

// TestSealRefusalsJoinTheRun: seals refused for want of a partner, or
// because what is kept for an away partner is full, are told as refused
// says are, in the same run: the first refused by its error, naming its
// id, and the rest, says and seals alike, by the counts told once a
// second, whose ids run on from it to the last sent. A page pasting
// into an away partner's full history sees one error and a count, not
// an error for each encrypted message.
func TestSealRefusalsJoinTheRun(t *testing.T) {
	t.Parallel()
	const buffer, size, sent = 4096, 100, 120 // each message counts its text and 64 bytes: 24 fit
	d := enginetest.Start(t, func(o *engine.Options) { o.Resume.Buffer = buffer })
	t.Run("peer_away_full", func(t *testing.T) {
		alice, bob := enginetest.PairWS(t, d)
		enginetest.Reset(t, bob.Conn)
		alice.Expect("peer_away")
		first := refuseRun(t, alice, "peer_away_full", sent, size)
		// The error's id is the first message not kept: every one
		// before it is replayed to bob.
		if _, ev := enginetest.ResumeWS(t, d, bob.Key, 0); ev["replayed"] != float64(first-1) {
			t.Fatalf("the first refused was %d; resumed %v", first, ev)
		}
	})
	t.Run("not_paired", func(t *testing.T) {
		carol := d.DialWS(t).Login("carol")
		if first := refuseRun(t, carol, "not_paired", sent, size); first != 1 {
			t.Fatalf("the first refused was %d, want 1", first)
		}
	})
}

// refuseRun sends n messages from wc, numbered 1 to n, every other one
// a seal, each of size bytes, then a who, which ends the run, in one
// write; and reads the answers up to the who's. The messages from some
// id on are to be refused for code: exactly one error, naming that id,
// and counts with that code naming every id after it, up to n, each
// once and in order. It returns the id the error named.
func refuseRun(t *testing.T, wc *enginetest.WSClient, code string, n, size int) (first uint64) {
	t.Helper()
	var in bytes.Buffer
	for id := 1; id <= n; id++ {
		frame := fmt.Sprintf(`{"type":"say","text":"%s","id":%d}`, strings.Repeat("x", size), id)
		if id%2 == 0 {
			frame = fmt.Sprintf(`{"type":"seal","data":"%s","id":%d}`, strings.Repeat("A", size), id)
		}
		wsutil.WriteClientText(&in, []byte(frame))
	}
	wsutil.WriteClientText(&in, []byte(`{"type":"who"}`))
	wc.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := wc.Conn.Write(in.Bytes()); err != nil {
		t.Fatal(err)
	}
	var told uint64 // the messages refused so far run from first to told
	for {
		ev := wc.Next()
		switch {
		case ev["type"] == "status":
			if first == 0 || told != uint64(n) {
				t.Fatalf("messages %d to %d were told refused, want %d to %d", first, told, first, n)
			}
			return first
		case ev["type"] == "error" && ev["code"] == code && first == 0:
			id, _ := ev["id"].(float64)
			first, told = uint64(id), uint64(id)
		case ev["type"] == "notice" && ev["code"] == code && first != 0:
			from, _ := ev["first_id"].(float64)
			to, _ := ev["last_id"].(float64)
			m := jsonNotSent.FindStringSubmatch(fmt.Sprint(ev["text"]))
			if uint64(from) != told+1 || to < from || m == nil || m[1] != fmt.Sprint(to-from+1) {
				t.Fatalf("after messages %d to %d were told refused: %v", first, told, ev)
			}
			told = uint64(to)
		default:
			t.Fatalf("after messages %d to %d were told refused: %v", first, told, ev)
		}
	}
}
