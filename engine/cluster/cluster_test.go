package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine"
	"duet/engine/enginetest"
	"duet/engine/hub"
	"duet/proto"
)

// redisServer is a throwaway redis-server on a loopback port.
type redisServer = enginetest.Redis

func startRedis(t testing.TB) *redisServer { return enginetest.StartRedis(t) }

// testSecret is the cluster secret of the tests' nodes.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testNode is one duetd node: a hub, its cluster node and an engine.
type testNode struct {
	*Node
	*enginetest.Daemon
}

func startNode(t testing.TB, r *redisServer, id string) *testNode {
	t.Helper()
	return startNodeWith(t, r, id, nil)
}

// startNodeWith is startNode with options edited first.
func startNodeWith(t testing.TB, r *redisServer, id string, edit func(*Options)) *testNode {
	t.Helper()
	return startNodeEngine(t, r, id, edit, nil)
}

// startNodeEngine is startNodeWith with the engine's options edited
// too, last.
func startNodeEngine(t testing.TB, r *redisServer, id string, edit func(*Options), editEngine func(*engine.Options)) *testNode {
	t.Helper()
	h := hub.New(hub.Options{})
	n := joinTestNode(t, r, id, h, edit)
	// Registered first, so it runs after the engine's shutdown.
	closeAtEnd(t, n)
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Hub = h
		o.Limits.MessageRate = 1e6
		o.Limits.MessageBurst = 1e6
		if editEngine != nil {
			editEngine(o)
		}
	})
	return &testNode{Node: n, Daemon: d}
}

// closeAtEnd has n leave the cluster when the test ends.
func closeAtEnd(t testing.TB, n *Node) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
}

// testOptions are the options of the tests' node id on r.
func testOptions(t testing.TB, r *redisServer, id string) Options {
	return Options{
		RedisURL: r.URL(),
		NodeID:   id,
		Secret:   testSecret,
		Logger:   zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(id),
		// Test machines are often loaded: a generous lease and round
		// trip keep a slow moment from looking like a failure. Tests of
		// the bounds themselves use the defaults.
		LeaseTTL:  10 * time.Second,
		OpTimeout: 3 * time.Second,
	}
}

// joinTestNode joins h to the cluster on r as node id, with the test
// options edited first, and waits until the node is linked to Redis.
func joinTestNode(t testing.TB, r *redisServer, id string, h *hub.Hub, edit func(*Options)) *Node {
	t.Helper()
	opts := testOptions(t, r, id)
	if edit != nil {
		edit(&opts)
	}
	n, err := Join(h, opts)
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
	return n
}

const (
	roomFull    = `^! room_full: Room is Full`
	unavailable = `^! unavailable: `
)

// TestCrossNodeChat pairs a netcat user on one node with a browser user
// on another, and relays 5,000 messages each way, in order.
func TestCrossNodeChat(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	alice := a.DialLine(t).Login("alice")
	bob := b.DialWS(t).Login("bob")

	bob.Connect(alice.Token)
	alice.Expect(`^\* bob is connected$`)
	if ev := bob.Expect("paired"); ev["peer"] != "alice" || ev["initiator"] != true {
		t.Fatalf("bob paired: %v", ev)
	}
	// Counted once, on the node of the user who connected.
	if pa, pb := a.Stats().Pairings, b.Stats().Pairings; pa != 0 || pb != 1 {
		t.Fatalf("cross-node pairings counted: a %d, b %d; want 0 and 1", pa, pb)
	}

	const n = 5000
	var lines strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&lines, "from alice %d\n", i)
	}
	alice.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := alice.Conn.Write([]byte(lines.String())); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		bob.Say("from bob " + strconv.Itoa(i))
	}
	for i := 0; i < n; i++ {
		ev := bob.Expect("message")
		if want := "from alice " + strconv.Itoa(i); ev["from"] != "alice" || ev["text"] != want {
			t.Fatalf("bob's message %d: %v, want %q", i, ev, want)
		}
	}
	for i := 0; i < n; i++ {
		alice.Expect(`^<bob> from bob ` + strconv.Itoa(i) + `$`)
	}

	// Same-node pairs on a cluster node talk as on a single node.
	carol := b.DialLine(t).Login("carol")
	dave := b.DialLine(t).Login("dave")
	dave.Send("/connect " + carol.Token)
	carol.Expect(`^\* dave is connected$`)
	dave.Expect(`^\* you are connected with carol$`)
	dave.Send("hi carol")
	carol.Expect(`^<dave> hi carol$`)
	if pb := b.Stats().Pairings; pb != 1 {
		t.Fatalf("a same-node pairing counted as a cross-node one: %d", pb)
	}

	// A name is unique across the cluster, in any case.
	dup := a.DialLine(t)
	dup.Send("/login Bob")
	dup.Expect(`^! name_taken: that name is in use on another server of this service; if it is yours and your connection dropped, resume it `)
}

