package cluster

import (
	"fmt"
	"testing"
	"time"

	"duet/proto"
)

// Tests of what a resume tells of a partner on another node that is
// away: as on one node, the resumed session is told peer_away, with
// the time the partner may still take, so that its user knows why
// nothing comes back, and peer_back when the partner returns.

// pairedAcross logs in alice (on a) and bob (on b), named with i, and
// pairs them, alice connecting.
func pairedAcross(t testing.TB, a, b *hubNode, i int) (alice, bob *hubUser) {
	t.Helper()
	alice, bob = a.login(t, fmt.Sprint("alice", i)), b.login(t, fmt.Sprint("bob", i))
	if err := alice.s.Connect([]byte(bob.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	return alice, bob
}

// threeNodes starts hub nodes a, b and c on r, their ids ending in
// run, of which a keeps aKeeps and b bKeeps two-byte messages for a
// session (0: resume.buffer's default).
func threeNodes(t testing.TB, r *redisServer, run, aKeeps, bKeeps int) [3]*hubNode {
	t.Helper()
	var nodes [3]*hubNode
	for i, keeps := range []int{aKeeps, bKeeps, 0} {
		nodes[i] = startHubNode(t, r, fmt.Sprint(string(rune('a'+i)), run), resumeOptions(keeps*(2+64)))
	}
	return nodes
}

// parkAway sends u's session away and has its node, n, park it, as a
// drain does; partner, if not nil and not away itself, is told.
func parkAway(t testing.TB, n *hubNode, u, partner *hubUser) {
	t.Helper()
	u.s.Detach(proto.ReasonDisconnected, 0)
	if partner != nil {
		partner.box.next(t, proto.EvPeerAway)
	}
	if parked := n.drain(t); parked != 1 {
		t.Fatalf("%s parked %d sessions, want 1", n.ID(), parked)
	}
}

// toldAway checks that u is told next that partner is away, with some
// of its window left.
func toldAway(t testing.TB, u, partner *hubUser) {
	t.Helper()
	if ev := u.box.next(t, proto.EvPeerAway); ev.Peer != partner.s.Name() || ev.Window <= 0 || ev.Window > 2*time.Minute {
		t.Fatalf("%s was told %+v, want peer_away naming %s with its window", u.s.Name(), ev, partner.s.Name())
	}
}

// TestResumeToldPartnerAwayOnAnotherNode: alice, on node a, is paired
// with bob, on node b; bob goes away, then alice. However each of them
// went (away on a live node, or parked by a drain, before or after the
// other) and wherever alice resumes (her own node, or another), her
// resume tells her bob is away, with what remains of his window; and
// when he comes back she is told so, once: the next thing she is told
// is his message. Before, a resume was told nothing of a
// partner away on another node or parked: the node knew only what its
// session's connection had been told, and that connection was gone.
func TestResumeToldPartnerAwayOnAnotherNode(t *testing.T) {
	r := startRedis(t)
	// Ways for both to go away, alice on a and bob on b.
	bothAway := func(t *testing.T, a, b *hubNode, alice, bob *hubUser) {
		bob.s.Detach(proto.ReasonDisconnected, 0)
		alice.box.next(t, proto.EvPeerAway)
		alice.s.Detach(proto.ReasonDisconnected, 0)
	}
	heIsParked := func(t *testing.T, a, b *hubNode, alice, bob *hubUser) {
		parkAway(t, b, bob, alice)
		alice.s.Detach(proto.ReasonDisconnected, 0)
	}
	sheIsParkedThenHeGoes := func(t *testing.T, a, b *hubNode, alice, bob *hubUser) {
		parkAway(t, a, alice, bob)
		bob.s.Detach(proto.ReasonDisconnected, 0)
	}
	bothParked := func(t *testing.T, a, b *hubNode, alice, bob *hubUser) {
		parkAway(t, a, alice, bob)
		parkAway(t, b, bob, nil)
	}
	for i, tc := range []struct {
		name string
		away func(t *testing.T, a, b *hubNode, alice, bob *hubUser)
		// herNode is where alice resumes, hisNode where bob then does:
		// 0 for a, 1 for b, 2 for c.
		herNode, hisNode int
		// heSawHerGo: bob went away told that she was away, on his
		// node or parked by its drain, and his resume, finding her
		// back, tells him so.
		heSawHerGo bool
	}{
		{"both away, she resumes on her node", bothAway, 0, 1, false},
		{"both away, she resumes on a third node", bothAway, 2, 1, false},
		{"he is parked, she resumes on her node", heIsParked, 0, 2, false},
		{"he is parked, she resumes on a third node", heIsParked, 2, 1, false},
		{"she is parked, then he goes away", sheIsParkedThenHeGoes, 2, 1, true},
		{"she is parked, then he is", bothParked, 2, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Nodes of its own, so that a drain parks only its users.
			nodes := threeNodes(t, r, i, 0, 0)
			alice, bob := pairedAcross(t, nodes[0], nodes[1], i)
			tc.away(t, nodes[0], nodes[1], alice, bob)
			alice.resumeOn(t, nodes[tc.herNode], 0, true)
			toldAway(t, alice, bob)

			bob.resumeOn(t, nodes[tc.hisNode], 0, true)
			if ev := alice.box.next(t, proto.EvPeerBack); ev.Peer != bob.s.Name() {
				t.Fatalf("alice was told %+v, want peer_back", ev)
			}
			bob.say(t, "back")
			if ev := alice.box.next(t, proto.EvMessage); string(ev.Text) != "back" {
				t.Fatalf("alice was told %+v", ev)
			}
			// bob's resume may come before the news that she is back
			// reaches his node: he is told she is away, then back. One
			// that finds her back tells him so if he went away told
			// she was away.
			alice.say(t, "welcome back")
			ev := bob.box.nextOf(t, proto.EvPeerAway, proto.EvPeerBack, proto.EvMessage)
			switch {
			case ev.Kind == proto.EvPeerAway:
				if ev.Peer != alice.s.Name() {
					t.Fatalf("bob was told %+v", ev)
				}
				if ev := bob.box.next(t, proto.EvPeerBack); ev.Peer != alice.s.Name() {
					t.Fatalf("bob was told %+v", ev)
				}
				ev = bob.box.next(t, proto.EvMessage)
			case ev.Kind == proto.EvPeerBack && tc.heSawHerGo:
				if ev.Peer != alice.s.Name() {
					t.Fatalf("bob was told %+v", ev)
				}
				ev = bob.box.next(t, proto.EvMessage)
			case tc.heSawHerGo:
				t.Fatalf("bob, who went away told she was away, was told %+v, not that she is back", ev)
			}
			if string(ev.Text) != "welcome back" {
				t.Fatalf("bob was told %+v", ev)
			}
		})
	}
}

// TestParkedToldWhatThePartnerWentAwayWithout: alice is parked (her
// node drains) when bob, on node b, goes away without some of her
// messages (his connection never wrote them, and his node kept only
// some). Wherever she is taken up, on his node or a third, her resume
// tells her he is away and how many of hers he will never get: as many
// as his resume counts missed. Before, the count was dropped with the
// news, which a parked session was not told.
func TestParkedToldWhatThePartnerWentAwayWithout(t *testing.T) {
	const sent, kept = 10, 4
	r := startRedis(t)
	for i, tc := range []struct {
		name    string
		herNode int // 1 for b, 2 for c
	}{
		{"taken up on his node", 1},
		{"taken up on a third node", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := threeNodes(t, r, i, 0, kept) // m0..m9
			a, b := nodes[0], nodes[1]
			alice, bob := pairedAcross(t, a, b, i)
			alice.sayTo(t, bob, sent, "m")
			parkAway(t, a, alice, bob)
			bob.s.Detach(proto.ReasonSlow, sent)

			alice.resumeOn(t, nodes[tc.herNode], 0, true)
			if ev := alice.box.next(t, proto.EvPeerAway); ev.Peer != bob.s.Name() || ev.Count != sent-kept || ev.Window <= 0 {
				t.Fatalf("alice was told %+v, want peer_away with %d undelivered", ev, sent-kept)
			}
			if ev, texts := bob.resumeOn(t, b, 0, false); ev.Missed != sent-kept || len(texts) != kept {
				t.Fatalf("bob resumed %+v, replayed %q; want %d missed, as alice was told", ev, texts, sent-kept)
			}
			if ev := alice.box.next(t, proto.EvPeerBack); ev.Peer != bob.s.Name() {
				t.Fatalf("alice was told %+v, want peer_back", ev)
			}
		})
	}
}

