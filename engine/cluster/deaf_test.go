package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"duet/engine/enginetest"
	"duet/proto"
)

// TestDeafNodeCountsWhatRedisDropped: bob's node b reads its channel
// too slowly (its listener stalls), and Redis, past its pub/sub output
// limit, drops b's subscription and the messages of alice's it held
// for b, though it had answered her node a that b listened. alice
// speaks on; a publish of a's finds nobody listening, and a's next
// check finds b alive but deaf. b, running again, reads what it had,
// finds its subscription gone, cuts its pairing with alice and, linked
// again, says how many of her messages reached it (L). alice is told
// every message bob never got. Before, a cut the pairing at once, and
// told her only of those that reached no one after the drop.
func TestDeafNodeCountsWhatRedisDropped(t *testing.T) {
	r := startRedis(t)
	rc := redisClient(t, r)
	// Low, so that a few MB left unread make Redis drop a subscription.
	if err := rc.ConfigSet(context.Background(), "client-output-buffer-limit", "pubsub 256kb 128kb 60").Err(); err != nil {
		t.Fatal(err)
	}
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice, bob, box := pairGated(t, a, b)
	alice.sayTo(t, bob, 2, "before the stall ")
	sent, received := 2, 2

	stallOn(t, box, alice, "stalled")
	sent++
	// Runs of long messages, each published before the next is said,
	// so that a's queue for b never fills, until Redis has dropped b's
	// subscription and a publish finds nobody listening.
	text := []byte(strings.Repeat("x", 16000))
speaking:
	for !nobodyListened(a.Node) {
		if sent > 8000 {
			close(box.open)
			t.Fatalf("Redis never dropped b's subscription; alice said %d", sent)
		}
		for range 32 {
			_, _, err := alice.s.SayAll([][]byte{text}, nil)
			if err == proto.ErrNotPaired {
				break speaking // a cut the pairing already
			}
			if err != nil {
				close(box.open)
				t.Fatalf("say %d: %v", sent, err)
			}
			sent++
		}
		waitAnswered(t, a.Node)
	}

	// a's check takes the news; what it does with it is done before b
	// runs again, but for a round trip or two: given a second.
	for deadline := time.Now().Add(enginetest.Timeout); !suspectsTaken(a.Node); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(box.open)
			t.Fatal("a never checked on b")
		}
	}
	for deadline := time.Now().Add(time.Second); !told(alice) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}

	close(box.open)
	for {
		ev := bob.box.nextOf(t, proto.EvMessage, proto.EvPeerLeft)
		if ev.Kind == proto.EvPeerLeft {
			break
		}
		received++
	}
	ev := alice.box.next(t, proto.EvPeerLeft)
	t.Logf("alice said %d, bob got %d, alice was told %d undelivered", sent, received, ev.Count)
	if received >= sent {
		t.Fatalf("bob got all %d of alice's messages: Redis dropped none", sent)
	}
	if ev.Reason != proto.ReasonLinkLost || ev.Count != sent-received {
		t.Fatalf("alice was told %s with %d undelivered; bob got %d of her %d", ev.Reason, ev.Count, received, sent)
	}
	waitCut(t, a.Node, "node_deaf", 1)
}

// nobodyListened reports whether a batch of n's found nobody listening
// since n last checked on the other nodes, or its senders count
// messages that reached no one.
func nobodyListened(n *Node) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.suspects) > 0 {
		return true
	}
	for _, s := range n.senders {
		s.mu.Lock()
		lost := len(s.lost) > 0
		s.mu.Unlock()
		if lost {
			return true
		}
	}
	return false
}

// suspectsTaken reports whether n's check has taken the news of the
// nodes that had nobody listening.
func suspectsTaken(n *Node) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.suspects) == 0
}

// told reports whether u has an event not yet taken.
func told(u *hubUser) bool {
	u.box.mu.Lock()
	defer u.box.mu.Unlock()
	return len(u.box.evs) > 0
}
