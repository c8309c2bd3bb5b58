package web_test

// Browser tests of session resume: the page keeps its resume key in
// sessionStorage and comes back to the same conversation after a reload
// of the tab or a drop of its network, and logs in afresh, saying so,
// when the server's resume window has run out (docs/RESUME.md).

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"duet/engine"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
)

// startResumeTest starts a daemon with session resume on, its window
// window (the default, two minutes, when 0), and Chromium.
func startResumeTest(t *testing.T, window time.Duration) *browserTest {
	t.Helper()
	chromium := setUpBrowserTest(t)
	d := enginetest.Start(t, func(o *engine.Options) {
		if window > 0 {
			o.Resume.Window = window
			o.Resume.ReplayRecent = window
		}
	})
	if !d.Resume {
		t.Fatal("the daemon has resume off")
	}
	return launchBrowser(t, chromium, d)
}

// cutProxy is a TCP proxy on loopback between a browser and the daemon,
// whose network can be cut: every connection through it reset at once,
// both ways, as a network that fails leaves them, and new ones refused
// until it is restored. Or frozen: what the connections through it carry
// is thrown away, both ways, and neither end is told, as a machine that
// slept finds its connections; new ones work. Or, as a load balancer in
// front of a cluster, sent elsewhere: new connections go to another node
// (retarget).
type cutProxy struct {
	ln net.Listener

	mu     sync.Mutex
	target string
	down   bool
	conns  map[net.Conn]struct{}
	frozen map[net.Conn]bool
	wg     sync.WaitGroup
	// carried counts the connections carried through, not refused.
	carried atomic.Int64
	// up counts the bytes carried from the pages to the daemon.
	up atomic.Int64
	// freezeNext is for the next WebSocket connection carried: it is
	// frozen once the page has sent its first frame (freezeNextFrame).
	freezeNext bool
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{}), frozen: make(map[net.Conn]bool)}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// url is the page's address through the proxy.
func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() + "/" }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			reset(c)
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		p.carried.Add(1)
		go p.relay(c)
	}
}

// relay carries one connection, and passes on an end of input from
// either side as one, so that a close frame and the FIN after it reach
// the daemon as the browser sent them.
func (p *cutProxy) relay(c net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	s, err := net.DialTimeout("tcp", target, enginetest.Timeout)
	if err != nil {
		reset(c)
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		reset(c)
		reset(s)
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	// For freezeNextFrame: whether this is the connection to freeze once
	// the page has sent a frame, and the page's bytes so far (its
	// upgrade request's head, which its frames follow).
	freeze, first := false, true
	var sent []byte
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, carried *atomic.Int64) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !p.isFrozen(src) {
				if src == c && first {
					first = false
					if bytes.HasPrefix(buf[:n], []byte("GET /ws")) {
						// The page's socket, not a page, an icon or a
						// connection the browser opened ahead.
						p.mu.Lock()
						freeze, p.freezeNext = p.freezeNext, false
						p.mu.Unlock()
					}
				}
				if src == c && freeze {
					sent = append(sent, buf[:n]...)
					if end := bytes.Index(sent, []byte("\r\n\r\n")); end >= 0 && len(sent) > end+4 {
						// A frame comes after the head: what the daemon
						// answers it never reaches the page. Frozen
						// before the frame is passed on, so that no
						// answer overtakes the freeze.
						freeze = false
						p.mu.Lock()
						p.frozen[c], p.frozen[s] = true, true
						p.mu.Unlock()
						if _, err := dst.Write(buf[:n]); err != nil {
							break
						}
						carried.Add(int64(n))
						continue
					}
				}
				if _, err := dst.Write(buf[:n]); err != nil {
					break
				}
				carried.Add(int64(n))
			}
			if err != nil {
				break
			}
		}
		_ = dst.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}
	var down atomic.Int64
	go pipe(s, c, &p.up)
	go pipe(c, s, &down)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	delete(p.frozen, c)
	delete(p.frozen, s)
	p.mu.Unlock()
	c.Close()
	s.Close()
}

// cut resets every connection through the proxy, both ways, and refuses
// new ones until restore.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		reset(c)
	}
}

// waitAcknowledged waits until a page behind the proxy has sent the
// daemon something since what it was last shown, as it does once it has
// been quiet for a second: its acknowledgement of what it showed (the
// page's ack), and its TCP's, which the segment carries. A network cut
// sooner leaves what the page showed unacknowledged, which the daemon
// counts as not delivered, not knowing better (docs/RESUME.md).
func (p *cutProxy) waitAcknowledged(t *testing.T) {
	t.Helper()
	from := p.up.Load()
	deadline := time.Now().Add(enginetest.Timeout)
	for p.up.Load() == from {
		if time.Now().After(deadline) {
			t.Fatalf("the page sent nothing through the proxy for %v", enginetest.Timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freezeNextFrame freezes the next WebSocket connection the proxy
// carries once it has carried the page's first frame to the daemon:
// what the daemon answers it never reaches the page.
func (p *cutProxy) freezeNextFrame() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.freezeNext = true
}

// freeze throws away, from now on, whatever the connections open
// through the proxy carry.
func (p *cutProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.frozen[c] = true
	}
}

func (p *cutProxy) isFrozen(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen[c]
}

// retarget sends the connections that open from now on to target; those
// open go on as they are.
func (p *cutProxy) retarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// reset closes c with a TCP reset rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// pair logs alice and bob in on their pages, at their addresses, and
// pairs them with bob's connect.
func pair(alice, bob *person, aliceURL, bobURL string) {
	alice.t.Helper()
	alice.open(aliceURL)
	bob.open(bobURL)
	token := alice.login()
	bob.login()
	bob.connectTo(token)
	bob.waitPaired("alice")
	alice.waitPaired("bob")
}

// pairBehindProxy pairs alice's page, behind a proxy whose network a
// test can cut, with bob's, which talks to the daemon directly.
func pairBehindProxy(t *testing.T, bt *browserTest) (proxy *cutProxy, alice, bob *person) {
	t.Helper()
	proxy = startCutProxy(t, bt.daemon.WS)
	alice, bob = bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, proxy.url(), bt.pageURL())
	return proxy, alice, bob
}

// sealedPartnerAway pairs alice's page, behind a proxy, with bob's; once
// their talk is encrypted and bob has said hello, alice's network is cut
// and bob is told she is away.
func sealedPartnerAway(t *testing.T, bt *browserTest) (alice, bob *person) {
	t.Helper()
	proxy, alice, bob := pairBehindProxy(t, bt)
	bob.waitSecure("unverified")
	talk(bob, alice, "hi alice")
	proxy.cut()
	bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	return alice, bob
}

// talk sends each text from one to the other and waits until it arrives.
func talk(from, to *person, texts ...string) {
	from.t.Helper()
	for _, text := range texts {
		from.say(text)
		to.expectMessage("theirs", from.name, text)
	}
}

// msgLine is a chat message as #log shows it: "You: hi" or "bob: hi".
func msgLine(from, text string) string { return from + ": " + text }

// expectConversation waits until #log's messages are exactly want, in
// order: no message missing, none twice.
func (p *person) expectConversation(want []string) {
	p.t.Helper()
	p.expectShown("conversation", want, func(e logEntry) string {
		if e.has("msg") {
			return msgLine(e.From, e.Text)
		}
		return ""
	})
}

// expectStory waits until #log's messages and the notices of where a
// pairing began or ended ("paired: TEXT", "left: TEXT", "peer_left:
// TEXT") are exactly want, in order.
func (p *person) expectStory(want []string) {
	p.t.Helper()
	p.expectShown("story", want, func(e logEntry) string {
		switch {
		case e.has("msg"):
			return msgLine(e.From, e.Text)
		case e.Kind == "paired" || e.Kind == "left" || e.Kind == "peer_left":
			return e.Kind + ": " + e.Text
		}
		return ""
	})
}

// expectShown waits until the lines line makes of #log's entries (none
// of an entry it makes "" of) are exactly want, in order.
func (p *person) expectShown(what string, want []string, line func(logEntry) string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var got []string
		for _, e := range p.log() {
			if l := line(e); l != "" {
				got = append(got, l)
			}
		}
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: the %s shown is\n  %s\nwant\n  %s%s", p.name, what,
				strings.Join(got, "\n  "), strings.Join(want, "\n  "), p.logDump())
		}
		time.Sleep(pollEvery)
	}
}

