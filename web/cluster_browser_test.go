package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"duet/engine"
	"duet/engine/cluster"
	"duet/engine/enginetest"
	"duet/engine/hub"
)

// clusterNode is one node of a cluster: its engine, and its link to the
// others through Redis.
type clusterNode struct {
	daemon *enginetest.Daemon
	node   *cluster.Node
}

// startClusterNode joins a node named id to the cluster on r and starts
// its engine.
func startClusterNode(t *testing.T, r *enginetest.Redis, id string) *clusterNode {
	t.Helper()
	h := hub.New(hub.Options{})
	n, err := cluster.Join(h, cluster.Options{
		RedisURL: r.URL(),
		NodeID:   id,
		Secret:   []byte("0123456789abcdef0123456789abcdef"),
		Logger:   zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(id),
		// A loaded test machine's slow moment must not look like a
		// failure of the node.
		LeaseTTL:  10 * time.Second,
		OpTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the engine's, so it runs after the engine stops.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	deadline := time.Now().Add(enginetest.Timeout)
	for !n.Up() {
		if time.Now().After(deadline) {
			t.Fatalf("node %s did not link to Redis", id)
		}
		time.Sleep(pollEvery)
	}
	return &clusterNode{daemon: enginetest.Start(t, func(o *engine.Options) { o.Hub = h }), node: n}
}

// rollingRestart is a cluster of two nodes on a real Redis, Chromium,
// and a load balancer in front of the nodes, which sends users to the
// first until it drains.
type rollingRestart struct {
	a, b     *clusterNode
	bt       *browserTest
	balancer *cutProxy
}

func startRollingRestart(t *testing.T) *rollingRestart {
	t.Helper()
	chromium := setUpBrowserTest(t)
	r := enginetest.StartRedis(t)
	rr := &rollingRestart{a: startClusterNode(t, r, "a"), b: startClusterNode(t, r, "b")}
	rr.bt = launchBrowser(t, chromium, rr.b.daemon)
	rr.balancer = startCutProxy(t, rr.a.daemon.WS)
	return rr
}

// drainFirst has the balancer send users to the second node, as one
// that checks /readyz does once the first drains, drains the first for
// a restart, parking its sessions, and stops it, as the restart does:
// a page's idle keep-alive connection to it, which the balancer (a TCP
// proxy here) would keep carrying there, is closed, and the page's next
// request goes to the second node. It returns how many connections the
// drain told to reconnect.
func (rr *rollingRestart) drainFirst(t *testing.T) int {
	t.Helper()
	rr.balancer.retarget(rr.b.daemon.WS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*enginetest.Timeout)
	defer cancel()
	told := rr.a.daemon.Drain(ctx, 0, rr.a.node.Park).Told
	rr.a.node.Drain(ctx)
	if err := rr.a.daemon.Stop(ctx); err != nil {
		t.Errorf("stopping the drained node: %v", err)
	}
	return told
}

// TestBrowserRollingRestart: a rolling restart as a page lives it. Two
// nodes of a cluster share a real Redis; alice's page reaches the
// cluster through a load balancer, bob's page is on the second node.
// Their pairing is across the two nodes, and encrypted: the nodes pass
// on the partner's protocol, one pairing id, and sealed frames. The
// first node drains for a restart, after the balancer has stopped
// sending it users, as one that checks /readyz does: alice's page is
// told to reconnect, and closed with 1012 (service restart). It comes
// back through the balancer, on the second node, and resumes there: the
// conversation goes on under the same keys (the same code), every
// message shown once, in order, and sealed, and bob is told no more
// than that alice's server restarted and she is back. Reloaded, alice's page restores
// its keys and goes on as before.
func TestBrowserRollingRestart(t *testing.T) {
	rr := startRollingRestart(t)
	alice, bob := rr.bt.newPerson("alice"), rr.bt.newPerson("bob")
	pair(alice, bob, rr.balancer.url(), rr.bt.pageURL())
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	_, code := alice.secureState()
	if _, other := bob.secureState(); other != code || code == "" {
		t.Fatalf("the two pages show the codes %q and %q", code, other)
	}
	talk(alice, bob, "hi bob")
	talk(bob, alice, "hi alice", "the server is being upgraded")

	// Besides alice's WebSocket, the page's own keep-alive requests end.
	if told := rr.drainFirst(t); told < 1 {
		t.Fatalf("the drain told %d connections to reconnect, want alice's among them", told)
	}
	bob.say("are you still there?")

	e := alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Reconnected; your conversation with bob goes on." {
		t.Errorf("alice is told %v", e)
	}
	alice.waitJS("online", `document.getElementById('state').dataset.state === 'online'
		&& document.getElementById('peer').textContent === 'Talking with bob'`)
	bob.expectEntry("a peer_back notice", func(e logEntry) bool { return e.Kind == "peer_back" && e.Text == "alice is back." })
	if e := bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" }); !strings.HasPrefix(e.Text, "alice’s server is restarting; waiting up to ") {
		t.Errorf("bob is told %v, want that alice's server is restarting", e)
	}
	talk(alice, bob, "yes, on the other node")
	talk(bob, alice, "good")
	alice.expectConversation([]string{msgLine("You", "hi bob"), msgLine("bob", "hi alice"),
		msgLine("bob", "the server is being upgraded"), msgLine("bob", "are you still there?"),
		msgLine("You", "yes, on the other node"), msgLine("bob", "good")})
	bob.expectConversation([]string{msgLine("alice", "hi bob"), msgLine("You", "hi alice"),
		msgLine("You", "the server is being upgraded"), msgLine("You", "are you still there?"),
		msgLine("alice", "yes, on the other node"), msgLine("You", "good")})
	bob.expectNoPeerLeft()
	for _, p := range []*person{alice, bob} {
		p.waitSecure("unverified")
		if _, again := p.secureState(); again != code {
			t.Errorf("%s's page shows the code %q after the move, %q before", p.name, again, code)
		}
		p.expectOnlySealed()
	}
	if moved := rr.b.node.Stats().SessionsMoved; moved != 1 {
		t.Errorf("the second node took up %d parked sessions, want alice's", moved)
	}
	alice.screenshot("resumed on another node")

	// Reloaded, the page restores the keys it kept for the pairing the
	// resume names by the same id, and goes on under them.
	alice.do("reload", chromedp.Reload())
	alice.waitJS("back", `document.getElementById('state').dataset.state === 'online'
		&& document.getElementById('peer').textContent === 'Talking with bob'`)
	alice.waitSecure("unverified")
	if _, again := alice.secureState(); again != code {
		t.Errorf("alice's page shows the code %q after the reload, %q before", again, code)
	}
	talk(bob, alice, "after your reload")
	talk(alice, bob, "still here")
	alice.expectSealedMessage("theirs", "after your reload")
	bob.expectSealedMessage("theirs", "still here")
	rr.expectNoPlaintext(t)
	alice.onlyFailedSockets()
}

