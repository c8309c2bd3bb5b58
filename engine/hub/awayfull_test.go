package hub

import (
	"strings"
	"testing"

	"duet/proto"
)

// TestAckWhileAwayKeepsWhatCameSince: an acknowledgement that reaches a
// session once it is away (from the connection that carried it) covers
// at most what that connection was handed: the messages kept for its
// resume since it went stay, whatever number it names.
func TestAckWhileAwayKeepsWhatCameSince(t *testing.T) {
	h := New(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	sayEach(t, bob.Session, "before")
	alice.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, "away 1", "away 2")
	alice.Ack(^uint64(0))
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, false, box); err != nil {
		t.Fatal(err)
	}
	_, replayed, _ := replay(t, box.take())
	if got := strings.Join(texts2(replayed), ","); got != "away 1,away 2" {
		t.Fatalf("replayed %q, want the messages that came while away", got)
	}
}
