package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"duet/config"
	"duet/engine"
	"duet/engine/enginetest"
	"duet/engine/hub"
	"duet/proto"
)

// Failures told to the users they concern: a pairing that ended while
// its session was parked, whichever way it ended, is told on the resume
// that takes the session up, on either protocol.

// wsJoinsLine logs in a line client as lname on ld and a WebSocket
// client as wname on wd, which connects to the line client's token, and
// reads what both are told of their pairing.
func wsJoinsLine(t testing.TB, ld *enginetest.Daemon, lname string, wd *enginetest.Daemon, wname string) (*enginetest.LineClient, *enginetest.WSClient) {
	t.Helper()
	lc := ld.DialLine(t).Login(lname)
	wc := wd.DialWS(t).Login(wname)
	wc.Connect(lc.Token)
	wc.Expect("paired")
	lc.Expect(`^\* ` + wname + ` is connected$`)
	return lc, wc
}

// lineJoinsLine logs in a line client as hname on hd and another as
// jname on jd, which connects to the first one's token, and reads what
// both are told of their pairing.
func lineJoinsLine(t testing.TB, hd *enginetest.Daemon, hname string, jd *enginetest.Daemon, jname string) (holder, joiner *enginetest.LineClient) {
	t.Helper()
	holder = hd.DialLine(t).Login(hname)
	joiner = jd.DialLine(t).Login(jname)
	joiner.Send("/connect " + holder.Token)
	joiner.Expect(`^\* you are connected with ` + hname + `$`)
	holder.Expect(`^\* ` + jname + ` is connected$`)
	return holder, joiner
}

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
func waitReleased(t testing.TB, r *redisServer, n *Node, name string) {
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

	alice, bob := wsJoinsLine(t, a.Daemon, "alice", b.Daemon, "bob")
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
	dave.Expect(`^\* carol's server is restarting; `)

	bob.Send(map[string]any{"type": "leave"})
	bob.Expect("left")
	dave.Send("/quit")
	dave.Expect(`^\* bye$`)
	waitReleased(t, r, b.Node, "carol")

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

// TestParkedPartnerLeftHereIsTold drains a node whose user's partner,
// on another node, says a last word and leaves while the session is
// parked, and the session is resumed on the partner's own node before
// that node has written either beside the park (its parker is held off
// the partner's outbox, as one that has not come to it yet): the resume
// replays the message and tells the partner left, with the reason that
// node holds, not guessed from a record that no node wrote.
func TestParkedPartnerLeftHereIsTold(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	key, _ := leftWhileParked(t, a, b)
	back, peer, replayed, missed := enginetest.ResumeLine(t, b.Daemon, key)
	if peer != "" || !slices.Equal(replayed, []string{"<bob> bye alice"}) || missed != 0 {
		t.Fatalf("alice resumed with %q, replayed %q, %d missed", peer, replayed, missed)
	}
	back.Expect(`^\* bob left; you are free to be joined again$`)
}

// TestParkedPartnerLeavingHereIsTold is TestParkedPartnerLeftHereIsTold
// with the resume's claim in the moment of the partner's leave between
// its record being freed and its hub ending the pairing (Session.Leave
// frees both records, then ends the pairing): the claim finds the
// record freed, and the end not yet held. The resume waits for the end,
// then replays the partner's last word and tells how it left; it is not
// told a guess (disconnected, the last word lost with nobody told).
func TestParkedPartnerLeavingHereIsTold(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	alice, bob := lineJoinsLine(t, a.Daemon, "alice", b.Daemon, "bob")
	drainNode(t, a, 0)
	key := drainedKey(t, alice)
	bob.Expect(`^\* alice's server is restarting; `)
	holdParker(t, b.Node, "alice")
	bob.Send("bye alice")
	var pair uint64
	for deadline := time.Now().Add(enginetest.Timeout); pair == 0; time.Sleep(10 * time.Millisecond) {
		b.mu.Lock()
		for _, o := range b.routes {
			o.mu.Lock()
			if o.to == "alice" && len(o.held) == 1 {
				pair = o.pair
			}
			o.mu.Unlock()
		}
		b.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("b never held bob's last word for alice")
		}
	}
	// The first half of bob's leave: his record is freed, his hub still
	// pairs him with alice.
	b.Release("bob", pair)
	back := b.DialLine(t)
	back.Send("/resume " + key)
	// Long enough for the claim to find bob's record freed; the leave's
	// second half, the pairing's end, comes after it.
	time.Sleep(300 * time.Millisecond)
	bob.Send("/leave")
	bob.Expect(`^\* you left alice$`)
	peer, replayed, missed, _ := enginetest.ReadResumed(t, back.Line)
	if peer != "" || !slices.Equal(replayed, []string{"<bob> bye alice"}) || missed != 0 {
		t.Fatalf("alice resumed with %q, replayed %q, %d missed", peer, replayed, missed)
	}
	back.Expect(`^\* bob left; you are free to be joined again$`)
}

