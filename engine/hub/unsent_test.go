package hub

import (
	"testing"
	"time"

	"duet/proto"
)

// countingQueue is a connection's queue that says what it never wrote,
// as the engine's outbox does (UnsentCounter).
type countingQueue struct {
	queueRecorder
	unsent, dropped int
}

func (q *countingQueue) Unsent() int  { return q.unsent }
func (q *countingQueue) Dropped() int { return q.dropped }

// loginCounting logs name in on h with a countingQueue.
func loginCounting(t *testing.T, h *Hub, name string) (user, *countingQueue, string) {
	t.Helper()
	q := &countingQueue{}
	s, err := h.Login([]byte(name), q)
	if err != nil {
		t.Fatal(err)
	}
	key := q.last(t).ResumeKey
	return user{s, &q.recorder}, q, key
}

// TestMessagesDroppedAfterCloseAreCounted: senders relay to a session
// until it leaves their room, a moment after its connection closed and
// counted what it never wrote. What its queue dropped meanwhile counts
// too: in what the partner is told when the session ends, and among
// what a session that went away never got.
func TestMessagesDroppedAfterCloseAreCounted(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		h := New(resumeOpts())
		alice, q, _ := loginCounting(t, h, "alice")
		bob, _ := resumable(t, h, "bob")
		pair(t, bob, alice)
		q.dropped = 2
		alice.Close(proto.ReasonSlow, 3)
		if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Count != 5 {
			t.Fatalf("bob was told %+v, want peer_left with 5 undelivered", ev)
		}
	})
	t.Run("takeover", func(t *testing.T) {
		// The old connection is open: what it has not written is told
		// as the takeover ends the pairing, with what it dropped.
		h := New(resumeOpts())
		alice, q, _ := loginCounting(t, h, "alice")
		bob, _ := resumable(t, h, "bob")
		pair(t, bob, alice)
		q.unsent, q.dropped = 4, 1
		if _, _, err := h.LoginReplacing([]byte("alice"), &recorder{}); err != nil {
			t.Fatal(err)
		}
		if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonReplaced || ev.Count != 5 {
			t.Fatalf("bob was told %+v, want peer_left replaced with 5 undelivered", ev)
		}
	})
	t.Run("detach", func(t *testing.T) {
		h, clk := newClockedHub(resumeOpts())
		alice, q, key := loginCounting(t, h, "alice")
		bob, _ := resumable(t, h, "bob")
		pair(t, bob, alice)
		sayEach(t, bob.Session, numbered("a", 0, 8)...)
		clk.advance(45 * time.Second)
		q.dropped = 2
		alice.Detach(proto.ReasonSlow, 3)
		res, err := h.Resume([]byte(key), 0, false, &recorder{})
		if err != nil || res.Replayed != 5 || res.Missed != 0 {
			t.Fatalf("resume %+v, %v; want the 5 never written replayed", res, err)
		}
	})
}

// TestLeaveCountsNothingStillToBeWritten: a /leave ends the pairing but
// not the connection, which goes on writing what it holds for the user:
// the partner who is told of the leave is told of none undelivered.
func TestLeaveCountsNothingStillToBeWritten(t *testing.T) {
	h := New(resumeOpts())
	alice, q, _ := loginCounting(t, h, "alice")
	bob, _ := resumable(t, h, "bob")
	pair(t, bob, alice)
	q.unsent = 3
	if err := alice.Leave(); err != nil {
		t.Fatal(err)
	}
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonLeft || ev.Count != 0 {
		t.Fatalf("bob was told %+v, want peer_left, left, with none undelivered", ev)
	}
}

// TestAcknowledgedNotCountedUnsent: a connection's queue learns what its
// client received from its TCP alone, now and then, and may count among
// what it never delivered messages the client acknowledged itself
// (Ack). Those were received: a line resume that takes the session
// over, or one after it went away, replays those after the last
// acknowledged and counts none missed, and the partner is told none were
// not delivered.
func TestAcknowledgedNotCountedUnsent(t *testing.T) {
	for _, away := range []bool{false, true} {
		name := "takeover"
		if away {
			name = "away"
		}
		t.Run(name, func(t *testing.T) {
			h := New(resumeOpts())
			alice, q, key := loginCounting(t, h, "alice")
			bob, _ := resumable(t, h, "bob")
			pair(t, bob, alice)
			sayEach(t, bob.Session, numbered("a", 0, 8)...)
			alice.Ack(5)
			// Its queue saw none of the 8 received.
			q.unsent = 8
			if away {
				alice.Detach(proto.ReasonSlow, q.unsent)
				if ev := bob.box.last(t); ev.Kind != proto.EvPeerAway || ev.Count != 0 {
					t.Fatalf("bob was told %+v, want peer_away with none undelivered", ev)
				}
			}
			res, err := h.Resume([]byte(key), 0, false, &recorder{})
			if err != nil || res.Replayed != 3 || res.Missed != 0 {
				t.Fatalf("resume %+v, %v; want the 3 after the acknowledged replayed, none missed", res, err)
			}
		})
	}
}