// storedKey is the resume key the page keeps in sessionStorage, or "".
func (p *person) storedKey() string {
	p.t.Helper()
	return eval[string](p, `(JSON.parse(sessionStorage.getItem('duet.session') || '{}').key) || ''`)
}

// expectKeyOnlyInSessionStorage checks that the page keeps a resume key
// in sessionStorage, and nowhere else a page keeps things: not in
// localStorage, shared by every tab and kept past the browser, and not
// in the address.
func (p *person) expectKeyOnlyInSessionStorage() string {
	p.t.Helper()
	key := p.storedKey()
	if len(key) != 26 {
		p.t.Fatalf("%s: sessionStorage holds resume key %q", p.name, key)
	}
	if n := eval[int](p, `localStorage.length`); n != 0 {
		p.t.Errorf("%s: localStorage holds %d items", p.name, n)
	}
	if href := eval[string](p, `location.href`); strings.Contains(href, key) {
		p.t.Errorf("%s: the resume key is in the address %s", p.name, href)
	}
	return key
}

// expectNoPeerLeft checks that p was never told its peer left, and that
// a peer_away, if it saw one, was followed by a peer_back.
func (p *person) expectNoPeerLeft() {
	p.t.Helper()
	away := false
	for _, e := range p.log() {
		switch e.Kind {
		case "peer_left":
			p.t.Errorf("%s was told its peer left: %v%s", p.name, e, p.logDump())
		case "peer_away":
			away = true
		case "peer_back":
			away = false
		}
	}
	if away {
		p.t.Errorf("%s was told its peer is away, and not that it is back%s", p.name, p.logDump())
	}
}

// expectAllAcked waits until the server keeps no message for a resume:
// every page acknowledged what it showed, after a second of quiet.
func (bt *browserTest) expectAllAcked() {
	bt.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		n := bt.daemon.Hub.Stats().HistoryBytes
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			bt.t.Fatalf("the server still keeps %d bytes of messages: the pages did not acknowledge them", n)
		}
		time.Sleep(pollEvery)
	}
}

// onlyFailedSockets fails the test on anything p's page reported but the
// browser's own words for a WebSocket it could not open, as while the
// network was cut. A page whose network stays cut goes on trying until
// the test ends, so the same holds for what it reports from now on: its
// tab is closed first when the test ends, and what it reported until
// then is looked at the same way.
func (p *person) onlyFailedSockets() {
	p.t.Helper()
	check := func() {
		for _, problem := range p.takeProblems() {
			if !strings.Contains(problem, "WebSocket connection to") {
				p.t.Errorf("%s: the page reported: %s", p.name, problem)
			}
		}
	}
	check()
	p.t.Cleanup(func() {
		p.close()
		check()
	})
}

// TestBrowserResumeReload: a page reloaded mid-conversation, while its
// peer goes on talking, comes back to the same pairing and shows every
// message once, in order: those it showed before the reload, kept in
// sessionStorage, and those sent meanwhile, replayed by the server,
// sealed as they went, after the notice of the pairing. The peer is told
// at most that it was away and is back. After leaving and pairing again,
// a reload still shows where one conversation ended and the next began.
func TestBrowserResumeReload(t *testing.T) {
	bt := startResumeTest(t, 0)
	start := time.Now()
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, bt.pageURL(), bt.pageURL())
	talk(alice, bob, "hi bob")
	talk(bob, alice, "hi alice", "how are you?")
	talk(alice, bob, "fine, and you?")
	oldKey := alice.expectKeyOnlyInSessionStorage()

	// The reload is started, not waited for: bob talks while it is under
	// way.
	alice.do("reload", chromedp.Evaluate[chromedp.Void](`setTimeout(() => location.reload(), 0)`))
	during := []string{"one while you reload", "two while you reload", "three while you reload"}
	for _, text := range during {
		bob.say(text)
	}
	alice.waitJS("back", `document.getElementById('state').dataset.state === 'online'
		&& /^[0-9a-f]{32}$/.test(document.getElementById('token').textContent)`)
	e := alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Back in your conversation with bob." {
		t.Errorf("after the reload alice is told %v", e)
	}
	if peer := eval[string](alice, `document.getElementById('peer').textContent`); peer != "Talking with bob" {
		t.Errorf("after the reload #peer says %q", peer)
	}
	// The focus is where she goes on: a keyboard user types at once.
	if focus := eval[string](alice, `document.activeElement ? document.activeElement.id : ''`); focus != "message" {
		t.Errorf("after the reload the focus is on %q, want the message box", focus)
	}
	after := "four, after the reload"
	talk(bob, alice, after)
	want := []string{
		msgLine("You", "hi bob"), msgLine("bob", "hi alice"), msgLine("bob", "how are you?"),
		msgLine("You", "fine, and you?"),
	}
	for _, text := range append(during, after) {
		want = append(want, msgLine("bob", text))
	}
	alice.expectConversation(want)
	// What the page kept, it shows as it was: the notice of the pairing
	// before the messages, and the messages sealed, as they went.
	pairedNotice := "bob connected to you. Say hello!"
	alice.expectStory(append([]string{"paired: " + pairedNotice}, want...))
	alice.expectOnlySealed()
	// The pair works both ways, and alice's page has a fresh key: the one
	// it resumed with is retired.
	talk(alice, bob, "back again")
	if key := alice.expectKeyOnlyInSessionStorage(); key == oldKey {
		t.Errorf("the page still keeps the key it resumed with")
	}
	for _, e := range alice.log() {
		if e.has("error") || e.Kind == "reconnecting" || e.Kind == "expired" {
			t.Errorf("alice, reloaded, is told %v", e)
		}
	}
	bob.expectNoPeerLeft()
	bt.expectAllAcked()
	alice.screenshot("reloaded")

	// alice leaves and bob connects again: after a reload her page still
	// shows where the first conversation ended and the second began.
	alice.do("leave", chromedp.Click(chromedp.ID("leave")))
	alice.expectEntry("a left notice", func(e logEntry) bool { return e.Kind == "left" })
	bob.connectTo(eval[string](alice, `document.getElementById('token').textContent`))
	alice.waitJS("paired again", `document.getElementById('peer').textContent === 'Talking with bob'`)
	talk(bob, alice, "hello again")
	alice.reloadAndResume()
	want = append(want, msgLine("You", "back again"))
	alice.expectStory(append(append([]string{"paired: " + pairedNotice}, want...),
		"left: You left the conversation with bob.",
		"paired: "+pairedNotice,
		msgLine("bob", "hello again")))
	alice.expectOnlySealed()
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserResumeNetworkDrop: the network under a page fails (its
// connection reset both ways, new ones refused) while its peer talks.
// The page shows that it is reconnecting, comes back by itself when the
// network does, and shows every message once, in order.
func TestBrowserResumeNetworkDrop(t *testing.T) {
	bt := startResumeTest(t, 0)
	start := time.Now()
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "hi alice")
	talk(alice, bob, "hi bob")
	talk(bob, alice, "the network here is flaky")

	proxy.cut()
	alice.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'
		&& document.getElementById('peer').textContent === 'Talking with bob'`)
	e := alice.expectEntry("a reconnecting notice", func(e logEntry) bool { return e.Kind == "reconnecting" })
	if !strings.Contains(e.Text, "reconnecting") || !strings.Contains(e.Text, "kept for up to 2m") {
		t.Errorf("alice is told %v", e)
	}
	e = bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	if e.Text != "alice lost the connection; waiting up to 2m for them to come back." {
		t.Errorf("bob is told %v", e)
	}
	during := []string{"are you there?", "I will wait"}
	for _, text := range during {
		bob.say(text)
	}
	// The page retries by itself, with backoff, while the network is
	// down, and is back within the next attempt once it is up.
	alice.do("stay down a moment", chromedp.Sleep(1500*time.Millisecond))
	proxy.restore()
	e = alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Reconnected; your conversation with bob goes on." {
		t.Errorf("alice is told %v", e)
	}
	alice.waitJS("online", `document.getElementById('state').dataset.state === 'online'`)
	bob.expectEntry("a peer_back notice", func(e logEntry) bool { return e.Kind == "peer_back" && e.Text == "alice is back." })
	talk(alice, bob, "sorry, the Wi-Fi")
	want := []string{msgLine("bob", "hi alice"), msgLine("You", "hi bob"), msgLine("bob", "the network here is flaky")}
	for _, text := range during {
		want = append(want, msgLine("bob", text))
	}
	want = append(want, msgLine("You", "sorry, the Wi-Fi"))
	alice.expectConversation(want)
	bob.expectConversation([]string{msgLine("You", "hi alice"), msgLine("alice", "hi bob"),
		msgLine("You", "the network here is flaky"), msgLine("You", during[0]), msgLine("You", during[1]),
		msgLine("alice", "sorry, the Wi-Fi")})
	bob.expectNoPeerLeft()
	if st := bt.daemon.Hub.Stats(); st.ResumedAway != 1 || st.ResumedZombie != 0 {
		t.Errorf("resumes of a session away: %d, of a zombie: %d; want 1 and 0", st.ResumedAway, st.ResumedZombie)
	}
	bt.expectAllAcked()
	alice.screenshot("back")
	alice.onlyFailedSockets()
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserResumeRetriesWithinWindow: the page's network is down for
// most of a short resume window. Its backoff doubles each step, but no
// step carries the next try past the window: back with two seconds of
// it left, the page resumes. Before, it tried about 1, 2-3, 4-7 and
// 8-15 s after the drop, and with a 9 s window and the network back at
// 7 s found its session ended nearly every time.
func TestBrowserResumeRetriesWithinWindow(t *testing.T) {
	const window = 9 * time.Second
	bt := startResumeTest(t, window)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "hi alice")

	cut := time.Now()
	proxy.cut()
	bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	alice.do("stay down", chromedp.Sleep(time.Until(cut.Add(7*time.Second))))
	proxy.restore()
	e := alice.expectEntry("a resumed notice", func(e logEntry) bool {
		return e.Kind == "resumed" || strings.Contains(e.Text, "ended while you were away")
	})
	if e.Kind != "resumed" || e.Text != "Reconnected; your conversation with bob goes on." {
		t.Fatalf("alice, her network back %v after the drop, with a %v window, is told %v%s",
			7*time.Second, window, e, alice.logDump())
	}
	bob.expectEntry("a peer_back notice", func(e logEntry) bool { return e.Kind == "peer_back" })
	talk(alice, bob, "back in time")
	bob.expectNoPeerLeft()
	alice.onlyFailedSockets()
}

// TestBrowserOfflineSaysSo: the browser says the device went offline
// while the page's socket still looks open, carrying nothing (as
// Chromium's does). The page asks the server at once, and, with no
// answer, says it is reconnecting within seconds; before, it said
// Online for about 43 s, until its own check of a quiet socket.
func TestBrowserOfflineSaysSo(t *testing.T) {
	const probeTimeout = 3 * time.Second // app.js's PROBE_TIMEOUT_MS
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "hi alice")
	proxy.freeze()
	start := time.Now()
	alice.do("go offline", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('offline'))`))
	// Said in the log, and by the state, which the next try, through
	// the proxy, may end within a second.
	alice.expectEntry("a reconnecting notice", func(e logEntry) bool { return e.Kind == "reconnecting" })
	if took := time.Since(start); took > 2*probeTimeout {
		t.Errorf("the page said Online for %v after the browser went offline", took)
	}
	proxy.restore()
	alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	talk(alice, bob, "back")
}