// TestParkedPartnerLeftElsewhereIsTold is TestParkedPartnerLeftHereIsTold
// with the session resumed on a third node: the partner's record is
// freed, and its node holds the partner's last word and how it left,
// not yet written beside the park. The resume is not told a guess
// (disconnected, its partner's last word lost with nobody told): the
// node that takes the session up asks the partner's node, as for a
// partner live there, and is sent what it held, in order.
func TestParkedPartnerLeftElsewhereIsTold(t *testing.T) {
	r := startRedis(t)
	a, b, c := startNode(t, r, "a"), startNode(t, r, "b"), startNode(t, r, "c")
	key, aliceToken := leftWhileParked(t, a, b)
	waitReleased(t, r, b.Node, "bob")
	back, peer, replayed, missed := enginetest.ResumeLine(t, c.Daemon, key)
	// b's answer may come before the resume is answered, in part or
	// whole: what came is replayed, as for a session away, and the rest
	// comes live. The last word comes once either way.
	switch {
	case missed != 0 || (peer != "bob" && peer != ""):
		t.Fatalf("alice resumed with %q, %d missed", peer, missed)
	case slices.Equal(replayed, []string{"<bob> bye alice"}):
	case peer == "bob" && len(replayed) == 0:
		back.Expect(`^<bob> bye alice$`)
	default:
		t.Fatalf("alice resumed with %q, replayed %q", peer, replayed)
	}
	back.Expect(`^\* bob left; you are free to be joined again$`)

	// Free indeed: a user of the partner's node pairs with her.
	erin := b.DialLine(t).Login("erin")
	erin.Send("/connect " + aliceToken)
	erin.Expect(`^\* you are connected with alice$`)
}

// TestConnectThatReachedAParkIsFreed: a connect that reached a user's
// record as the user's node parked the session (the node had let the
// session go, so the pairing never reached it; the claimant is told
// its partner disconnected) leaves the record naming a pairing the
// park does not hold. The resume frees it, whether the claimant's
// record still names the pairing or was freed already: the user is
// resumed unpaired, and can be joined, not room_full to everyone.
func TestConnectThatReachedAParkIsFreed(t *testing.T) {
	r := startRedis(t)
	a, b, c := startNode(t, r, "a"), startNode(t, r, "b"), startNode(t, r, "c")
	alice := a.DialLine(t).Login("alice")
	erin := a.DialLine(t).Login("erin")
	b.DialLine(t).Login("carol")
	b.DialLine(t).Login("frank")

	drainNode(t, a, 0)
	aliceKey, erinKey := drainedKey(t, alice), drainedKey(t, erin)

	// What the connects wrote: carol's record names alice still (her
	// node is yet to hear), frank's was freed already.
	rc := redisClient(t, r)
	ctx := context.Background()
	user := func(name string) string { return "duet:user:" + a.keys.nameHash(name) }
	for _, w := range [][2]string{{"alice", "carol"}, {"carol", "alice"}, {"erin", "frank"}} {
		if err := rc.HSet(ctx, user(w[0]), "peer", a.keys.nameHash(w[1]), "pair", "4242").Err(); err != nil {
			t.Fatal(err)
		}
	}

	for _, u := range []struct {
		key, token string
	}{{aliceKey, alice.Token}, {erinKey, erin.Token}} {
		back, peer, _, _ := enginetest.ResumeLine(t, c.Daemon, u.key)
		if peer != "" {
			t.Fatalf("resumed with %q", peer)
		}
		joiner := c.DialLine(t).Login("j" + u.token[:8])
		joiner.Send("/connect " + u.token)
		joiner.Expect(`^\* you are connected with `)
		back.Expect(`^\* j` + u.token[:8] + ` is connected$`)
	}
}

// TestParkedPartnerCutIsTold: a pairing with a parked partner is cut on
// the speaker's node for holding more for the partner than that node
// takes (its parker held off, as by a slow Redis). What it held is not
// dropped: the resume, on a third node, gets every message the speaker
// was let send, then the cut, as link_lost; the speaker is told only
// the message refused was not delivered.
func TestParkedPartnerCutIsTold(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, r, "a")
	b := startNodeWith(t, r, "b", func(o *Options) { o.MaxQueue = 300 })
	c := startNode(t, r, "c")
	alice, bob := lineJoinsLine(t, a.Daemon, "alice", b.Daemon, "bob")
	drainNode(t, a, 0)
	key := drainedKey(t, alice)
	bob.Expect(`^\* alice's server is restarting; `)
	holdParker(t, b.Node, "alice")

	// Each message counts its text and 64 bytes: four are held, the
	// fifth passes the bound.
	for i := 1; i <= 5; i++ {
		bob.Send("m" + strconv.Itoa(i))
	}
	bob.Expect(`^\* lost the link to alice's server; 1 of your messages was not delivered; you are free to be joined again$`)
	waitCut(t, b.Node, "queue_full", 1)

	back, peer, replayed, missed := enginetest.ResumeLine(t, c.Daemon, key)
	if missed != 0 || (peer != "bob" && peer != "") {
		t.Fatalf("alice resumed with %q, %d missed", peer, missed)
	}
	got := replayed
	for len(got) < 4 {
		l := back.Line()
		if !strings.HasPrefix(l, "<bob> ") {
			t.Fatalf("alice got %q after %q", l, got)
		}
		got = append(got, l)
	}
	if want := []string{"<bob> m1", "<bob> m2", "<bob> m3", "<bob> m4"}; !slices.Equal(got, want) {
		t.Fatalf("alice got %q, want %q", got, want)
	}
	back.Expect(`^\* lost the link to bob's server; you are free to be joined again$`)
}

