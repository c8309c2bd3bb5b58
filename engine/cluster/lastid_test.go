package cluster

import (
	"testing"

	"duet/proto"
)

// TestResumeOnAnotherNodeSaysTheLastID: a session that numbered its
// messages and went away on one node is resumed on another, which took
// it up from the node that held it: the answer there names the last
// message the first node relayed, as a resume on that node would.
func TestResumeOnAnotherNodeSaysTheLastID(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startNode(t, r, "b")
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice := a.login(t, "alice")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)

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