// TestBrowserResumeToldWhoLeftWhileAway: the peer leaves while the
// page's network is down. Back, the page says once, in the peer_left
// notice the server tells after the resume, who left and why, as it
// would have been told live, and not a generic "ended while you were
// away" beside it.
func TestBrowserResumeToldWhoLeftWhileAway(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(alice, bob, "back in a minute")
	since := len(alice.log())

	proxy.cut()
	bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	bob.do("leave", chromedp.Click(chromedp.ID("leave")))
	bob.expectEntry("a left notice", func(e logEntry) bool { return e.Kind == "left" })
	proxy.restore()

	e := alice.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })
	if e.Reason != "left" || e.Text != "While you were away, bob left the conversation." {
		t.Errorf("alice is told %v%s", e, alice.logDump())
	}
	alice.expectConversation([]string{msgLine("You", "back in a minute")})
	alice.expectUnpaired("bob left", since)
	// Past the moment the page would have said it by itself.
	alice.do("wait", chromedp.Sleep(3500*time.Millisecond))
	ends := 0
	for _, e := range alice.log() {
		if e.Kind == "peer_left" || strings.Contains(e.Text, "ended while you were away") {
			ends++
		}
		if e.Kind == "resumed" && e.Text != "Reconnected." {
			t.Errorf("alice is told %v", e)
		}
	}
	if ends != 1 {
		t.Errorf("alice is told %d times that the conversation ended%s", ends, alice.logDump())
	}
	// Its network was cut: the browser's words for a socket it could
	// not open then are expected.
	alice.onlyFailedSockets()
}

// TestBrowserResumeToldPairingEndedBeforeAnother: alice's page talks
// with bob on a terminal, who drops; her messages wait for him. Her
// network fails too, bob's session ends, and carol connects to her
// token before she is back. Back, the page says carol connected, and
// how the conversation with bob ended, with her messages that never
// reached him; before, it said nothing of bob, and that carol "is
// back", who never went away.
func TestBrowserResumeToldPairingEndedBeforeAnother(t *testing.T) {
	chromium := setUpBrowserTest(t)
	// One session away at most: alice's going away ends bob's.
	d := enginetest.Start(t, func(o *engine.Options) { o.Resume.MaxAway = 1 })
	bt := launchBrowser(t, chromium, d)
	proxy := startCutProxy(t, d.WS)
	alice := bt.newPerson("alice")
	alice.open(proxy.url())
	token := alice.login()
	bob := d.DialLine(t).Login("bob")
	alice.connectTo(bob.Token)
	bob.Expect(`^\* alice is connected`)
	enginetest.Reset(t, bob.Conn)
	alice.expectEntry("bob away", func(e logEntry) bool { return e.Kind == "peer_away" })
	for _, text := range []string{"one", "two", "three"} {
		alice.say(text)
	}
	// Kept for bob, before the network fails.
	for d.Hub.Stats().Messages < 3 {
		time.Sleep(10 * time.Millisecond)
	}
	proxy.cut()
	carol := d.DialLine(t).Login("carol")
	deadline := time.Now().Add(waitTimeout)
	for {
		carol.Send("/connect " + token)
		if l := carol.Expect(`^(\* you are connected with alice|! room_full: )`); strings.HasPrefix(l, "* you are") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bob's session did not end")
		}
		time.Sleep(100 * time.Millisecond)
	}
	carol.Expect(`^\* alice lost the connection`)
	proxy.restore()
	alice.expectEntry("back, with carol", func(e logEntry) bool {
		return e.Kind == "paired" && e.Text == "Reconnected. carol connected to you while you were away."
	})
	e := alice.expectEntry("bob's end", func(e logEntry) bool { return e.Kind == "peer_left" })
	if want := "While you were away, bob did not come back in time, so the conversation ended. 3 messages you sent did not reach them."; e.Text != want {
		t.Errorf("alice is told %q, want %q", e.Text, want)
	}
	carol.Expect(`^\* alice is back$`)
	carol.Send("hello alice")
	alice.expectMessage("theirs", "carol", "hello alice")
	for _, e := range alice.log() {
		if e.Kind == "peer_back" {
			t.Errorf("alice is told %q%s", e.Text, alice.logDump())
		}
	}
	// Its network was cut: the browser's words for a socket it could
	// not open then are expected.
	alice.onlyFailedSockets()
}

