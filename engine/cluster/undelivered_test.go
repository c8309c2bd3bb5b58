package cluster

import (
	"fmt"
	"testing"

	"duet/proto"
)

// Tests of the count of undelivered messages a user is told when a
// pairing across nodes ends: what its partner never got, as on one node.

// TestLeaveCountsWhatWasInFlight: alice, on node a, speaks while bob,
// on node b, leaves; her last messages are on their way to b as his
// leave is on its way back, and b drops them. alice is told how many
// of hers he never got, from what b says reached it.
func TestLeaveCountsWhatWasInFlight(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice, bob := a.login(t, "alice"), b.login(t, "bob")
	if err := alice.s.Connect([]byte(bob.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	for i := range 2 {
		alice.say(t, fmt.Sprint("received ", i))
		bob.box.next(t, proto.EvMessage)
	}

	// a's sender waits on the node's lock to publish, and its listener
	// to take b's word in: what alice says now is taken and counted as
	// sent, but reaches b only after bob has left.
	a.mu.Lock()
	for i := range 3 {
		alice.say(t, fmt.Sprint("in flight ", i))
	}
	if err := bob.s.Leave(); err != nil {
		a.mu.Unlock()
		t.Fatal(err)
	}
	a.mu.Unlock()
	bob.box.next(t, proto.EvLeft)
	ev := alice.box.next(t, proto.EvPeerLeft)
	if ev.Reason != proto.ReasonLeft || ev.Count != 3 {
		t.Fatalf("alice was told %+v; want left, 3 undelivered", ev)
	}
}
