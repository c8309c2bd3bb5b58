package hub

import (
	"testing"

	"duet/proto"
)

// TestLocalDirectory holds the directory of a hub on its own to the
// answers of the cluster's (engine/cluster/scripts.go), which the hub's
// logic relies on whichever directory it has. Its records are the hub's
// sessions, so names and tokens are registered by logging in.
func TestLocalDirectory(t *testing.T) {
	h := New(Options{})
	d := h.dir.(*localDirectory)
	alice, bob, carol := login(t, h, "Alice"), login(t, h, "bob"), login(t, h, "carol")
	ta, tb, tc := alice.Token(), bob.Token(), carol.Token()
	mustErr(t, d.Register("Alice", "alice", ta, nil, proto.ProtoUnknown), nil)
	mustErr(t, d.Register("ALICE", "alice", proto.NewToken(), nil, proto.ProtoUnknown), proto.ErrNameTaken)
	mustErr(t, d.Register("dave", "dave", proto.NewToken(), nil, proto.ProtoUnknown), proto.ErrUnavailable)

	_, err := d.Claim("alice", proto.NewToken())
	mustErr(t, err, proto.ErrUnknownToken)
	_, err = d.Claim("alice", ta)
	mustErr(t, err, proto.ErrSelfConnect)
	_, err = d.Claim("nobody", tb)
	mustErr(t, err, proto.ErrUnavailable)

	c, err := d.Claim("alice", tb)
	mustErr(t, err, nil)
	if c.PeerKey != "bob" || c.PeerName != "bob" || c.PeerNode != d.NodeID() || c.PairID == 0 {
		t.Fatalf("claim %+v", c)
	}
	_, err = d.Claim("carol", tb)
	mustErr(t, err, proto.ErrRoomFull)
	_, err = d.Claim("alice", tc)
	mustErr(t, err, proto.ErrAlreadyPaired)

	// A release for another pairing changes nothing; the right one frees.
	d.Release("bob", c.PairID+1)
	_, err = d.Claim("carol", tb)
	mustErr(t, err, proto.ErrRoomFull)
	d.Release("alice", c.PairID)
	d.Release("bob", c.PairID)
	c2, err := d.Claim("carol", tb)
	mustErr(t, err, nil)
	if c2.PairID == c.PairID {
		t.Fatal("a pairing number was used twice")
	}

	// A new token replaces the old one, which is unknown from then on.
	mustErr(t, d.Retoken("alice", tb, proto.NewToken()), proto.ErrUnavailable) // not alice's token
	mustErr(t, alice.NewToken(), nil)
	fresh := alice.Token()
	if fresh == ta {
		t.Fatal("NewToken kept the token")
	}
	_, err = d.Claim("bob", ta)
	mustErr(t, err, proto.ErrAlreadyPaired) // bob is with carol
	d.Release("bob", c2.PairID)
	_, err = d.Claim("bob", ta)
	mustErr(t, err, proto.ErrUnknownToken)

	// A logout frees the name and the token.
	alice.Close(proto.ReasonLeft, 0)
	_, err = d.Claim("bob", fresh)
	mustErr(t, err, proto.ErrUnknownToken)
	mustErr(t, d.Register("alice", "alice", fresh, nil, proto.ProtoUnknown), proto.ErrUnavailable)
	again := login(t, h, "alice")
	mustErr(t, d.Register("alice", "alice", again.Token(), nil, proto.ProtoUnknown), nil)
}

// TestLocalDirectoryFollowsAResume: a resumed session is the same user
// to the directory, still in its pairing.
func TestLocalDirectoryFollowsAResume(t *testing.T) {
	h := New(resumeOpts())
	d := h.dir.(*localDirectory)
	alice, _, key := resumablePair(t, h)
	alice.Detach(proto.ReasonDisconnected, 0)
	res, err := h.Resume([]byte(key), 0, false, &recorder{})
	mustErr(t, err, nil)
	if res.Session == alice.Session || res.Session.claim == 0 {
		t.Fatalf("resumed session %p (was %p) claim %d", res.Session, alice.Session, res.Session.claim)
	}
	carol := login(t, h, "carol")
	_, err = d.Claim("carol", alice.Token())
	mustErr(t, err, proto.ErrRoomFull)
	mustErr(t, res.Session.Leave(), nil)
	mustErr(t, carol.Connect(tok(res.Session)), nil)
}
