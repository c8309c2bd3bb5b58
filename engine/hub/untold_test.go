package hub

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	"duet/proto"
)

// Tests of what a session away itself is owed by a partner that went
// away without some of its messages (away.untold), when the two move:
// to the next process (a state file), or out of a hub and into another
// (Export, Import).

// untoldOpts is resume on, with a window of 5m and room for kept
// messages of two bytes (a0..a9).
func untoldOpts(kept int) Options {
	opts := resumeOpts()
	opts.ResumeBuffer = kept * (2 + entryCost)
	opts.ResumeWindow = 5 * time.Minute
	return opts
}

// awayWithoutAway is TestAwayToldToAPartnerAwayItself's start, on h,
// made with untoldOpts: bob goes away, with a window of 5m, then alice,
// who had stopped reading, goes away, with a window of 2m, and sent of
// his messages unwritten, of which her resume.buffer keeps kept. It
// returns both keys.
func awayWithoutAway(t *testing.T, h *Hub, sent int) (aliceKey, bobKey string) {
	t.Helper()
	alice, aliceKey := resumable(t, h, "alice")
	bob, bobKey := resumable(t, h, "bob")
	pair(t, bob, alice)
	sayEach(t, bob.Session, numbered("a", 0, sent)...)
	bob.Detach(proto.ReasonDisconnected, 0)
	h.resumeWindow.Store(int64(2 * time.Minute))
	alice.Detach(proto.ReasonSlow, sent)
	return aliceKey, bobKey
}

// restart hands every session of h to a new hub, through a state file,
// as a restart with resume.state_file does, the next process taking
// them up took after they were written down; it returns the new hub and
// its clock.
func restart(t *testing.T, h *Hub, took time.Duration) (*Hub, *fakeClock) {
	t.Helper()
	at := time.Unix(1700000000, 0)
	opts := resumeOpts()
	opts.ResumeBuffer = int(h.ResumeBuffer())
	_, parked, err := ReadState(bytes.NewReader(writeState(t, at, h.Snapshot())))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parked {
		p.Age(took)
	}
	h2, clk := newClockedHub(opts)
	if n := h2.Restore(parked); n != len(parked) {
		t.Fatalf("restored %d of %d", n, len(parked))
	}
	return h2, clk
}

// resumeEvents resumes the session of key on h, as a JSON client that
// read nothing, and returns what it was told after the replay.
func resumeEvents(t *testing.T, h *Hub, key string, box *recorder) []proto.Event {
	t.Helper()
	if _, err := h.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	_, _, after := replay(t, box.take())
	return after
}

// TestRestartCarriesWhatAPartnerWentAwayWithout: with both away, what
// bob is owed of alice's going away is told to him exactly once,
// whichever comes first: his resume (peer_away with the count; then her
// window's end counts only what was kept), her window's end (peer_left
// counting both), or her resume (then his tells him the peer_away he
// missed, and peer_back). So on one hub, and after a restart through a
// state file. Before, the restart dropped it: his resume said she was
// away with no count, and her window's end counted only the kept; and
// her resume first dropped it on one hub too.
func TestRestartCarriesWhatAPartnerWentAwayWithout(t *testing.T) {
	const sent, kept = 10, 4
	for _, restarted := range []bool{false, true} {
		// Half a minute passes, in the restart or not.
		start := func(t *testing.T) (h *Hub, clk *fakeClock, aliceKey, bobKey string) {
			h, clk = newClockedHub(untoldOpts(kept))
			aliceKey, bobKey = awayWithoutAway(t, h, sent)
			if restarted {
				h, clk = restart(t, h, 30*time.Second)
			} else {
				clk.advance(30 * time.Second)
			}
			return h, clk, aliceKey, bobKey
		}
		name := "one hub"
		if restarted {
			name = "restarted"
		}
		t.Run(name+", his resume first", func(t *testing.T) {
			h, clk, _, bobKey := start(t)
			box := &recorder{}
			after := resumeEvents(t, h, bobKey, box)
			if len(after) != 1 || after[0].Kind != proto.EvPeerAway || after[0].Peer != "alice" || after[0].Count != sent-kept {
				t.Fatalf("bob's resume told him %+v, want one peer_away with %d undelivered", after, sent-kept)
			}
			if after[0].Window != 90*time.Second {
				t.Fatalf("alice's window told as %v, want 1m30s", after[0].Window)
			}
			clk.advance(90 * time.Second)
			if ev := box.last(t); ev.Kind != proto.EvPeerLeft || ev.Count != kept {
				t.Fatalf("bob was told %+v, want peer_left with %d undelivered", ev, kept)
			}
		})
		t.Run(name+", her window's end first", func(t *testing.T) {
			h, clk, _, bobKey := start(t)
			clk.advance(90 * time.Second)
			after := resumeEvents(t, h, bobKey, &recorder{})
			want := proto.Event{Kind: proto.EvPeerLeft, Peer: "alice", Reason: proto.ReasonTimeout, Count: sent}
			if len(after) != 1 || !reflect.DeepEqual(after[0], want) {
				t.Fatalf("bob's resume told him %+v, want %+v", after, want)
			}
		})
		t.Run(name+", her resume first", func(t *testing.T) {
			h, clk, aliceKey, bobKey := start(t)
			resumeEvents(t, h, aliceKey, &recorder{})
			clk.advance(time.Minute)
			after := resumeEvents(t, h, bobKey, &recorder{})
			if len(after) != 2 || after[0].Kind != proto.EvPeerAway || after[0].Count != sent-kept || after[0].Window != 30*time.Second ||
				after[1].Kind != proto.EvPeerBack || after[1].Peer != "alice" {
				t.Fatalf("bob's resume told him %+v, want peer_away with %d undelivered and 30s left, then peer_back", after, sent-kept)
			}
		})
	}
}