// TestBrowserResumeLeaveIsNotADrop: leaving a conversation and logging
// out are told to the peer at once as leaving, never as a connection
// lost, and logging out forgets the resume key. Logging out while the
// network is down ends the session once it is back, rather than leave
// the peer waiting out the window.
func TestBrowserResumeLeaveIsNotADrop(t *testing.T) {
	bt := startResumeTest(t, 0)
	start := time.Now()
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(alice, bob, "bye for now")

	alice.do("leave", chromedp.Click(chromedp.ID("leave")))
	e := bob.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })
	if e.Reason != "left" || e.Text != "alice left the conversation." {
		t.Errorf("after alice left, bob is told %v", e)
	}
	// Leaving ends the pairing, not the session: the key stays.
	alice.expectKeyOnlyInSessionStorage()

	aliceToken := eval[string](alice, `document.getElementById('token').textContent`)
	bob.connectTo(aliceToken)
	bob.waitJS("paired again", `document.getElementById('peer').textContent === 'Talking with alice'`)
	alice.waitJS("paired again", `document.getElementById('peer').textContent === 'Talking with bob'`)
	before := len(bob.log())
	sent := time.Now()
	alice.do("log out", chromedp.Click(chromedp.ID("logout")))
	e = bob.expectEntry("a second peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" && len(bob.log()) > before })
	if took := time.Since(sent); took > 5*time.Second {
		t.Errorf("bob was told %s after alice logged out", took)
	}
	for _, e := range bob.log()[before:] {
		if e.Kind == "peer_away" {
			t.Errorf("alice's logout was told as a drop: %v", e)
		}
	}
	if e.Reason != "left" {
		t.Errorf("after alice logged out, bob is told %v", e)
	}
	alice.waitJS("the login form", `!document.getElementById('login-view').hidden`)
	if key := alice.storedKey(); key != "" {
		t.Errorf("after logging out sessionStorage still holds resume key %q", key)
	}
	// The session ended: its name is free at once, and a reload does not
	// bring anything back.
	alice.do("reload", chromedp.Reload())
	alice.waitJS("online", `document.getElementById('state').dataset.state === 'online'`)
	if n := len(alice.log()); n != 0 {
		t.Errorf("after logging out and reloading the page shows %d entries%s", n, alice.logDump())
	}
	aliceToken = alice.login()

	// Logged out while the network is down: the session, away on the
	// server, is ended as soon as the page reaches it again.
	bob.connectTo(aliceToken)
	alice.waitJS("paired again", `document.getElementById('peer').textContent === 'Talking with bob'`)
	proxy.cut()
	bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	alice.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'`)
	before = len(bob.log())
	alice.do("log out", chromedp.Click(chromedp.ID("logout")))
	alice.waitJS("the login form", `!document.getElementById('login-view').hidden`)
	if key := alice.storedKey(); key != "" {
		t.Errorf("after logging out offline sessionStorage still holds resume key %q", key)
	}
	// The pairing's keys go at once too, not only once the server is
	// reached again, which may be never: the next person at this tab
	// finds nothing of them, and #secure no longer speaks of the pairing.
	if kept := eval[bool](alice, `sessionStorage.getItem('duet.e2e') !== null`); kept {
		t.Errorf("after logging out offline sessionStorage still holds the pairing's keys")
	}
	if state, _ := alice.secureState(); state != "none" {
		t.Errorf("after logging out offline the page says the encryption is %q", state)
	}
	proxy.restore()
	alice.do("back online", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
	e = bob.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" && len(bob.log()) > before })
	if e.Reason != "left" {
		t.Errorf("after alice logged out offline, bob is told %v", e)
	}
	alice.waitJS("online", `document.getElementById('state').dataset.state === 'online'
		&& !document.getElementById('login').disabled`)
	var loggedOut int
	for _, e := range alice.log() {
		if e.Text == "Logged out." {
			loggedOut++
		}
		if e.Kind == "resumed" || e.has("error") {
			t.Errorf("alice, logged out, is told %v", e)
		}
	}
	if loggedOut != 1 {
		t.Errorf("alice is told %d times that she logged out%s", loggedOut, alice.logDump())
	}
	alice.login()
	alice.onlyFailedSockets()
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserResumeWindowExpires: a page away for longer than the
// server's resume window is told that its session ended, and logs in
// afresh by itself, forgetting the ended pairing's encryption. Its peer
// was told it timed out and is free.
func TestBrowserResumeWindowExpires(t *testing.T) {
	bt := startResumeTest(t, 2*time.Second)
	start := time.Now()
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "hi alice")
	oldToken := eval[string](alice, `document.getElementById('token').textContent`)
	proxy.waitAcknowledged(t)

	proxy.cut()
	alice.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'`)
	bob.expectEntry("a peer_away notice", func(e logEntry) bool {
		return e.Kind == "peer_away" && strings.Contains(e.Text, "waiting up to 2s")
	})
	e := bob.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })
	if want := "alice did not come back in time, so the conversation ended."; e.Reason != "timeout" || e.Text != want {
		t.Errorf("bob is told %+v, want reason timeout and %q", e, want)
	}
	// Back online: the page tries at once, without sitting out its
	// backoff.
	proxy.restore()
	alice.do("back online", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
	e = alice.expectEntry("an expired notice", func(e logEntry) bool { return e.Kind == "expired" })
	if want := "Your session ended while you were away (the server keeps one for 2s). Your conversation with bob is over. Logging in again as alice…"; e.Text != want {
		t.Errorf("alice is told %q, want %q", e.Text, want)
	}
	alice.expectEntry("a logged-in-again notice", func(e logEntry) bool {
		return strings.HasPrefix(e.Text, "Logged in again as alice.")
	})
	alice.waitJS("a new token, no peer", fmt.Sprintf(`(() => {
		const t = document.getElementById('token').textContent;
		return /^[0-9a-f]{32}$/.test(t) && t !== %q
			&& document.getElementById('peer').textContent === 'Not connected to anyone';
	})()`, oldToken))
	alice.expectKeyOnlyInSessionStorage()
	// The pairing is over, and its encryption with it: the page says
	// nothing more about it, and keeps none of its keys.
	if state, _ := alice.secureState(); state != "none" {
		t.Errorf("alice's page, paired with no one, says the encryption is %q", state)
	}
	if kept := eval[bool](alice, `sessionStorage.getItem('duet.e2e') !== null`); kept {
		t.Errorf("alice's page keeps the ended pairing's keys in sessionStorage")
	}
	// Both are free: bob connects to alice's new token.
	bob.connectTo(eval[string](alice, `document.getElementById('token').textContent`))
	// Both pages are told, in either order; bob speaks once his is.
	alice.waitJS("paired anew", `document.getElementById('peer').textContent === 'Talking with bob'`)
	bob.waitJS("paired anew", `document.getElementById('peer').textContent === 'Talking with alice'`)
	talk(bob, alice, "there you are")
	alice.screenshot("expired")
	alice.onlyFailedSockets()
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserResumePageLeft: a page left for another in the same tab is
// kept frozen by the browser for Back (its back-forward cache), and its
// socket would be kept with it, answering pings, its partner told
// nothing for as long as the browser keeps it (ten minutes). The page
// closes its socket as it is hidden: its partner is told at once that
// it is away, and Back shows the page again, which resumes and shows
// what was said meanwhile.
func TestBrowserResumePageLeft(t *testing.T) {
	bt := startResumeTest(t, 0)
	start := time.Now()
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, bt.pageURL(), bt.pageURL())
	talk(alice, bob, "back in a minute")
	other := anotherSite(t)

	// A mark in the page's window: only a page shown again from the
	// cache, not loaded anew, still has it.
	alice.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.leftOnce = true`))
	left := time.Now()
	alice.do("go to another page", chromedp.Navigate(other))
	e := bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	if e.Text != "alice lost the connection; waiting up to 2m for them to come back." {
		t.Errorf("bob is told %v", e)
	}
	t.Logf("bob told alice is away %v after she left", time.Since(left).Round(time.Millisecond))
	during := []string{"still there?", "I will wait"}
	for _, text := range during {
		bob.say(text)
	}

	// Started, not waited for: a page shown again from the cache is not
	// loaded, and fires no load event for a navigation to wait on.
	alice.do("go back", chromedp.Evaluate[chromedp.Void](`setTimeout(() => history.back(), 0)`))
	// Until Back is done the other page, which has no #state, is shown.
	alice.waitJS("back online", `document.getElementById('state')?.dataset.state === 'online'
		&& document.getElementById('peer').textContent === 'Talking with bob'`)
	if !eval[bool](alice, `window.leftOnce === true`) {
		t.Fatal("the page was loaded anew, not shown again from the back-forward cache")
	}
	e = alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Reconnected; your conversation with bob goes on." {
		t.Errorf("alice is told %v", e)
	}
	// The page closed its socket itself: it lost nothing, and says so
	// (before, it said "Lost the connection to the server").
	for _, e := range alice.log() {
		if e.Kind == "reconnecting" {
			t.Errorf("alice is told %v", e)
		}
	}
	bob.expectEntry("a peer_back notice", func(e logEntry) bool { return e.Kind == "peer_back" && e.Text == "alice is back." })
	// chromedp's queries of the DOM do not find the nodes of a page
	// shown again from the cache: the page's own script sends.
	alice.do("say here again", chromedp.Evaluate[chromedp.Void](`document.getElementById('message').value = 'here again';
		document.getElementById('compose').requestSubmit()`))
	bob.expectMessage("theirs", "alice", "here again")
	want := []string{msgLine("You", "back in a minute")}
	for _, text := range during {
		want = append(want, msgLine("bob", text))
	}
	alice.expectConversation(append(want, msgLine("You", "here again")))
	bob.expectNoPeerLeft()
	if st := bt.daemon.Hub.Stats(); st.ResumedAway != 1 || st.ResumedZombie != 0 {
		t.Errorf("resumes of a session away: %d, of a zombie: %d; want 1 and 0", st.ResumedAway, st.ResumedZombie)
	}
	bt.expectAllAcked()
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserResumeAfterSleep: after a sleep, the page's socket may look
// open when nothing goes through it any more. Woken (here by an online
// event), the page asks the server who it is; with no answer it opens
// another socket and resumes there, taking the session from the dead
// one, and shows what it missed, once.
func TestBrowserResumeAfterSleep(t *testing.T) {
	bt := startResumeTest(t, 0)
	start := time.Now()
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "good night")

	proxy.freeze()
	bob.say("sent while you slept")
	woke := time.Now()
	alice.do("wake up", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
	e := alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Reconnected; your conversation with bob goes on." {
		t.Errorf("alice is told %v", e)
	}
	t.Logf("resumed %v after the wake", time.Since(woke).Round(time.Millisecond))
	talk(alice, bob, "good morning")
	alice.expectConversation([]string{msgLine("bob", "good night"), msgLine("bob", "sent while you slept"),
		msgLine("You", "good morning")})
	// The server took the session from a connection it had not found
	// dead: for bob, nothing happened.
	bob.expectNoPeerLeft()
	for _, e := range bob.log() {
		if e.Kind == "peer_away" {
			t.Errorf("bob is told %v", e)
		}
	}
	if st := bt.daemon.Hub.Stats(); st.ResumedZombie != 1 {
		t.Errorf("resumes of a zombie: %d, want 1", st.ResumedZombie)
	}
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserResumeAfterSilentNetwork: the page's network goes silent,
// with no reset, no close and no wake (a Wi-Fi handover, a NAT that
// forgot the connection): nothing tells the page, whose socket looks
// open. Before, it showed itself online for as long, and what alice
// sent went nowhere, shown as sent. Having heard nothing from the server
// for a while, the page asks it who it is; with no answer it opens
// another socket and resumes there, taking the session from the dead
// one: what bob sent meanwhile is shown once, and what alice sent into
// the silence is marked not sent.
func TestBrowserResumeAfterSilentNetwork(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "before the silence")

	proxy.freeze()
	bob.say("sent into the silence")
	alice.say("lost in the silence")
	// The page's quiet probe (QUIET_PROBE_MS, 30 s of nothing heard),
	// its wait for an answer (20 s) and the ticks between.
	e := alice.expectEntryWithin(80*time.Second, "a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if !strings.HasPrefix(e.Text, "Reconnected; your conversation with bob goes on. 1 message you sent as the connection dropped did not reach the server") {
		t.Errorf("alice is told %v", e)
	}
	alice.waitJS("online", `document.getElementById('state').dataset.state === 'online'`)
	talk(alice, bob, "after the silence")
	alice.expectConversation([]string{msgLine("bob", "before the silence"), msgLine("You", "lost in the silence"),
		msgLine("bob", "sent into the silence"), msgLine("You", "after the silence")})
	for _, m := range alice.shownMessages() {
		if failed := slices.Contains(strings.Fields(m.Class), "failed"); failed != (m.Line == msgLine("You", "lost in the silence")) {
			t.Errorf("alice is shown %+v", m)
		}
	}
	bob.expectConversation([]string{msgLine("You", "before the silence"), msgLine("You", "sent into the silence"),
		msgLine("alice", "after the silence")})
}

// TestBrowserResumeAnswerLost: the page reconnects and resumes, and the
// answer never reaches it: its new socket's network goes silent right
// after the resume is sent. Before, the page showed itself online and
// refused to send, with no end; the server had resumed the session, and
// told bob alice was back. The page waits for the answer as long as for
// a probe's, then opens another socket and resumes again with the key it
// has, which the server still takes (the key a resume used works until
// the client says something after its answer).
func TestBrowserResumeAnswerLost(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "before the cut")

	proxy.freezeNextFrame() // the next socket's first frame: its resume
	proxy.cut()
	proxy.restore()
	bob.expectEntry("a peer_back notice", func(e logEntry) bool { return e.Kind == "peer_back" })
	bob.say("while the answer is lost")
	alice.waitJS("not shown online", `document.getElementById('state').dataset.state !== 'online'`)
	e := alice.expectEntryWithin(50*time.Second, "a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Reconnected; your conversation with bob goes on." {
		t.Errorf("alice is told %v", e)
	}
	talk(alice, bob, "got it")
	alice.expectConversation([]string{msgLine("bob", "before the cut"), msgLine("bob", "while the answer is lost"),
		msgLine("You", "got it")})
	// Its network was cut: the browser's words for a socket it could
	// not open then are expected.
	alice.onlyFailedSockets()
}

// TestBrowserResumeFindsPartnerBack: bob's network fails, then alice's;
// bob comes back while alice is still away, then alice. Before, her
// resume told her nothing of bob, and her page was left saying "bob
// lost the connection" as its last word of him. It says he is back.
func TestBrowserResumeFindsPartnerBack(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxyA, proxyB := startCutProxy(t, bt.daemon.WS), startCutProxy(t, bt.daemon.WS)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, proxyA.url(), proxyB.url())
	talk(bob, alice, "hi alice")

	proxyB.cut()
	alice.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	proxyA.cut()
	proxyB.restore()
	bob.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	proxyA.restore()
	alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	alice.expectEntry("a peer_back notice", func(e logEntry) bool { return e.Kind == "peer_back" && e.Text == "bob is back." })
	talk(alice, bob, "there you are")
	alice.onlyFailedSockets()
	bob.onlyFailedSockets()
}

// TestBrowserResumeAccounts: in accounts mode the page never keeps the
// password, so a reload that finds the window run out asks for it, the
// name filled in, rather than logging in by itself.
func TestBrowserResumeAccounts(t *testing.T) {
	chromium := setUpBrowserTest(t)
	users := authtest.Users(t, "alice", "correct horse", "bob", "battery staple")
	d, _ := enginetest.StartAccounts(t, users, func(o *engine.Options) {
		o.Resume.Window = 2 * time.Second
		o.Resume.ReplayRecent = 2 * time.Second
	})
	bt := launchBrowser(t, chromium, d)
	start := time.Now()
	proxy := startCutProxy(t, bt.daemon.WS)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(proxy.url())
	bob.open(bt.pageURL())
	alice.submitLogin("correct horse")
	aliceToken := alice.waitLoggedIn()
	bob.submitLogin("battery staple")
	bob.waitLoggedIn()
	bob.connectTo(aliceToken)
	alice.waitPaired("bob")
	bob.waitPaired("alice")
	talk(bob, alice, "hello with a password")
	alice.expectKeyOnlyInSessionStorage()
	if stored := eval[string](alice, `sessionStorage.getItem('duet.session')`); strings.Contains(stored, "horse") {
		t.Errorf("sessionStorage holds the password: %s", stored)
	}
	proxy.waitAcknowledged(t)

	proxy.cut()
	e := bob.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })
	if want := "alice did not come back in time, so the conversation ended."; e.Reason != "timeout" || e.Text != want {
		t.Errorf("bob is told %+v, want reason timeout and %q", e, want)
	}
	proxy.restore()
	alice.do("reload", chromedp.Reload())
	e = alice.expectEntry("an expired notice", func(e logEntry) bool { return e.Kind == "expired" })
	if want := "Your session ended while you were away (the server keeps one for 2s). Your conversation with bob is over. Log in again."; e.Text != want {
		t.Errorf("alice is told %q, want %q", e.Text, want)
	}
	alice.waitJS("the login form, the name filled in", `!document.getElementById('login-view').hidden
		&& document.getElementById('name').value === 'alice'
		&& document.activeElement.id === 'password'`)
	if key := alice.storedKey(); key != "" {
		t.Errorf("sessionStorage still holds resume key %q", key)
	}
	alice.submitLogin("correct horse")
	alice.waitLoggedIn()
	alice.onlyFailedSockets()
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserResumeAccountsAsksAfterExpiry: alice's tab lost its network
// past the window (or with resume off, at once); meanwhile she logged
// in from another tab (her phone, say). When the first tab's network
// comes back, its session is gone: it asks her to log in again rather
// than log in by itself with the password it held in memory, which,
// with takeover on, threw her out of the session she was using (and,
// with takeover off, retried for two minutes, and took the name back as
// soon as she logged out).
func TestBrowserResumeAccountsAsksAfterExpiry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
		want   string
	}{
		{"resume on", 2 * time.Second, "Your session ended while you were away (the server keeps one for 2s). Log in again."},
		{"resume off", 0, "Log in again to go on."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chromium := setUpBrowserTest(t)
			users := authtest.Users(t, "alice", "correct horse")
			d, _ := enginetest.StartAccounts(t, users, func(o *engine.Options) {
				o.Resume.Window = tc.window
				o.Resume.ReplayRecent = tc.window
				o.Auth.Takeover = true
			})
			bt := launchBrowser(t, chromium, d)
			proxy := startCutProxy(t, bt.daemon.WS)
			tab, phone := bt.newPerson("alice"), bt.newPerson("alice")
			tab.open(proxy.url())
			tab.submitLogin("correct horse")
			tab.waitLoggedIn()
			proxy.cut()
			tab.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'`)
			phone.open(bt.pageURL())
			phone.submitLogin("correct horse")
			phone.waitLoggedIn() // in place of the tab's session, away or gone
			proxy.restore()
			tab.do("back online", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
			e := tab.expectEntry("an expired notice", func(e logEntry) bool { return e.Kind == "expired" })
			if e.Text != tc.want {
				t.Errorf("the tab says %q, want %q", e.Text, tc.want)
			}
			tab.waitJS("the login form, the name filled in", `!document.getElementById('login-view').hidden
				&& document.getElementById('name').value === 'alice'`)
			phone.do("settle", chromedp.Sleep(time.Second))
			for _, e := range phone.log() {
				if strings.Contains(e.Text, "another connection") || e.Kind == "expired" {
					t.Errorf("the phone is told %q%s", e.Text, phone.logDump())
				}
			}
			phone.waitJS("still logged in", `document.getElementById('login-view').hidden`)
			tab.onlyFailedSockets()
		})
	}
}

