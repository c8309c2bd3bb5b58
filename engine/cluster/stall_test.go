package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"duet/engine/enginetest"
	"duet/proto"
)

// gatedBox is an inbox whose Deliver of a message waits, once shut,
// until it is opened: the node's listener, delivering it, stalls there
// as a stopped process would, and what Redis hands the node meanwhile
// stays unread in its subscription.
type gatedBox struct {
	*inbox
	shut    chan struct{} // a message arriving while this is open stalls
	stalled chan struct{} // closed once one has
	open    chan struct{} // closed to let it through
}

func newGatedBox() *gatedBox {
	return &gatedBox{inbox: newInbox(), shut: make(chan struct{}, 1), stalled: make(chan struct{}), open: make(chan struct{})}
}

func (b *gatedBox) Deliver(ev *proto.Event) {
	if ev.Kind == proto.EvMessage {
		select {
		case <-b.shut:
			close(b.stalled)
			<-b.open
		default:
		}
	}
	b.inbox.Deliver(ev)
}

// pairGated logs alice in on a and bob on b, bob's inbox a gatedBox,
// and pairs them.
func pairGated(t testing.TB, a, b *hubNode) (alice, bob *hubUser, box *gatedBox) {
	t.Helper()
	alice = a.login(t, "alice")
	box = newGatedBox()
	s, err := b.hub.Login([]byte("bob"), box)
	if err != nil {
		t.Fatal(err)
	}
	bob = &hubUser{s: s, box: box.inbox, token: box.next(t, proto.EvWelcome).Token.String()}
	if err := alice.s.Connect([]byte(bob.token)); err != nil {
		t.Fatal(err)
	}
	alice.box.next(t, proto.EvPaired)
	bob.box.next(t, proto.EvPaired)
	return alice, bob, box
}

// stallOn shuts box and has u say text: the listener of the node of
// box's user stalls delivering it.
func stallOn(t testing.TB, box *gatedBox, u *hubUser, text string) {
	t.Helper()
	box.shut <- struct{}{}
	u.say(t, text)
	select {
	case <-box.stalled:
	case <-time.After(enginetest.Timeout):
		t.Fatal("the listener never delivered the message")
	}
}

// TestStalledNodeReadsOutBeforeItCuts: bob's node b stalls (its
// listener and its heartbeat stop) while alice, on node a, speaks to
// him; Redis takes her messages for b's subscription, answering that b
// listens. b's lease runs out, and a reaps b and tells alice bob is
// gone, with nothing undelivered: what it published reached a
// listener. When b runs again its heartbeat finds its lease lapsed,
// and b cuts its cross-node pairings; it first reads out what its
// subscription holds, so bob gets every message alice was told
// nothing of. Before, b closed its subscription first, and bob never
// got them, nor was alice told.
func TestStalledNodeReadsOutBeforeItCuts(t *testing.T) {
	// b runs again: its heartbeat finds the lease lapsed.
	stalledNodeReadsOut(t, func(b *hubNode) {})
}

