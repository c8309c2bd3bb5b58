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