// TestCloseSaysItLeft: a node that leaves the cluster cleanly says so,
// and not that it reaped a dead node's users, about itself.
func TestCloseSaysItLeft(t *testing.T) {
	r := startRedis(t)
	core, logs := observer.New(zapcore.InfoLevel)
	n := joinTestNode(t, r, "n1", hub.New(hub.Options{}), func(o *Options) { o.Logger = zap.New(core) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessage("reaped a dead node's users").Len() != 0 ||
		logs.FilterMessage("left the cluster: removed this node's users from the directory").Len() != 1 {
		t.Errorf("logged %v", logs.All())
	}
}

// TestLoginLoggedOnANode: a login on a node of a cluster, which waits on
// the directory off the loop, writes the debug line "logged in" with its
// connection, as a single node's does. (Before, it wrote none.)
func TestLoginLoggedOnANode(t *testing.T) {
	r := startRedis(t)
	core, logs := observer.New(zapcore.DebugLevel)
	n := startNodeEngine(t, r, "n1", nil, func(o *engine.Options) { o.Logger = zap.New(core) })
	n.DialLine(t).Login("alice")
	// The welcome is sent from the directory's answer, before the loop
	// takes the session up and logs it.
	lines := logs.FilterMessage("logged in").All()
	for deadline := time.Now().Add(enginetest.Timeout); len(lines) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		lines = logs.FilterMessage("logged in").All()
	}
	if len(lines) != 1 {
		t.Fatalf("%d lines \"logged in\"", len(lines))
	}
	if f := lines[0].ContextMap(); f["user"] != "alice" || f["remote"] != "127.0.0.1" {
		t.Errorf("logged in: %v", f)
	} else if _, ok := f["conn"].(uint64); !ok {
		t.Errorf("logged in: %v", f)
	}
}

// TestNetcatPipesAFileIntoANode pipes a file through the real netcat
// with -N into one node, to a partner on another: it logs in, connects,
// asks for a new token and says its lines. netcat ends its input while
// the login is still out with the directory (a round trip to Redis);
// each of the three commands waits on the directory in turn, and every
// line behind them is relayed.
func TestNetcatPipesAFileIntoANode(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	bob := b.DialLine(t).Login("bob")

	in := "/login piper\n/connect " + bob.Token + "\nfirst\n/newtoken\nsecond\nthird, with no line feed"
	finished := enginetest.PipeNetcat(t, a.TCP, strings.NewReader(in), io.Discard)
	bob.Expect(`^\* piper is connected$`)
	bob.ExpectLines("<piper> first", "<piper> second", "<piper> third, with no line feed")
	bob.Expect(`^\* piper disconnected; `)
	finished()

	// piper's name is free again, across the cluster.
	b.DialLine(t).Login("piper")
}

// TestRaceForOneToken has 50 users on three nodes connect to one token
// at once: exactly one wins, every other one is told Room is Full.
func TestRaceForOneToken(t *testing.T) {
	r := startRedis(t)
	nodes := []*testNode{startNode(t, r, "n0"), startNode(t, r, "n1"), startNode(t, r, "n2")}
	owner := nodes[0].DialLine(t).Login("owner")

	const racers = 50
	clients := make([]*enginetest.LineClient, racers)
	for i := range clients {
		clients[i] = nodes[i%3].DialLine(t).Login(fmt.Sprintf("racer%d", i))
	}
	start := make(chan struct{})
	errs := make(chan error, racers)
	for _, c := range clients {
		go func() {
			<-start
			_, err := c.Conn.Write([]byte("/connect " + owner.Token + "\n"))
			errs <- err
		}()
	}
	close(start)
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	winner := -1
	for i, c := range clients {
		s := c.Line()
		switch {
		case s == "* you are connected with owner":
			if winner >= 0 {
				t.Fatalf("racer%d and racer%d both won", winner, i)
			}
			winner = i
		case strings.HasPrefix(s, "! room_full: Room is Full"):
		default:
			t.Fatalf("racer%d: %q", i, s)
		}
	}
	if winner < 0 {
		t.Fatal("nobody won")
	}
	owner.Expect(fmt.Sprintf(`^\* racer%d is connected$`, winner))
	clients[winner].Send("I won")
	owner.Expect(fmt.Sprintf(`^<racer%d> I won$`, winner))
}

// TestLeaveFreesAcrossNodes: a leave or quit on one node frees the user
// on the other, and a quit frees the name cluster-wide.
func TestLeaveFreesAcrossNodes(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	carol := b.DialLine(t).Login("carol")

	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)
	carol.Send("/connect " + alice.Token)
	carol.Expect(roomFull)

	bob.Send("/leave")
	bob.Expect(`^\* you left alice$`)
	alice.Expect(`^\* bob left; you are free to be joined again$`)

	carol.Send("/connect " + alice.Token)
	carol.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* carol is connected$`)
	alice.Send("hello carol")
	carol.Expect(`^<alice> hello carol$`)

	alice.Send("/quit")
	alice.Expect(`^\* bye`)
	carol.Expect(`^\* alice left; you are free to be joined again$`)
	again := b.DialLine(t).Login("alice")
	bob.Send("/connect " + again.Token)
	bob.Expect(`^\* you are connected with alice$`)
	again.Expect(`^\* bob is connected$`)
}

// deathBound is the stated bound for telling a dead node's partners:
// the lease outlives the last renewal by LeaseTTL, and the other nodes
// look every Heartbeat (docs/CLUSTER.md).
const deathBound = 3*time.Second + time.Second

// TestNodeDeath stops a node as a crash would, leaving Redis as it was:
// its user's partner on another node is told within the bound, and the
// dead node's user's name and the partner are free again.
func TestNodeDeath(t *testing.T) {
	r := startRedis(t)
	// The bound is about b's lease, which has the default TTL; a keeps
	// the tests' generous one, so that a moment of a loaded machine's
	// scheduling cannot make a's own lease lapse and cut alice's pairing
	// for that reason instead (a's checks of b still run every
	// Heartbeat, as by default).
	defaults := func(o *Options) { o.LeaseTTL = 0 }
	a, b := startNode(t, r, "a"), startNodeWith(t, r, "b", defaults)
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)

	died := time.Now()
	b.halt()
	alice.Expect(`^\* bob disconnected; you are free to be joined again$`)
	took := time.Since(died)
	t.Logf("told after %v", took)
	// The margin is for a loaded test machine's scheduling, not design.
	if took > deathBound+time.Second {
		t.Fatalf("alice told after %v, bound is %v", took, deathBound)
	}
	waitCut(t, a.Node, "node_gone", 1)

	carol := a.DialLine(t).Login("carol")
	carol.Send("/connect " + alice.Token)
	carol.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* carol is connected$`)

	// bob's name was reaped with its node: within the bound, and
	// perhaps a moment after alice was told, since the reap follows the
	// cut (on a loaded machine, after carol's connect too).
	for {
		lc := a.DialLine(t)
		lc.Send("/login bob")
		l := lc.Line()
		if strings.HasPrefix(l, "* you are bob,") {
			break
		}
		if took := time.Since(died); took > deathBound+time.Second {
			t.Fatalf("bob's name still taken %v after its node died: %q", took, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestResumeWaitsOffTheLoop: a resume on a cluster node asks Redis
// about the session, and its event loop does not wait with it. The node
// has one loop; alice's session is resumed while Redis hangs, and
// meanwhile a pair on the same loop talks on at once, as a pair on one
// node does while Redis is away. The resume is answered once the node
// gives up on Redis. (Before, the loop waited the whole round trip's
// timeout, and every connection on it with it.)
func TestResumeWaitsOffTheLoop(t *testing.T) {
	r := startRedis(t)
	a := startNodeEngine(t, r, "a", nil, func(o *engine.Options) { o.Loops = 1 })
	carol := a.DialLine(t).Login("carol")
	dave := a.DialLine(t).Login("dave")
	dave.Send("/connect " + carol.Token)
	carol.Expect(`^\* dave is connected$`)
	dave.Expect(`^\* you are connected with carol$`)
	alice := a.DialLine(t).Login("alice")

	resumer := a.DialLine(t)
	r.Pause()
	t.Cleanup(r.Continue)
	resumer.Send("/resume " + alice.Key)
	time.Sleep(100 * time.Millisecond) // the resume is out with Redis
	start := time.Now()
	dave.Send("still here")
	carol.Expect(`^<dave> still here$`)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("a message between two users of the loop took %v while a resume waited on Redis", took)
	}
	_, _, _, key := enginetest.ReadResumed(t, resumer.Line)
	if key == "" || key == alice.Key {
		t.Fatalf("resumed with key %q", key)
	}
	alice.Expect(`^\* your session was resumed on another connection`)
}

// TestRedisDown kills Redis under a running cluster and brings it back:
// cross-node pairs are told the link is lost, same-node pairs go on,
// logins and connects answer unavailable, and the nodes recover by
// themselves once Redis is back.
func TestRedisDown(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	alice := a.DialLine(t).Login("alice")
	bob := b.DialWS(t).Login("bob")
	carol := a.DialLine(t).Login("carol")
	dave := a.DialLine(t).Login("dave")
	frank := a.DialLine(t).Login("frank")
	bob.Connect(alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect("paired")
	dave.Send("/connect " + carol.Token)
	carol.Expect(`^\* dave is connected$`)
	dave.Expect(`^\* you are connected with carol$`)

	r.Stop()
	alice.Expect(`^\* lost the link to bob's server; you are free to be joined again$`)
	if ev := bob.Expect("peer_left"); ev["peer"] != "alice" || ev["reason"] != "link_lost" {
		t.Fatalf("bob: %v", ev)
	}
	// Each node cut its side.
	waitCut(t, a.Node, "redis_lost", 1)
	waitCut(t, b.Node, "redis_lost", 1)
	dave.Send("still here")
	carol.Expect(`^<dave> still here$`)
	carol.Send("so am I")
	dave.Expect(`^<carol> so am I$`)

	erin := a.DialLine(t)
	erin.Send("/login erin")
	erin.Expect(unavailable)
	frank.Send("/connect " + alice.Token)
	frank.Expect(unavailable)
	bob.Connect(alice.Token)
	bob.ExpectError("unavailable")

	r.Start()
	deadline := time.Now().Add(enginetest.Timeout)
	for !a.Up() || !b.Up() {
		if time.Now().After(deadline) {
			t.Fatal("nodes did not recover")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Everyone was written back: names are still taken, the same-node
	// pair is still a pair, and cross-node pairing works again.
	erin.Login("erin")
	dup := b.DialLine(t)
	dup.Send("/login frank")
	dup.Expect(`^! name_taken: `)
	dup.Login("gina")
	dup.Send("/connect " + carol.Token)
	dup.Expect(roomFull)
	bob.Connect(alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect("paired")
	alice.Send("welcome back")
	if ev := bob.Expect("message"); ev["text"] != "welcome back" {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say("thanks")
	alice.Expect(`^<bob> thanks$`)
	dave.Send("and we never stopped")
	carol.Expect(`^<dave> and we never stopped$`)
}

// TestGracefulShutdown: a node that shuts down tells its users' partners
// on other nodes why, after their last messages, and leaves nothing
// behind in Redis.
func TestGracefulShutdown(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)
	bob.Send("last words")
	// What a node has not read when it shuts down is not a message it
	// took: wait until bob's node has it, so that what is tested is
	// that its partner hears it before the reason.
	for deadline := time.Now().Add(enginetest.Timeout); b.Hub.Stats().Messages == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bob's node never read his last words")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Daemon.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Node.Close(ctx); err != nil {
		t.Fatal(err)
	}
	alice.Expect(`^<bob> last words$`)
	alice.Expect(`^\* bob's server is shutting down; you are free to be joined again$`)

	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + r.Port})
	defer c.Close()
	keys, err := c.Keys(ctx, "duet:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := proto.ParseToken([]byte(bob.Token))
	bobName, bobToken := b.keys.nameHash("bob"), b.keys.tokenHash(tok)
	if len(keys) == 0 {
		t.Fatal("nothing in Redis; alice should still be there")
	}
	for _, k := range keys {
		if strings.Contains(k, bobName) || strings.Contains(k, bobToken) || strings.HasSuffix(k, ":b") {
			t.Errorf("left behind: %s", k)
		}
	}
}

// TestPipedSession sends a whole session through netcat at once, ending
// with end-of-file: the commands that wait on the directory hold the
// rest back, and everything arrives, in order.
func TestPipedSession(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	alice := a.DialLine(t).Login("alice")
	piped := b.DialLine(t)
	script := "/login pipey\n/connect " + alice.Token + "\nhello alice\n/newtoken\nstill me\n"
	if _, err := piped.Conn.Write([]byte(script)); err != nil {
		t.Fatal(err)
	}
	piped.Conn.(*net.TCPConn).CloseWrite()
	alice.Expect(`^\* pipey is connected$`)
	alice.Expect(`^<pipey> hello alice$`)
	alice.Expect(`^<pipey> still me$`)
	alice.Expect(`^\* pipey disconnected; you are free to be joined again$`)
	piped.Expect(`^\* you are pipey, your token is `)
	piped.ExpectKey()
	piped.Expect(`^\* you are connected with alice$`)
	piped.Expect(`^\* your new token is [0-9a-f]{32}; the one before no longer works$`)
}

// TestSenderFull: when more is queued for another node than MaxQueue
// allows, the pairing is cut with link_lost and the speaker is told how
// many messages did not go; nothing is dropped without a word.
func TestSenderFull(t *testing.T) {
	r := startRedis(t)
	a := startNodeWith(t, r, "a", func(o *Options) { o.MaxQueue = 1 })
	b := startNode(t, r, "b")
	alice := a.DialLine(t).Login("alice")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect("paired")

	const n = 2000
	var lines strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&lines, "flood %d\n", i)
	}
	if _, err := alice.Conn.Write([]byte(lines.String())); err != nil {
		t.Fatal(err)
	}
	cut := alice.Expect(`^\* lost the link to bob's server; \d+ of your messages (was|were) not delivered; you are free to be joined again$`)
	var undelivered int
	fmt.Sscanf(cut[strings.Index(cut, "; ")+2:], "%d", &undelivered)

	// bob got a prefix of the flood, in order, then the cut.
	got := 0
	for {
		ev := bob.Next()
		if ev["type"] == "peer_left" {
			if ev["reason"] != "link_lost" {
				t.Fatalf("bob: %v", ev)
			}
			break
		}
		if ev["type"] != "message" || ev["text"] != "flood "+strconv.Itoa(got) {
			t.Fatalf("bob's message %d: %v", got, ev)
		}
		got++
	}
	if got+undelivered > n || undelivered == 0 {
		t.Fatalf("bob got %d, alice told %d undelivered, of %d", got, undelivered, n)
	}
	waitCut(t, a.Node, "queue_full", 1)
	t.Logf("delivered %d, cut with %d undelivered", got, undelivered)
}

// TestLeaseLapse: a node whose lease lapsed (a long stall looks like
// this to the others) is reaped by them, notices at its next heartbeat,
// and writes its users back by itself.
func TestLeaseLapse(t *testing.T) {
	r := startRedis(t)
	defaults := func(o *Options) { o.LeaseTTL = 0 }
	a, b := startNodeWith(t, r, "a", defaults), startNodeWith(t, r, "b", defaults)
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")

	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + r.Port})
	defer c.Close()
	if err := c.Del(context.Background(), "duet:lease:a").Err(); err != nil {
		t.Fatal(err)
	}
	// a notices at its next heartbeat, within a second, and writes
	// alice back; b may reap her first, and then she is written back.
	ctx := context.Background()
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		time.Sleep(100 * time.Millisecond)
		if time.Now().After(deadline) {
			t.Fatal("alice was never written back")
		}
		lease, _ := c.Exists(ctx, "duet:lease:a").Result()
		node, _ := c.HGet(ctx, "duet:user:"+a.keys.nameHash("alice"), "node").Result()
		if lease == 1 && node == "a" && a.Up() {
			break
		}
	}
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	alice.Send("back again")
	bob.Expect(`^<alice> back again$`)
}