// leftWhileParked pairs alice on a with bob on b, drains a, and has bob
// say a last word and leave while alice is parked, with b's parker held
// off what b holds for her: neither is written beside the park. It
// returns alice's resume key and her token.
func leftWhileParked(t testing.TB, a, b *testNode) (key, token string) {
	t.Helper()
	alice, bob := lineJoinsLine(t, a.Daemon, "alice", b.Daemon, "bob")
	drainNode(t, a, 0)
	key = drainedKey(t, alice)
	bob.Expect(`^\* alice's server is restarting; `)
	holdParker(t, b.Node, "alice")
	bob.Send("bye alice")
	bob.Send("/leave")
	bob.Expect(`^\* you left alice$`)
	return key, alice.Token
}

// holdParker keeps n's parker from writing to Redis what n holds for
// the parked session key (quiet, as while a claim takes it up here),
// once n has heard it is parked.
func holdParker(t testing.TB, n *Node, key string) {
	t.Helper()
	for deadline := time.Now().Add(enginetest.Timeout); ; {
		n.mu.Lock()
		held := false
		for _, o := range n.routes {
			o.mu.Lock()
			if o.to == key && o.state == routeParked {
				o.quiet, held = true, true
			}
			o.mu.Unlock()
		}
		n.mu.Unlock()
		if held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never heard that %s is parked", n.ID(), key)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestParkedPartnerNodeDiedIsTold drains a node, then its users'
// partners' node dies: the resume, on a third node, is told the partner
// disconnected, as a partner of a node that dies is told live.
func TestParkedPartnerNodeDiedIsTold(t *testing.T) {
	r := startRedis(t)
	defaults := func(o *Options) { o.LeaseTTL = 0 }
	a, b, c := startNode(t, r, "a"), startNodeWith(t, r, "b", defaults), startNode(t, r, "c")

	alice, bob := lineJoinsLine(t, a.Daemon, "alice", b.Daemon, "bob")

	drainNode(t, a, 0)
	key := drainedKey(t, alice)
	bob.Expect(`^\* alice's server is restarting; `)
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

// endCounter counts, as /metrics does, how connections end and the
// errors users are told.
type endCounter struct {
	mu     sync.Mutex
	ends   map[string]int
	errors map[string]int
}

func newEndCounter() *endCounter {
	return &endCounter{ends: make(map[string]int), errors: make(map[string]int)}
}

func (*endCounter) ConnOpened(string) {}
func (*endCounter) ConnClosed(string) {}
func (*endCounter) Upgraded()         {}
func (*endCounter) Rejected(string)   {}
func (*endCounter) SlowCut()          {}

func (m *endCounter) Error(code string) {
	m.mu.Lock()
	m.errors[code]++
	m.mu.Unlock()
}

func (m *endCounter) Disconnected(reason string) {
	m.mu.Lock()
	m.ends[reason]++
	m.mu.Unlock()
}

func (m *endCounter) counts(reason string) (ends, errors int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ends[reason], m.errors[reason]
}

// drainOutcome is what one client of a drain was told, and when.
type drainOutcome struct {
	name    string
	resume  bool // told to reconnect and resume
	unkept  bool // told its session could not be kept (not_parked)
	at      time.Time
	partner string // a peer_left's reason it was told first, if any
	err     error
}

// TestRedisLostMidDrain kills the real redis-server while a node drains,
// or pauses it (a Redis that hangs): every client the node reaches
// after that is told its session could not be kept (not_parked, then
// the shutdown goodbye; a browser with close code 1012) rather than to
// resume a session no node has, which would answer bad_resume_key; its
// session ends at once, a partner on the node is told, and each such
// ending is counted.
func TestRedisLostMidDrain(t *testing.T) {
	t.Run("killed", func(t *testing.T) { testRedisLostMidDrain(t, (*redisServer).Stop) })
	t.Run("paused", func(t *testing.T) {
		testRedisLostMidDrain(t, func(r *redisServer) {
			r.Pause()
			t.Cleanup(r.Continue)
		})
	})
}

func testRedisLostMidDrain(t *testing.T, fail func(*redisServer)) {
	r := startRedis(t)
	m := newEndCounter()
	a := startNodeEngine(t, r, "a", nil, func(o *engine.Options) { o.Metrics = m })

	const lines, webs = 8, 2
	var lcs []*enginetest.LineClient
	for i := range lines {
		lcs = append(lcs, a.DialLine(t).Login(fmt.Sprint("l", i)))
	}
	var wcs []*enginetest.WSClient
	for i := range webs {
		wcs = append(wcs, a.DialWS(t).Login(fmt.Sprint("w", i)))
	}
	// A pair on the node: whichever of the two is ended unparked first,
	// the other, away or still connected, is told why.
	lcs[1].Send("/connect " + lcs[0].Token)
	lcs[1].Expect(`^\* you are connected with l0$`)
	lcs[0].Expect(`^\* l1 is connected$`)

	outcomes := make(chan drainOutcome, lines+webs)
	// As the first client is told: a line client's connection closes a
	// grace later (the engine's drainGrace), and others are told
	// meanwhile.
	firstTold := make(chan struct{})
	var once sync.Once
	first := func() { once.Do(func() { close(firstTold) }) }
	for _, lc := range lcs {
		go func() { outcomes <- lineOutcome(lc, first) }()
	}
	for _, wc := range wcs {
		go func() { outcomes <- webOutcome(wc, first) }()
	}

	const period = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*enginetest.Timeout)
	defer cancel()
	drained := make(chan engine.Drained, 1)
	go func() { drained <- a.Daemon.Drain(ctx, period, a.Node.Park) }()

	// Redis dies once the first client has been told.
	var got []drainOutcome
	<-firstTold
	fail(r)
	killed := time.Now()
	for len(got) < lines+webs {
		got = append(got, <-outcomes)
	}

	unkept := 0
	for _, o := range got {
		switch {
		case o.err != nil:
			t.Errorf("%s: %v", o.name, o.err)
		case o.unkept:
			unkept++
		case o.resume && o.at.After(killed.Add(period/(lines+webs))):
			// Told after Redis was gone, and told a drain's period
			// step after: no park could have been written.
			t.Errorf("%s was told to resume %v after Redis died", o.name, o.at.Sub(killed))
		}
		// The pair's partner ends unparked (shutdown), or was parked
		// already and its pairing was cut with the link (link_lost).
		if o.partner != "" && o.partner != "shutdown" && o.partner != "link_lost" {
			t.Errorf("%s was told its partner left for %q", o.name, o.partner)
		}
	}
	if unkept < lines+webs-2 {
		t.Fatalf("%d clients were told their session could not be kept, want at least %d: %+v", unkept, lines+webs-2, got)
	}
	// The drain returns once every connection has closed, each counted.
	// What it says it did (POST /drain's answer) is what the clients were
	// told: those told not_parked are not among those told to reconnect.
	if d := <-drained; d != (engine.Drained{Told: lines + webs - unkept, NotParked: unkept}) {
		t.Errorf("the drain says %+v; %d clients were told to reconnect, %d not_parked", d, lines+webs-unkept, unkept)
	}
	if ends, errs := m.counts("not_parked"); ends != unkept || errs != unkept {
		t.Fatalf("not_parked counted as %d endings and %d errors, want %d", ends, errs, unkept)
	}

	if st := a.Hub.Stats(); st.Users > lines+webs-unkept || st.Pairs != 0 {
		t.Fatalf("a still holds %+v with %d sessions ended unparked", st, unkept)
	}
}

// lineOutcome reads what a line client is told until its connection
// closes.
func lineOutcome(lc *enginetest.LineClient, told func()) drainOutcome {
	o := drainOutcome{name: lc.Name}
	for {
		l, err := lc.TryLine(2 * enginetest.Timeout)
		if err != nil {
			if o.resume == o.unkept {
				o.err = fmt.Errorf("closed after %q, told neither to resume nor that the session is gone", l)
			}
			return o
		}
		switch {
		case drainLineRE.MatchString(l):
			o.resume, o.at = true, time.Now()
			told()
		case strings.HasPrefix(l, "! not_parked: the server is restarting and could not keep your session; log in again"):
			o.unkept, o.at = true, time.Now()
			told()
		case l == "* the server is shutting down; goodbye" && o.unkept:
		case strings.HasSuffix(l, "; you are free to be joined again"):
			switch {
			case strings.Contains(l, "'s server is shutting down"):
				o.partner = "shutdown"
			case strings.HasPrefix(l, "* lost the link to "):
				o.partner = "link_lost"
			default:
				o.partner = l
			}
		case strings.HasPrefix(l, "* "):
		default:
			o.err = fmt.Errorf("told %q", l)
			return o
		}
	}
}

// webOutcome reads what a WebSocket client is told until it is closed.
func webOutcome(wc *enginetest.WSClient, told func()) drainOutcome {
	o := drainOutcome{name: wc.Name}
	shutdown := false
	for {
		ev, code, err := wc.TryNext(2 * enginetest.Timeout)
		if err != nil {
			o.err = err
			return o
		}
		if code != 0 {
			if code != 1012 || o.resume == o.unkept || o.unkept != shutdown {
				o.err = fmt.Errorf("closed with %d, told to resume %v, not kept %v, shutdown %v", code, o.resume, o.unkept, shutdown)
			}
			return o
		}
		switch ev["type"] {
		case "notice":
			if strings.HasPrefix(ev["text"].(string), "the server is restarting; reconnect and resume") {
				o.resume, o.at = true, time.Now()
				told()
			}
		case "error":
			if ev["code"] != "not_parked" {
				o.err = fmt.Errorf("told %v", ev)
				return o
			}
			o.unkept, o.at = true, time.Now()
			told()
		case "shutdown":
			shutdown = true
		case "peer_left":
			o.partner, _ = ev["reason"].(string)
		}
	}
}

// TestDrainWithResumeOff: a node with resume off drains as before, each
// session ending with the drain (its partner told shutdown); none is
// counted or told as not_parked, which is for a park that failed.
func TestDrainWithResumeOff(t *testing.T) {
	r := startRedis(t)
	m := newEndCounter()
	a := startNodeEngine(t, r, "a", nil, func(o *engine.Options) {
		o.Metrics = m
		o.Resume = config.Resume{}
	})
	alice, bob := lineJoinsLine(t, a.Daemon, "alice", a.Daemon, "bob")

	drainNode(t, a, 0)
	for _, lc := range []*enginetest.LineClient{alice, bob} {
		for {
			l, err := lc.TryLine(enginetest.Timeout)
			if err != nil {
				break
			}
			if strings.Contains(l, "not_parked") {
				t.Fatalf("%s was told %q", lc.Name, l)
			}
		}
	}
	if ends, errs := m.counts("not_parked"); ends != 0 || errs != 0 {
		t.Fatalf("not_parked counted as %d endings and %d errors", ends, errs)
	}
	if ends, _ := m.counts("drain"); ends != 2 {
		t.Fatalf("%d connections ended with the drain, want 2", ends)
	}
}

// TestTakeoverOnAnotherNodeReplaysWhatTheOldConnectionNeverWrote:
// alice's connection on node a is open, but she reads slowly, so a holds
// what her socket would not take, when she resumes on node b. What the
// old connection never wrote, however long ago it was sent, goes with
// the session and is replayed on b (or counted as not kept), as a
// takeover on one node replays it: the old connection, closed for the
// takeover, will never write it.
func TestTakeoverOnAnotherNodeReplaysWhatTheOldConnectionNeverWrote(t *testing.T) {
	const recent = 2 * time.Second
	const count = 30_000
	r := startRedis(t)
	a, b, old, bob := behindAcrossNodes(t, r, recent)
	// alice reads slowly, 64 KiB at a time.
	stop := enginetest.ReadSlowly(old.Conn)
	sendAcross(t, a, b, bob, count)
	// Every message is older than resume.replay_recent by the resume.
	time.Sleep(recent + recent/2)
	stop()

	_, peer, replayed, missed := enginetest.ResumeLine(t, b.Daemon, old.Key)
	if peer != "bob" {
		t.Fatalf("resumed with %q", peer)
	}
	if st := b.Hub.Stats(); st.ResumedZombie != 1 {
		t.Fatalf("not a takeover of an open connection: b's hub stats %+v", st)
	}
	enginetest.ExpectReplayedRun(t, replayed, missed, "bob", count-1)
}

// behindAcrossNodes starts nodes a and b on r for a reader that falls
// far behind: large enough outbound and resume buffers, a slow cut that
// does not come, replay_recent recent (TCP_USER_TIMEOUT, which finds a
// reader dead once its reads stop). It logs alice in on a with a small
// window (enginetest.SmallWindow: the server's kernel soon holds all it
// may send her, and a holds the rest) and bob on b, and pairs them.
func behindAcrossNodes(t *testing.T, r *redisServer, recent time.Duration) (a, b *testNode, alice, bob *enginetest.LineClient) {
	t.Helper()
	slow := func(o *engine.Options) {
		o.Limits.OutboundHigh = 64 << 20
		o.Limits.OutboundMax = 128 << 20
		o.Limits.SlowTimeout = time.Minute
		o.Resume.Buffer = 32 << 20
		o.Resume.ReplayRecent = recent
	}
	a, b = startNodeEngine(t, r, "a", nil, slow), startNodeEngine(t, r, "b", nil, slow)
	alice = a.DialLine(t)
	enginetest.SmallWindow(t, alice.Conn)
	alice.Login("alice")
	bob = b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	return a, b, alice, bob
}

// sendAcross sends count numbered messages from bob on b to his partner
// on a (enginetest.SendNumbered), and waits until all have crossed and
// a keeps some.
func sendAcross(t *testing.T, a, b *testNode, bob *enginetest.LineClient, count int) {
	t.Helper()
	enginetest.SendNumbered(t, bob.Conn, count)
	for deadline := time.Now().Add(2 * enginetest.Timeout); a.Hub.Stats().HistoryBytes == 0 || b.Hub.Stats().Messages < uint64(count); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the messages did not all cross: a %+v, b %+v", a.Hub.Stats(), b.Hub.Stats())
		}
	}
}