// TestParkedToldThePartnerCameBack: bob is away on node b when alice,
// on node a, goes away without some of his messages; then b drains,
// parking him, and alice comes back on a. bob, taken up on a third
// node, is told she went away without them, and that she is back.
// Before, the news of her return was dropped for a session parked, and
// he was told only that she was away.
func TestParkedToldThePartnerCameBack(t *testing.T) {
	const sent, kept = 10, 4
	r := startRedis(t)
	nodes := threeNodes(t, r, 0, kept, 0) // m0..m9
	a, b, c := nodes[0], nodes[1], nodes[2]
	alice, bob := pairedAcross(t, a, b, 0)
	bob.sayTo(t, alice, sent, "m")
	bob.s.Detach(proto.ReasonDisconnected, 0)
	alice.box.next(t, proto.EvPeerAway)
	alice.s.Detach(proto.ReasonSlow, sent)
	if parked := b.drain(t); parked != 1 {
		t.Fatalf("b parked %d sessions, want 1", parked)
	}
	alice.resumeOn(t, a, 0, true)
	toldAway(t, alice, bob)

	bob.resumeOn(t, c, 0, true)
	if ev := bob.box.next(t, proto.EvPeerAway); ev.Peer != alice.s.Name() || ev.Count != sent-kept {
		t.Fatalf("bob was told %+v, want peer_away with %d undelivered", ev, sent-kept)
	}
	if ev := bob.box.next(t, proto.EvPeerBack); ev.Peer != alice.s.Name() {
		t.Fatalf("bob was told %+v, want peer_back", ev)
	}
	alice.say(t, "hello again")
	if ev := bob.box.next(t, proto.EvMessage); string(ev.Text) != "hello again" {
		t.Fatalf("bob was told %+v", ev)
	}
}

