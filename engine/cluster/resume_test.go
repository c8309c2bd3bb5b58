package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	return startHubNodeWith(t, r, id, opts, nil)
}

// startHubNodeWith is startHubNode with the node's options edited first.
func startHubNodeWith(t testing.TB, r *redisServer, id string, opts hub.Options, edit func(*Options)) *hubNode {
	t.Helper()
	h := hub.New(opts)
	n := joinTestNode(t, r, id, h, edit)
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
	return b.nextOf(t, kind)
}

// nextOf waits for the next event, which must be of one of kinds.
func (b *inbox) nextOf(t testing.TB, kinds ...proto.EventKind) proto.Event {
	t.Helper()
	deadline := time.After(enginetest.Timeout)
	for {
		b.mu.Lock()
		if len(b.evs) > 0 {
			ev := b.evs[0]
			b.evs = b.evs[1:]
			b.mu.Unlock()
			if !slices.Contains(kinds, ev.Kind) {
				t.Fatalf("got %v %+v, want %v", ev.Kind, ev, kinds)
			}
			return ev
		}
		notify := b.notify
		b.mu.Unlock()
		select {
		case <-notify:
		case <-deadline:
			t.Fatalf("no %v event within %v", kinds, enginetest.Timeout)
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

// pairedOn logs in two users on n, the second connecting to the first,
// and takes the news of their pairing from both.
func (n *hubNode) pairedOn(t testing.TB, first, second string) (a, b *hubUser) {
	t.Helper()
	a, b = n.login(t, first), n.login(t, second)
	if err := b.s.Connect([]byte(a.token)); err != nil {
		t.Fatal(err)
	}
	a.box.next(t, proto.EvPaired)
	b.box.next(t, proto.EvPaired)
	return a, b
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
	if _, _, err := res.Session.SayAll([][]byte{[]byte("back again")}, nil); err != nil {
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
		if _, _, err := alice.s.SayAll([][]byte{[]byte(text)}, nil); err != nil {
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
	if _, _, err := u.s.SayAll([][]byte{[]byte(text)}, nil); err != nil {
		t.Fatalf("say %q: %v", text, err)
	}
}

// pairedAcrossNodes starts three nodes on r: a, a hub node where alice
// is logged in; b, where bob is, over WebSocket, paired with her; and c,
// a hub node with neither, for a resume to land on.
func pairedAcrossNodes(t *testing.T, r *redisServer) (a, c *hubNode, alice *hubUser, bob *enginetest.WSClient) {
	t.Helper()
	a = startHubNode(t, r, "a", resumeOptions(0))
	b := startNode(t, r, "b")
	c = startHubNode(t, r, "c", resumeOptions(0))
	alice = a.login(t, "alice")
	bob = b.DialWS(t).Login("bob")
	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)
	return a, c, alice, bob
}

// TestResumeOnAnotherNode: a session away on one node is resumed on
// another: the node that held it hands it over, with what was kept for
// it, its partner is told it is back (once), and the pairing carries on
// both ways from the new node; the old key is refused everywhere once
// its client shows it read the answer.
func TestResumeOnAnotherNode(t *testing.T) {
	r := startRedis(t)
	a, c, alice, bob := pairedAcrossNodes(t, r)

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
	// Until alice shows she read the answer, the directory finds her
	// session by the key she used too, for a retry on any node
	// (TestResumeAnswerLostOnAnotherNode).
	if !c.inDirectory(t, oldKey) {
		t.Fatal("the directory lost the key alice used before she read the answer")
	}
	// alice spoke after the answer, as the engine tells the hub when its
	// client sends anything: the key she used is dead everywhere, in
	// the directory too.
	alice.s.KeyReceived()
	for deadline := time.Now().Add(enginetest.Timeout); c.inDirectory(t, oldKey); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the directory still finds alice by the key she used")
		}
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
	if len(texts) == 0 && ev.Missed == 0 {
		// b read bob's frame after c had fenced the pairing for the
		// move: b held it, and sends it to a once told of the move,
		// after the resume, as the next message.
		if m := alice.box.next(t, proto.EvMessage); m.Seq == 8 {
			texts = append(texts, string(m.Text))
		}
	}
	if strings.Join(texts, ",") != "to a" {
		t.Fatalf("resumed %+v, replayed or then given %q", ev, texts)
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
	_, c, alice, bob := pairedAcrossNodes(t, r)

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

// drain parks every session of n that is away.
func (n *hubNode) drain(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	return n.Drain(ctx)
}

// redisClient is a plain client of r, for looking at what is there.
func redisClient(t testing.TB, r *redisServer) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestParkedSession: a drained node parks its away sessions in Redis;
// while one is parked its partner's messages are queued there, a third
// party still finds the room full, a wrong key is refused; then it is
// resumed on another node with everything, in order, and its partner
// is told it is back once.
func TestParkedSession(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startNode(t, r, "b")
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice := a.login(t, "alice")
	bob := b.DialWS(t).Login("bob")
	carol := b.DialLine(t).Login("carol")
	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)
	bob.Say("kept on a")
	alice.box.next(t, proto.EvMessage)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect("peer_away")
	bob.Say("away on a")
	deadline := time.Now().Add(enginetest.Timeout)
	for a.hub.Stats().HistoryBytes < 2*(9+64) {
		if time.Now().After(deadline) {
			t.Fatal("a never kept the message")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.drain(t); n != 1 {
		t.Fatalf("a parked %d sessions", n)
	}
	if st := a.hub.Stats(); st.Users != 0 {
		t.Fatalf("a still holds %+v", st)
	}
	for i := range 20 {
		bob.Say(fmt.Sprint("parked ", i))
	}
	carol.Send("/connect " + alice.token)
	carol.Expect(roomFull)
	dup := b.DialLine(t)
	dup.Send("/login alice")
	dup.Expect(`^! name_taken: `)
	if _, err := c.hub.Resume([]byte(proto.NewResumeKey().String()), 0, false, newInbox()); err == nil || err.Code != "bad_resume_key" {
		t.Fatalf("a wrong key: %v", err)
	}
	if st := c.hub.Stats(); st.ResumeBadKey != 1 {
		t.Fatalf("c counted %d bad keys", st.ResumeBadKey)
	}
	// Wait until the queue in Redis has them all.
	rc := redisClient(t, r)
	qk := "duet:parkq:" + a.keys.nameHash("alice")
	for rc.LLen(context.Background(), qk).Val() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("queued %d", rc.LLen(context.Background(), qk).Val())
		}
		time.Sleep(10 * time.Millisecond)
	}

	ev, texts := alice.resumeOn(t, c, 0, false)
	want := []string{"kept on a", "away on a"}
	for i := range 20 {
		want = append(want, fmt.Sprint("parked ", i))
	}
	if ev.Peer != "bob" || strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Fatalf("resumed %+v, replayed %q", ev, texts)
	}
	if ev := bob.Expect("peer_back"); ev["name"] != "alice" {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say("after")
	if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "after" || m.Seq != 23 {
		t.Fatalf("alice: %+v", m)
	}
	alice.say(t, "hello from c")
	if ev := bob.Expect("message"); ev["text"] != "hello from c" {
		t.Fatalf("bob: %v", ev)
	}
	if n, _ := rc.Exists(context.Background(), qk, "duet:park:"+a.keys.nameHash("alice")).Result(); n != 0 {
		t.Fatalf("%d keys of the park are left", n)
	}
}

// TestParkedSessionFull: a parked session's queue takes no more than
// resume.buffer, counting what it kept before it was parked; its
// partner is told of each message refused, with how much is waiting,
// and the session gets exactly what was taken. What Redis holds for it
// stays within resume.buffer and a small fixed cost.
func TestParkedSessionFull(t *testing.T) {
	r := startRedis(t)
	const buffer = 2048
	a := startHubNode(t, r, "a", resumeOptions(buffer))
	b := startNode(t, r, "b")
	c := startHubNode(t, r, "c", resumeOptions(buffer))
	alice := a.login(t, "alice")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect("peer_away")
	text := strings.Repeat("x", 100)
	bob.Say("0 " + text)
	deadline := time.Now().Add(enginetest.Timeout)
	for a.hub.Stats().HistoryBytes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a never kept the message")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.drain(t)
	// Each counts 102 + 64 bytes, or what Redis keeps of it if more:
	// about 12 fit in 2048.
	const sent = 20
	for i := 1; i < sent; i++ {
		bob.Say(fmt.Sprint(i, " ", text))
	}
	// Each message is queued or refused, and every refusal told, as on
	// one node: the first with its error, the rest in a count. Read them
	// until they and the queue account for all.
	rc := redisClient(t, r)
	hn := a.keys.nameHash("alice")
	refused, queued := 0, 0
	for {
		queued = int(rc.LLen(context.Background(), "duet:parkq:"+hn).Val())
		if queued+refused == sent-1 {
			break
		}
		ev := bob.Next()
		text, _ := ev["text"].(string)
		switch {
		case ev["code"] != "peer_away_full":
			t.Fatalf("bob: %v", ev)
		case ev["type"] == "error" && refused == 0 && strings.HasPrefix(text, "alice is away, and "):
			t.Logf("bob told: %s", text)
			refused++
		case ev["type"] == "notice" && refused > 0:
			var more int
			if _, err := fmt.Sscanf(text, "%d more ", &more); err != nil {
				t.Fatalf("bob: %v", ev)
			}
			refused += more
		default:
			t.Fatalf("bob: %v", ev)
		}
	}
	if queued == 0 || refused == 0 {
		t.Fatalf("queued %d, refused %d, of %d", queued, refused, sent-1)
	}
	// What Redis holds of her: the sealed state and the queue.
	blob := rc.HGet(context.Background(), "duet:park:"+hn, "blob").Val()
	held := len(blob)
	for _, e := range rc.LRange(context.Background(), "duet:parkq:"+hn, 0, -1).Val() {
		held += len(e)
	}
	t.Logf("Redis holds %d bytes of text in %d bytes for a resume.buffer of %d", (queued+1)*len("0 "+text), held, buffer)
	if held > buffer+512 {
		t.Fatalf("Redis holds %d bytes for a parked session, resume.buffer is %d", held, buffer)
	}
	var accepted []string
	for i := range queued + 1 {
		accepted = append(accepted, fmt.Sprint(i, " ", text))
	}
	_, texts := alice.resumeOn(t, c, 0, true)
	if strings.Join(texts, "|") != strings.Join(accepted, "|") {
		t.Fatalf("replayed %d: %q", len(texts), texts)
	}
}

// TestParkedSessionExpires: a session parked by a node that is gone
// still ends when its window runs out: its partner's node keeps the
// window, tells the partner timeout and frees both; nothing of it is
// left in Redis, and its name is free again.
func TestParkedSessionExpires(t *testing.T) {
	r := startRedis(t)
	short := hub.Options{ResumeWindow: 3 * time.Second}
	a := startHubNode(t, r, "a", short)
	b := startNode(t, r, "b")
	alice := a.login(t, "alice")
	dora := a.login(t, "dora")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.token)
	bob.Expect("paired")
	alice.box.next(t, proto.EvPaired)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	dora.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect("peer_away")
	parked := time.Now()
	if n := a.drain(t); n != 2 {
		t.Fatalf("parked %d", n)
	}
	a.halt()
	bob.Say("into the void")

	if ev := bob.Expect("peer_left"); ev["peer"] != "alice" || ev["reason"] != "timeout" {
		t.Fatalf("bob: %v", ev)
	}
	took := time.Since(parked)
	t.Logf("told after %v of a 3 s window", took)
	if took < 2*time.Second || took > 3*time.Second+2*time.Second {
		t.Fatalf("told after %v", took)
	}
	// bob is free again, and alice's and dora's names too; nothing of
	// theirs is left.
	carol := b.DialWS(t).Login("carol")
	carol.Connect(bob.Token)
	carol.Expect("paired")
	bob.Expect("paired")
	rc := redisClient(t, r)
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		keys := rc.Keys(context.Background(), "duet:*").Val()
		var left []string
		for _, k := range keys {
			for _, name := range []string{"alice", "dora"} {
				hn := a.keys.nameHash(name)
				// A resume key's entry names the user it finds; bob's
				// and carol's, on b with resume on, stay.
				if strings.HasSuffix(k, hn) ||
					strings.HasPrefix(k, "duet:resume:") && rc.Get(context.Background(), k).Val() == hn {
					left = append(left, k)
				}
			}
			if strings.HasPrefix(k, "duet:park") {
				left = append(left, k)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left in Redis: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.DialWS(t).Login("alice")
	b.DialWS(t).Login("dora")
}

// TestDrainedPair: both sides of a pair on a node that is drained are
// parked, one after the other while the second still talks to the
// first; each is resumed on a different node, and what each said to the
// other while it was parked is there, in order. The first resumed is
// told the other is away, then back.
func TestDrainedPair(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice, bob := a.pairedOn(t, "alice", "bob")

	// As a drain spreads its closes: alice goes first, and is parked;
	// bob still talks to her, then goes too.
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	if n := a.drain(t); n != 1 {
		t.Fatalf("parked %d", n)
	}
	bob.say(t, "to parked alice 1")
	bob.say(t, "to parked alice 2")
	bob.s.Detach(proto.ReasonDisconnected, 0)
	if n := a.drain(t); n != 1 {
		t.Fatalf("parked %d", n)
	}
	if st := a.hub.Stats(); st.Users != 0 || st.Pairs != 0 {
		t.Fatalf("a still holds %+v", st)
	}

	// What is said to a parked session is queued in Redis by its
	// partner's node as it comes; the resume replays what is queued.
	rc := redisClient(t, r)
	waitQueued(t, rc, a, "alice", 2)
	ev, texts := alice.resumeOn(t, b, 0, true)
	if ev.Peer != "bob" || strings.Join(texts, ",") != "to parked alice 1,to parked alice 2" {
		t.Fatalf("alice resumed %+v, replayed %q", ev, texts)
	}
	if ev := alice.box.next(t, proto.EvPeerAway); ev.Peer != "bob" {
		t.Fatalf("alice: %+v", ev)
	}
	alice.say(t, "to parked bob")
	waitQueued(t, rc, a, "bob", 1)
	ev, texts = bob.resumeOn(t, c, 0, true)
	if ev.Peer != "alice" || strings.Join(texts, ",") != "to parked bob" {
		t.Fatalf("bob resumed %+v, replayed %q", ev, texts)
	}
	// He went away told that she was away, and she is back: his
	// resume says so, or his last word of her would be that she went;
	// and first that she went, which may have died with his connection.
	if ev := bob.box.next(t, proto.EvPeerAway); ev.Peer != "alice" {
		t.Fatalf("bob: %+v", ev)
	}
	if ev := bob.box.next(t, proto.EvPeerBack); ev.Peer != "alice" {
		t.Fatalf("bob: %+v", ev)
	}
	if ev := alice.box.next(t, proto.EvPeerBack); ev.Peer != "bob" {
		t.Fatalf("alice: %+v", ev)
	}
	alice.say(t, "b to c")
	if m := bob.box.next(t, proto.EvMessage); string(m.Text) != "b to c" || m.From != "alice" {
		t.Fatalf("bob: %+v", m)
	}
	bob.say(t, "c to b")
	if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "c to b" || m.From != "bob" {
		t.Fatalf("alice: %+v", m)
	}
	bob.s.Leave()
	bob.box.next(t, proto.EvLeft)
	if ev := alice.box.next(t, proto.EvPeerLeft); ev.Reason != proto.ReasonLeft {
		t.Fatalf("alice: %+v", ev)
	}
}

// waitQueued waits until n messages are queued in Redis for name, parked.
func waitQueued(t testing.TB, rc *redis.Client, n *hubNode, name string, want int64) {
	t.Helper()
	qk := "duet:parkq:" + n.keys.nameHash(name)
	for deadline := time.Now().Add(enginetest.Timeout); rc.LLen(context.Background(), qk).Val() < want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages queued for %s, want %d", rc.LLen(context.Background(), qk).Val(), name, want)
		}
	}
}

// TestResumeBackOnTheSameNode: a session parked by its node's partner
// comes back to that very node: it takes the stub's place in its
// partner's room, with what the partner said meanwhile, and the pair is
// a same-node pair again.
func TestResumeBackOnTheSameNode(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	alice := a.login(t, "alice")
	bob := a.login(t, "bob")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	a.drain(t)
	for i := range 10 {
		bob.say(t, fmt.Sprint("m", i))
	}
	_, texts := alice.resumeOn(t, a, 0, true)
	if strings.Join(texts, ",") != "m0,m1,m2,m3,m4,m5,m6,m7,m8,m9" {
		t.Fatalf("replayed %q", texts)
	}
	bob.box.next(t, proto.EvPeerBack)
	bob.say(t, "same node")
	if m := alice.box.next(t, proto.EvMessage); string(m.Text) != "same node" {
		t.Fatalf("alice: %+v", m)
	}
	sent := a.Stats().BatchesSent
	alice.say(t, "no Redis between us")
	if m := bob.box.next(t, proto.EvMessage); string(m.Text) != "no Redis between us" {
		t.Fatalf("bob: %+v", m)
	}
	if a.Stats().BatchesSent != sent {
		t.Fatal("a same-node pair talks through Redis")
	}
}

// TestZombieHandOver: a session whose connection is still open on its
// node (which has not noticed it is dead) is resumed on another: the
// old connection is evicted as resumed elsewhere, and the partner hears
// of neither an absence nor a return.
func TestZombieHandOver(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	box := &connBox{inbox: newInbox()}
	s, err := a.hub.Login([]byte("alice"), box)
	if err != nil {
		t.Fatal(err)
	}
	w := box.next(t, proto.EvWelcome)
	alice := &hubUser{s: s, box: box.inbox, token: w.Token.String(), key: w.ResumeKey}
	bob := b.login(t, "bob")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	ev, _ := alice.resumeOn(t, c, 0, true)
	if ev.Peer != "bob" {
		t.Fatalf("resumed %+v", ev)
	}
	box.mu.Lock()
	evicted := box.evicted
	box.mu.Unlock()
	if evicted != hub.EvictResumed {
		t.Fatalf("the old connection was evicted with %v", evicted)
	}
	alice.say(t, "new connection")
	if m := bob.box.next(t, proto.EvMessage); string(m.Text) != "new connection" {
		t.Fatalf("bob: %+v", m)
	}
	if st := c.hub.Stats(); st.ResumedZombie != 1 || st.ResumedAway != 0 {
		t.Fatalf("c: %+v", st)
	}
}

// TestRedisReaderLearnsNothingOfMoves: sessions handed over, parked,
// queued for and taken up again show a spy on Redis no name, token,
// resume key (nor its hash) or message text.
func TestRedisReaderLearnsNothingOfMoves(t *testing.T) {
	r := startRedis(t)
	spy := watchRedis(t, r)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	alice := a.login(t, "Wisteria")
	bob := b.login(t, "Brambleby")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	var nonce [8]byte
	rand.Read(nonce[:])
	secret := func(what string) string { return what + "-" + hex.EncodeToString(nonce[:]) }
	keys := []string{alice.key, bob.key}

	// A hand-over of a session away, with a message kept for it.
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	bob.say(t, secret("kept"))
	time.Sleep(100 * time.Millisecond)
	alice.resumeOn(t, c, 0, true)
	keys = append(keys, alice.key)
	bob.box.next(t, proto.EvPeerBack)
	// A park, a queue, a claim.
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	c.drain(t)
	bob.say(t, secret("queued"))
	time.Sleep(100 * time.Millisecond)
	alice.resumeOn(t, a, 0, true)
	keys = append(keys, alice.key)
	alice.say(t, secret("answer"))
	bob.box.next(t, proto.EvPeerBack)
	bob.box.next(t, proto.EvMessage)

	needles := []needle{
		{"the cluster secret", [][]byte{testSecret, []byte(hex.EncodeToString(testSecret))}},
		tokenNeedle("alice's token", alice.token),
		tokenNeedle("bob's token", bob.token),
		textNeedle("alice's name", "Wisteria"),
		textNeedle("bob's name", "Brambleby"),
		textNeedle("a kept message", secret("kept")),
		textNeedle("a queued message", secret("queued")),
		textNeedle("an answer", secret("answer")),
	}
	for i, k := range keys {
		sum := sha256.Sum256([]byte(k))
		pk, err := proto.ParseResumeKey([]byte(k))
		if err != nil {
			t.Fatal(err)
		}
		hsum := sha256.Sum256(pk[:])
		what := fmt.Sprintf("resume key %d", i)
		needles = append(needles, textNeedle(what, k),
			needle{what + "'s hash", [][]byte{sum[:], hsum[:], []byte(hex.EncodeToString(hsum[:]))}})
	}
	for _, f := range spy.find(needles) {
		t.Errorf("a Redis reader finds %s", f)
	}
}

// TestRedisACLUserMoves runs moves through the Redis user the ACL rule
// in docs/OPERATIONS.md allows: every script a move runs (park, queue,
// claim, rekey, release, expire) works with it.
func TestRedisACLUserMoves(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	admin := redisClient(t, r)
	args := append([]any{"ACL", "SETUSER", "duet", "on", ">s3cret-pass"}, documentedACL(t)...)
	if err := admin.Do(ctx, args...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "off").Err(); err != nil {
		t.Fatal(err)
	}
	withUser := func(o *Options) { o.RedisURL = "redis://duet:s3cret-pass@" + r.Addr() }
	short := hub.Options{ResumeWindow: 2 * time.Second}
	a := startHubNodeWith(t, r, "a", short, withUser)
	b := startHubNodeWith(t, r, "b", short, withUser)
	c := startHubNodeWith(t, r, "c", short, withUser)
	alice, bob, carol := a.login(t, "alice"), b.login(t, "bob"), a.login(t, "carol")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	carol.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	if n := a.drain(t); n != 2 {
		t.Fatalf("parked %d", n)
	}
	bob.say(t, "queued")
	time.Sleep(100 * time.Millisecond)
	if _, texts := alice.resumeOn(t, c, 0, true); strings.Join(texts, ",") != "queued" {
		t.Fatalf("replayed %q", texts)
	}
	bob.box.next(t, proto.EvPeerBack)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	c.drain(t)
	bob.s.Leave()
	bob.box.next(t, proto.EvLeft)
	// carol's window ends in Redis, alice's with nobody to tell.
	time.Sleep(2500 * time.Millisecond)
	for _, n := range []*hubNode{a, b, c} {
		if !n.Up() {
			t.Fatalf("%s lost its link: Redis refused one of its commands", n.ID())
		}
	}
	b.login(t, "carol")
	b.login(t, "alice")
}

// TestParkedSessionRescued: a node that dies right after it parked a
// session, before its word of the park reached the partner's node,
// does not cost the pair: the partner's node, finding the dead node
// was moving the session, looks in Redis, finds it parked, and keeps
// its window instead of cutting the pairing.
func TestParkedSessionRescued(t *testing.T) {
	r := startRedis(t)
	window := hub.Options{ResumeWindow: 8 * time.Second}
	a := startHubNodeWith(t, r, "a", window, func(o *Options) { o.LeaseTTL = 0 })
	b := startHubNode(t, r, "b", window)
	c := startHubNode(t, r, "c", window)
	alice, bob := a.login(t, "alice"), b.login(t, "bob")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.box.next(t, proto.EvPeerAway)
	a.drain(t)
	// As if a's K had been lost with it: b's stub is left frozen by a.
	var pair uint64
	for _, x := range b.hub.Registrations() {
		if x.Key == "bob" {
			pair = x.PairID
		}
	}
	o := b.route("bob", pair)
	if o == nil {
		t.Fatal("no stub for alice on b")
	}
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		o.mu.Lock()
		st := o.state
		if st == routeParked {
			o.state, o.s = routeFrozen, b.sender(a.addr)
			o.timer.Stop()
		}
		o.mu.Unlock()
		if st == routeParked {
			b.hub.Reroute("bob", pair, a.addr)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stub is %v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.halt()
	died := time.Now()
	bob.say(t, "held, then queued")
	// a's lease ends within 3 s and b's check finds it dead then.
	bob.box.quiet(t, 5*time.Second)
	t.Logf("%v after a died, bob's pairing stands", time.Since(died))
	_, texts := alice.resumeOn(t, c, 0, true)
	if strings.Join(texts, ",") != "held, then queued" {
		t.Fatalf("replayed %q", texts)
	}
	bob.box.next(t, proto.EvPeerBack)
}

// TestSealAcrossNodes: two pages on two nodes are told each other's
// protocol and one pairing id, and sealed frames cross between the
// nodes both ways, as on one node. The pairing survives a rolling
// restart encrypted: carol's node drains, and what dave seals while
// her session is parked waits in Redis, sealed, and is replayed to
// her, still sealed, when she resumes on a third node, whose room
// tells the same id. A terminal on another node is told no seal can
// reach it.
func TestSealAcrossNodes(t *testing.T) {
	r := startRedis(t)
	a, b, c := startNode(t, r, "a"), startNode(t, r, "b"), startNode(t, r, "c")
	carol := a.DialWS(t).Login("carol")
	dave := b.DialWS(t).Login("dave")
	dave.Connect(carol.Token)
	pd, pc := dave.Expect("paired"), carol.Expect("paired")
	id, _ := pd["pair_id"].(string)
	if id == "" || pd["peer_proto"] != "json" || pc["peer_proto"] != "json" || pc["pair_id"] != id {
		t.Fatalf("paired across nodes: dave %v, carol %v", pd, pc)
	}
	seal := func(from *enginetest.WSClient, data string) {
		t.Helper()
		from.Send(map[string]string{"type": "seal", "data": data})
	}
	expectSealed := func(to *enginetest.WSClient, from, data string, seq float64) {
		t.Helper()
		if ev := to.Expect("sealed"); ev["from"] != from || ev["data"] != data || ev["seq"] != seq {
			t.Fatalf("%v, want %s's %q numbered %v", ev, from, data, seq)
		}
	}
	seal(carol, "ZnJvbSBjYXJvbA")
	expectSealed(dave, "carol", "ZnJvbSBjYXJvbA", 1)
	seal(dave, "ZnJvbSBkYXZl")
	expectSealed(carol, "dave", "ZnJvbSBkYXZl", 1)

	// a drains: carol's session is parked in Redis, and what dave seals
	// meanwhile is queued for it there.
	drainNode(t, a, 0)
	dave.Expect("peer_away")
	seal(dave, "d2hpbGUgcGFya2Vk")
	dave.Say("in the clear")
	if st := b.Node.Stats(); st.SessionsParked != 0 {
		t.Fatalf("b parked %d sessions", st.SessionsParked)
	}
	rc := redisClient(t, r)
	qk := "duet:parkq:" + b.keys.nameHash("carol")
	for deadline := time.Now().Add(enginetest.Timeout); rc.LLen(context.Background(), qk).Val() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queued for carol: %d", rc.LLen(context.Background(), qk).Val())
		}
	}
	back, ev := enginetest.ResumeWS(t, c.Daemon, carol.Key, 1)
	if ev["peer"] != "dave" || ev["pair_id"] != id || ev["peer_proto"] != "json" || ev["replayed"] != float64(2) || ev["missed"] != float64(0) {
		t.Fatalf("resumed on c: %v", ev)
	}
	expectSealed(back, "dave", "d2hpbGUgcGFya2Vk", 2)
	if ev := back.Expect("message"); ev["text"] != "in the clear" || ev["seq"] != float64(3) {
		t.Fatalf("carol: %v", ev)
	}
	if ev := dave.Expect("peer_back"); ev["peer_proto"] != "json" {
		t.Fatalf("dave: %v", ev)
	}
	seal(back, "ZnJvbSBj")
	expectSealed(dave, "carol", "ZnJvbSBj", 2)

	// A terminal on another node cannot open a seal.
	erin := c.DialWS(t).Login("erin")
	frank := b.DialLine(t).Login("frank")
	frank.Send("/connect " + erin.Token)
	frank.Expect(`^\* you are connected with erin$`)
	if ev := erin.Expect("paired"); ev["peer_proto"] != "line" || ev["pair_id"] == nil {
		t.Fatalf("erin: %v", ev)
	}
	seal(erin, "c2VhbGVk")
	erin.ExpectError("peer_cannot_decrypt")
	erin.Say("in the clear")
	frank.Expect(`^<erin> in the clear$`)
}

// TestEngineResumeOnAnotherNode: real clients of real engines, over
// loopback, on a Redis-backed cluster. A netcat-like line client whose
// connection is reset on a takes its session back on c with /resume,
// with the 100 messages its partner on b sent meanwhile, in order; a
// browser-like JSON client cut mid-stream on a resumes on c with last
// and gets exactly the rest, numbered on, none twice. Both partners are
// told of the absence and the return, and each pair talks on.
func TestEngineResumeOnAnotherNode(t *testing.T) {
	r := startRedis(t)
	a, b, c := startNode(t, r, "a"), startNode(t, r, "b"), startNode(t, r, "c")

	// The line protocol.
	alice, bob := wsJoinsLine(t, a.Daemon, "alice", b.Daemon, "bob")
	bob.Say("before the drop")
	alice.Expect(`^<bob> before the drop$`)
	enginetest.Reset(t, alice.Conn)
	if ev := bob.Expect("peer_away"); ev["name"] != "alice" {
		t.Fatalf("bob: %v", ev)
	}
	const n = 100
	var want []string
	for i := range n {
		bob.Say(fmt.Sprint("while away ", i))
		want = append(want, fmt.Sprintf("<bob> while away %d", i))
	}
	back, peer, replayed, missed := enginetest.ResumeLine(t, c.Daemon, alice.Key)
	// A line client cannot say what it read: what came just before the
	// drop is replayed too, in front.
	if len(replayed) > 0 && replayed[0] == "<bob> before the drop" {
		replayed = replayed[1:]
	}
	// What bob said that node b still held when the session moved (or
	// had not yet read from bob's socket) comes after the replay, live,
	// in the same order: together they are everything, once.
	got := replayed
	for len(got) < n {
		got = append(got, back.Line())
	}
	if peer != "bob" || missed != 0 || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("resumed with %q, %d missed, replayed %d, then %q", peer, missed, len(replayed), got)
	}
	if ev := bob.Expect("peer_back"); ev["name"] != "alice" {
		t.Fatalf("bob: %v", ev)
	}
	back.Send("from c")
	if ev := bob.Expect("message"); ev["text"] != "from c" {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say("to c")
	back.Expect(`^<bob> to c$`)

	// The JSON protocol, exactly once.
	carol := a.DialWS(t).Login("carol")
	dave := b.DialLine(t).Login("dave")
	dave.Send("/connect " + carol.Token)
	dave.Expect(`^\* you are connected with carol$`)
	carol.Expect("paired")
	const sent, read, later = 50, 20, 10
	var lines strings.Builder
	for i := range sent {
		fmt.Fprintf(&lines, "m%d\n", i+1)
	}
	if _, err := dave.Conn.Write([]byte(lines.String())); err != nil {
		t.Fatal(err)
	}
	for i := range read {
		if text, seq := enginetest.WSMessage(t, carol); text != fmt.Sprint("m", i+1) || seq != uint64(i+1) {
			t.Fatalf("message %d: %q seq %d", i+1, text, seq)
		}
	}
	enginetest.Reset(t, carol.Conn)
	dave.Expect(`^\* carol lost the connection; waiting up to 2m for carol to come back$`)
	for i := range later {
		dave.Send(fmt.Sprint("m", sent+i+1))
	}
	cback, ev := enginetest.ResumeWS(t, c.Daemon, carol.Key, read)
	// As for alice: what node b still held when the session moved comes
	// live after the replay, numbered on; the reads below take both.
	if r, _ := ev["replayed"].(float64); ev["peer"] != "dave" || r < sent-read || r > sent+later-read || ev["missed"] != float64(0) {
		t.Fatalf("resumed %v", ev)
	}
	for i := read; i < sent+later; i++ {
		if text, seq := enginetest.WSMessage(t, cback); text != fmt.Sprint("m", i+1) || seq != uint64(i+1) {
			t.Fatalf("replay: %q seq %d, want m%d", text, seq, i+1)
		}
	}
	dave.Expect(`^\* carol is back$`)
	dave.Send("after")
	if text, seq := enginetest.WSMessage(t, cback); text != "after" || seq != sent+later+1 {
		t.Fatalf("after the replay: %q seq %d", text, seq)
	}
	cback.Say("hi dave")
	dave.Expect(`^<carol> hi dave$`)
	if st := a.Hub.Stats(); st.Users != 0 || st.Away != 0 {
		t.Fatalf("a still holds %+v", st)
	}
}

// TestClaimerDiesBeforeItsWord: a node that takes up a parked session
// and dies before its word of the move (O) reaches the partner's node
// does not leave the partner paired with nobody until the session's
// window ends: the partner's node follows the claim to the dead node
// and tells the partner disconnected, within a lease and a few checks,
// as it tells the partners of every session that node had. Then a
// partner that spoke meanwhile is told how many of its messages never
// reached the session.
func TestClaimerDiesBeforeItsWord(t *testing.T) {
	for _, spoke := range []int{0, 3} {
		t.Run(fmt.Sprintf("spoke %d", spoke), func(t *testing.T) {
			r := startRedis(t)
			window := hub.Options{ResumeWindow: time.Minute}
			a := startHubNode(t, r, "a", window)
			b := startHubNode(t, r, "b", window)
			// c's lease outlives it by the default 3 s.
			c := startHubNodeWith(t, r, "c", window, func(o *Options) { o.LeaseTTL = 0 })
			alice, bob := a.login(t, "alice"), b.login(t, "bob")
			if err := bob.s.Connect([]byte(alice.token)); err != nil {
				t.Fatal(err)
			}
			alice.box.next(t, proto.EvPaired)
			pair := bob.box.next(t, proto.EvPaired).PairID
			alice.s.Detach(proto.ReasonDisconnected, 0)
			bob.box.next(t, proto.EvPeerAway)
			if n := a.drain(t); n != 1 {
				t.Fatalf("a parked %d sessions", n)
			}
			var pairID uint64
			for _, x := range b.hub.Registrations() {
				if x.Key == "bob" {
					pairID = x.PairID
				}
			}
			deadline := time.Now().Add(enginetest.Timeout)
			for {
				o := b.route("bob", pairID)
				o.mu.Lock()
				st := o.state
				o.mu.Unlock()
				if st == routeParked {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("bob's route to alice is %v", st)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// c's word to b never leaves it: c dies first.
			c.sender(b.addr).stop()
			if ev, _ := alice.resumeOn(t, c, 0, true); ev.Peer != "bob" || ev.PairID != pair {
				t.Fatalf("alice resumed %+v", ev)
			}
			c.halt()
			for i := range spoke {
				bob.say(t, fmt.Sprint("to nobody ", i))
			}
			died := time.Now()
			ev := bob.box.next(t, proto.EvPeerLeft)
			if ev.Reason != proto.ReasonDisconnected || ev.Peer != "alice" || ev.Count != spoke {
				t.Fatalf("bob was told %+v", ev)
			}
			t.Logf("bob was told %v after c died", time.Since(died))
			// Counted once the user is told: waited for.
			waitCut(t, b.Node, "node_gone", 1)
		})
	}
}

// TestDrainedPairResumedAtOnce: both sides of a pair parked by a drain
// come back at the same moment, as two pages told to reconnect at once
// do, on the same node or on two others. Each claim reads the other's
// record as it stands. On one node, neither claim found the other's
// session taken up, and one side came back unpaired, told nothing (on
// the first round, before one pairing's claims waited for each other).
// On two, the partner's node sent word of its claim (O) before this
// node had taken its own session up, found no pairing here, and the
// pairing was cut, disconnected (2 of 10 runs beside four busy loops,
// before frames of a pairing waited for its claim here).
func TestDrainedPairResumedAtOnce(t *testing.T) {
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	c := startHubNode(t, r, "c", resumeOptions(0))
	const rounds = 60
	for i := range rounds {
		alice, bob := a.pairedOn(t, fmt.Sprintf("alice%d", i), fmt.Sprintf("bob%d", i))
		alice.s.Detach(proto.ReasonDisconnected, 0)
		bob.box.next(t, proto.EvPeerAway)
		bob.s.Detach(proto.ReasonDisconnected, 0)
		if n := a.drain(t); n != 2 {
			t.Fatalf("parked %d", n)
		}
		// Half the rounds on one node, half on two; the second resume
		// starts a little later each round, so that one of them lands
		// inside the other's claim.
		bobsNode := b
		if i%2 == 1 {
			bobsNode = c
		}
		var wg sync.WaitGroup
		var aev, bev proto.Event
		wg.Add(2)
		go func() {
			defer wg.Done()
			aev, _ = alice.resumeOn(t, b, 0, true)
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i/2%10) * 200 * time.Microsecond)
			bev, _ = bob.resumeOn(t, bobsNode, 0, true)
		}()
		wg.Wait()
		if aev.Peer != bob.s.Name() || bev.Peer != alice.s.Name() {
			t.Fatalf("round %d, bob on %s: alice resumed with peer %q, bob with %q", i, bobsNode.ID(), aev.Peer, bev.Peer)
		}
		alice.say(t, "to bob")
		expectMessageAfterMoves(t, bob.box, "to bob")
		bob.say(t, "to alice")
		expectMessageAfterMoves(t, alice.box, "to alice")
	}
}

// expectMessageAfterMoves waits for a message with text in box, past
// the news of a partner who was away and is back that a resume at the
// same time as the partner's may bring first.
func expectMessageAfterMoves(t *testing.T, box *inbox, text string) {
	t.Helper()
	deadline := time.After(enginetest.Timeout)
	for {
		box.mu.Lock()
		if len(box.evs) == 0 {
			notify := box.notify
			box.mu.Unlock()
			select {
			case <-notify:
				continue
			case <-deadline:
				t.Fatalf("no message %q within %v", text, enginetest.Timeout)
			}
		}
		ev := box.evs[0]
		box.evs = box.evs[1:]
		box.mu.Unlock()
		switch {
		case ev.Kind == proto.EvPeerAway || ev.Kind == proto.EvPeerBack:
		case ev.Kind == proto.EvMessage && string(ev.Text) == text:
			return
		default:
			t.Fatalf("got %v %+v, want the message %q", ev.Kind, ev, text)
		}
	}
}

// TestCrossNodeAwayTellsWhatCouldNotBeKept: alice goes away with more of
// bob's messages unwritten than resume.buffer keeps, bob on another
// node. He is told, with the away news, how many will never reach her:
// exactly as many as her resume reports missed.
func TestCrossNodeAwayTellsWhatCouldNotBeKept(t *testing.T) {
	const sent, kept = 10, 4
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(kept*(2+64))) // m0..m9: two bytes each
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice := a.login(t, "alice")
	bob := b.login(t, "bob")
	if err := bob.s.Connect([]byte(alice.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	for i := range sent {
		bob.say(t, fmt.Sprint("m", i))
	}
	for range sent {
		alice.box.next(t, proto.EvMessage)
	}
	// Her connection wrote none of them.
	alice.s.Detach(proto.ReasonSlow, sent)
	if ev := bob.box.next(t, proto.EvPeerAway); ev.Peer != "alice" || ev.Count != sent-kept {
		t.Fatalf("bob was told %+v, want peer_away with %d undelivered", ev, sent-kept)
	}
	if ev, texts := alice.resumeOn(t, a, 0, false); ev.Missed != sent-kept || len(texts) != kept {
		t.Fatalf("alice resumed %+v, replayed %q; want %d missed, as bob was told", ev, texts, sent-kept)
	}
}
