package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"duet/engine/enginetest"
	"duet/engine/hub"
	"duet/proto"
)

// Tests of session resume across nodes. Some users here are driven
// through their hub directly, with an inbox for an Outbox, so a test can
// drop a connection (Detach) and resume it (Resume) at the exact moment
// it wants; their partners are real engine clients on other nodes.

// resumeOptions is resume on, with the defaults but for the buffer.
func resumeOptions(buffer int) hub.Options {
	return hub.Options{ResumeWindow: 2 * time.Minute, ResumeBuffer: buffer}
}

// hubNode is a cluster node with no engine: its users are driven
// through its hub.
type hubNode struct {
	*Node
	hub *hub.Hub
}

func startHubNode(t testing.TB, r *redisServer, id string, opts hub.Options) *hubNode {
	t.Helper()
	h := hub.New(opts)
	n, err := Join(h, Options{
		RedisURL:  r.URL(),
		NodeID:    id,
		Secret:    testSecret,
		Logger:    zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(id),
		LeaseTTL:  10 * time.Second,
		OpTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(enginetest.Timeout)
	for !n.Up() {
		if time.Now().After(deadline) {
			t.Fatalf("node %s did not link to Redis", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		h.CloseAway(proto.ReasonShutdown)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	return &hubNode{Node: n, hub: h}
}

// inbox is an Outbox that a test reads as events arrive, in order.
type inbox struct {
	mu     sync.Mutex
	evs    []proto.Event
	notify chan struct{}
}

func newInbox() *inbox { return &inbox{notify: make(chan struct{})} }

func (b *inbox) Deliver(ev *proto.Event) {
	cp := *ev
	cp.Text = append([]byte(nil), ev.Text...)
	b.mu.Lock()
	b.evs = append(b.evs, cp)
	close(b.notify)
	b.notify = make(chan struct{})
	b.mu.Unlock()
}

// next waits for the next event, which must be of kind.
func (b *inbox) next(t testing.TB, kind proto.EventKind) proto.Event {
	t.Helper()
	deadline := time.After(enginetest.Timeout)
	for {
		b.mu.Lock()
		if len(b.evs) > 0 {
			ev := b.evs[0]
			b.evs = b.evs[1:]
			b.mu.Unlock()
			if ev.Kind != kind {
				t.Fatalf("got %v %+v, want %v", ev.Kind, ev, kind)
			}
			return ev
		}
		notify := b.notify
		b.mu.Unlock()
		select {
		case <-notify:
		case <-deadline:
			t.Fatalf("no %v event within %v", kind, enginetest.Timeout)
		}
	}
}

// quiet checks that nothing arrives for a while.
func (b *inbox) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.evs) > 0 {
		t.Fatalf("unexpected events: %+v", b.evs)
	}
}

// hubUser is a user driven through its hub.
type hubUser struct {
	s     *hub.Session
	box   *inbox
	token string
	key   string // the resume key its last welcome or resume carried
}

func (n *hubNode) login(t testing.TB, name string) *hubUser {
	t.Helper()
	box := newInbox()
	s, err := n.hub.Login([]byte(name), box)
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	ev := box.next(t, proto.EvWelcome)
	return &hubUser{s: s, box: box, token: ev.Token.String(), key: ev.ResumeKey}
}

// TestCrossNodeAwayAndBack: a partner on another node is told when a
// session goes away and comes back, and a message it sends while the
// session is away and full is refused with peer_away_full, said on its
// own node, never dropped unsaid.
func TestCrossNodeAwayAndBack(t *testing.T) {
	r := startRedis(t)
	// Room for three 6-byte messages while away.
	a := startHubNode(t, r, "a", resumeOptions(3*(6+64)))
	b := startNode(t, r, "b")
	alice := a.login(t, "alice")
	bob := b.DialWS(t).Login("bob")
	carol := b.DialLine(t).Login("carol")

	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)

	alice.s.Detach(proto.ReasonDisconnected, 0)
	if ev := bob.Expect("peer_away"); ev["name"] != "alice" || ev["window_s"] != float64(120) {
		t.Fatalf("bob: %v", ev)
	}
	// A third party still finds the room full.
	carol.Send("/connect " + alice.token)
	carol.Expect(roomFull)

	for i := range 4 {
		bob.Say(fmt.Sprint("away ", i))
	}
	ev := bob.Expect("error")
	if ev["code"] != "peer_away_full" || !strings.HasPrefix(ev["text"].(string), "alice is away, and 3 of your messages") {
		t.Fatalf("bob: %v", ev)
	}

	box := newInbox()
	res, err := a.hub.Resume([]byte(alice.key), 0, true, box)
	if err != nil {
		t.Fatal(err)
	}
	if ev := box.next(t, proto.EvResumed); ev.Peer != "bob" || ev.Count != 3 {
		t.Fatalf("alice resumed: %+v", ev)
	}
	for i := range 3 {
		if ev := box.next(t, proto.EvMessage); string(ev.Text) != fmt.Sprint("away ", i) || ev.Seq != uint64(i+1) {
			t.Fatalf("alice's replay %d: %+v", i, ev)
		}
	}
	box.next(t, proto.EvReplayEnd)
	if ev := bob.Expect("peer_back"); ev["name"] != "alice" {
		t.Fatalf("bob: %v", ev)
	}

	// And the other way: bob's side is told of alice; alice's inbox of
	// what bob's node says.
	if _, _, err := res.Session.SayAll([][]byte{[]byte("back again")}); err != nil {
		t.Fatal(err)
	}
	if ev := bob.Expect("message"); ev["text"] != "back again" {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say("welcome back")
	if ev := box.next(t, proto.EvMessage); string(ev.Text) != "welcome back" || ev.Seq != 4 {
		t.Fatalf("alice: %+v", ev)
	}
}

// TestCrossNodePartnerAway: the node of a session whose partner goes
// away on another node tells its own user, and a message refused there
// comes back as an error for the sender here.
func TestCrossNodePartnerAway(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(2*(5+64)))
	alice := a.login(t, "alice")
	bob := b.login(t, "bob")
	if err := alice.s.Connect([]byte(bob.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)

	bob.s.Detach(proto.ReasonDisconnected, 0)
	if ev := alice.box.next(t, proto.EvPeerAway); ev.Peer != "bob" || ev.Window != 2*time.Minute {
		t.Fatalf("alice: %+v", ev)
	}
	for _, text := range []string{"one 1", "two 2", "three"} {
		if _, _, err := alice.s.SayAll([][]byte{[]byte(text)}); err != nil {
			t.Fatalf("say %q: %v", text, err)
		}
	}
	ev := alice.box.next(t, proto.EvError)
	if ev.Err.Code != "peer_away_full" || !strings.HasPrefix(ev.Err.Text, "bob is away, and 2 of your messages") {
		t.Fatalf("alice: %+v", ev.Err)
	}
	res, err := b.hub.Resume([]byte(bob.key), 0, false, newInbox())
	if err != nil {
		t.Fatal(err)
	}
	if ev := alice.box.next(t, proto.EvPeerBack); ev.Peer != "bob" {
		t.Fatalf("alice: %+v", ev)
	}
	res.Session.Close(proto.ReasonLeft, 0)
	if ev := alice.box.next(t, proto.EvPeerLeft); ev.Reason != proto.ReasonLeft {
		t.Fatalf("alice: %+v", ev)
	}
	alice.box.quiet(t, 100*time.Millisecond)
}