// TestBrowserResumePeerAwayFull: to a partner away for long enough that
// the server keeps no more for them, a message is refused,
// peer_away_full, "this one was not sent"; the page marks that message
// as failed, as it does every message the server refuses, rather than
// leave it shown as sent.
func TestBrowserResumePeerAwayFull(t *testing.T) {
	bt := startSmallBufferTest(t)
	alice, bob := sealedPartnerAway(t, bt)
	bob.sayUntilAwayFull()
	alice.onlyFailedSockets()
}

// startSmallBufferTest starts a daemon that keeps 512 bytes of messages
// for a session away, a few short ones, and Chromium.
func startSmallBufferTest(t *testing.T) *browserTest {
	t.Helper()
	chromium := setUpBrowserTest(t)
	return launchBrowser(t, chromium, enginetest.Start(t, func(o *engine.Options) { o.Resume.Buffer = 512 }))
}

// terminalAway pairs dave's page with carol's terminal; once dave has
// said hello, carol's network fails, and dave is told she is away.
func terminalAway(t *testing.T, bt *browserTest) *person {
	t.Helper()
	dave := bt.newPerson("dave")
	dave.open(bt.pageURL())
	carol := dave.terminalConnects(dave.login(), "carol")
	dave.waitSecure("plain")
	dave.say("hi carol")
	carol.Expect(`^<dave> hi carol$`)
	enginetest.Reset(t, carol.Conn)
	dave.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	return dave
}

