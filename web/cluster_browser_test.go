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
// that checks /readyz does once the first drains, and drains the first
// for a restart, parking its sessions. It returns how many connections
// the drain told to reconnect.
func (rr *rollingRestart) drainFirst(t *testing.T) int {
	t.Helper()
	rr.balancer.retarget(rr.b.daemon.WS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*enginetest.Timeout)
	defer cancel()
	told := rr.a.daemon.Drain(ctx, 0, rr.a.node.Park).Told
	rr.a.node.Drain(ctx)
	return told
}

// TestBrowserRollingRestart: a rolling restart as a page lives it. Two
// nodes of a cluster share a real Redis; alice's page reaches the
// cluster through a load balancer, bob's page is on the second node.
// The first node drains for a restart, after the balancer has stopped
// sending it users, as one that checks /readyz does: alice's page is
// told to reconnect, and closed with 1012 (service restart). It comes
// back through the balancer, on the second node, and resumes there: the
// conversation goes on, every message shown once and in order, and bob
// is told no more than that alice was away and is back.
func TestBrowserRollingRestart(t *testing.T) {
	rr := startRollingRestart(t)
	alice, bob := rr.bt.newPerson("alice"), rr.bt.newPerson("bob")
	pair(alice, bob, rr.balancer.url(), rr.bt.pageURL())
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
	talk(alice, bob, "yes, on the other node")
	talk(bob, alice, "good")
	alice.expectConversation([]string{msgLine("You", "hi bob"), msgLine("bob", "hi alice"),
		msgLine("bob", "the server is being upgraded"), msgLine("bob", "are you still there?"),
		msgLine("You", "yes, on the other node"), msgLine("bob", "good")})
	bob.expectConversation([]string{msgLine("alice", "hi bob"), msgLine("You", "hi alice"),
		msgLine("You", "the server is being upgraded"), msgLine("You", "are you still there?"),
		msgLine("alice", "yes, on the other node"), msgLine("You", "good")})
	bob.expectNoPeerLeft()
	// Their pairing began across nodes, where the server passes on no
	// partner's protocol, so it is not encrypted; it stays so, said
	// once, now that both are on one node.
	for _, p := range []*person{alice, bob} {
		plain := 0
		for _, e := range p.log() {
			if e.Code == "plaintext" {
				plain++
			} else if e.has("error") {
				t.Errorf("%s is told %v%s", p.name, e, p.logDump())
			}
		}
		if plain != 1 {
			t.Errorf("%s is told %d times that the conversation is not encrypted, want once%s", p.name, plain, p.logDump())
		}
	}
	if moved := rr.b.node.Stats().SessionsMoved; moved != 1 {
		t.Errorf("the second node took up %d parked sessions, want alice's", moved)
	}
	alice.screenshot("resumed on another node")

	// Reloaded, the page knows the pairing only from its resume, which
	// must not say that bob's page can encrypt now: it would wait for
	// an exchange bob's page never begins, and refuse his plaintext.
	alice.do("reload", chromedp.Reload())
	alice.waitJS("back", `document.getElementById('state').dataset.state === 'online'
		&& document.getElementById('peer').textContent === 'Talking with bob'`)
	talk(bob, alice, "after your reload")
	talk(alice, bob, "still here")
	for _, e := range alice.log() {
		if e.has("error") && e.Code != "plaintext" || strings.HasPrefix(e.Kind, "e2e") {
			t.Errorf("alice, reloaded, is told %v%s", e, alice.logDump())
		}
	}
	alice.onlyFailedSockets()
}

// TestBrowserRollingRestartEndsEncryption: two pages on one node talk
// encrypted; the node drains for a restart, and both resume on another
// through the load balancer. The nodes pass on no sealed frame, and the
// pairing, rebuilt there from two parked sessions, is one across nodes
// to the server: its encryption cannot go on. Each page says so, as it
// does when encryption fails, and sends nothing until its person
// chooses to go on without; then the two talk in the clear. (Before,
// neither page was told: one went on sealing, every message refused,
// and threw away the other's plaintext.)
func TestBrowserRollingRestartEndsEncryption(t *testing.T) {
	rr := startRollingRestart(t)
	alice, bob := rr.bt.newPerson("alice"), rr.bt.newPerson("bob")
	pair(alice, bob, rr.balancer.url(), rr.balancer.url())
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	talk(alice, bob, "hi bob")
	bob.expectSealedMessage("theirs", "hi bob")

	rr.drainFirst(t)

	for _, p := range []*person{alice, bob} {
		e := p.expectEntry("encryption failed", func(e logEntry) bool { return e.Code == "e2e_failed" })
		if !strings.Contains(e.Text, "another server of this service") {
			t.Errorf("%s is told %v", p.name, e)
		}
		p.waitJS("online", `document.getElementById('state').dataset.state === 'online'`)
		p.do("agree to send without encryption", chromedp.Click(chromedp.ID("secure-plain")))
	}
	talk(alice, bob, "in the clear now")
	talk(bob, alice, "so be it")

	// Reloaded, alice's page finds the keys it kept for a pairing now
	// across nodes: it says again that encryption failed, and waits for
	// her word again, rather than go on in the clear unasked.
	alice.do("reload", chromedp.Reload())
	alice.waitJS("back", `document.getElementById('state').dataset.state === 'online'`)
	alice.waitSecure("failed")
	alice.waitJS("asks again", `!document.getElementById('secure-plain').hidden
		&& document.getElementById('secure').textContent.includes('another server of this service')`)
	alice.do("agree again", chromedp.Click(chromedp.ID("secure-plain")))
	talk(alice, bob, "reloaded, still in the clear")
	for _, p := range []*person{alice, bob} {
		for _, e := range p.log() {
			if e.Code == "e2e_plaintext_refused" || e.Code == "peer_cannot_decrypt" {
				t.Errorf("%s is told %v%s", p.name, e, p.logDump())
			}
		}
	}
	if moved := rr.b.node.Stats().SessionsMoved; moved != 2 {
		t.Errorf("the second node took up %d parked sessions, want both", moved)
	}
	alice.screenshot("encryption ended by the move")
	alice.onlyFailedSockets()
	bob.onlyFailedSockets()
}
