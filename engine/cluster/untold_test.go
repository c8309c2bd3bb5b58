package cluster

import (
	"fmt"
	"testing"
	"time"

	"duet/engine/hub"
	"duet/proto"
)

// awayWithoutAwayOn pairs alice and bob (their names followed by i)
// on a, a hub node whose resume.buffer keeps kept of bob's messages:
// bob says sent, goes away, then alice, who had read none of them, goes
// away too, without them; bob, away, is not told how many she went
// without. It returns both.
func awayWithoutAwayOn(t *testing.T, a *hubNode, i, sent int) (alice, bob *hubUser) {
	t.Helper()
	alice, bob = a.pairedOn(t, fmt.Sprint("alice", i), fmt.Sprint("bob", i))
	for i := range sent {
		bob.say(t, fmt.Sprint("m", i))
	}
	bob.s.Detach(proto.ReasonDisconnected, 0)
	alice.s.Detach(proto.ReasonSlow, sent)
	return alice, bob
}

// TestDrainCarriesWhatAPartnerWentAwayWithout: alice and bob are both
// away on a node when it drains, and alice went away without some of
// bob's messages (her connection never wrote them, and they were
// dropped for room), which bob, away himself, was not told. Both are
// parked; bob is told the count exactly once, wherever and in whichever
// order they come back: with the news that she is away, if she is
// parked still, or with that news and that she is back, if she was
// resumed first, on his node or another. Before, the park dropped it:
// his resume told him nothing of her.
func TestDrainCarriesWhatAPartnerWentAwayWithout(t *testing.T) {
	const sent, kept = 10, 4
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(kept*(2+64))) // m0..m9: two bytes each
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	for i, tc := range []struct {
		name    string
		herNode *hubNode // where alice resumes first; nil: bob first
		hisNode *hubNode
	}{
		{name: "his resume first", hisNode: b},
		{name: "hers first, on his node", herNode: b, hisNode: b},
		{name: "hers first, on another node", herNode: b, hisNode: c},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alice, bob := awayWithoutAwayOn(t, a, i, sent)
			if n := a.drain(t); n != 2 {
				t.Fatalf("parked %d", n)
			}
			if i == 0 {
				checkUntoldBesideThePark(t, r, c, bob, sent-kept)
			}
			if tc.herNode != nil {
				if ev, texts := alice.resumeOn(t, tc.herNode, 0, true); ev.Peer != bob.s.Name() || ev.Missed != sent-kept || len(texts) != kept {
					t.Fatalf("alice resumed %+v, replayed %q", ev, texts)
				}
			}
			if ev, _ := bob.resumeOn(t, tc.hisNode, 0, true); ev.Peer != alice.s.Name() {
				t.Fatalf("bob resumed %+v", ev)
			}
			if ev := bob.box.next(t, proto.EvPeerAway); ev.Peer != alice.s.Name() || ev.Count != sent-kept || ev.Window <= 0 || ev.Window > 2*time.Minute {
				t.Fatalf("bob was told %+v, want peer_away with %d undelivered", ev, sent-kept)
			}
			if tc.herNode == nil {
				alice.resumeOn(t, c, 0, true)
			}
			// She is back once, and then speaks: a peer_back told twice
			// would come between.
			if ev := bob.box.next(t, proto.EvPeerBack); ev.Peer != alice.s.Name() {
				t.Fatalf("bob was told %+v", ev)
			}
			alice.say(t, "hello again")
			if ev := bob.box.next(t, proto.EvMessage); string(ev.Text) != "hello again" {
				t.Fatalf("bob was told %+v", ev)
			}
		})
	}
}

// checkUntoldBesideThePark checks that bob's park, on a drained node,
// is in a form a node from before the count reads (version 1 of the
// parked form here), with the count sealed beside it, which a node of
// this version (c) reads back; and that a count sealed for another park
// of his is refused.
func checkUntoldBesideThePark(t *testing.T, r *redisServer, c *hubNode, bob *hubUser, want int) {
	t.Helper()
	park, hn, gen, pt, sum := parkOf(t, r, c, bob)
	if pt[2] != 1 {
		t.Fatalf("parked as version %d, not the version 1 every node reads", pt[2])
	}
	if park["untold"] == "" {
		t.Fatalf("no count beside the park: %v", park)
	}
	p, err := c.openParked(hn, park["blob"], park["gen"], beside{untold: park["untold"]}, &sum)
	if err != nil || p.Untold != want || p.UntoldBack {
		t.Fatalf("read back %+v, %v; want %d untold", p, err, want)
	}
	other := c.sealUntold(&hub.Parked{Gen: gen + 1, Untold: want}, hn)
	if _, err := c.openParked(hn, park["blob"], park["gen"], beside{untold: string(other)}, &sum); err == nil {
		t.Fatal("took a count sealed for another park")
	}
}
