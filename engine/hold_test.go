package engine

import (
	"bytes"
	"testing"

	"github.com/panjf2000/gnet/v2"
)

// heldConn is a gnet.Conn that reports how much input it holds; any other
// method is not expected and panics.
type heldConn struct {
	gnet.Conn
	held int
}

func (h *heldConn) InboundBuffered() int { return h.held }

// TestHeldInputPastTheBoundIsActedOn: a sender whose reader is behind
// pauses at limits.outbound_high, unless it already holds more than
// heldInputMax of unread input; then it goes on until the reader holds
// limits.outbound_max, where the reader is cut as a slow reader.
func TestHeldInputPastTheBoundIsActedOn(t *testing.T) {
	lines := bytes.Repeat([]byte("a line of chat, about forty bytes long.\n"), 200_000) // 8 MB
	for _, tc := range []struct {
		name    string
		held    int
		pastMax bool // the sender pauses at outbound_max, not outbound_high
	}{
		{"ordinary pause", 64 << 10, false},
		{"held input past the bound", heldInputMax + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender, reader := benchPair(t, stageLine, stageLine)
			sender.c = &heldConn{held: tc.held}
			lim := sender.loop.srv.lim()
			used := sender.readLines(append([]byte(nil), lines...))
			if sender.flow.hold.why != holdBackpressure || used == len(lines) {
				t.Fatalf("the sender did not pause (used %d of %d bytes)", used, len(lines))
			}
			backlog, limit := reader.out.Backlog(), int64(lim.OutboundHigh)
			if tc.pastMax {
				limit = int64(lim.OutboundMax)
			}
			// Just past: by at most one run of messages (maxRunBytes of
			// text, each line with its "<alice> " prefix) and one more.
			if backlog <= limit || backlog > limit+2*maxRunBytes {
				t.Fatalf("paused with the reader at %d bytes; want just past %d", backlog, limit)
			}
		})
	}
}