// BenchmarkCrossNodeRelay relays messages from a netcat user on one node
// to a netcat user on another, through a real Redis: what a message
// costs end to end, batches sealed and opened included. stream sends
// without waiting, so batches fill up; pingpong waits for each answer,
// so every message is a batch of its own, each way.
func BenchmarkCrossNodeRelay(b *testing.B) {
	r := startRedis(b)
	na, nb := startNode(b, r, "a"), startNode(b, r, "b")
	alice := na.DialLine(b).Login("alice")
	bob := nb.DialLine(b).Login("bob")
	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)
	line := strings.Repeat("x", 80)
	batches := func() uint64 { return na.Stats().BatchesSent + nb.Stats().BatchesSent }

	b.Run("stream", func(b *testing.B) {
		chunk := []byte(strings.Repeat(line+"\n", 100))
		before := batches()
		b.ReportAllocs()
		b.ResetTimer()
		done := make(chan error, 1)
		go func() {
			for left := b.N; left > 0; left -= 100 {
				c := chunk
				if left < 100 {
					c = chunk[:left*(len(line)+1)]
				}
				alice.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
				if _, err := alice.Conn.Write(c); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		for range b.N {
			if s := bob.Line(); s != "<alice> "+line {
				b.Fatalf("bob got %q", s)
			}
		}
		b.StopTimer()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/float64(batches()-before), "msgs/batch")
	})
	b.Run("pingpong", func(b *testing.B) {
		before := batches()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			alice.Send(line)
			if s := bob.Line(); s != "<alice> "+line {
				b.Fatalf("bob got %q", s)
			}
			bob.Send(line)
			if s := alice.Line(); s != "<bob> "+line {
				b.Fatalf("alice got %q", s)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(2*b.N)/float64(batches()-before), "msgs/batch")
	})
}