// sayUntilAwayFull has p say one message after another to its away
// partner until the server keeps no more for them and refuses one,
// peer_away_full, and returns that message's text. The page must mark it
// failed, as it does every message the server refuses.
func (p *person) sayUntilAwayFull() string {
	p.t.Helper()
	for i := 1; i <= 20; i++ {
		text := fmt.Sprintf("message %d while you are away", i)
		p.say(text)
		p.expectEntry("the message shown", func(e logEntry) bool { return e.has("msg", "mine") && e.Text == text })
		p.do("settle", chromedp.Sleep(100*time.Millisecond))
		full := false
		for _, e := range p.log() {
			full = full || e.Code == "peer_away_full"
		}
		if !full {
			continue
		}
		for _, e := range p.log() {
			if e.has("msg", "mine") && e.Text == text && !e.has("failed") {
				p.t.Errorf("%s: the message refused with peer_away_full is shown as sent: %v%s", p.name, e, p.logDump())
			}
		}
		return text
	}
	p.t.Fatalf("%s sent 20 messages to an away partner and was never told the server keeps no more%s", p.name, p.logDump())
	return ""
}

// shownMessage is a chat message as the person sees it: its classes
// ("msg mine failed"), who and what, and what the style writes after
// its meta line ("not sent" for a message refused, else none).
type shownMessage struct {
	Class string `json:"class"`
	Line  string `json:"line"`
	Mark  string `json:"mark"`
}

func (p *person) shownMessages() []shownMessage {
	p.t.Helper()
	return eval[[]shownMessage](p, `[...document.querySelectorAll('#log > li.msg')].map((li) => ({
		class: li.className,
		line: li.querySelector('.from').textContent + ': ' + li.querySelector('.text').textContent,
		mark: getComputedStyle(li.querySelector('.meta'), '::after').content,
	}))`)
}