// TestExportImportCarriesWhatAPartnerWentAwayWithout: with both away
// on a node of a cluster that drains, each is parked (Export) and
// taken up elsewhere (Import); what bob is owed of alice's going away
// goes with him, whichever of them is parked first, and his resume
// tells it: with the news she is away while she is parked, and with
// the news that she is back too when she was resumed on another node
// since. Before, his resume was told nothing of her, and no count.
func TestExportImportCarriesWhatAPartnerWentAwayWithout(t *testing.T) {
	const sent, kept = 10, 4
	for _, tc := range []struct {
		name      string
		aliceLast bool   // alice parked second
		herNode   string // where alice is as bob is taken up: "" parked
		back      bool   // alice known back, as a claim finds her
	}{
		{name: "she is parked"},
		{name: "she is parked, parked last", aliceLast: true},
		{name: "she was resumed elsewhere", herNode: "there", back: true},
		{name: "she is on another node, as she was", herNode: "there"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h1, _, clk1 := clusterHub(t, untoldOpts(kept))
			_, bobKey := awayWithoutAway(t, h1, sent)
			clk1.advance(30 * time.Second)
			var p *Parked
			if tc.aliceLast {
				p = export(t, h1, "bob")
				export(t, h1, "alice")
			} else {
				export(t, h1, "alice")
				p = export(t, h1, "bob")
			}
			p, err := ParseParked(p.AppendBinary(nil))
			if err != nil {
				t.Fatal(err)
			}
			if p.Untold != sent-kept || p.UntoldWindow != 90*time.Second || p.UntoldBack {
				t.Fatalf("bob parked owed %d, her window %v, back %v; want %d, 1m30s, false", p.Untold, p.UntoldWindow, p.UntoldBack, sent-kept)
			}
			// Where the claim finds her.
			p.Pair.PeerNode, p.UntoldBack = tc.herNode, tc.back
			h2, _, clk2 := clusterHub(t, untoldOpts(kept))
			if err := h2.Import(p, nil); err != nil {
				t.Fatal(err)
			}
			clk2.advance(30 * time.Second)
			after := resumeEvents(t, h2, bobKey, &recorder{})
			want := []proto.Event{{Kind: proto.EvPeerAway, Peer: "alice", Window: time.Minute, Count: sent - kept}}
			if tc.back {
				want = append(want, proto.Event{Kind: proto.EvPeerBack, Peer: "alice"})
			}
			if !reflect.DeepEqual(after, want) {
				t.Fatalf("bob's resume told him %+v, want %+v", after, want)
			}
		})
	}
}

// TestCrossNodeAwayToldToAPartnerAwayItself: bob, away, is owed by
// alice, on another node, what she went away without; his node keeps
// it from the news her node sends (which his connection, gone, cannot
// be told), and his resume tells it, and that she is back if news of
// that came too. Before, the news was dropped with the count.
func TestCrossNodeAwayToldToAPartnerAwayItself(t *testing.T) {
	for _, back := range []bool{false, true} {
		t.Run(fmt.Sprintf("back=%v", back), func(t *testing.T) {
			h, d, clk := clusterHub(t, resumeOpts())
			bob, bobKey := resumable(t, h, "bob")
			if err := bob.Connect([]byte(d.addRemoteHolder("alice").String())); err != nil {
				t.Fatal(err)
			}
			bob.Detach(proto.ReasonDisconnected, 0)
			if !h.RemoteEvent("bob", 1, &proto.Event{Kind: proto.EvPeerAway, Window: 2 * time.Minute, Count: 6}) {
				t.Fatal("the news of her going away found no pairing")
			}
			clk.advance(time.Minute)
			want := []proto.Event{{Kind: proto.EvPeerAway, Peer: "alice", Window: time.Minute, Count: 6}}
			if back {
				h.RemoteEvent("bob", 1, &proto.Event{Kind: proto.EvPeerBack, PeerProto: proto.ProtoJSON})
				want = append(want, proto.Event{Kind: proto.EvPeerBack, Peer: "alice", PeerProto: proto.ProtoJSON})
			}
			if after := resumeEvents(t, h, bobKey, &recorder{}); !reflect.DeepEqual(after, want) {
				t.Fatalf("bob's resume told him %+v, want %+v", after, want)
			}
		})
	}
}
