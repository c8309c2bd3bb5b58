package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"duet/engine/enginetest"
	"duet/proto"
)

// Tests of the count of undelivered messages a user is told when a
// pairing across nodes ends: what its partner never got, as on one node.

// pairHubUsers logs alice in on a and bob on b, and pairs them.
func pairHubUsers(t testing.TB, a, b *hubNode) (alice, bob *hubUser) {
	t.Helper()
	alice, bob = a.login(t, "alice"), b.login(t, "bob")
	if err := alice.s.Connect([]byte(bob.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	return alice, bob
}

// sayTo has u say count messages, prefix and a number, and waits for
// to to get each.
func (u *hubUser) sayTo(t testing.TB, to *hubUser, count int, prefix string) {
	t.Helper()
	for i := range count {
		u.say(t, fmt.Sprint(prefix, i))
		to.box.next(t, proto.EvMessage)
	}
}

// toldLeft checks that u is told next that its pairing ended for
// reason, with count of its messages undelivered.
func (u *hubUser) toldLeft(t testing.TB, reason proto.Reason, count int) {
	t.Helper()
	if ev := u.box.next(t, proto.EvPeerLeft); ev.Reason != reason || ev.Count != count {
		t.Fatalf("told %s with %d undelivered; want %s, %d", ev.Reason, ev.Count, reason, count)
	}
}

// TestLeaveCountsWhatWasInFlight: alice, on node a, speaks while bob,
// on node b, leaves; her last messages are on their way to b as his
// leave is on its way back, and b drops them. alice is told how many
// of hers he never got, from what b says reached it.
func TestLeaveCountsWhatWasInFlight(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice, bob := pairHubUsers(t, a, b)
	leaveWithMessagesInFlight(t, a, alice, bob)
}

// leaveWithMessagesInFlight has alice, on node at, say 2 messages bob
// gets, then 3 that reach his node after he left, and checks she is
// told those 3 were not delivered.
func leaveWithMessagesInFlight(t *testing.T, at *hubNode, alice, bob *hubUser) {
	t.Helper()
	alice.sayTo(t, bob, 2, "received ")

	// at's sender waits on the node's lock to publish, and its listener
	// to take bob's node's word in: what alice says now is taken and
	// counted as sent, but reaches bob's node only after he has left.
	at.mu.Lock()
	for i := range 3 {
		alice.say(t, fmt.Sprint("in flight ", i))
	}
	if err := bob.s.Leave(); err != nil {
		at.mu.Unlock()
		t.Fatal(err)
	}
	at.mu.Unlock()
	bob.box.next(t, proto.EvLeft)
	alice.toldLeft(t, proto.ReasonLeft, 3)
}

// TestSpeakingThroughTheCheck: alice keeps speaking to bob, whose node
// has just died (its lease not yet run out), until her pairing is cut.
// What she says while the check that cuts it asks Redis about the dead
// node, and what is still on its way out as it cuts, reaches nobody
// too: she is told of every message she sent that bob never got. Her
// node's Redis answers late, as a loaded one does, so that the check
// takes a while. A dead node says nothing of what reached it: a waits
// no time for its word.
func TestSpeakingThroughTheCheck(t *testing.T) {
	r := startRedis(t)
	px := startRedisProxy(t, r)
	a := startHubNodeWith(t, r, "a", resumeOptions(0), func(o *Options) { o.RedisURL = px.url(); noWordAwaited(o) })
	b := startHubNode(t, r, "b", resumeOptions(0)) // its lease outlives it by 10 s
	alice, _ := pairHubUsers(t, a, b)
	b.halt()
	px.lag.Store(int64(5 * time.Millisecond))
	// Said without a pause, but for a yield now and then: the check,
	// a second away at most, finds alice speaking.
	sent := 0
	for deadline := time.Now().Add(enginetest.Timeout); ; sent++ {
		if time.Now().After(deadline) {
			t.Fatalf("alice's pairing was not cut; she said %d", sent)
		}
		if _, _, err := alice.s.SayAll([][]byte{[]byte(fmt.Sprint("to nobody ", sent))}, nil); err != nil {
			if err != proto.ErrNotPaired {
				t.Fatalf("say %d: %v", sent, err)
			}
			break
		}
		if sent%64 == 63 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	ev := alice.box.next(t, proto.EvPeerLeft)
	if ev.Reason != proto.ReasonLinkLost || ev.Count != sent {
		t.Fatalf("alice was told %s with %d undelivered; she sent %d", ev.Reason, ev.Count, sent)
	}
	waitCut(t, a.Node, "node_deaf", 1)
}

// TestSpeakingAsRedisGoes: alice, on node a, speaks to bob, on node b,
// as a loses its link to Redis; what a had not yet published reaches
// nobody, and alice is told how many, with link_lost.
func TestSpeakingAsRedisGoes(t *testing.T) {
	r := startRedis(t)
	px := startRedisProxy(t, r)
	a := startHubNodeWith(t, r, "a", resumeOptions(0), func(o *Options) { o.RedisURL = px.url() })
	b := startHubNode(t, r, "b", resumeOptions(0))
	// Redis's answers reach a late: bob is told of the pairing, and
	// then gets what alice says, well before a hears that the batch
	// carrying either was published.
	px.lag.Store(int64(50 * time.Millisecond))
	alice, bob := pairHubUsers(t, a, b)
	alice.say(t, "received")
	bob.box.next(t, proto.EvMessage)
	// Its publish answered too, and the pairing's before it: a batch
	// whose answer the cut loses is counted as reaching no one, though
	// it did. A count of batches published that moved since the
	// pairing may have been moved by the pairing's own answer alone.
	waitAnswered(t, a.Node)
	px.lag.Store(0)

	// a's sender waits on the node's lock to publish, and so does a's
	// own goroutine to act on the lost link: what alice says now is
	// taken, and still on its way out when Redis goes.
	a.mu.Lock()
	for i := range 5 {
		alice.say(t, fmt.Sprint("never published ", i))
	}
	px.cut()
	a.mu.Unlock()
	ev := alice.box.next(t, proto.EvPeerLeft)
	if ev.Reason != proto.ReasonLinkLost || ev.Count != 5 {
		t.Fatalf("alice was told %s with %d undelivered; want link_lost, 5", ev.Reason, ev.Count)
	}
	waitCut(t, a.Node, "redis_lost", 1)

	// Linked again, a tells b: bob is told of the end, after nothing.
	px.restore()
	if ev := bob.box.next(t, proto.EvPeerLeft); ev.Reason != proto.ReasonLinkLost {
		t.Fatalf("bob was told %+v", ev)
	}
}

// noWordAwaited has a node wait no time for the word of a node found
// deaf (Options.deafWait): cut at once, as it is when none comes.
func noWordAwaited(o *Options) { o.deafWait = time.Millisecond }

// waitAnswered waits until Redis has answered the publish of every
// batch n queued for other nodes so far.
func waitAnswered(t testing.TB, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	n.drainSenders(ctx)
	if ctx.Err() != nil {
		t.Fatalf("%s's publishes were not all answered", n.id)
	}
}

// pairedBeforeAMove starts nodes a, b and c, pairs alice on a with bob
// on b, and has alice say 4 messages bob gets, before either moves.
func pairedBeforeAMove(t *testing.T) (a, b, c *hubNode, alice, bob *hubUser) {
	t.Helper()
	r := startRedis(t)
	a = startHubNode(t, r, "a", resumeOptions(0))
	b = startHubNode(t, r, "b", resumeOptions(0))
	c = startHubNode(t, r, "c", resumeOptions(0))
	alice, bob = pairHubUsers(t, a, b)
	alice.sayTo(t, bob, 4, "before the move ")
	return a, b, c, alice, bob
}

// parkByDrain has u's session go away, and its node, from, park it, as
// a drain does.
func parkByDrain(t testing.TB, from *hubNode, u, partner *hubUser) {
	t.Helper()
	u.s.Detach(proto.ReasonDisconnected, 0)
	partner.box.next(t, proto.EvPeerAway)
	if n := from.drain(t); n != 1 {
		t.Fatalf("%s parked %d sessions, want 1", from.ID(), n)
	}
}

// TestLeaveCountsWhatWasInFlightAfterAMove is TestLeaveCountsWhatWasInFlight
// with a session moved to node c during the pairing, by each of the
// ways a session moves. When alice moved, b has her messages from both
// nodes, and c counts only those it sent; what b says reached it counts
// from her move, as c's do. When bob moved, c counts only what reached
// it since, and a what it sent since. Either way she is told exactly
// the messages that never reached bob.
func TestLeaveCountsWhatWasInFlightAfterAMove(t *testing.T) {
	resumed := func(t *testing.T, from, to *hubNode, u, partner *hubUser) {
		u.s.Detach(proto.ReasonDisconnected, 0)
		partner.box.next(t, proto.EvPeerAway)
		u.resumeOn(t, to, 0, false)
		partner.box.next(t, proto.EvPeerBack)
	}
	drained := func(t *testing.T, from, to *hubNode, u, partner *hubUser) {
		parkByDrain(t, from, u, partner)
		u.resumeOn(t, to, 0, false)
		partner.box.next(t, proto.EvPeerBack)
	}
	for _, tc := range []struct {
		name       string
		aliceMoves bool
		move       func(t *testing.T, from, to *hubNode, u, partner *hubUser)
	}{
		{"alice resumed there", true, resumed},
		{"alice parked by a drain", true, drained},
		{"bob resumed there", false, resumed},
		{"bob parked by a drain", false, drained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c, alice, bob := pairedBeforeAMove(t)
			speaking := a
			if tc.aliceMoves {
				tc.move(t, a, c, alice, bob)
				speaking = c
			} else {
				tc.move(t, b, c, bob, alice)
			}
			leaveWithMessagesInFlight(t, speaking, alice, bob)
		})
	}
}

// TestLeaveHeldForAMovingPartnerCounts: bob leaves while alice is
// parked, and b holds his leave for her (its parker has not written it
// beside the park); she is taken up on c, and b sends the leave there.
// What she says on c before it arrives reaches b after the pairing
// ended there: none of it arrived, whatever reached b from a.
func TestLeaveHeldForAMovingPartnerCounts(t *testing.T) {
	a, b, c, alice, bob := pairedBeforeAMove(t)
	parkByDrain(t, a, alice, bob)
	holdParker(t, b.Node, "alice")
	if err := bob.s.Leave(); err != nil {
		t.Fatal(err)
	}
	bob.box.next(t, proto.EvLeft)

	// b's listener waits on its node's lock: c's word that it took
	// alice up, and what she says after it, reach b together.
	b.mu.Lock()
	ev, _ := alice.resumeOn(t, c, 0, false)
	if ev.Peer != "bob" {
		b.mu.Unlock()
		t.Fatalf("alice resumed with %+v; want paired with bob, his leave on its way", ev)
	}
	for i := range 3 {
		alice.say(t, fmt.Sprint("too late ", i))
	}
	b.mu.Unlock()
	alice.toldLeft(t, proto.ReasonLeft, 3)
}

// TestLinkLostCountsWhatWasNeverRead: bob's node b loses its link to
// Redis just after Redis took alice's last messages for it, and before
// b read them. a published them to a listener, and cannot know they
// were lost; b, linked again, tells a the pairing it cut, with how many
// of alice's messages reached it, and alice is told the rest.
func TestLinkLostCountsWhatWasNeverRead(t *testing.T) {
	r := startRedis(t)
	px := startRedisProxy(t, r)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNodeWith(t, r, "b", resumeOptions(0), func(o *Options) { o.RedisURL = px.url() })
	alice, bob := pairHubUsers(t, a, b)
	alice.sayTo(t, bob, 2, "received ")

	px.stalled.Store(true)
	for i := range 3 {
		alice.say(t, fmt.Sprint("never read ", i))
	}
	// Published, and Redis answered that b listened.
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	if a.drainSenders(ctx); ctx.Err() != nil {
		t.Fatal("a never published alice's messages")
	}
	px.cut()
	if ev := bob.box.next(t, proto.EvPeerLeft); ev.Reason != proto.ReasonLinkLost {
		t.Fatalf("bob was told %s", ev.Reason)
	}
	px.stalled.Store(false)
	px.restore()
	alice.toldLeft(t, proto.ReasonLinkLost, 3)
}