// TestParkedToldLeftCountsWhatThePartnerWentAwayWithout: alice is
// parked when bob goes away without some of her messages, then his
// session ends (his node cannot park it). Her resume tells her he
// left, counting every message of hers he never got: those he went
// away without, and those kept for him. Before, it counted only those
// kept for him.
func TestParkedToldLeftCountsWhatThePartnerWentAwayWithout(t *testing.T) {
	const sent, kept = 10, 4
	r := startRedis(t)
	nodes := threeNodes(t, r, 0, 0, kept) // m0..m9
	a, b, c := nodes[0], nodes[1], nodes[2]
	alice, bob := pairedAcross(t, a, b, 0)
	alice.sayTo(t, bob, sent, "m")
	parkAway(t, a, alice, bob)
	bob.s.Detach(proto.ReasonSlow, sent)
	if !b.hub.EndAway(bob.s.Key(), proto.ReasonShutdown) {
		t.Fatal("bob's session was not away")
	}
	waitReleased(t, r, a.Node, alice.s.Name())
	if ev, _ := alice.resumeOn(t, c, 0, true); ev.Peer != "" {
		t.Fatalf("alice resumed %+v, paired still", ev)
	}
	if ev := alice.box.next(t, proto.EvPeerLeft); ev.Peer != bob.s.Name() || ev.Reason != proto.ReasonShutdown || ev.Count != sent {
		t.Fatalf("alice was told %+v, want peer_left (shutdown) with %d undelivered", ev, sent)
	}
}

// TestDrainToldPartnerTheServerRestarts: alice, on node a, is paired
// with bob, on node b. When her connection drops, bob is told she lost
// the connection; when a drains for a restart and closes it for her to
// reconnect elsewhere, he is told her server is restarting. Before, a
// drain told him she lost the connection, a failure of hers that never
// happened.
func TestDrainToldPartnerTheServerRestarts(t *testing.T) {
	r := startRedis(t)
	a, b := startHubNode(t, r, "a", resumeOptions(0)), startHubNode(t, r, "b", resumeOptions(0))
	for i, drain := range []bool{false, true} {
		alice, bob := pairedAcross(t, a, b, i)
		want := proto.Reason("")
		if drain {
			a.hub.SetDraining()
			want = proto.ReasonShutdown
		}
		alice.s.Detach(proto.ReasonDisconnected, 0)
		if ev := bob.box.next(t, proto.EvPeerAway); ev.Reason != want || ev.Peer != alice.s.Name() {
			t.Fatalf("draining %v: bob was told %+v, want peer_away with reason %q", drain, ev, want)
		}
	}
}

// TestDrainUnannouncedAwayComesBackUntold: alice and bob are both on
// node a, which drains for a restart. Alice is sent away first; bob,
// about to be told of the restart himself, is not told she went. She
// resumes on b at once, while bob is still on a: he is told nothing of
// her return either. Before, he read "alice is back" of an absence he
// was never told of.
func TestDrainUnannouncedAwayComesBackUntold(t *testing.T) {
	r := startRedis(t)
	a, b := startHubNode(t, r, "a", resumeOptions(0)), startHubNode(t, r, "b", resumeOptions(0))
	alice, bob := a.pairedOn(t, "alice", "bob")
	a.hub.SetDraining()
	alice.s.Detach(proto.ReasonDisconnected, 0)
	if n := a.drain(t); n != 1 {
		t.Fatalf("parked %d", n)
	}
	if ev, _ := alice.resumeOn(t, b, 0, true); ev.Peer != "bob" {
		t.Fatalf("alice resumed %+v", ev)
	}
	waitAnswered(t, b.Node)
	bob.box.quiet(t, time.Second)
	// He still talks to her, on b now.
	bob.say(t, "still there?")
	if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "still there?" {
		t.Fatalf("alice: %+v", m)
	}
}
