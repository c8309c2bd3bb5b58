package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"duet/engine/enginetest"
	"duet/proto"
)

// The order of what a partner says to a parked session, when the
// partner's own session moves meanwhile: the queue in Redis gets each
// message once, in the order said, whichever node queues it.

// releaseParker undoes holdParker.
func releaseParker(n *Node, key string) {
	n.mu.Lock()
	var list []*remoteOutbox
	for _, o := range n.routes {
		if o.to == key {
			list = append(list, o)
		}
	}
	n.mu.Unlock()
	for _, o := range list {
		o.unquiesce()
	}
}

// parkedPair logs alice and bob in on a, pairs them, and parks alice
// (away, then a drained).
func parkedPair(t *testing.T, a *hubNode) (alice, bob *hubUser) {
	t.Helper()
	alice, bob = a.pairedOn(t, "alice", "bob")
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	if n := a.drain(t); n != 1 {
		t.Fatalf("parked %d sessions, want 1", n)
	}
	return alice, bob
}

// TestParkedQueueAfterPartnerMoves: bob says two things to parked
// alice, then his session moves to node c, whose stub for alice does
// not know how many are queued for her already. What he then says in
// one run is queued after them, once each. A run whose first message
// was refused for its place used to have a later one of it queued in
// the place the first should have had, and go again: alice got the
// run's tail thousands of times and never its head.
func TestParkedQueueAfterPartnerMoves(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice, bob := parkedPair(t, a)
	bob.say(t, "1")
	bob.say(t, "2")
	rc := redisClient(t, r)
	waitQueued(t, rc, a, "alice", 2)
	bob.s.Detach(proto.ReasonDisconnected, 0)
	bob.resumeOn(t, c, 0, true)
	if _, _, err := bob.s.SayAll([][]byte{[]byte("3"), []byte("4"), []byte("5")}, nil); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, rc, a, "alice", 5)
	waitParkersIdle(t, a, c)
	if n := rc.LLen(context.Background(), "duet:parkq:"+a.keys.nameHash("alice")).Val(); n != 5 {
		t.Fatalf("%d messages queued for alice, want 5", n)
	}
	_, texts := alice.resumeOn(t, b, 0, true)
	if got := strings.Join(texts[:min(len(texts), 12)], ","); got != "1,2,3,4,5" {
		t.Fatalf("alice replayed %d messages, starting %q; want 1,2,3,4,5", len(texts), got)
	}
}

// TestParkedQueueKeepsOrderAcrossPartnerMove: what bob said to parked
// alice on a, and a's parker has not queued yet, is queued before what
// he says once his session has moved to c: a parks him only when its
// parker has queued what he said.
func TestParkedQueueKeepsOrderAcrossPartnerMove(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice, bob := parkedPair(t, a)
	holdParker(t, a.Node, "alice")
	bob.say(t, "1")
	bob.say(t, "2")
	bob.s.Detach(proto.ReasonDisconnected, 0)
	parked := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
		defer cancel()
		parked <- a.Drain(ctx)
	}()
	// bob resumes on c as soon as his park is written. The parker is
	// released once his park is written, or a while after the drain
	// started if it is not: a waits for its parker first.
	rc := redisClient(t, r)
	parkKey := "duet:park:" + a.keys.nameHash("bob")
	released := false
	for deadline := time.Now().Add(enginetest.Timeout); rc.Exists(context.Background(), parkKey).Val() == 0; time.Sleep(5 * time.Millisecond) {
		if !released && time.Until(deadline) < enginetest.Timeout-300*time.Millisecond {
			releaseParker(a.Node, "alice")
			released = true
		}
		if time.Now().After(deadline) {
			t.Fatal("bob was never parked")
		}
	}
	bob.resumeOn(t, c, 0, true)
	bob.say(t, "3")
	waitQueued(t, rc, a, "alice", 1)
	if !released {
		releaseParker(a.Node, "alice")
	}
	if n := <-parked; n != 1 {
		t.Fatalf("parked %d sessions, want 1", n)
	}
	waitQueued(t, rc, a, "alice", 3)
	waitParkersIdle(t, a, c)
	_, texts := alice.resumeOn(t, b, 0, true)
	if got := strings.Join(texts[:min(len(texts), 12)], ","); got != "1,2,3" {
		t.Fatalf("alice replayed %d messages, starting %q; want 1,2,3", len(texts), got)
	}
}

// waitParkersIdle waits until the nodes' parkers have nothing left.
func waitParkersIdle(t testing.TB, nodes ...*hubNode) {
	t.Helper()
	for _, n := range nodes {
		for deadline := time.Now().Add(enginetest.Timeout); !n.parkerIdle(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s's parker is still busy", n.ID())
			}
		}
	}
}

// TestParkedFullCountsTheSendersOwn: alice is away on node a; bob says
// two things to her and leaves, and carol pairs with her; a drains,
// parking her. When carol's messages fill what is kept for alice, carol
// is told of her own messages waiting, not of bob's too.
func TestParkedFullCountsTheSendersOwn(t *testing.T) {
	r := startRedis(t)
	text := strings.Repeat("x", 100)
	a := startHubNode(t, r, "a", resumeOptions(4*(len(text)+64)))
	alice := a.login(t, "alice")
	bob := a.login(t, "bob")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.say(t, text)
	bob.say(t, text)
	if err := bob.s.Leave(); err != nil {
		t.Fatal(err)
	}
	carol := a.login(t, "carol")
	if err := carol.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	carol.box.next(t, proto.EvPaired)
	carol.box.next(t, proto.EvPeerAway)
	carol.say(t, text)
	if n := a.drain(t); n != 1 {
		t.Fatalf("parked %d sessions, want 1", n)
	}
	for range 2 {
		if _, _, err := carol.s.SayAll([][]byte{[]byte(text)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	ev := carol.box.next(t, proto.EvError)
	if want := "alice is away, and 2 of your messages"; ev.Err.Code != "peer_away_full" || !strings.HasPrefix(ev.Err.Text, want) {
		t.Fatalf("carol was told %v, want %q...", ev.Err, want)
	}
}
