package hub

import (
	"testing"

	"duet/proto"
)

// TestLocalDirectory holds the in-memory directory to the answers of the
// cluster's (engine/cluster/scripts.go), which the hub's logic relies on
// whichever directory it has.
func TestLocalDirectory(t *testing.T) {
	d := newLocalDirectory()
	ta, tb, tc := proto.NewToken(), proto.NewToken(), proto.NewToken()
	mustErr(t, d.Register("Alice", "alice", ta, nil), nil)
	mustErr(t, d.Register("ALICE", "alice", proto.NewToken(), nil), proto.ErrNameTaken)
	mustErr(t, d.Register("bob", "bob", tb, nil), nil)
	mustErr(t, d.Register("carol", "carol", tc, nil), nil)

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

	// Retoken moves the token; the old one is unknown from then on.
	fresh := proto.NewToken()
	mustErr(t, d.Retoken("alice", tb, fresh), proto.ErrUnavailable) // not alice's token
	mustErr(t, d.Retoken("alice", ta, fresh), nil)
	_, err = d.Claim("bob", ta)
	mustErr(t, err, proto.ErrAlreadyPaired) // bob is with carol
	d.Release("bob", c2.PairID)
	_, err = d.Claim("bob", ta)
	mustErr(t, err, proto.ErrUnknownToken)

	// Unregister under a stale token leaves the record; the right one
	// frees the name and the token.
	d.Unregister("alice", ta)
	mustErr(t, d.Register("alice", "alice", proto.NewToken(), nil), proto.ErrNameTaken)
	d.Unregister("alice", fresh)
	_, err = d.Claim("bob", fresh)
	mustErr(t, err, proto.ErrUnknownToken)
	mustErr(t, d.Register("alice", "alice", proto.NewToken(), nil), nil)
}
