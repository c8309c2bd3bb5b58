package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"testing"

	"duet/engine/hub"
	"duet/proto"
)

// TestResumeOnAnotherNodeSaysTheLastID: a session that numbered its
// messages and went away on one node is resumed on another, which took
// it up from the node that held it: the answer there names the last
// message the first node relayed, as a resume on that node would.
func TestResumeOnAnotherNodeSaysTheLastID(t *testing.T) {
	r := startRedis(t)
	_, c, alice, bob := pairedAcrossNodes(t, r)

	if _, n, err := alice.s.SayAll([][]byte{[]byte("one"), []byte("two")}, []uint64{11, 12}); n != 2 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	for _, want := range []string{"one", "two"} {
		if ev := bob.Expect("message"); ev["text"] != want {
			t.Fatalf("bob: %v, want %q", ev, want)
		}
	}
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect("peer_away")
	ev, _ := alice.resumeOn(t, c, 0, true)
	if ev.Peer != "bob" || ev.ID != 12 {
		t.Fatalf("resumed on another node %+v, want the last id 12", ev)
	}
	if c.Stats().SessionsMoved != 1 {
		t.Fatalf("c took up %d sessions", c.Stats().SessionsMoved)
	}
	bob.Expect("peer_back")
}

// TestParkedLastIDReadsOnAnOlderNode: a session that numbered its
// messages is parked in the form a node from before the last id reads
// (version 1 or 2 of the parked form), with the id sealed beside it,
// so a rolling upgrade does not lose a page's conversation to a node
// not yet upgraded; a node of this version reads the id back. An id
// moved to another session's park, or to another park of the same
// session, is refused.
func TestParkedLastIDReadsOnAnOlderNode(t *testing.T) {
	r := startRedis(t)
	a, c, alice, bob := pairedAcrossNodes(t, r)
	if _, n, err := alice.s.SayAll([][]byte{[]byte("one")}, []uint64{41}); n != 1 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	bob.Expect("message")
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect("peer_away")
	if n := a.drain(t); n != 1 {
		t.Fatalf("parked %d", n)
	}

	park, hn, gen, pt, sum := parkOf(t, r, c, alice)
	// What a node from before the last id accepts: versions 1 and 2.
	if pt[2] > 2 {
		t.Fatalf("parked as version %d, which a node from before the last id cannot read", pt[2])
	}
	if p, err := hub.ParseParked(pt); err != nil || p.LastID != 0 {
		t.Fatalf("the blob reads %+v, %v", p, err)
	}
	if park["lastid"] == "" {
		t.Fatalf("no last id beside the park: %v", park)
	}
	if _, err := c.openParked(hn, park["blob"], park["gen"], beside{lastID: park["lastid"], holder: park["holder"]}, &sum); err != nil {
		t.Fatal(err)
	}
	// Moved to another park of hers: refused.
	other := c.seal.sealNamed(nil, binary.AppendUvarint(nil, 41), lastIDAAD(hn, gen+1))
	if _, err := c.openParked(hn, park["blob"], park["gen"], beside{lastID: string(other)}, &sum); err == nil {
		t.Fatal("took a last id sealed for another park")
	}

	ev, _ := alice.resumeOn(t, c, 0, true)
	if ev.Peer != "bob" || ev.ID != 41 {
		t.Fatalf("resumed on another node %+v, want the last id 41", ev)
	}
	bob.Expect("peer_back")
}

// parkOf reads the park of u's session in Redis, as node c finds it:
// its fields, its session's hashed name, its gen, its blob opened, and
// the hash of u's resume key, which finds it.
func parkOf(t testing.TB, r *redisServer, c *hubNode, u *hubUser) (park map[string]string, hn string, gen uint32, pt []byte, sum hub.ResumeHash) {
	t.Helper()
	rc := redisClient(t, r)
	hn = c.keys.nameHash(u.s.Key())
	park = rc.HGetAll(context.Background(), "duet:park:"+hn).Val()
	g, err := strconv.ParseUint(park["gen"], 10, 32)
	if err != nil {
		t.Fatalf("park %v: %v", park, err)
	}
	if pt, err = c.keys.opener().open([]byte(park["blob"]), parkAAD(hn, uint32(g))); err != nil {
		t.Fatal(err)
	}
	k, perr := proto.ParseResumeKey([]byte(u.key))
	if perr != nil {
		t.Fatal(perr)
	}
	return park, hn, uint32(g), pt, sha256.Sum256(k[:])
}
