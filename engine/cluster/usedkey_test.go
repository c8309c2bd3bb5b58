package cluster

import (
	"context"
	"crypto/sha256"
	"reflect"
	"testing"
	"time"

	"duet/engine/enginetest"
	"duet/engine/hub"
	"duet/proto"
)

// Tests of the key a resume used, kept until its client shows it read
// the answer (hub's usedKey), across nodes: a client whose answer was
// lost retries with the key it used, and a load balancer without
// stickiness may send the retry to any node.

// usedSum is the hash the hub and the directory know the resume key
// key by.
func usedSum(t testing.TB, key string) *hub.ResumeHash {
	t.Helper()
	k, err := proto.ParseResumeKey([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(k[:])
	return &sum
}

// inDirectory reports whether the directory finds a session by the
// resume key key.
func (n *hubNode) inDirectory(t testing.TB, key string) bool {
	t.Helper()
	got, err := n.rdb.Exists(context.Background(), n.resumeKey(n.keys.resumeHash(usedSum(t, key)))).Result()
	if err != nil {
		t.Fatal(err)
	}
	return got == 1
}

// keptAtLeast waits until n keeps at least bytes of messages for
// resumes.
func (n *hubNode) keptAtLeast(t testing.TB, bytes int64) {
	t.Helper()
	deadline := time.Now().Add(enginetest.Timeout)
	for n.hub.Stats().HistoryBytes < bytes {
		if time.Now().After(deadline) {
			t.Fatalf("%s keeps %d bytes, not %d", n.ID(), n.hub.Stats().HistoryBytes, bytes)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mustRefuse checks that a resume with key on each of nodes is refused
// with bad_resume_key.
func mustRefuse(t testing.TB, key, what string, nodes ...*hubNode) {
	t.Helper()
	for _, n := range nodes {
		if _, err := n.hub.Resume([]byte(key), 0, true, newInbox()); err == nil || err.Code != proto.ErrBadResumeKey.Code {
			t.Fatalf("%s on %s: %v", what, n.ID(), err)
		}
	}
}

// nextMessage is the next message in b, past the news of the partner's
// absence (peer_away, peer_back), which a test need not count.
func nextMessage(t testing.TB, b *inbox) proto.Event {
	t.Helper()
	for {
		if ev := b.nextOf(t, proto.EvMessage, proto.EvPeerAway, proto.EvPeerBack); ev.Kind == proto.EvMessage {
			return ev
		}
	}
}

// TestResumeAnswerLostOnAnotherNode: alice, on node a, is away while
// bob leaves her and carol connects to her token (both on node b). Her
// resume on a tells her so, with what they said, but its answer is
// lost: its connection looks open still (zombie), or a saw it drop
// (away), or a was drained since and parked the session (parked); and
// carol says more. Her retry with the key she used lands on node c: it
// takes the session over from wherever it is, replays everything from
// what she had, once, and tells her again that bob left; nothing is
// lost or repeated either way. The fresh key of the lost answer is
// dead after, on every node; the key she used dies everywhere once she
// says something, in the directory too; and the key of the retry's
// answer works anywhere.
func TestResumeAnswerLostOnAnotherNode(t *testing.T) {
	for _, lost := range []string{"zombie", "away", "parked"} {
		t.Run(lost, func(t *testing.T) {
			r := startRedis(t)
			a := startHubNode(t, r, "a", resumeOptions(0))
			b := startHubNode(t, r, "b", resumeOptions(0))
			c := startHubNode(t, r, "c", resumeOptions(0))
			alice, bob, carol := a.login(t, "alice"), b.login(t, "bob"), b.login(t, "carol")
			if err := bob.s.Connect([]byte(alice.token)); err != nil {
				t.Fatal(err)
			}
			bob.box.next(t, proto.EvPaired)
			alice.box.next(t, proto.EvPaired)
			bob.say(t, "before")
			alice.box.next(t, proto.EvMessage)
			alice.s.Detach(proto.ReasonDisconnected, 0)
			bob.box.next(t, proto.EvPeerAway)
			base := a.hub.Stats().HistoryBytes
			bob.say(t, "m1")
			a.keptAtLeast(t, base+2+64)
			bob.s.Close(proto.ReasonLeft, 0)
			// a frees alice's record once it hears bob left.
			deadline := time.Now().Add(enginetest.Timeout)
			for {
				err := carol.s.Connect([]byte(alice.token))
				if err == nil {
					break
				}
				if err.Code != proto.ErrRoomFull.Code || time.Now().After(deadline) {
					t.Fatalf("carol's connect: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			carol.box.next(t, proto.EvPaired)
			carol.say(t, "c1")
			a.keptAtLeast(t, base+2*(2+64))

			used := alice.key
			lostBox := &connBox{inbox: newInbox()}
			res, err := a.hub.Resume([]byte(used), 1, true, lostBox)
			if err != nil {
				t.Fatal(err)
			}
			bobEnded := proto.Event{Kind: proto.EvEndedAway, Peer: "bob", Reason: proto.ReasonLeft}
			first := lostBox.next(t, proto.EvResumed)
			if first.Peer != "carol" || first.Count != 2 {
				t.Fatalf("the first resume: %+v", first)
			}
			for _, want := range []string{"m1", "c1"} {
				if m := lostBox.next(t, proto.EvMessage); string(m.Text) != want {
					t.Fatalf("the first resume replayed %+v, want %s", m, want)
				}
			}
			lostBox.next(t, proto.EvReplayEnd)
			if ev := lostBox.next(t, proto.EvEndedAway); !reflect.DeepEqual(ev, bobEnded) {
				t.Fatalf("the first resume told %+v", ev)
			}
			fresh := first.ResumeKey
			switch lost {
			case "zombie":
				carol.say(t, "c2")
				if m := lostBox.next(t, proto.EvMessage); string(m.Text) != "c2" || m.Seq != 4 {
					t.Fatalf("the lost answer's connection: %+v", m)
				}
			case "away", "parked":
				res.Session.Detach(proto.ReasonDisconnected, 0)
				carol.box.next(t, proto.EvPeerAway)
				kept := a.hub.Stats().HistoryBytes
				carol.say(t, "c2")
				a.keptAtLeast(t, kept+2+64)
				if lost == "parked" {
					ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
					ok := a.Park(ctx, "alice")
					cancel()
					if !ok {
						t.Fatal("a did not park alice")
					}
				}
			}

			retry := newInbox()
			back, err := c.hub.Resume([]byte(used), 1, true, retry)
			if err != nil {
				t.Fatalf("the key used, its answer lost, on another node: %v", err)
			}
			ev := retry.next(t, proto.EvResumed)
			if ev.Peer != "carol" || ev.Count != 3 || ev.Missed != 0 {
				t.Fatalf("the retry: %+v", ev)
			}
			for i, want := range []string{"m1", "c1", "c2"} {
				if m := retry.next(t, proto.EvMessage); string(m.Text) != want || m.Seq != uint64(i+2) {
					t.Fatalf("the retry replayed %+v, want %s", m, want)
				}
			}
			retry.next(t, proto.EvReplayEnd)
			if ev := retry.next(t, proto.EvEndedAway); !reflect.DeepEqual(ev, bobEnded) {
				t.Fatalf("the retry told %+v, want %+v", ev, bobEnded)
			}
			if lost == "zombie" {
				lostBox.mu.Lock()
				evicted := lostBox.evicted
				lostBox.mu.Unlock()
				if evicted != hub.EvictResumed {
					t.Fatalf("the lost answer's connection was evicted with %v", evicted)
				}
			}
			alice.s, alice.box, alice.key = back.Session, retry, ev.ResumeKey

			mustRefuse(t, fresh, "the lost answer's key", a, b, c)
			if a.inDirectory(t, fresh) {
				t.Fatal("the directory still finds alice by the lost answer's key")
			}

			alice.say(t, "hello")
			if m := nextMessage(t, carol.box); string(m.Text) != "hello" {
				t.Fatalf("carol: %+v", m)
			}
			carol.say(t, "c3")
			if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "c3" || m.Seq != 5 {
				t.Fatalf("alice: %+v", m)
			}
			alice.box.quiet(t, 50*time.Millisecond)
			carol.box.quiet(t, 0)

			// She said something: the key she used is retired, in the
			// directory too.
			alice.s.KeyReceived()
			deadline = time.Now().Add(enginetest.Timeout)
			for a.inDirectory(t, used) {
				if time.Now().After(deadline) {
					t.Fatal("the directory still finds alice by the key she used")
				}
				time.Sleep(5 * time.Millisecond)
			}
			mustRefuse(t, used, "the key used, once she spoke", a, b, c)

			alice.s.Detach(proto.ReasonDisconnected, 0)
			ev, texts := alice.resumeOn(t, a, 5, true)
			if ev.Peer != "carol" || len(texts) != 0 {
				t.Fatalf("the retry's key, back on a: %+v, %q", ev, texts)
			}
		})
	}
}

// ttlIn is the time to live of the directory's resume key key, as
// Redis reports it (-1 for none).
func (n *hubNode) ttlIn(t testing.TB, key string) time.Duration {
	t.Helper()
	d, err := n.rdb.PTTL(context.Background(), n.resumeKey(n.keys.resumeHash(usedSum(t, key)))).Result()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestUsedKeyGoesWithItsSession: the directory finds a session by the
// key its last resume used for no longer than the session lives: a
// logout frees it with the newest; a park gives both its window to
// live; the next resume drops the one an earlier resume used; and the
// reaping of a dead node's sessions marks both as ended with their
// node, so that a retry with the key used is told so, not that the key
// is wrong.
func TestUsedKeyGoesWithItsSession(t *testing.T) {
	r := startRedis(t)
	a := startHubNodeWith(t, r, "a", resumeOptions(0), noWordAwaited)
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))

	// resumed has u resume on n after a drop, and returns the key the
	// resume used; u takes the fresh one.
	resumed := func(u *hubUser, n *hubNode) string {
		t.Helper()
		used := u.key
		u.s.Detach(proto.ReasonDisconnected, 0)
		u.resumeOn(t, n, 0, true)
		if !n.inDirectory(t, used) || !n.inDirectory(t, u.key) {
			t.Fatalf("after %s's resume the directory finds it by the key used: %v, by the fresh one: %v",
				u.s.Name(), n.inDirectory(t, used), n.inDirectory(t, u.key))
		}
		return used
	}

	dave := a.login(t, "dave")
	used := resumed(dave, a)
	dave.s.Close(proto.ReasonLeft, 0)
	deadline := time.Now().Add(enginetest.Timeout)
	for a.inDirectory(t, used) || a.inDirectory(t, dave.key) {
		if time.Now().After(deadline) {
			t.Fatalf("after dave's logout the directory finds him by the key used: %v, by his newest: %v", a.inDirectory(t, used), a.inDirectory(t, dave.key))
		}
		time.Sleep(5 * time.Millisecond)
	}

	erin := a.login(t, "erin")
	used = resumed(erin, a)
	erin.s.Detach(proto.ReasonDisconnected, 0)
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	if !a.Park(ctx, "erin") {
		t.Fatal("a did not park erin")
	}
	for _, k := range []string{used, erin.key} {
		if d := a.ttlIn(t, k); d <= 0 || d > 2*time.Minute {
			t.Fatalf("a key of erin's, parked, lives %v", d)
		}
	}
	newest := erin.key
	erin.resumeOn(t, c, 0, true)
	if c.inDirectory(t, used) {
		t.Fatal("after erin's next resume the directory finds her by the key the one before used")
	}
	if d := c.ttlIn(t, newest); d != -1 {
		t.Fatalf("the key erin's resume used, taken up, lives %v", d)
	}

	alice, bob := pairHubUsers(t, a, b)
	used = resumed(bob, b)
	bob.s.Detach(proto.ReasonDisconnected, 0)
	alice.box.next(t, proto.EvPeerAway)
	b.halt()
	if err := redisClient(t, r).Del(context.Background(), "duet:lease:b").Err(); err != nil {
		t.Fatal(err)
	}
	var err *proto.Error
	for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(50 * time.Millisecond) {
		// Unavailable until a has reaped b's users.
		if _, err = a.hub.Resume([]byte(used), 0, false, newInbox()); err != proto.ErrUnavailable || time.Now().After(deadline) {
			break
		}
	}
	if err != proto.ErrSessionEndedWithNode {
		t.Fatalf("bob's retry with the key he used: %v, want %v", err, proto.ErrSessionEndedWithNode)
	}
	if _, err := c.hub.Resume([]byte(bob.key), 0, false, newInbox()); err != proto.ErrSessionEndedWithNode {
		t.Fatalf("bob's resume with his newest key: %v, want %v", err, proto.ErrSessionEndedWithNode)
	}
}

// TestParkWithoutTheUsedKeyOpens: the key a parked session's last
// resume used goes sealed beside its park, so that a node from before
// it reads the park as it did; and a park without it, as such a node
// writes one, opens here, its session found by its newest key.
func TestParkWithoutTheUsedKeyOpens(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	erin := a.login(t, "erin")
	erin.s.Detach(proto.ReasonDisconnected, 0)
	erin.resumeOn(t, a, 0, true)
	erin.s.Detach(proto.ReasonDisconnected, 0)
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	if !a.Park(ctx, "erin") {
		t.Fatal("a did not park erin")
	}
	hn := a.keys.nameHash("erin")
	if has, err := a.rdb.HExists(ctx, a.parkKey(hn), "used").Result(); err != nil || !has {
		t.Fatalf("erin's park holds the key she used: %v, %v", has, err)
	}
	if err := a.rdb.HDel(ctx, a.parkKey(hn), "used").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.rdb.HDel(ctx, a.userKey(hn), "ru").Err(); err != nil {
		t.Fatal(err)
	}
	if ev, _ := erin.resumeOn(t, c, 0, true); ev.Kind != proto.EvResumed {
		t.Fatalf("erin's resume on c: %+v", ev)
	}
	if st := c.Stats(); st.SessionsMoved != 1 || st.RecordsRejected != 0 {
		t.Fatalf("c took up %d, refused %d", st.SessionsMoved, st.RecordsRejected)
	}
}

// TestResumeAnswerLostToldPartnerBack: alice, on node a, and bob, on
// node b, are both away; alice's resume on a says bob is away, but its
// answer is lost: its connection looks open still (zombie), or a saw it
// drop (away). bob comes back. Her retry with the key she used lands on
// node c and says bob is back: the last word of him she may have read
// is that he was away. Before, it said nothing of him.
func TestResumeAnswerLostToldPartnerBack(t *testing.T) {
	for _, lost := range []string{"zombie", "away"} {
		t.Run(lost, func(t *testing.T) {
			r := startRedis(t)
			a := startHubNode(t, r, "a", resumeOptions(0))
			b := startHubNode(t, r, "b", resumeOptions(0))
			c := startHubNode(t, r, "c", resumeOptions(0))
			alice, bob := pairHubUsers(t, a, b)
			alice.s.Detach(proto.ReasonDisconnected, 0)
			bob.box.next(t, proto.EvPeerAway)
			bob.s.Detach(proto.ReasonDisconnected, 0)

			lostBox := newInbox()
			res, err := a.hub.Resume([]byte(alice.key), 0, false, lostBox)
			if err != nil {
				t.Fatal(err)
			}
			lostBox.next(t, proto.EvResumed)
			if ev := lostBox.next(t, proto.EvPeerAway); ev.Peer != "bob" {
				t.Fatalf("the lost answer told %+v, want bob away", ev)
			}
			if lost == "away" {
				res.Session.Detach(proto.ReasonDisconnected, 0)
			}
			if _, err := b.hub.Resume([]byte(bob.key), 0, false, newInbox()); err != nil {
				t.Fatal(err)
			}
			// Published before the retry's hand-over asks a for the
			// session: a has it first.
			waitAnswered(t, b.Node)

			retry := newInbox()
			if _, err := c.hub.Resume([]byte(alice.key), 0, false, retry); err != nil {
				t.Fatal(err)
			}
			retry.next(t, proto.EvResumed)
			ev := retry.nextOf(t, proto.EvPeerBack, proto.EvPeerAway)
			if ev.Kind == proto.EvPeerAway {
				// As the lost answer did, the retry tells that bob
				// went away, news that may have been lost with it,
				// then his return (TestResumeToldPartnerBack).
				ev = retry.nextOf(t, proto.EvPeerBack, proto.EvPeerAway)
			}
			if ev.Kind != proto.EvPeerBack || ev.Peer != "bob" {
				t.Fatalf("the retry told %+v, want bob back", ev)
			}
		})
	}
}