// reloadAndResume reloads p's tab and waits until the page has resumed
// its session, and shows what it kept.
func (p *person) reloadAndResume() {
	p.t.Helper()
	p.do("reload", chromedp.Reload())
	p.waitJS("the page is online", `document.getElementById('state').dataset.state === 'online'`)
	p.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
}

// expectReloadKeepsRefused reloads p's tab, on which the messages refused
// are marked failed, and checks that the reloaded page shows every message
// as before: the refused ones marked "not sent", the others as sent.
func (p *person) expectReloadKeepsRefused(refused ...string) {
	p.t.Helper()
	before := p.shownMessages()
	var marked []string
	for _, m := range before {
		if slices.Contains(strings.Fields(m.Class), "failed") {
			marked = append(marked, strings.TrimPrefix(m.Line, msgLine("You", "")))
			if m.Mark != `"not sent"` {
				p.t.Fatalf("%s: before the reload the message marked failed is %+v", p.name, m)
			}
		}
	}
	if !slices.Equal(marked, refused) {
		p.t.Fatalf("%s: before the reload the messages marked failed are %q, want %q: %+v", p.name, marked, refused, before)
	}
	p.reloadAndResume()
	after := p.shownMessages()
	if !slices.Equal(after, before) {
		p.t.Errorf("%s: before the reload the messages were\n  %+v\nafter it\n  %+v%s", p.name, before, after, p.logDump())
	}
}

// TestBrowserResumeReloadKeepsRefused: a message the server refused
// (here peer_away_full) is marked "not sent", and a reload of the tab
// shows it so again rather than as sent, plaintext (to a terminal) and
// sealed (to a page) alike. A copy kept by a page from before refusals
// were kept still loads, its messages shown as sent, as they were then.
func TestBrowserResumeReloadKeepsRefused(t *testing.T) {
	bt := startSmallBufferTest(t)

	// Plaintext: dave's page talks with carol's terminal, whose network
	// fails.
	dave := terminalAway(t, bt)
	dave.expectReloadKeepsRefused(dave.sayUntilAwayFull())

	// A copy kept without the failed field (nor ids), as a page before
	// this one kept it: written over what dave's page keeps as it goes
	// away, after the page's own write.
	before := dave.shownMessages()
	dave.do("keep an old copy", chromedp.Evaluate[chromedp.Void](`window.addEventListener('pagehide', () => {
		const data = JSON.parse(sessionStorage.getItem('duet.session'));
		for (const m of data.kept) {
			delete m.failed;
			delete m.id;
		}
		sessionStorage.setItem('duet.session', JSON.stringify(data));
	})`))
	dave.reloadAndResume()
	after := dave.shownMessages()
	if len(after) != len(before) {
		t.Fatalf("from an old copy dave's page shows\n  %+v\nbefore the reload\n  %+v", after, before)
	}
	for i, m := range after {
		if m.Line != before[i].Line || m.Class != "msg mine" || m.Mark != "none" {
			t.Errorf("from an old copy dave's page shows %+v, before the reload %+v", m, before[i])
		}
	}

	// Sealed: bob's page talks with alice's, whose network is cut.
	alice, bob := sealedPartnerAway(t, bt)
	bob.expectReloadKeepsRefused(bob.sayUntilAwayFull())
	bob.waitSecure("unverified")
	alice.onlyFailedSockets()
}

// notSentRE is the count of messages refused that follows the first
// refusal's error.
var notSentRE = regexp.MustCompile(`^(\d+) more messages? (?:was|were) not sent: `)

// TestBrowserResumeEveryRefusalMarked: messages sent in one go to a
// partner away, past what the server keeps for them, are refused, the
// first with peer_away_full and the rest counted in a notice once a
// second; the page marks exactly those "not sent", the first and the
// counted ones, and not the ones kept, though all were on their way
// before any answer came; and a reload shows them so again.
func TestBrowserResumeEveryRefusalMarked(t *testing.T) {
	dave := terminalAway(t, startSmallBufferTest(t))

	// 71 bytes each as the server counts them: no more than seven are
	// kept in 512, with what was kept from before.
	var burst []string
	for i := 10; i < 22; i++ {
		burst = append(burst, fmt.Sprintf("burst %d", i))
	}
	dave.do("send twelve messages at once", chromedp.Evaluate[chromedp.Void](`for (const text of `+js(burst)+`) {
		document.getElementById('message').value = text;
		document.getElementById('compose').requestSubmit();
	}`))
	dave.expectEntry("the peer_away_full error", func(e logEntry) bool { return e.Code == "peer_away_full" })
	dave.expectEntry("a count of messages not sent", func(e logEntry) bool { return notSentRE.MatchString(e.Text) })
	// Another count may follow within the second.
	dave.do("settle", chromedp.Sleep(1200*time.Millisecond))
	refused := 1
	for _, e := range dave.log() {
		if m := notSentRE.FindStringSubmatch(e.Text); m != nil {
			n, _ := strconv.Atoi(m[1])
			refused += n
		}
	}
	if refused < 2 || refused >= len(burst) {
		t.Fatalf("the server refused %d of %d messages%s", refused, len(burst), dave.logDump())
	}
	// The server keeps messages in order until it has no more room: the
	// refused ones are the last.
	dave.expectReloadKeepsRefused(burst[len(burst)-refused:]...)
	dave.onlyFailedSockets()
}

// TestBrowserResumeSendWhileReconnecting: a message entered while the
// page is reconnecting, in an encrypted conversation, is not lost: the
// page says it is not connected and keeps the text in the box, and,
// back, sends it with Enter. (It used to empty the box and drop the
// text, the seal finding no socket.)
func TestBrowserResumeSendWhileReconnecting(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	talk(alice, bob, "hi bob")

	proxy.cut()
	alice.expectEntry("a reconnecting notice", func(e logEntry) bool { return e.Kind == "reconnecting" })
	alice.typeAndEnter("are you still there?")
	alice.expectEntry("an offline error", func(e logEntry) bool { return e.Code == "offline" })
	if box := eval[string](alice, `document.getElementById('message').value`); box != "are you still there?" {
		t.Fatalf("alice's message box holds %q after Enter while reconnecting%s", box, alice.logDump())
	}

	proxy.restore()
	alice.do("retry now", chromedp.Click(chromedp.ID("reconnect")))
	alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	alice.do("send it again", chromedp.SendKeys(chromedp.ID("message"), "\r"))
	bob.expectSealedMessage("theirs", "are you still there?")
	alice.expectConversation([]string{msgLine("You", "hi bob"), msgLine("You", "are you still there?")})
	alice.onlyFailedSockets()
}

// TestBrowserResumeLeaveWhileResuming: Leave clicked the moment the page
// has sent its resume, which the server refuses (the window ran out),
// does not confuse the page: it says it is not connected, and logs in
// afresh by itself, as for any expired session, without an error about
// logging in. (The leave went out behind the resume, and its
// not_logged_in was taken for the answer to the page's new login: "Log
// in first.", and the login form.)
func TestBrowserResumeLeaveWhileResuming(t *testing.T) {
	bt := startResumeTest(t, 2*time.Second)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "hi alice")

	proxy.cut()
	alice.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'`)
	bob.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })
	// The person clicks Leave just as the resume goes.
	alice.do("click Leave right after the resume is sent", chromedp.Evaluate[chromedp.Void](`(() => {
		const send = WebSocket.prototype.send;
		WebSocket.prototype.send = function (data) {
			send.call(this, data);
			if (String(data).includes('"type":"resume"')) document.getElementById('leave').click();
		};
	})()`))
	proxy.restore()
	alice.do("back online", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
	alice.expectEntry("an expired notice", func(e logEntry) bool { return e.Kind == "expired" })
	alice.expectEntry("a logged-in-again notice", func(e logEntry) bool {
		return strings.HasPrefix(e.Text, "Logged in again as alice.")
	})
	alice.do("settle", chromedp.Sleep(300*time.Millisecond))
	for _, e := range alice.log() {
		if e.Code == "not_logged_in" {
			t.Errorf("alice is told %v%s", e, alice.logDump())
		}
	}
	if hidden := eval[bool](alice, `document.getElementById('session-view').hidden`); hidden {
		t.Errorf("alice's page shows the login form%s", alice.logDump())
	}
	alice.onlyFailedSockets()
}