// TestParkedPartnerCutForRedisLossIsTold drains a node, then the
// partner's node alone loses Redis and cuts the pairing (link_lost)
// while the session is parked, and the session is taken up on a third
// node within the partner's node's lease: the partner's record, which
// its node could not free, says paired, and the session is taken up
// paired. The node that took it up finds the partner's node not
// listening, cuts the pairing as its own (link_lost), and tells the
// user, who need not say anything first to learn it. It waits no time
// for the word of b, which is linked again only later.
func TestParkedPartnerCutForRedisLossIsTold(t *testing.T) {
	r := startRedis(t)
	px := startRedisProxy(t, r)
	a := startNode(t, r, "a")
	b := startNodeWith(t, r, "b", func(o *Options) { o.RedisURL = px.url() })
	c := startNodeWith(t, r, "c", noWordAwaited)
	alice, bob := lineJoinsLine(t, a.Daemon, "alice", b.Daemon, "bob")
	drainNode(t, a, 0)
	key := drainedKey(t, alice)
	bob.Expect(`^\* alice's server is restarting; `)

	px.cut()
	bob.Expect(`^\* lost the link to alice's server; you are free to be joined again$`)
	waitCut(t, b.Node, "redis_lost", 1)

	back, peer, replayed, missed := enginetest.ResumeLine(t, c.Daemon, key)
	if peer != "bob" || len(replayed) != 0 || missed != 0 {
		t.Fatalf("alice resumed with %q, replayed %q, %d missed", peer, replayed, missed)
	}
	back.Expect(`^\* lost the link to bob's server; you are free to be joined again$`)
	waitCut(t, c.Node, "node_deaf", 1)

	// Linked again, b has nothing more to tell: alice is free, and bob
	// can join her.
	px.restore()
	for deadline := time.Now().Add(enginetest.Timeout); !b.Up(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("b did not link to Redis again")
		}
	}
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	back.Expect(`^\* bob is connected$`)
}

