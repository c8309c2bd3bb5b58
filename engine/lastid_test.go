package engine_test

import (
	"testing"
	"time"

	"github.com/gobwas/ws"

	"duet/engine/enginetest"
)

// TestResumeSaysTheLastMessageReceived: a page's connection dies while
// a numbered say of its is on the way, only part of its frame read by
// the server. The resume that takes the session back names the last say
// the server relayed (last_id), so the page can tell its user that the
// one after it was not sent; the partner never had it. A say the server
// refuses does not count as one that reached the partner.
func TestResumeSaysTheLastMessageReceived(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := enginetest.PairWS(t, d)

	alice.Send(map[string]any{"type": "say", "text": "one", "id": 1})
	alice.Send(map[string]any{"type": "say", "text": "two", "id": 2})
	for _, want := range []string{"one", "two"} {
		if text, _ := enginetest.WSMessage(t, bob); text != want {
			t.Fatalf("bob got %q, want %q", text, want)
		}
	}
	// The third is sent into the dying connection: half its frame
	// arrives, then the network is gone.
	frame, err := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`{"type":"say","text":"three","id":3}`))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Conn.Write(frame[:len(frame)/2]); err != nil {
		t.Fatal(err)
	}
	enginetest.Reset(t, alice.Conn)
	bob.Expect("peer_away")

	back, ev := enginetest.ResumeWS(t, d, alice.Key, 0)
	if ev["last_id"] != float64(2) {
		t.Fatalf("resumed %v, want last_id 2", ev)
	}
	bob.Expect("peer_back")

	// Refused (empty): not relayed, so not the last that reached bob.
	back.Send(map[string]any{"type": "say", "text": "", "id": 3})
	if e := back.Expect("error"); e["code"] != "empty_message" || e["id"] != float64(3) {
		t.Fatalf("an empty say answered %v", e)
	}
	enginetest.Reset(t, back.Conn)
	bob.Expect("peer_away")
	if _, ev := enginetest.ResumeWS(t, d, back.Key, 0); ev["last_id"] != float64(2) {
		t.Fatalf("resumed after a refusal %v, want last_id 2", ev)
	}
	bob.Expect("peer_back")
	if ev, _, err := bob.TryNext(200 * time.Millisecond); err == nil {
		t.Fatalf("bob was told %v; the third say never reached the server", ev)
	}
}
