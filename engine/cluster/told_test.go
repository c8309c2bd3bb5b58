package cluster

import (
	"context"
	"testing"
	"time"

	"duet/engine/enginetest"
)

// Failures told to the users they concern: a pairing that ended while
// its session was parked, whichever way it ended, is told on the resume
// that takes the session up, on either protocol.

// drainedKey reads what a line client is told as its node drains it,
// and returns the resume key it is told to type.
func drainedKey(t testing.TB, lc *enginetest.LineClient) string {
	t.Helper()
	m := drainLineRE.FindStringSubmatch(lc.Expect(`^\* the server is restarting; `))
	if m == nil {
		t.Fatal("the drain named no resume key")
	}
	lc.ExpectClosed()
	return m[1]
}

// waitReleased waits until name's parked session's record says it is
// paired no more, as its partner's node writes when the partner leaves.
func waitReleased(t testing.TB, r *redisServer, n *testNode, name string) {
	t.Helper()
	rc := redisClient(t, r)
	uk := "duet:user:" + n.keys.nameHash(name)
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		pair, err := rc.HGet(context.Background(), uk, "pair").Result()
		if err == nil && pair == "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's parked session is still paired (%q, %v)", name, pair, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestParkedPartnerLeftIsTold drains a node whose users' partners, on
// another node, leave while the sessions are parked: each resume, on a
// third node, finds no partner and is told who left and why, a line
// client with the peer_left line, a JSON client with the event, as a
// resume on one node is.
func TestParkedPartnerLeftIsTold(t *testing.T) {
	r := startRedis(t)
	a, b, c := startNode(t, r, "a"), startNode(t, r, "b"), startNode(t, r, "c")

	alice := a.DialLine(t).Login("alice")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	bob.Expect("paired")
	alice.Expect(`^\* bob is connected$`)
	carol := a.DialWS(t).Login("carol")
	dave := b.DialLine(t).Login("dave")
	dave.Send("/connect " + carol.Token)
	dave.Expect(`^\* you are connected with carol$`)
	carol.Expect("paired")

	drainNode(t, a, 0)
	aliceKey := drainedKey(t, alice)
	if code, _ := carol.ExpectClose(); code != 1012 {
		t.Fatalf("carol closed with %d", code)
	}
	bob.Expect("peer_away")
	dave.Expect(`^\* carol lost the connection; `)

	bob.Send(map[string]any{"type": "leave"})
	bob.Expect("left")
	dave.Send("/quit")
	dave.Expect(`^\* bye$`)
	waitReleased(t, r, b, "alice")
	waitReleased(t, r, b, "carol")

	back, peer, _, _ := enginetest.ResumeLine(t, c.Daemon, aliceKey)
	if peer != "" {
		t.Fatalf("alice resumed with %q", peer)
	}
	back.Expect(`^\* bob left; you are free to be joined again$`)

	cback, ev := enginetest.ResumeWS(t, c.Daemon, carol.Key, 0)
	if ev["peer"] != nil {
		t.Fatalf("carol resumed %v", ev)
	}
	if ev := cback.Expect("peer_left"); ev["peer"] != "dave" || ev["reason"] != "left" {
		t.Fatalf("carol: %v", ev)
	}
}

// TestParkedPartnerNodeDiedIsTold drains a node, then its users'
// partners' node dies: the resume, on a third node, is told the partner
// disconnected, as a partner of a node that dies is told live.
func TestParkedPartnerNodeDiedIsTold(t *testing.T) {
	r := startRedis(t)
	defaults := func(o *Options) { o.LeaseTTL = 0 }
	a, b, c := startNode(t, r, "a"), startNodeWith(t, r, "b", defaults), startNode(t, r, "c")

	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)

	drainNode(t, a, 0)
	key := drainedKey(t, alice)
	bob.Expect(`^\* alice lost the connection; `)
	b.halt()
	// Until b's lease runs out, b is alive to the others, and a resume
	// pairs alice with bob there, to be cut live when b is found dead;
	// the resume that finds b dead already is the one told here.
	rc := redisClient(t, r)
	for deadline := time.Now().Add(enginetest.Timeout); rc.Exists(context.Background(), "duet:lease:b").Val() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("b's lease did not run out")
		}
		time.Sleep(20 * time.Millisecond)
	}

	back, peer, _, _ := enginetest.ResumeLine(t, c.Daemon, key)
	if peer != "" {
		t.Fatalf("alice resumed with %q", peer)
	}
	back.Expect(`^\* bob disconnected; you are free to be joined again$`)
}
