package web_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"duet/engine/enginetest"
	"duet/proto/e2e"
)

// An encrypted conversation across a page's drops and reloads, with a
// Go client of proto/e2e as the partner, so that the test chooses what
// the partner sends and when.

// goPeer is the partner: a WebSocket client with its own end of the
// encryption.
type goPeer struct {
	t  *testing.T
	ws *enginetest.WSClient
	s  *e2e.Session
}

// sealEnvs sends envelopes of the exchange, or messages, as seals.
func (g *goPeer) sealEnvs(envs [][]byte) {
	for _, env := range envs {
		g.ws.Send(map[string]string{"type": "seal", "data": e2e.EncodeData(env)})
	}
}

// seal seals text and sends it.
func (g *goPeer) seal(text string) {
	g.t.Helper()
	env, err := g.s.Seal(text)
	if err != nil {
		g.t.Fatal(err)
	}
	g.sealEnvs([][]byte{env})
}

// step reads frames until a sealed one, and returns what the page's
// envelope held and what the partner answers to it, unsent.
func (g *goPeer) step() e2e.Result {
	g.t.Helper()
	res, err := g.s.Receive(g.nextEnvelope())
	if err != nil {
		g.t.Fatalf("the page's envelope: %v", err)
	}
	return res
}

// nextEnvelope reads frames until a sealed one, and returns its
// envelope.
func (g *goPeer) nextEnvelope() []byte {
	g.t.Helper()
	for {
		ev := g.ws.Next()
		if ev["type"] != "sealed" {
			continue
		}
		env, err := e2e.DecodeData(ev["data"].(string))
		if err != nil {
			g.t.Fatalf("sealed frame %v: %v", ev, err)
		}
		return env
	}
}

// expectNoCode fails the test if p's log holds a notice with one of
// codes.
func (p *person) expectNoCode(codes ...string) {
	p.t.Helper()
	for _, e := range p.log() {
		if slices.Contains(codes, e.Code) {
			p.t.Fatalf("%s's page said %q%s", p.name, e.Text, p.logDump())
		}
	}
}