// expectLost checks that p's page shows its messages sent as want says:
// each "You: text" line in order, marked "not sent" exactly when its
// text is one of lost.
func (p *person) expectLost(want []string, lost ...string) {
	p.t.Helper()
	shown := p.shownMessages()
	var got []string
	for _, m := range shown {
		if !strings.HasPrefix(m.Line, msgLine("You", "")) {
			continue
		}
		text := strings.TrimPrefix(m.Line, msgLine("You", ""))
		got = append(got, text)
		failed := slices.Contains(strings.Fields(m.Class), "failed")
		if slices.Contains(lost, text) {
			if !failed || m.Mark != `"not sent"` {
				p.t.Errorf("%s: %q, lost with the connection, is shown %+v, not as not sent%s", p.name, text, m, p.logDump())
			}
		} else if failed || m.Mark != "none" {
			p.t.Errorf("%s: %q, which reached the server, is shown %+v%s", p.name, text, m, p.logDump())
		}
	}
	if !slices.Equal(got, want) {
		p.t.Errorf("%s: the messages of its own shown are %q, want %q%s", p.name, got, want, p.logDump())
	}
}

// TestBrowserResumeMarksLostMessages: the network under a page stops
// carrying anything, without either end noticing, and the person sends a
// message into the connection that is dying; then the connection is
// reset. The page showed the message sent, but the server never had it.
// Back, the resume names the last message the server had, and the page
// marks the one after it "not sent" (and says so), as it marks a
// refused one, and keeps it so across a reload; the one that arrived
// stays sent. Encrypted, so that the messages go as seals; the
// partner never sees the lost one.
func TestBrowserResumeMarksLostMessages(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	talk(alice, bob, "this one arrives")

	proxy.freeze()
	alice.say("this one is lost")
	proxy.cut()
	alice.expectEntry("a reconnecting notice", func(e logEntry) bool { return e.Kind == "reconnecting" })
	bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	proxy.restore()
	alice.do("retry now", chromedp.Click(chromedp.ID("reconnect")))
	e := alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if want := "Reconnected; your conversation with bob goes on. 1 message you sent as the connection dropped did not reach the server: marked not sent."; e.Text != want {
		t.Errorf("alice is told %v, want %q", e, want)
	}
	alice.expectLost([]string{"this one arrives", "this one is lost"}, "this one is lost")

	// The conversation goes on, the page numbering on from where it was.
	talk(alice, bob, "and this one, after")
	alice.expectLost([]string{"this one arrives", "this one is lost", "and this one, after"}, "this one is lost")
	bob.expectConversation([]string{msgLine("alice", "this one arrives"), msgLine("alice", "and this one, after")})
	alice.expectReloadKeepsRefused("this one is lost")
	alice.onlyFailedSockets()
}

// TestBrowserResumeReloadMarksLostMessages: as above, but the person
// reloads the tab before the page has noticed that its connection is
// dead. The reloaded page has only what it kept to go by: the messages
// with their ids. The resume names the last one the server had, and the
// one after it is marked "not sent"; the next message is numbered after
// both, as if the page had never been reloaded.
func TestBrowserResumeReloadMarksLostMessages(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(bob, alice, "hi alice")
	talk(alice, bob, "hi bob", "this one arrives too")

	proxy.freeze()
	alice.say("this one is lost")
	alice.reloadAndResume()
	e := alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if want := "Back in your conversation with bob. 1 message you sent as the connection dropped did not reach the server: marked not sent."; e.Text != want {
		t.Errorf("alice is told %v, want %q", e, want)
	}
	alice.expectLost([]string{"hi bob", "this one arrives too", "this one is lost"}, "this one is lost")
	if id := alice.lastKeptID("this one is lost"); id != 3 {
		t.Errorf("the lost message is kept with id %d, want 3", id)
	}
	talk(alice, bob, "after the reload")
	if id := alice.lastKeptID("after the reload"); id != 4 {
		t.Errorf("the message after the reload is numbered %d, want 4", id)
	}
	alice.expectLost([]string{"hi bob", "this one arrives too", "this one is lost", "after the reload"}, "this one is lost")
	bob.expectConversation([]string{msgLine("You", "hi alice"), msgLine("alice", "hi bob"),
		msgLine("alice", "this one arrives too"), msgLine("alice", "after the reload")})
}

// lastKeptID waits until the newest message p's page keeps in
// sessionStorage (written a moment after it is shown) is text, and
// returns the id it was sent with.
func (p *person) lastKeptID(text string) int {
	p.t.Helper()
	const last = `JSON.parse(sessionStorage.getItem('duet.session')).kept.at(-1)`
	p.waitJS("the page keeps "+text, last+`.text === `+js(text))
	return eval[int](p, last+`.id`)
}

// TestBrowserPeerAwayTimeReadsAsTheServers: alice's page connects to
// bob, whose terminal's connection dropped a moment ago. The page says
// how long bob may still take as the server's line texts do, in minutes
// and seconds ("1m58s"), where it said "118s".
func TestBrowserPeerAwayTimeReadsAsTheServers(t *testing.T) {
	bt := startResumeTest(t, 0)
	bob := bt.daemon.DialLine(t).Login("bob")
	bob.Send("/who")
	token := regexp.MustCompile(`[0-9a-f]{32}`).FindString(bob.Expect(`^\* you are bob, your token is [0-9a-f]{32}, not connected$`))
	enginetest.Reset(t, bob.Conn)
	// A second or more of the window gone, so that what is left is no
	// whole number of minutes.
	time.Sleep(1100 * time.Millisecond)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	alice.login()
	alice.connectTo(token)
	e := alice.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	if !regexp.MustCompile(`^bob lost the connection; waiting up to 1m5\ds for them to come back\.$`).MatchString(e.Text) {
		t.Errorf("alice is told %q", e.Text)
	}
}

// TestBrowserResumeToldWhoConnectedAndLeftWhileAway: alice's page is
// away; carol connects to her token from a terminal, says hello and
// leaves. Back, the page shows carol's message, and that she connected
// while alice was away and then left. Before, it said only "While you
// were away, carol left the conversation.", of someone it never said
// had connected.
func TestBrowserResumeToldWhoConnectedAndLeftWhileAway(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy := startCutProxy(t, bt.daemon.WS)
	alice := bt.newPerson("alice")
	alice.open(proxy.url())
	token := alice.login()
	proxy.cut()
	// carol connects once the server has seen the page's connection
	// drop: before, she would connect to alice live, which is no
	// pairing made while alice was away.
	for deadline := time.Now().Add(enginetest.Timeout); bt.daemon.Hub.Stats().Away == 0; time.Sleep(pollEvery) {
		if time.Now().After(deadline) {
			t.Fatal("the server never saw alice's page's connection drop")
		}
	}
	carol := bt.daemon.DialLine(t).Login("carol")
	carol.Send("/connect " + token)
	carol.Expect(`^\* you are connected with alice$`)
	carol.Expect(`^\* alice lost the connection`)
	carol.Send("hello alice")
	carol.Send("/leave")
	carol.Expect(`^\* you left alice$`)
	proxy.restore()
	alice.expectMessage("theirs", "carol", "hello alice")
	e := alice.expectEntry("carol's end", func(e logEntry) bool { return e.Kind == "peer_left" })
	if want := "While you were away, carol connected to you, then carol left the conversation."; e.Text != want {
		t.Errorf("alice is told %q, want %q", e.Text, want)
	}
	// Its network was cut: the browser's words for a socket it could
	// not open then are expected.
	alice.onlyFailedSockets()
}