// stalledNodeReadsOut has alice, on node a, speak to bob, on node b,
// whose listener and own goroutine stall, until a reaps b and tells
// alice bob is gone; then wake runs, b's goroutine still held, and b
// runs again. bob must get every message alice was not told of.
func stalledNodeReadsOut(t *testing.T, wake func(b *hubNode)) {
	t.Helper()
	const said = 20
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice, bob, box := pairGated(t, a, b)
	alice.sayTo(t, bob, 2, "before the stall ")

	// b's listener stalls delivering her first message; the rest wait
	// in its subscription, published, and answered as heard.
	stallOn(t, box, alice, "stalled 0")
	for i := 1; i < said; i++ {
		alice.say(t, fmt.Sprint("stalled ", i))
	}
	waitAnswered(t, a.Node)

	// b's own goroutine stalls too, at its next turn (it takes cutsMu
	// first): its lease, taken away, stays away, and a reaps b.
	b.cutsMu.Lock()
	rc := redisClient(t, r)
	ctx := context.Background()
	var ev proto.Event
	for deadline := time.Now().Add(enginetest.Timeout); ; {
		if err := rc.Del(ctx, "duet:lease:b").Err(); err != nil {
			b.cutsMu.Unlock()
			t.Fatal(err)
		}
		alice.box.mu.Lock()
		told := len(alice.box.evs) > 0
		alice.box.mu.Unlock()
		if told {
			ev = alice.box.next(t, proto.EvPeerLeft)
			break
		}
		if time.Now().After(deadline) {
			b.cutsMu.Unlock()
			t.Fatal("a never reaped b")
		}
		time.Sleep(50 * time.Millisecond)
	}
	wake(b)
	b.cutsMu.Unlock()

	// b acts on the lapse; its listener goes on once it does.
	for deadline := time.Now().Add(enginetest.Timeout); !actedOnLapse(b.Node); {
		if time.Now().After(deadline) {
			close(box.open)
			t.Fatal("b never acted on its lapsed lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(box.open)
	got := 0
	for {
		m := bob.box.nextOf(t, proto.EvMessage, proto.EvPeerLeft)
		if m.Kind == proto.EvPeerLeft {
			break
		}
		if want := fmt.Sprint("stalled ", got); string(m.Text) != want {
			t.Fatalf("bob got %q, want %q", m.Text, want)
		}
		got++
	}
	if got+ev.Count != said {
		t.Fatalf("bob got %d of alice's %d messages, and she was told %s with %d undelivered", got, said, ev.Reason, ev.Count)
	}
}

// actedOnLapse reports whether n has begun to act on a lapsed lease:
// it reads out its subscription, or has closed it.
func actedOnLapse(n *Node) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readingOut.done != nil || n.ps == nil
}

// TestStalledNodeToldWhatDidNotArrive: bob's node b stalls past its
// lease, and a reaps it and tells alice bob is gone. b runs again, with
// the pairing still, and publishes what bob typed meanwhile; a, which
// cut the pairing, drops it and answers that the pairing is lost. bob
// is told how many of his messages never reached alice: a kept what
// had arrived of his when it cut, and says it in that answer. Before,
// the answer carried no count, and bob was told none were lost (a real
// stalled node lost 160 of 180 so, untold).
func TestStalledNodeToldWhatDidNotArrive(t *testing.T) {
	const typed = 7
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice, bob := pairHubUsers(t, a, b)
	bob.sayTo(t, alice, 3, "before the stall ")
	alice.sayTo(t, bob, 2, "before the stall ")

	// b's own goroutine stalls at its next turn (it takes cutsMu
	// first): its lease, taken away, stays away, and a reaps b.
	b.cutsMu.Lock()
	defer b.cutsMu.Unlock()
	rc := redisClient(t, r)
	untilTold(t, alice, func() {
		if err := rc.Del(context.Background(), "duet:lease:b").Err(); err != nil {
			t.Fatal(err)
		}
	})
	alice.toldLeft(t, proto.ReasonDisconnected, 0)

	// What bob typed as b stalled, read once it runs again.
	for i := range typed {
		bob.say(t, fmt.Sprint("during the stall ", i))
	}
	bob.toldLeft(t, proto.ReasonLinkLost, typed)
}

// TestStalledNodePublishesNothingPastItsLease: bob's node b stalls past
// its lease (not renewed: it lapses by itself), and a reaps it. As b
// runs again, its event loops read what bob typed meanwhile before its
// heartbeat finds the lease gone: b publishes none of it, since a has
// cut the pairing and would drop it, and its answer saying so could
// come after b closed its subscription. b's heartbeat finds the lease
// lapsed, and bob is told how many of his messages never reached alice.
// Before, b published them, and a real node stopped for 5 s and run
// again told its users of none of them in two runs of four (its
// subscription closed before a's answer came).
func TestStalledNodePublishesNothingPastItsLease(t *testing.T) {
	const typed = 5
	r := startRedis(t)
	a := startHubNode(t, r, "a", resumeOptions(0))
	b := startHubNodeWith(t, r, "b", resumeOptions(0), func(o *Options) { o.LeaseTTL = 2 * time.Second })
	alice, bob := pairHubUsers(t, a, b)
	bob.sayTo(t, alice, 2, "before the stall ")

	// b's own goroutine stalls at its next turn (it takes cutsMu
	// first): no heartbeat renews its lease, and a reaps b.
	b.cutsMu.Lock()
	stalled := true
	defer func() {
		if stalled {
			b.cutsMu.Unlock()
		}
	}()
	untilTold(t, alice, func() {})
	alice.toldLeft(t, proto.ReasonDisconnected, 0)

	received := a.Stats().BatchesReceived
	for i := range typed {
		bob.say(t, fmt.Sprint("during the stall ", i))
	}
	time.Sleep(300 * time.Millisecond)
	if got := a.Stats().BatchesReceived; got != received {
		t.Errorf("b published %d batches to a past its lease", got-received)
	}
	b.cutsMu.Unlock()
	stalled = false
	bob.toldLeft(t, proto.ReasonLinkLost, typed)
	// Counted for what it was, not as Redis lost.
	waitCut(t, b.Node, "lease_lapsed", 1)
	if n := b.Stats().PairingsCut["redis_lost"]; n != 0 {
		t.Errorf("%d pairings counted cut for Redis lost", n)
	}
}

// untilTold waits until u, whose partner's node stalls, is told
// something (a reaped that node), calling each at every turn.
func untilTold(t *testing.T, u *hubUser, each func()) {
	t.Helper()
	for deadline := time.Now().Add(enginetest.Timeout); ; {
		each()
		u.box.mu.Lock()
		told := len(u.box.evs) > 0
		u.box.mu.Unlock()
		if told {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the stalled node was never reaped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStalledNodeWhoseCallTimedOutReadsOut: as
// TestStalledNodeReadsOutBeforeItCuts, but b, running again, goes down
// because a Redis call it had in flight as it stopped timed out (a
// publish here; a check or a heartbeat alike), before any heartbeat
// finds its lease lapsed. alice was told bob disconnected, with nothing
// undelivered; bob gets every message Redis took for b. Before, b cut
// its pairings without reading them out, and they were lost untold (a
// real node stopped for 2.5 to 4 s over a link with a round trip of a
// millisecond or more, 2 runs in 12).
func TestStalledNodeWhoseCallTimedOutReadsOut(t *testing.T) {
	stalledNodeReadsOut(t, func(b *hubNode) {
		// A publish it had in flight timed out in the stop. Its own
		// clock says the lease may have lapsed, as after a stall past
		// it.
		b.leaseUntil.Store(0)
		b.linkLost("publish", errors.New("read tcp: i/o timeout"))
	})
}
