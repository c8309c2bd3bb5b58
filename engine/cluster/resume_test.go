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

// evict records that the hub took the session from the connection
// this inbox stands for (a zombie taken over).
type connBox struct {
	*inbox
	mu      sync.Mutex
	evicted hub.Eviction
}

func (b *connBox) DeliverMessages(ev *proto.Event, texts [][]byte) {
	for _, t := range texts {
		ev.Text = t
		b.Deliver(ev)
		if ev.Seq != 0 {
			ev.Seq++
		}
	}
}
func (*connBox) Backlog() int64       { return 0 }
func (*connBox) Wait(hub.Waiter) bool { return false }
func (b *connBox) Evict(w hub.Eviction) {
	b.mu.Lock()
	b.evicted = w
	b.mu.Unlock()
}

// resumeOn resumes u's session on node n, as a JSON client that saw
// every message up to last, or with hasLast false as a line client, and
// returns the answer and the replayed messages' texts.
func (u *hubUser) resumeOn(t testing.TB, n *hubNode, last uint64, hasLast bool) (proto.Event, []string) {
	t.Helper()
	box := newInbox()
	res, err := n.hub.Resume([]byte(u.key), last, hasLast, box)
	if err != nil {
		t.Fatalf("resume on %s: %v", n.ID(), err)
	}
	ev := box.next(t, proto.EvResumed)
	var texts []string
	for range ev.Count {
		m := box.next(t, proto.EvMessage)
		texts = append(texts, string(m.Text))
	}
	if ev.Count > 0 {
		box.next(t, proto.EvReplayEnd)
	}
	u.s, u.box, u.key = res.Session, box, ev.ResumeKey
	return ev, texts
}

// say relays text from u, failing the test on an error.
func (u *hubUser) say(t testing.TB, text string) {
	t.Helper()
	if _, _, err := u.s.SayAll([][]byte{[]byte(text)}); err != nil {
		t.Fatalf("say %q: %v", text, err)
	}
}

// TestResumeOnAnotherNode: a session away on one node is resumed on
// another: the node that held it hands it over, with what was kept for
// it, its partner is told it is back (once), and the pairing carries on
// both ways from the new node; the old key is refused, everywhere.
func TestResumeOnAnotherNode(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startNode(t, r, "b")
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice := a.login(t, "alice")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)

	bob.Say("before")
	alice.box.next(t, proto.EvMessage)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect("peer_away")
	for i := range 5 {
		bob.Say(fmt.Sprint("away ", i))
	}
	// Wait until a has them: they are kept there.
	deadline := time.Now().Add(enginetest.Timeout)
	for a.hub.Stats().HistoryBytes < 5*(6+64) {
		if time.Now().After(deadline) {
			t.Fatalf("a keeps %d bytes", a.hub.Stats().HistoryBytes)
		}
		time.Sleep(10 * time.Millisecond)
	}

	oldKey := alice.key
	ev, texts := alice.resumeOn(t, c, 1, true)
	if ev.Peer != "bob" || ev.Missed != 0 || strings.Join(texts, ",") != "away 0,away 1,away 2,away 3,away 4" {
		t.Fatalf("resumed %+v, replayed %q", ev, texts)
	}
	if ev := bob.Expect("peer_back"); ev["name"] != "alice" {
		t.Fatalf("bob: %v", ev)
	}
	if st := a.hub.Stats(); st.Users != 0 || st.Away != 0 || st.HistoryBytes != 0 {
		t.Fatalf("a kept %+v", st)
	}
	if a.Stats().SessionsParked != 1 || c.Stats().SessionsMoved != 1 {
		t.Fatalf("a parked %d, c took up %d", a.Stats().SessionsParked, c.Stats().SessionsMoved)
	}

	bob.Say("from b to c")
	if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "from b to c" || m.Seq != 7 || m.From != "bob" {
		t.Fatalf("alice: %+v", m)
	}
	alice.say(t, "from c to b")
	if ev := bob.Expect("message"); ev["text"] != "from c to b" {
		t.Fatalf("bob: %v", ev)
	}
	for _, n := range []*hubNode{a, c} {
		if _, err := n.hub.Resume([]byte(oldKey), 0, false, newInbox()); err == nil || err.Code != "bad_resume_key" {
			t.Fatalf("the used key on %s: %v", n.ID(), err)
		}
	}
	// The new key works from anywhere, back to a.
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect("peer_away")
	bob.Say("to a")
	ev, texts = alice.resumeOn(t, a, 7, true)
	if strings.Join(texts, ",") != "to a" {
		t.Fatalf("resumed %+v, replayed %q", ev, texts)
	}
	bob.Expect("peer_back")
	bob.Say("on a again")
	if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "on a again" || m.Seq != 9 {
		t.Fatalf("alice: %+v", m)
	}
}

// TestMoveLosesNothing moves a session between nodes while its partner
// keeps talking to it, and while it talks itself just before the move:
// every message arrives once, in order, on both sides. The partner's
// messages in flight to the old node as it lets the session go are the
// ones a fence must keep; the session's own last words on the old node
// must not be overtaken by its first on the new one.
func TestMoveLosesNothing(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startNode(t, r, "b")
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice := a.login(t, "alice")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)

	// bob talks all through the move, a few messages at a time, so
	// that some are always on their way.
	const n = 3000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			bob.Say(fmt.Sprint("b", i))
			if i%5 == 4 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// alice is still attached on a: a zombie, as when a phone changes
	// networks before a notices. She talks; then she resumes on c, as
	// a JSON client that saw what a delivered so far, and talks on.
	for i := range 100 {
		alice.say(t, fmt.Sprint("a", i))
	}
	got := 0
	expect := func(m proto.Event) {
		t.Helper()
		if want := fmt.Sprint("b", got); string(m.Text) != want || m.Seq != uint64(got+1) {
			t.Fatalf("alice's message %d: %q seq %d, want %q seq %d", got, m.Text, m.Seq, want, got+1)
		}
		got++
	}
	for got < 200 {
		expect(alice.box.next(t, proto.EvMessage))
	}
	ev, texts := alice.resumeOn(t, c, uint64(got), true)
	for _, text := range texts {
		expect(proto.Event{Text: []byte(text), Seq: uint64(got + 1)})
	}
	t.Logf("moved with %d messages delivered on a, %d replayed on c (missed %d)", 200, len(texts), ev.Missed)
	if ev.Missed != 0 {
		t.Fatalf("missed %d", ev.Missed)
	}
	for i := range 100 {
		alice.say(t, fmt.Sprint("c", i))
	}
	for got < n {
		expect(alice.box.next(t, proto.EvMessage))
	}
	<-sent
	alice.box.quiet(t, 200*time.Millisecond)

	for i := range 200 {
		prefix := "a"
		if i >= 100 {
			prefix = "c"
		}
		if ev := bob.Expect("message"); ev["text"] != fmt.Sprint(prefix, i%100) {
			t.Fatalf("bob's message %d: %v", i, ev)
		}
	}
	// A zombie's partner hears of neither an absence nor a return.
	bob.Say("done")
	if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "done" {
		t.Fatalf("alice: %+v", m)
	}
	alice.say(t, "done too")
	if ev := bob.Next(); ev["type"] != "message" || ev["text"] != "done too" {
		t.Fatalf("bob: %v", ev)
	}
}
