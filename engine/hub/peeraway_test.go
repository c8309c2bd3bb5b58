package hub

import (
	"reflect"
	"testing"
	"time"

	"duet/proto"
)

// Tests of what a resume tells of a partner on another node, or parked
// between nodes, that is away: as of one away on the same hub, the
// resumed session is told peer_away with what remains of its window.

// remotePair logs bob in to h, a hub of a cluster, and pairs him with
// alice, a holder on another node; it returns him, and his key. Their
// pairing is number 1.
func remotePair(t *testing.T, h *Hub, d *fakeDirectory) (bob user, bobKey string) {
	t.Helper()
	bob, bobKey = resumable(t, h, "bob")
	if err := bob.Connect([]byte(d.addRemoteHolder("alice").String())); err != nil {
		t.Fatal(err)
	}
	bob.box.take()
	return bob, bobKey
}

// TestResumeToldRemotePartnerAway: alice, bob's partner on another
// node, goes away; her node's news of it reaches bob's hub while bob is
// connected (he is told) or away (he is not). Either way his resume
// half a minute later tells him she is away, with 1m30s of her window
// left; unless news that she is back came first: then, if he had been
// told she went, that she went and is back. Before, a resume was told nothing of
// a partner on another node, unless she went away without some of his
// messages.
func TestResumeToldRemotePartnerAway(t *testing.T) {
	away := proto.Event{Kind: proto.EvPeerAway, Window: 2 * time.Minute}
	back := proto.Event{Kind: proto.EvPeerBack, PeerProto: proto.ProtoJSON}
	toldAway := []proto.Event{{Kind: proto.EvPeerAway, Peer: "alice", Window: 90 * time.Second}}
	for _, tc := range []struct {
		name           string
		before, during []proto.Event // what alice's node says while bob is connected, then away
		want           []proto.Event // what bob's resume tells after the replay
	}{
		{name: "she went while he was connected", before: []proto.Event{away}, want: toldAway},
		{name: "she went while he was away", during: []proto.Event{away}, want: toldAway},
		{name: "she went and came back while he was connected", before: []proto.Event{away, back}},
		// He was told she went, not that she came back: his resume
		// tells him, or his last word of her would be that she went;
		// and, first, that she went, told as it was then, which may
		// have died with his connection.
		{name: "she came back while he was away", before: []proto.Event{away}, during: []proto.Event{back},
			want: []proto.Event{{Kind: proto.EvPeerAway, Peer: "alice", Window: 2 * time.Minute},
				{Kind: proto.EvPeerBack, Peer: "alice", PeerProto: proto.ProtoJSON}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, d, clk := clusterHub(t, resumeOpts())
			bob, bobKey := remotePair(t, h, d)
			tell := func(evs []proto.Event) {
				t.Helper()
				for _, ev := range evs {
					if !h.RemoteEvent("bob", 1, &ev) {
						t.Fatalf("the news %v found no pairing", ev.Kind)
					}
				}
			}
			tell(tc.before)
			if got := len(bob.box.take()); got != len(tc.before) {
				t.Fatalf("bob was told %d events of %d", got, len(tc.before))
			}
			bob.Detach(proto.ReasonDisconnected, 0)
			tell(tc.during)
			clk.advance(30 * time.Second)
			box := &recorder{}
			if after := resumeEvents(t, h, bobKey, box); len(after)+len(tc.want) > 0 && !reflect.DeepEqual(after, tc.want) {
				t.Fatalf("bob's resume told him %+v, want %+v", after, tc.want)
			}
			if len(tc.want) > 0 && tc.want[len(tc.want)-1].Kind == proto.EvPeerAway {
				// She comes back: he is told at once.
				tell([]proto.Event{back})
				want := []proto.Event{{Kind: proto.EvPeerBack, Peer: "alice", PeerProto: proto.ProtoJSON}}
				if got := box.take(); !reflect.DeepEqual(got, want) {
					t.Fatalf("bob was told %+v, want %+v", got, want)
				}
			}
		})
	}
}

