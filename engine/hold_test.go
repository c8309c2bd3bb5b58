package engine

import (
	"bytes"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"duet/proto"
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

// TestThrottleHoldBoundsInput: a connect held by the failed-connect
// throttle leaves the input behind it unread, but gnet reads some of it
// each time the connection's own output starts and drains (its partner
// talking to it). Past heldInputMax of such input the hold ends early:
// the connect is answered throttled, unchecked, and the input is read
// as usual, rather than kept in memory for the rest of the hold (which
// let a paired client pile up 50 MiB in 4 s).
func TestThrottleHoldBoundsInput(t *testing.T) {
	for _, tc := range []struct {
		name  string
		held  int
		early bool
	}{
		{"within the bound", 64 << 10, false},
		{"past the bound", heldInputMax + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender, _ := benchPair(t, stageLine, stageLine)
			sender.c = &heldConn{held: tc.held}
			sender.holdFor(time.Hour, &heldConnect{op: proto.OpConnect, arg: []byte(proto.NewToken().String())})
			if got := sender.release(); got != tc.early {
				t.Fatalf("release with %d bytes held: %v, want %v", tc.held, got, tc.early)
			}
			if !tc.early {
				return
			}
			if sender.held() {
				t.Fatal("the hold goes on")
			}
			buf, _ := sender.out.Take(0)
			if buf == nil || !bytes.Contains(buf.B, []byte("! throttled: ")) {
				t.Fatalf("the connect was answered %v", buf)
			}
		})
	}
}