// TestBrowserRollingRestartKeepsEncryption: two pages on one node talk
// encrypted; the node drains for a restart, and both resume on another
// through the load balancer. The pairing, rebuilt there from two parked
// sessions, is told by the same id, so both pages go on under the keys
// they had, with nothing new shown to either person. (Before the nodes
// carried sealed frames and tagged pairings alike, the move ended the
// encryption: each page had to ask its person to go on in the clear.)
func TestBrowserRollingRestartKeepsEncryption(t *testing.T) {
	rr := startRollingRestart(t)
	alice, bob := rr.bt.newPerson("alice"), rr.bt.newPerson("bob")
	pair(alice, bob, rr.balancer.url(), rr.balancer.url())
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	_, code := alice.secureState()
	talk(alice, bob, "hi bob")
	bob.expectSealedMessage("theirs", "hi bob")

	rr.drainFirst(t)

	for _, p := range []*person{alice, bob} {
		p.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
		p.waitJS("online", `document.getElementById('state').dataset.state === 'online'`)
	}
	talk(alice, bob, "on the other node")
	talk(bob, alice, "still sealed")
	bob.expectSealedMessage("theirs", "on the other node")
	alice.expectSealedMessage("theirs", "still sealed")
	alice.expectOnlySealed()

	alice.do("reload", chromedp.Reload())
	alice.waitJS("back", `document.getElementById('state').dataset.state === 'online'`)
	alice.waitSecure("unverified")
	talk(alice, bob, "reloaded, still sealed")
	bob.expectSealedMessage("theirs", "reloaded, still sealed")
	for _, p := range []*person{alice, bob} {
		if _, again := p.secureState(); again != code {
			t.Errorf("%s's page shows the code %q, %q before the move", p.name, again, code)
		}
		for _, e := range p.log() {
			if strings.HasPrefix(e.Code, "e2e") || e.Code == "peer_cannot_decrypt" || e.Code == "plaintext" {
				t.Errorf("%s is told %v%s", p.name, e, p.logDump())
			}
		}
	}
	// A reloaded page shows what it kept from before its reload sealed,
	// as it came.
	for _, p := range []*person{alice, bob} {
		p.expectOnlySealed()
	}
	if moved := rr.b.node.Stats().SessionsMoved; moved != 2 {
		t.Errorf("the second node took up %d parked sessions, want both", moved)
	}
	rr.expectNoPlaintext(t)
	alice.screenshot("encryption kept through the move")
	alice.onlyFailedSockets()
	bob.onlyFailedSockets()
}

// expectOnlySealed checks that every message shown, the partner's and
// the person's own (but one not sent), went sealed, and is marked
// data-e2e="sealed", restored after a reload or not.
func (p *person) expectOnlySealed() {
	p.t.Helper()
	if bare := eval[[]string](p, `[...document.querySelectorAll('#log > li.msg:not(.failed)')]
		.filter((li) => li.dataset.e2e !== 'sealed').map((li) => li.querySelector('.text').textContent)`); len(bare) > 0 {
		p.t.Errorf("%s: messages not marked sealed: %q%s", p.name, bare, p.logDump())
	}
}

// expectNoPlaintext checks that neither node relayed a message in the
// clear.
func (rr *rollingRestart) expectNoPlaintext(t *testing.T) {
	t.Helper()
	for _, n := range []*clusterNode{rr.a, rr.b} {
		if st := n.daemon.Hub.Stats(); st.Messages != 0 || st.Sealed == 0 {
			t.Errorf("%s relayed %d plaintext messages and %d sealed frames", n.node.ID(), st.Messages, st.Sealed)
		}
	}
}