// connectByToken has alice's page connect to the token of bob, a Go
// client, which answers the exchange of end-to-end encryption as the
// token's holder; the exchange is the test's to run (step).
func connectByToken(t *testing.T, d *enginetest.Daemon, alice *person) *goPeer {
	t.Helper()
	ws := d.DialWS(t).Login("bob")
	alice.connectTo(ws.Token)
	ws.Expect("paired")
	s, _, err := e2e.Start(e2e.Config{Role: e2e.Responder, Token: ws.Token, InitiatorName: "alice", ResponderName: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	return &goPeer{t: t, ws: ws, s: s}
}

// fragmentRE is a share link's fragment, wherever the page was opened.
var fragmentRE = regexp.MustCompile(`#([0-9a-f]{32})\.([A-Za-z0-9_-]{22})$`)

// pairByLink has bob, a Go client, open alice's share link: connect to
// its token and use its secret, as a page would, to the end of the
// exchange. alice's page shows the conversation verified.
func pairByLink(t *testing.T, d *enginetest.Daemon, alice *person) *goPeer {
	t.Helper()
	m := fragmentRE.FindStringSubmatch(alice.shareLink())
	if m == nil {
		t.Fatalf("share link %q has no TOKEN.SECRET", alice.shareLink())
	}
	secret, err := base64.RawURLEncoding.DecodeString(m[2])
	if err != nil {
		t.Fatal(err)
	}
	bob := d.DialWS(t).Login("bob")
	bob.Connect(m[1])
	bob.Expect("paired")
	s, out, err := e2e.Start(e2e.Config{Role: e2e.Initiator, Token: m[1], InitiatorName: "bob", ResponderName: "alice", LinkSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	g := &goPeer{t: t, ws: bob, s: s}
	g.sealEnvs(out)
	for s.State() != e2e.StateConfirmed {
		g.sealEnvs(g.step().Out)
	}
	alice.waitSecure("verified")
	return g
}

// aliceResumable starts a daemon with session resume on, and logs in
// alice's page.
func aliceResumable(t *testing.T) (*browserTest, *person) {
	t.Helper()
	bt := startResumeTest(t, 0)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	alice.login()
	return bt, alice
}

// awayPage opens alice's page through a proxy whose network can be
// cut, logs her in and has bob pair with her by her link.
func awayPage(t *testing.T) (bt *browserTest, px *cutProxy, alice *person, token string, bob *goPeer) {
	t.Helper()
	bt = startResumeTest(t, 0)
	px = startCutProxy(t, bt.daemon.WS)
	alice = bt.newPerson("alice")
	alice.open(px.url())
	token = alice.login()
	bob = pairByLink(t, bt.daemon, alice)
	bob.seal("before the drop")
	alice.expectSealedMessage("theirs", "before the drop")
	return bt, px, alice, token, bob
}

// TestE2EPageSealedWhileAwayThenLeft: bob seals a message while alice's
// page is away, then leaves. Her page comes back, is replayed his
// message and told he left: it shows the message, read with the keys of
// the pairing that ended.
func TestE2EPageSealedWhileAwayThenLeft(t *testing.T) {
	_, px, alice, _, bob := awayPage(t)
	px.cut()
	bob.ws.Expect("peer_away")
	bob.seal("sent while you were away")
	bob.ws.Send(map[string]string{"type": "leave"})
	bob.ws.Expect("left")
	px.restore()
	alice.expectEntry("bob's leave", func(e logEntry) bool { return e.Kind == "peer_left" })
	alice.expectSealedMessage("theirs", "sent while you were away")
	if n := alice.countText("sent while you were away"); n != 1 {
		t.Fatalf("alice shows bob's message %d times%s", n, alice.logDump())
	}
	for _, e := range alice.log() {
		if strings.HasPrefix(e.Code, "e2e_") {
			t.Fatalf("alice's page said %q%s", e.Text, alice.logDump())
		}
	}
	// Its network was cut: the browser's words for a socket it could
	// not open then are expected.
	alice.onlyFailedSockets()
}

// TestE2EPageSealedWhileAwayThenNewPartner: as above, and carol connects
// to alice's token before she is back. bob's message is shown as his,
// and carol's pairing starts its own exchange.
func TestE2EPageSealedWhileAwayThenNewPartner(t *testing.T) {
	bt, px, alice, token, bob := awayPage(t)
	px.cut()
	bob.ws.Expect("peer_away")
	bob.seal("sent while you were away")
	bob.ws.Send(map[string]string{"type": "leave"})
	bob.ws.Expect("left")
	carol := bt.daemon.DialWS(t).Login("carol")
	carol.Connect(token)
	carol.Expect("paired")
	px.restore()
	alice.expectSealedMessage("theirs", "sent while you were away")
	if n := alice.countText("sent while you were away"); n != 1 {
		t.Fatalf("alice shows bob's message %d times%s", n, alice.logDump())
	}
	alice.expectNoCode("e2e_no_keys", "e2e_unreadable")
	// Its network was cut: the browser's words for a socket it could
	// not open then are expected.
	alice.onlyFailedSockets()
}

// TestE2EPageReloadWhileDecrypting: a page reloaded while it decrypts a
// sealed message resumes from before it: the message is replayed and
// shown after the reload, not counted as missing.
func TestE2EPageReloadWhileDecrypting(t *testing.T) {
	bt, alice := aliceResumable(t)
	bob := pairByLink(t, bt.daemon, alice)
	// A slow device: each decryption takes three seconds.
	alice.do("slow decryption", chromedp.Evaluate[chromedp.Void](`{
		const decrypt = SubtleCrypto.prototype.decrypt;
		SubtleCrypto.prototype.decrypt = function (...args) {
			return new Promise((done) => setTimeout(done, 3000)).then(() => decrypt.apply(this, args));
		};
	}`))
	bob.seal("slowly decrypted")
	time.Sleep(500 * time.Millisecond)
	alice.do("reload", chromedp.Reload())
	alice.waitJS("back with bob", `document.getElementById('peer').textContent === 'Talking with bob'`)
	alice.waitSecure("verified")
	alice.expectSealedMessage("theirs", "slowly decrypted")
	bob.seal("after the reload")
	alice.expectSealedMessage("theirs", "after the reload")
	if n := alice.countText("slowly decrypted"); n != 1 {
		t.Fatalf("alice shows the message %d times%s", n, alice.logDump())
	}
	alice.expectNoCode("e2e_missing")
}

// TestE2EPageReloadTwiceKeepsEncryption: a page reloaded, then
// reloaded again before anything changed its state (its partner sent
// nothing: away, or quiet), goes on under the same keys. The first
// reload took the kept state out of the storage and put nothing back
// until the next message, so the second found no keys, and the
// pairing's encryption failed on both pages with no one interfering.
func TestE2EPageReloadTwiceKeepsEncryption(t *testing.T) {
	bt, alice := aliceResumable(t)
	bob := pairByLink(t, bt.daemon, alice)
	bob.seal("before the reloads")
	alice.expectSealedMessage("theirs", "before the reloads")
	for i := range 2 {
		alice.do("reload", chromedp.Reload())
		alice.waitJS("back with bob", `document.getElementById('peer').textContent === 'Talking with bob'`)
		alice.waitSecure("verified")
		alice.waitJS(fmt.Sprintf("the keys kept after reload %d", i+1), `sessionStorage.getItem('duet.e2e') !== null`)
	}
	bob.seal("after two reloads")
	alice.expectSealedMessage("theirs", "after two reloads")
	alice.say("sealed still")
	for {
		if res := bob.step(); res.Kind == e2e.KindMessage {
			if res.Text != "sealed still" {
				t.Fatalf("bob read %q", res.Text)
			}
			break
		}
	}
	for _, e := range alice.log() {
		if strings.HasPrefix(e.Code, "e2e_") && e.Code != "e2e_verified" {
			t.Fatalf("alice's page said %q%s", e.Text, alice.logDump())
		}
	}
	if n := bt.daemon.Hub.Stats().Messages; n != 0 {
		t.Fatalf("%d plaintext messages relayed", n)
	}
}

// TestE2EPageNewPairingWithTheSamePartner: while alice's page is away,
// bob leaves their verified conversation and connects to her token
// again. Back, her page says bob left, that he connected again and
// this is a new conversation, and that what she verified before does
// not carry over; the new one is secured afresh (by her link's secret
// again, which bob's page keeps for her token).
// Before, it said the conversation "goes on", and only a changed code
// showed that it did not (a server that forges a new pairing looks the
// same).
func TestE2EPageNewPairingWithTheSamePartner(t *testing.T) {
	bt := startResumeTest(t, 0)
	px := startCutProxy(t, bt.daemon.WS)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(px.url())
	token := alice.login()
	// Her link, on the page's own address: bob's network is not cut.
	link := alice.shareLink()
	bob.open(bt.pageURL() + link[strings.IndexByte(link, '#'):])
	bob.login()
	bob.acceptInvite(token)
	alice.waitSecure("verified")
	bob.waitSecure("verified")

	px.cut()
	bob.expectEntry("alice away", func(e logEntry) bool { return e.Kind == "peer_away" })
	bob.do("leave", chromedp.Click(chromedp.ID("leave")))
	bob.expectEntry("bob left", func(e logEntry) bool { return e.Kind == "left" })
	bob.connectTo(token)
	bob.waitJS("bob paired again", `document.getElementById('peer').textContent === 'Talking with alice'`)
	px.restore()

	alice.expectEntry("bob's leaving", func(e logEntry) bool {
		return e.Kind == "peer_left" && e.Text == "While you were away, bob left the conversation."
	})
	alice.expectEntry("a new conversation", func(e logEntry) bool {
		return e.Kind == "paired" && e.Text == "Reconnected. bob connected to you again while you were away: this is a new conversation."
	})
	alice.expectEntry("the verification void", func(e logEntry) bool { return e.Code == "e2e_new_pairing" })
	alice.waitSecure("verified")
	bob.waitSecure("verified")
	bob.say("sealed anew")
	alice.expectSealedMessage("theirs", "sealed anew")
	for _, e := range alice.log() {
		if strings.Contains(e.Text, "goes on") {
			t.Errorf("alice's page said %q%s", e.Text, alice.logDump())
		}
	}
	// Its network was cut: the browser's words for a socket it could
	// not open then are expected.
	alice.onlyFailedSockets()
}

// TestE2EPageAgreedPlainSurvivesReload: after encryption failed, alice
// chose to go on without it. A reload keeps that choice: bob's
// plaintext is shown, not refused.
func TestE2EPageAgreedPlainSurvivesReload(t *testing.T) {
	bt, alice := aliceResumable(t)
	bob := pairByLink(t, bt.daemon, alice)
	bob.sealEnvs([][]byte{bob.s.Abort(e2e.ReasonHandshakeFailed)})
	alice.waitSecure("failed")
	alice.do("send without encryption", chromedp.Click(chromedp.ID("secure-plain")))
	bob.ws.Say("plain before the reload")
	alice.expectMessage("theirs", "bob", "plain before the reload")
	alice.do("reload", chromedp.Reload())
	alice.waitJS("back with bob", `document.getElementById('peer').textContent === 'Talking with bob'`)
	alice.waitSecure("failed")
	bob.ws.Say("plain after the reload")
	alice.expectMessage("theirs", "bob", "plain after the reload")
	alice.expectNoCode("e2e_plaintext_refused")
}

// TestE2EPageHandshakeClockStopsOffline: the exchange must end within
// its limit while both sides are connected; time this page spends
// offline does not count. alice's page drops before bob's last step
// reaches it and stays away past the limit (made six seconds here,
// enough for the exchange on a loaded machine); back, it completes the
// exchange and reads what bob sealed meanwhile.
func TestE2EPageHandshakeClockStopsOffline(t *testing.T) {
	bt := startResumeTest(t, 0)
	px := startCutProxy(t, bt.daemon.WS)
	alice := bt.newPerson("alice")
	alice.open(px.url())
	alice.login()
	alice.do("a short limit", chromedp.Evaluate[chromedp.Void](`{
		const setTimeoutAsIs = window.setTimeout;
		window.setTimeout = (fn, ms, ...args) => setTimeoutAsIs(fn, ms === 30000 ? 6000 : ms, ...args);
		window.shortLimit = true;
	}`))
	alice.waitJS("the short limit in place", `window.shortLimit === true`)
	bob := connectByToken(t, bt.daemon, alice)
	s, ws := bob.s, bob.ws
	var last [][]byte // bob's last step, held back until alice is away
	for s.State() != e2e.StateConfirmed {
		res := bob.step()
		if s.State() == e2e.StateConfirmed {
			last = res.Out
		} else {
			bob.sealEnvs(res.Out)
		}
	}
	px.cut()
	ws.Expect("peer_away")
	bob.sealEnvs(last)
	bob.seal("are we secure?")
	time.Sleep(8 * time.Second) // past the limit
	px.restore()
	alice.expectSealedMessage("theirs", "are we secure?")
	alice.waitSecure("unverified")
	// Its attempts to reconnect while the network was cut failed, as
	// they had to; nothing else is a problem.
	alice.onlyFailedSockets()
	alice.expectNoCode("e2e_failed")
}

// TestE2EPageAbortGoesWhenBack: alice's page, offline, is told the codes
// differ. The abort that tells bob's side goes once the page is back,
// rather than being lost with the connection: bob's side must not go on
// sealing for a page that gave up.
func TestE2EPageAbortGoesWhenBack(t *testing.T) {
	bt := startResumeTest(t, 0)
	px := startCutProxy(t, bt.daemon.WS)
	alice := bt.newPerson("alice")
	alice.open(px.url())
	alice.login()
	bob := connectByToken(t, bt.daemon, alice)
	s, ws := bob.s, bob.ws
	for s.State() != e2e.StateConfirmed {
		bob.sealEnvs(bob.step().Out)
	}
	alice.waitSecure("unverified")
	px.cut()
	ws.Expect("peer_away")
	alice.do("they differ", chromedp.Click(chromedp.ID("secure-differ")))
	alice.waitSecure("failed")
	px.restore()
	ws.Expect("peer_back")
	for {
		ev := ws.Next()
		if ev["type"] != "sealed" {
			continue
		}
		env, err := e2e.DecodeData(ev["data"].(string))
		if err != nil {
			t.Fatalf("sealed frame %v: %v", ev, err)
		}
		if _, err := s.Receive(env); err != nil {
			if !errors.Is(err, e2e.ErrPeerAborted) {
				t.Fatalf("bob's side read %v, want the page's abort", err)
			}
			break
		}
	}
	if s.State() != e2e.StateFailed {
		t.Fatalf("bob's side is %v after the page's abort", s.State())
	}
	alice.onlyFailedSockets()
}

// TestE2EPageWaitingSurvivesReload: what alice typed while the
// conversation was being secured waits for the keys across a reload of
// her tab, as it waits without one: bob, who answers the exchange only
// after the reload, receives it sealed. It vanished with the reload,
// neither sent nor shown not sent.
func TestE2EPageWaitingSurvivesReload(t *testing.T) {
	bt, alice := aliceResumable(t)
	bob := connectByToken(t, bt.daemon, alice)
	alice.waitSecure("securing")
	alice.say("typed while securing")
	alice.expectEntry("the waiting notice", func(e logEntry) bool { return e.Kind == "e2e_waiting" })
	alice.do("reload", chromedp.Reload())
	alice.waitJS("back with bob", `document.getElementById('peer').textContent === 'Talking with bob'`)
	for {
		res := bob.step()
		bob.sealEnvs(res.Out)
		if res.Text != "" {
			if res.Text != "typed while securing" {
				t.Fatalf("bob received %q", res.Text)
			}
			break
		}
	}
	alice.expectSealedMessage("mine", "typed while securing")
}

// TestE2EPagePlainReplayOfEndedPairing: alice's page talks in the clear
// with bob on a terminal, and goes away. Meanwhile bob says something
// and leaves, and carol connects to alice's token. Back, alice's page
// starts carol's exchange and is replayed bob's message: it is judged by
// the pairing it came in, which was plain, and shown. It was refused as
// plaintext in carol's pairing, which encrypts.
func TestE2EPagePlainReplayOfEndedPairing(t *testing.T) {
	bt := startResumeTest(t, 0)
	nc := startNC(t, bt.daemon.TCP)
	nc.send("/login bob")
	nc.expectToken()
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	aliceToken := alice.login()
	nc.send("/connect " + aliceToken)
	nc.expect("* you are connected with alice")
	alice.waitPaired("bob")
	alice.waitSecure("plain")
	alice.say("hi bob")
	nc.expect("<alice> hi bob")

	alice.do("go away", chromedp.Navigate("about:blank"))
	nc.send("said while alice was away")
	nc.send("/leave")
	nc.expect("* you left alice")
	carol := bt.daemon.DialWS(t).Login("carol")
	carol.Connect(aliceToken)
	carol.Expect("paired")

	alice.open(bt.pageURL())
	alice.waitJS("back with carol", `document.getElementById('peer').textContent === 'Talking with carol'`)
	alice.expectMessage("theirs", "bob", "said while alice was away")
	alice.waitSecure("securing")
	alice.expectNoCode("e2e_plaintext_refused")
	if n := alice.countText("said while alice was away"); n != 1 {
		t.Errorf("bob's message is shown %d times%s", n, alice.logDump())
	}
}
