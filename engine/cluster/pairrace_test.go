package cluster

import (
	"context"
	"testing"
	"time"

	"duet/engine/enginetest"
	"duet/proto"
)

// TestClaimOfAHolderWhoLoggedOut: alice, on node a, claims bob's token;
// bob, on node b, logs out before a's word of the pairing (P) reaches b,
// and someone else logs in there as bob, with a token never given out.
// That word pairs no one: the new bob is not paired with alice, and
// alice is told the pairing ended.
func TestClaimOfAHolderWhoLoggedOut(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	bob := b.login(t, "bob")
	alice := a.login(t, "alice")
	s := a.sender(b.NodeID()) // a's word to b waits, as behind a busy link
	s.mu.Lock()
	held := true
	defer func() {
		if held {
			s.mu.Unlock()
		}
	}()
	done := make(chan *proto.Error, 1)
	go func() { done <- alice.s.Connect([]byte(bob.token)) }()
	rc := redisClient(t, r)
	bobKey := "duet:user:" + a.keys.nameHash("bob")
	for deadline := time.Now().Add(enginetest.Timeout); rc.HGet(context.Background(), bobKey, "pair").Val() == "0"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("alice's claim never reached bob's record")
		}
	}
	bob.s.Close(proto.ReasonLeft, 0)
	b.hub.WaitClosing()
	newBob := b.login(t, "bob")
	s.mu.Unlock()
	held = false
	if err := <-done; err != nil {
		t.Fatalf("alice's connect: %v", err)
	}
	alice.box.next(t, proto.EvPaired)
	if ev := alice.box.next(t, proto.EvPeerLeft); ev.Reason != proto.ReasonDisconnected {
		t.Fatalf("alice was told %+v", ev)
	}
	time.Sleep(200 * time.Millisecond)
	newBob.box.mu.Lock()
	defer newBob.box.mu.Unlock()
	for _, ev := range newBob.box.evs {
		if ev.Kind == proto.EvPaired {
			t.Fatalf("the new bob, whose token no one was given, was paired with %s", ev.Peer)
		}
	}
}

// TestResumeElsewhereKeepsTheRoles: a session taken up on another node
// than its partner's is told the role it was paired in: the holder of
// the token claimed is not the initiator there either, whether it was
// paired before it went away or while it was away. (Every session taken
// up on another node used to be told initiator true: two pages then
// both started the exchange of end-to-end encryption as the one that
// connected, and it failed.)
func TestResumeElsewhereKeepsTheRoles(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))

	alice := a.login(t, "alice")
	bob := b.login(t, "bob")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	if ev := bob.box.next(t, proto.EvPaired); !ev.Initiator {
		t.Fatalf("bob connected: %+v", ev)
	}
	if ev := alice.box.next(t, proto.EvPaired); ev.Initiator {
		t.Fatalf("alice's token was claimed: %+v", ev)
	}
	alice.s.Detach(proto.ReasonDisconnected, 0)
	if ev, _ := alice.resumeOn(t, c, 0, false); ev.Peer != "bob" || ev.Initiator {
		t.Fatalf("alice, the holder, resumed on another node: %+v", ev)
	}

	carol := a.login(t, "carol")
	dave := b.login(t, "dave")
	carol.s.Detach(proto.ReasonDisconnected, 0)
	if err := dave.s.Connect([]byte(carol.token)); err != nil {
		t.Fatal(err)
	}
	if ev := dave.box.next(t, proto.EvPaired); !ev.Initiator {
		t.Fatalf("dave connected: %+v", ev)
	}
	// Resumed only once carol's node has the pairing: a claim that
	// overtakes the pairing's word to her node is the gap CLUSTER.md
	// names (a /connect that reaches a park), not what this test holds.
	for deadline := time.Now().Add(enginetest.Timeout); carol.s.Peer() != "dave"; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("carol's node never had her pairing with dave")
		}
	}
	if ev, _ := carol.resumeOn(t, c, 0, false); ev.Peer != "dave" || ev.Initiator {
		t.Fatalf("carol, paired while away, resumed on another node: %+v", ev)
	}
}