// documentedACL reads the ACL rule docs/OPERATIONS.md gives for duet's
// Redis user, so the test runs what operators are told to set up.
func documentedACL(t *testing.T) []any {
	t.Helper()
	doc, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(doc)) {
		rule, ok := strings.CutPrefix(strings.TrimSpace(l), "user duet on >LONG-RANDOM-PASSWORD ")
		if !ok {
			continue
		}
		var args []any
		for _, f := range strings.Fields(rule) {
			args = append(args, f)
		}
		return args
	}
	t.Fatal("docs/OPERATIONS.md gives no ACL rule for the duet user")
	return nil
}

// TestRedisACLUser runs the cluster through a Redis user limited by the
// ACL rule docs/OPERATIONS.md gives, with the default user off: everything duet does
// (login, connect, messages, newtoken, leave, quit, recovery writes and
// a node leaving) works with it.
func TestRedisACLUser(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer admin.Close()
	args := append([]any{"ACL", "SETUSER", "duet", "on", ">s3cret-pass"}, documentedACL(t)...)
	if err := admin.Do(ctx, args...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "off").Err(); err != nil {
		t.Fatal(err)
	}
	withUser := func(o *Options) { o.RedisURL = "redis://duet:s3cret-pass@" + r.Addr() }
	a, b := startNodeWith(t, r, "a", withUser), startNodeWith(t, r, "b", withUser)
	alice := a.DialLine(t).Login("alice")
	bob := b.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect("paired")
	alice.Send("over the ACL")
	if ev := bob.Expect("message"); ev["text"] != "over the ACL" {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say("and back")
	alice.Expect(`^<bob> and back$`)
	bob.Send(map[string]any{"type": "leave"})
	bob.Expect("left")
	alice.Expect(`^\* bob left; you are free to be joined again$`)
	alice.Send("/newtoken")
	fresh := tokenIn(t, alice.Expect(`^\* your new token is `))
	bob.Connect(fresh)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect("paired")

	// Recovery writes every user back through its scripts.
	if err := a.reregister(ctx); err != nil {
		t.Fatalf("writing users back through the ACL user: %v", err)
	}
	alice.Send("/quit")
	alice.Expect(`^\* bye`)
	if ev := bob.Expect("peer_left"); ev["reason"] != "left" {
		t.Fatalf("bob: %v", ev)
	}
	if err := b.Daemon.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Node.Close(ctx); err != nil {
		t.Fatalf("leaving the cluster through the ACL user: %v", err)
	}
	if !a.Up() {
		t.Error("a lost its link: Redis refused one of its commands")
	}
}

// waitCut waits until n has counted want pairings cut for cause, and
// checks that it counted none for any other: the count follows the
// users' being told, by a moment.
func waitCut(t *testing.T, n *Node, cause string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		st := n.Stats()
		if st.PairingsCut[cause] == want {
			for c, k := range st.PairingsCut {
				if c != cause && k != 0 {
					t.Fatalf("node %s counted %d pairings cut for %s, besides %d for %s", n.ID(), k, c, want, cause)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s counted %v pairings cut, want %d for %s", n.ID(), st.PairingsCut, want, cause)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOperationsDocNamesEveryCutCause: the metrics table in
// docs/OPERATIONS.md names every cause of
// duet_cluster_pairings_cut_total.
func TestOperationsDocNamesEveryCutCause(t *testing.T) {
	doc, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(line, "| `duet_cluster_pairings_cut_total{cause}` |") {
			continue
		}
		for _, c := range CutCauses {
			if !strings.Contains(line, "`"+c+"`") {
				t.Errorf("docs/OPERATIONS.md does not name %s among the causes", c)
			}
		}
		return
	}
	t.Fatal("docs/OPERATIONS.md has no row for duet_cluster_pairings_cut_total")
}