// redisProxy stands between one node and Redis, and can cut that node
// off alone: cut closes every connection through it and refuses new
// ones until restore. It can also make each of Redis's answers to that
// node late, by lag, as a distant or loaded Redis is, or keep them from
// it while stalled: what Redis hands the node meanwhile is taken from
// Redis, and lost if the node is cut off before the stall ends, as a
// node that stops reading as it loses its link loses it.
type redisProxy struct {
	ln      net.Listener
	target  string
	lag     atomic.Int64 // nanoseconds
	stalled atomic.Bool
	mu      sync.Mutex
	down    bool
	conns   map[net.Conn]bool
}

func startRedisProxy(t testing.TB, r *redisServer) *redisProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisProxy{ln: ln, target: r.Addr(), conns: make(map[net.Conn]bool)}
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
	})
	go p.serve()
	return p
}

func (p *redisProxy) url() string { return "redis://" + p.ln.Addr().String() }

func (p *redisProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = in.Close()
			_ = out.Close()
			continue
		}
		p.conns[in], p.conns[out] = true, true
		p.mu.Unlock()
		go p.answer(in, out)
		go p.pipe(out, in)
	}
}

// answer carries Redis's answers to the node, each read late by lag.
func (p *redisProxy) answer(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			time.Sleep(time.Duration(p.lag.Load()))
			for p.stalled.Load() && !p.isDown() {
				time.Sleep(time.Millisecond)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *redisProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

func (p *redisProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *redisProxy) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

func (p *redisProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestCrossNodeAwayFullToldAsOnOneNode: messages to a partner away on
// another node, past what is kept for it, are refused there; the
// sender is told as on one node: the first refusal with its error,
// counted in duet_errors_total on the sender's node as every error
// told is, and the rest in a count (they came one error a message, and
// none was counted).
func TestCrossNodeAwayFullToldAsOnOneNode(t *testing.T) {
	for _, typed := range []bool{false, true} {
		t.Run(map[bool]string{false: "pasted", true: "typed"}[typed], func(t *testing.T) {
			testCrossNodeAwayFull(t, typed)
		})
	}
}

// testCrossNodeAwayFull sends the lines in one write (pasted), or one
// at a time, 50 ms apart (typed): each is taken on the sender's node
// before the partner's refuses it, and a say taken must not end the run
// of those refused.
func testCrossNodeAwayFull(t *testing.T, typed bool) {
	r := startRedis(t)
	const size = 64 // each kept message counts its text and 64 bytes
	a := startHubNode(t, r, "a", resumeOptions(3*(size+64)))
	m := newEndCounter()
	b := startNodeEngine(t, r, "b", nil, func(o *engine.Options) { o.Metrics = m })
	alice := a.login(t, "alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.box.next(t, proto.EvPaired)
	alice.s.Detach(proto.ReasonDisconnected, 0)
	bob.Expect(`^\* alice lost the connection`)
	const sent = 23
	var lines strings.Builder
	for i := range sent {
		fmt.Fprintf(&lines, "%02d %s\n", i, strings.Repeat("x", size-3))
	}
	if !typed {
		if _, err := bob.Conn.Write([]byte(lines.String())); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, l := range strings.SplitAfter(lines.String(), "\n") {
			if _, err := bob.Conn.Write([]byte(l)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	bob.Expect(`^! peer_away_full: alice is away, and 3 of your messages \(.*\) are waiting for them; this one was not sent$`)
	// The rest are counted, in one summary or a few (one a second).
	for more := 0; more < sent-3-1; {
		l := bob.Line()
		var n int
		if _, err := fmt.Sscanf(l, "* %d more line", &n); err != nil || !strings.HasSuffix(l, " not sent: your partner is away and no more of your messages can be kept for them") {
			t.Fatalf("bob was told %q, with %d of %d counted", l, more, sent-3-1)
		}
		more += n
	}
	if _, errs := m.counts(proto.ErrPeerAwayFull.Code); errs != 1 {
		t.Fatalf("counted %d errors told", errs)
	}
}

// TestSpeakingToANodeThatJustDied: a user whose partner's node has just
// died (its lease not yet run out) and who speaks meanwhile is told the
// link was lost with the count of the messages that reached nobody, and
// the cut is counted. Her node waits no time for the dead node's word
// of what reached it, which never comes.
func TestSpeakingToANodeThatJustDied(t *testing.T) {
	r := startRedis(t)
	window := hub.Options{ResumeWindow: time.Minute}
	a := startHubNodeWith(t, r, "a", window, noWordAwaited)
	b := startHubNode(t, r, "b", window) // its lease outlives it by 10 s
	alice, _ := pairHubUsers(t, a, b)
	b.halt()
	for i := range 3 {
		alice.say(t, fmt.Sprint("to nobody ", i))
	}
	ev := alice.box.next(t, proto.EvPeerLeft)
	if ev.Reason != proto.ReasonLinkLost || ev.Peer != "bob" || ev.Count != 3 {
		t.Fatalf("alice was told %+v", ev)
	}
	waitCut(t, a.Node, "node_deaf", 1) // counted once alice is told

}

// TestMessagesKeptOnADeadNodeCounted: bob's connection drops, and his
// node keeps alice's messages for his resume; then his node dies. alice
// is told bob disconnected, and that her messages since he went away
// never reached him: they died with the node that kept them. Before,
// she was told none were lost (on a single node, such an end counts
// them).
func TestMessagesKeptOnADeadNodeCounted(t *testing.T) {
	const kept = 4
	r := startRedis(t)
	a := startHubNodeWith(t, r, "a", resumeOptions(0), noWordAwaited)
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice, bob := pairHubUsers(t, a, b)
	alice.sayTo(t, bob, 2, "before ")
	bob.s.Detach(proto.ReasonDisconnected, 0)
	alice.box.next(t, proto.EvPeerAway)
	for i := range kept {
		alice.say(t, fmt.Sprint("kept for bob ", i))
	}
	waitAnswered(t, a.Node)
	b.halt()
	if err := redisClient(t, r).Del(context.Background(), "duet:lease:b").Err(); err != nil {
		t.Fatal(err)
	}
	alice.toldLeft(t, proto.ReasonDisconnected, kept)
}

// TestResumeOfADeadNodesSessionToldItEnded: bob's connection drops, and
// then his node dies. His client resumes on another node: it is told
// his session ended with the server it was on, not that the key is
// wrong, expired or used (which sent people looking for a mistake of
// theirs), and the resume counts towards no throttle. A key no session
// had is refused as before.
func TestResumeOfADeadNodesSessionToldItEnded(t *testing.T) {
	r := startRedis(t)
	a := startHubNodeWith(t, r, "a", resumeOptions(0), noWordAwaited)
	b := startHubNode(t, r, "b", resumeOptions(0))
	alice, bob := pairHubUsers(t, a, b)
	bob.s.Detach(proto.ReasonDisconnected, 0)
	alice.box.next(t, proto.EvPeerAway)
	b.halt()
	if err := redisClient(t, r).Del(context.Background(), "duet:lease:b").Err(); err != nil {
		t.Fatal(err)
	}
	alice.toldLeft(t, proto.ReasonDisconnected, 0)
	var err *proto.Error
	for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(50 * time.Millisecond) {
		// Unavailable until a has reaped b's users.
		if _, err = a.hub.Resume([]byte(bob.key), 0, false, newInbox()); err != proto.ErrUnavailable || time.Now().After(deadline) {
			break
		}
	}
	if err != proto.ErrSessionEndedWithNode {
		t.Fatalf("bob's resume: %v, want %v", err, proto.ErrSessionEndedWithNode)
	}
	if st := a.hub.Stats(); st.ResumeEnded != 1 || st.ResumeBadKey != 0 {
		t.Errorf("resumes counted: %d ended with their node, %d with a bad key", st.ResumeEnded, st.ResumeBadKey)
	}
	if _, err := a.hub.Resume([]byte(proto.NewResumeKey().String()), 0, false, newInbox()); err != proto.ErrUnknownResumeKey {
		t.Fatalf("a key no session had: %v", err)
	}
}

// TestDrainCarriesWhatAwayWasTold: what a session away was told of its
// pairing goes with it when its node drains, as through a single node's
// restart. Alice, told that bob lost the connection before her own
// connection dropped, is told on her resume on another node that bob
// went away, news that may have died with her connection, and is back,
// as he came back meanwhile; before, her last word of him was that he
// lost the connection. Dave, to whose token carol, on another
// node, connected while he was away, is told so, and that she left;
// before, he was told only that carol, of whom he had never heard,
// left.
func TestDrainCarriesWhatAwayWasTold(t *testing.T) {
	r := startRedis(t)
	a, b, c := startNode(t, r, "a"), startNode(t, r, "b"), startNode(t, r, "c")

	// Each reset comes once a /who is answered: a reset while the
	// connection waits on the directory (its login, a connect) is taken
	// for a client that hung up right after sending (readRest), and
	// ends the session.
	settled := func(lc *enginetest.LineClient, name string) {
		lc.Send("/who")
		lc.Expect(`^\* you are ` + name + `, `)
		enginetest.Reset(t, lc.Conn)
	}
	dave := a.DialLine(t).Login("dave")
	settled(dave, "dave")
	waitUntil(t, "dave's drop seen", func() bool { return a.Hub.Stats().Away == 1 })
	carol := b.DialLine(t).Login("carol")
	carol.Send("/connect " + dave.Token)
	carol.Expect(`^\* you are connected with dave$`)
	carol.Expect(`^\* dave lost the connection; `)

	// holder on hd and joiner on jd are paired; the joiner goes away,
	// then the holder, told so; the joiner comes back on jd.
	bothAwayOneBack := func(hd *testNode, hname string, jd *testNode, jname string) (holder, joinerBack *enginetest.LineClient) {
		holder, joiner := lineJoinsLine(t, hd.Daemon, hname, jd.Daemon, jname)
		settled(joiner, jname)
		holder.Expect(`^\* ` + jname + ` lost the connection; `)
		settled(holder, hname)
		joinerBack, _, _, _ = enginetest.ResumeLine(t, jd.Daemon, joiner.Key)
		joinerBack.Expect(`^\* ` + hname + ` lost the connection; `)
		return holder, joinerBack
	}
	alice, bobBack := bothAwayOneBack(a, "alice", a, "bob")

	// Across nodes: erin on a, fred on b, fred back on b before a
	// drains. Her node knew he was back as it parked her, which the
	// node she resumes on learns from the park.
	erin, fredBack := bothAwayOneBack(a, "erin", b, "fred")
	// His message comes after the news of his return, on the same
	// link: kept for her on a, it says a heard that he is back.
	fredBack.Send("for erin")
	waitUntil(t, "fred's return heard on a", func() bool { return a.Hub.Stats().HistoryBytes > 0 })

	// And hana, on b, back only once george, on a, is parked.
	george, hana := lineJoinsLine(t, a.Daemon, "george", b.Daemon, "hana")
	settled(hana, "hana")
	george.Expect(`^\* hana lost the connection; `)
	settled(george, "george")
	waitUntil(t, "george's drop seen", func() bool { return a.Hub.Stats().Away == 4 })

	drainNode(t, a, 0)
	bobKey := drainedKey(t, bobBack)
	enginetest.ResumeLine(t, b.Daemon, hana.Key)
	back, _, _, _ := enginetest.ResumeLine(t, c.Daemon, george.Key)
	// As a last heard as it parked him, then her return, which b held
	// for him; or, should b's word come first, her return alone.
	if l := back.Line(); l != "* hana is back" {
		if !strings.HasPrefix(l, "* hana lost the connection; ") {
			t.Errorf("george's resume told %q", l)
		}
		if l = back.Line(); l != "* hana is back" {
			t.Errorf("george's resume told %q, want that hana is back", l)
		}
	}
	checkToldBesideThePark(t, r, c.Node, "dave", dave.Key)
	carol.Send("/quit")
	carol.Expect(`^\* bye$`)
	waitReleased(t, r, b.Node, "dave")

	// Bob first, live on c as alice resumes there.
	if _, peer, _, _ := enginetest.ResumeLine(t, c.Daemon, bobKey); peer != "alice" {
		t.Fatalf("bob resumed with %q", peer)
	}
	for _, who := range []struct {
		name, key string
		want      []string
	}{
		{"alice", alice.Key, []string{`* bob lost the connection; waiting up to 2m for bob to come back`, `* bob is back`}},
		{"erin", erin.Key, []string{`* fred lost the connection; waiting up to 2m for fred to come back`, `* fred is back`}},
		{"dave", dave.Key, []string{`* while you were away, carol connected to you; then carol left; you are free to be joined again`}},
	} {
		back, _, _, _ := enginetest.ResumeLine(t, c.Daemon, who.key)
		back.Send("/who")
		var told []string
		for l := back.Line(); !strings.HasPrefix(l, "* you are "+who.name); l = back.Line() {
			told = append(told, l)
		}
		if !slices.Equal(told, who.want) {
			t.Errorf("%s's resume told %q, want %q", who.name, told, who.want)
		}
	}
}

// checkToldBesideThePark checks that the park of name, whose pairing
// began while it was away, is in the form every node reads (version 1),
// with what it was told sealed beside it, which a node of this version
// (c) reads back; and that a part sealed for another park of its is
// refused.
func checkToldBesideThePark(t *testing.T, r *redisServer, c *Node, name, key string) {
	t.Helper()
	hn := c.keys.nameHash(name)
	park := redisClient(t, r).HGetAll(context.Background(), "duet:park:"+hn).Val()
	gen, err := strconv.ParseUint(park["gen"], 10, 32)
	if err != nil {
		t.Fatalf("park %v: %v", park, err)
	}
	pt, err := c.keys.opener().open([]byte(park["blob"]), parkAAD(hn, uint32(gen)))
	if err != nil || pt[2] != 1 || park["told"] == "" {
		t.Fatalf("parked as version %d (%v), told %q: want version 1 with told beside", pt[2], err, park["told"])
	}
	k, perr := proto.ParseResumeKey([]byte(key))
	if perr != nil {
		t.Fatal(perr)
	}
	sum := hub.ResumeHash(sha256.Sum256(k[:]))
	p, err := c.openParked(hn, park["blob"], park["gen"], beside{told: park["told"]}, &sum)
	if err != nil || !p.Joined || p.PeerWasAway {
		t.Fatalf("read back %+v, %v; want joined", p, err)
	}
	other := c.sealTold(&hub.Parked{Gen: uint32(gen) + 1, Joined: true, Pair: p.Pair}, hn)
	if _, err := c.openParked(hn, park["blob"], park["gen"], beside{told: string(other)}, &sum); err == nil {
		t.Fatal("took what was told sealed for another park")
	}
}