// TestResumeToldPartnerParkedFromThisHub: alice and bob, on one hub of
// a cluster, are both away; bob is parked (a drain, or a resume on
// another node), and alice stays, paired with a stand-in for him. Her
// resume tells her he is away, with what remains of his window, as it
// did while he was here. Before, it told her nothing: the stand-in had
// no away state.
func TestResumeToldPartnerParkedFromThisHub(t *testing.T) {
	h, _, clk := clusterHub(t, resumeOpts())
	alice, aliceKey := resumable(t, h, "alice")
	bob, _ := resumable(t, h, "bob")
	pair(t, bob, alice)
	bob.Detach(proto.ReasonDisconnected, 0)
	alice.Detach(proto.ReasonDisconnected, 0)
	clk.advance(30 * time.Second)
	export(t, h, "bob")
	clk.advance(30 * time.Second)
	want := []proto.Event{{Kind: proto.EvPeerAway, Peer: "bob", Window: time.Minute}}
	if after := resumeEvents(t, h, aliceKey, &recorder{}); !reflect.DeepEqual(after, want) {
		t.Fatalf("alice's resume told her %+v, want %+v", after, want)
	}
}

// TestResumeToldPartnerParkedAsTakenUp: bob, away with his partner
// alice on another node, is taken up on another hub, where the
// directory says she is parked (away), with 40s of her window left;
// his resume there tells him so.
func TestResumeToldPartnerParkedAsTakenUp(t *testing.T) {
	h1, d1, _ := clusterHub(t, resumeOpts())
	bob, bobKey := remotePair(t, h1, d1)
	bob.Detach(proto.ReasonDisconnected, 0)
	p := export(t, h1, "bob")
	p.Pair.PeerNode, p.Pair.PeerAway, p.Pair.PeerWindow = "", true, 40*time.Second
	h2, _, _ := clusterHub(t, resumeOpts())
	if err := h2.Import(p, nil); err != nil {
		t.Fatal(err)
	}
	want := []proto.Event{{Kind: proto.EvPeerAway, Peer: "alice", Window: 40 * time.Second}}
	if after := resumeEvents(t, h2, bobKey, &recorder{}); !reflect.DeepEqual(after, want) {
		t.Fatalf("bob's resume told him %+v, want %+v", after, want)
	}
}

// TestPartnerMovedTellsWhereTheSessionStands: bob's partner, alice, on
// another node, is taken up on a node that has had no news of bob.
// That node is told whether he is away (with what remains of his
// window) and what she was not told while she moved: how many of her
// messages he went away without, and that he came back since. Nothing,
// when there is nothing to tell.
func TestPartnerMovedTellsWhereTheSessionStands(t *testing.T) {
	for _, tc := range []struct {
		name   string
		away   bool
		untold int
		back   bool
		want   []proto.Event
	}{
		{name: "away", away: true, untold: 3,
			want: []proto.Event{{Kind: proto.EvPeerAway, Peer: "bob", Window: 90 * time.Second, Count: 3}}},
		{name: "back", back: true,
			want: []proto.Event{{Kind: proto.EvPeerBack, Peer: "bob"}}},
		{name: "back, owing", untold: 2, back: true,
			want: []proto.Event{{Kind: proto.EvPeerAway, Peer: "bob", Count: 2}, {Kind: proto.EvPeerBack, Peer: "bob"}}},
		{name: "nothing to tell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, d, clk := clusterHub(t, resumeOpts())
			bob, _ := remotePair(t, h, d)
			toAlice := d.remote["alice"]
			if tc.away {
				bob.Detach(proto.ReasonDisconnected, 0)
			}
			toAlice.take()
			clk.advance(30 * time.Second)
			h.PartnerMoved("bob", 1, tc.untold, tc.back)
			if got := toAlice.take(); len(got)+len(tc.want) > 0 && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("alice's node was told %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRemoteNewsToldOnce: news of a partner on another node that says
// what the last news said (its node telling it again as the session
// arrives there, PartnerMoved) is not told again to a connected
// session; news with a count of messages the partner went away without
// is.
func TestRemoteNewsToldOnce(t *testing.T) {
	h, d, _ := clusterHub(t, resumeOpts())
	bob, _ := remotePair(t, h, d)
	for i, tc := range []struct {
		ev   proto.Event
		told bool
	}{
		{proto.Event{Kind: proto.EvPeerAway, Window: time.Minute}, true},
		{proto.Event{Kind: proto.EvPeerAway, Window: time.Minute}, false},
		{proto.Event{Kind: proto.EvPeerAway, Window: time.Minute, Count: 2}, true},
		{proto.Event{Kind: proto.EvPeerBack}, true},
		{proto.Event{Kind: proto.EvPeerBack}, false},
	} {
		if !h.RemoteEvent("bob", 1, &tc.ev) {
			t.Fatalf("news %d found no pairing", i)
		}
		if n := len(bob.box.take()); n > 1 || (n == 1) != tc.told {
			t.Fatalf("news %d (%v, count %d): told %d times, want told %v", i, tc.ev.Kind, tc.ev.Count, n, tc.told)
		}
	}
}
