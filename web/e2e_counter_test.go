package web_test

// A page seals each message with AES-GCM under its pairing's key and a
// nonce made of the message's counter: a counter sealed twice under one
// key gives whoever relays the two the XOR of their texts and the key
// that authenticates them, whatever the partner then refuses. These
// tests take a page to the two places where it kept a counter it had
// already used: a reload that restores a state older than what the page
// sent (its sessionStorage failed to take the newer one), and a second
// tab holding a copy of the first one's state (a duplicated tab). The
// partner is bob, a Go client of proto/e2e that makes no new exchange,
// so that every message the page can seal is under the pairing's one
// key.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"duet/proto/e2e"
)

// readMessage reads bob's frames until a message from the page, and
// returns what bob's side made of it. Each counter the page sealed is
// noted in used; one that comes again fails the test, whether or not
// bob's side would open it.
func (g *goPeer) readMessage(used map[uint64]string) e2e.Result {
	g.t.Helper()
	for {
		env := g.nextEnvelope()
		e, err := e2e.Decode(env)
		if err != nil {
			g.t.Fatalf("the page's envelope %x: %v", env, err)
		}
		if e.Kind != e2e.KindMessage {
			// A handshake step sent again after a resume.
			continue
		}
		res, err := g.s.Receive(env)
		if before, ok := used[e.Counter]; ok {
			g.t.Fatalf("the page sealed counter %d twice under one key (first %q; again: %v)", e.Counter, before, err)
		}
		if err != nil {
			g.t.Fatalf("the page's message %d: %v", e.Counter, err)
		}
		used[e.Counter] = res.Text
		return res
	}
}

// expectSealedOnce has p, reloaded or loaded with a copy of a tab's
// storage, send text once it has resumed the pairing with bob, and
// checks that no counter is sealed twice. bob first sends his steps of
// the exchange again, as a page does when its partner is back (had he
// sent them before the resume, they might have gone to another tab, or
// been acknowledged and dropped): a page that goes on
// with the pairing's keys takes them as steps it has, and shows the
// conversation verified; one that starts a new exchange fails it, since
// bob's steps are those of the first, and says so. Verified, it seals
// the text, which bob must read with a counter not used before; failed,
// it sends nothing.
func (p *person) expectSealedOnce(bob *goPeer, used map[uint64]string, text string) {
	p.t.Helper()
	// #secure shows nothing before the resume: the page shows the
	// pairing it kept at once, its encryption only once resumed.
	p.waitJS("the pairing's encryption resumed", `document.getElementById('secure').dataset.state !== 'none'`)
	bob.sealEnvs(bob.s.Resend())
	p.waitJS("the encryption verified or failed", `['verified', 'failed'].includes(document.getElementById('secure').dataset.state)`)
	if state, _ := p.secureState(); state == "failed" {
		p.typeAndEnter(text)
		p.expectEntry("the text not sent", func(e logEntry) bool { return e.Code == "e2e_not_sent" })
		return
	}
	p.say(text)
	if res := bob.readMessage(used); res.Text != text {
		p.t.Fatalf("bob read %q, want %q", res.Text, text)
	}
}

// expectKeysLost checks that p, resumed into its pairing with bob
// without its keys, told bob so, with an abort keys_lost rather than an
// exchange that fails as if someone between them interfered, and told
// its person why, in words that contain why.
func (p *person) expectKeysLost(bob *goPeer, why string) {
	p.t.Helper()
	for {
		e, err := e2e.Decode(bob.nextEnvelope())
		if err != nil {
			p.t.Fatalf("the page's envelope: %v", err)
		}
		if e.Kind != e2e.KindAbort {
			continue
		}
		if e.Reason != e2e.ReasonKeysLost {
			p.t.Fatalf("the page aborted the pairing's encryption with %v, want %v%s", e.Reason, e2e.ReasonKeysLost, p.logDump())
		}
		break
	}
	p.expectHonestFailure(why)
}

// expectHonestFailure checks that p's encryption failed for why, and that
// nothing on p's page says someone may be interfering.
func (p *person) expectHonestFailure(why string) {
	p.t.Helper()
	p.waitSecure("failed")
	if text := eval[string](p, `document.getElementById('secure-text').textContent`); !strings.Contains(text, why) {
		p.t.Fatalf("%s's page says %q, want it to say %q", p.name, text, why)
	}
	for _, e := range p.log() {
		if strings.Contains(e.Text, "interfering") {
			p.t.Fatalf("%s's page says %q%s", p.name, e.Text, p.logDump())
		}
	}
}

// fillStorage has p's sessionStorage refuse, as a storage that is
// nearly full does (the page keeps its log there too), every write
// larger than a few hundred characters: the encryption's state, not a
// note of a few dozen. Removing an item needs no room.
func (p *person) fillStorage() {
	p.t.Helper()
	p.do("fill the storage", chromedp.Evaluate[chromedp.Void](`{
		const setItem = Storage.prototype.setItem;
		Storage.prototype.setItem = function (key, value) {
			if (String(key).length + String(value).length > 400) {
				throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
			}
			return setItem.call(this, key, value);
		};
	}`))
}

// sealingPage has bob pair with alice's page by her link, and her page
// seal text for him; used holds its counter.
func sealingPage(t *testing.T, text string) (bt *browserTest, alice *person, bob *goPeer, used map[uint64]string) {
	t.Helper()
	bt = startResumeTest(t, 0)
	alice = bt.newPerson("alice")
	alice.open(bt.pageURL())
	alice.login()
	bob = pairByLink(t, bt.daemon, alice)
	used = map[uint64]string{}
	alice.say(text)
	bob.readMessage(used)
	return bt, alice, bob, used
}

// TestE2EPageStorageFullReusesNoCounter: alice's page seals a message
// after its sessionStorage took the state of an earlier one and then
// stopped taking it (full: the page keeps its log there too). A reload
// restored the earlier state, and sealed its next message with the
// counter already used. The reloaded page has no keys: it tells bob so
// (keys_lost) and its person why, rather than start an exchange that
// bob's side, holding the pairing's keys, fails as interference.
func TestE2EPageStorageFullReusesNoCounter(t *testing.T) {
	_, alice, bob, used := sealingPage(t, "kept")

	alice.fillStorage()
	alice.say("not kept")
	bob.readMessage(used)

	alice.do("reload", chromedp.Reload())
	alice.expectSealedOnce(bob, used, "after the reload")
	alice.expectKeysLost(bob, "this tab lost the conversation’s keys")

	// What bob sealed with the keys the page lost cannot be read, and the
	// page says so; his steps sent again (expectSealedOnce) were no
	// message, and it said nothing of them.
	bob.seal("after the loss")
	alice.expectEntry("the message it cannot read", func(e logEntry) bool {
		return e.Code == "e2e_unreadable" && strings.Contains(e.Text, "keys this tab lost")
	})
	unreadable := 0
	for _, e := range alice.log() {
		if e.Code == "e2e_unreadable" {
			unreadable++
		}
	}
	if unreadable != 1 {
		t.Fatalf("the page reported %d frames it cannot read, want 1: the message%s", unreadable, alice.logDump())
	}
}

// TestE2EPageDuplicatedTabReusesNoCounter: a tab duplicated from
// alice's (a browser copies the tab's sessionStorage to the copy) loads
// while alice's page goes on sealing, resumes her session and seals. It
// restored the keys and the counter alice's page had when it was copied,
// and sealed with a counter alice's page had used since. The copy may
// not use them: it tells bob so (keys_lost) and its person why.
func TestE2EPageDuplicatedTabReusesNoCounter(t *testing.T) {
	bt, alice, bob, used := sealingPage(t, "before the copy")

	// The copy: a tab of the same browser, its sessionStorage that of
	// alice's tab, filled on a page of the same origin that is not duet's
	// (a 404) so that nothing reads it before it is complete.
	ctx, cancel := chromedp.NewContext(alice.ctx)
	copied := bt.watch("alice's copy", ctx, cancel)
	// Run before watch's check: the 404 is this test's doing, and so is
	// the browser's look for that page's icon.
	t.Cleanup(func() {
		for _, problem := range copied.takeProblems() {
			if !strings.Contains(problem, "status of 404") {
				t.Errorf("alice's copy: the page reported: %s", problem)
			}
		}
	})
	copied.do("open a page of the origin", chromedp.Navigate(bt.pageURL()+"no-such-page"))
	items := eval[string](alice, `JSON.stringify(Object.entries(sessionStorage))`)
	copied.do("copy the storage", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`for (const [k, v] of JSON.parse(%q)) sessionStorage.setItem(k, v)`, items)))

	alice.say("while the copy loads")
	bob.readMessage(used)
	copied.open(bt.pageURL())
	// The copy takes the session: alice's page is told so.
	alice.waitJS("alice's page logged out", `document.getElementById('login-view').hidden === false`)
	copied.expectSealedOnce(bob, used, "from the copy")
	copied.expectKeysLost(bob, "another tab holds this conversation’s keys")
}

// TestE2EPageReloadKeepsAnEarlierPagesState: a page of the version
// before holders kept its state with none; a reload into this version
// must go on with those keys, not secure the conversation anew (which
// the partner's page, holding the pairing's keys, would fail as
// interference).
func TestE2EPageReloadKeepsAnEarlierPagesState(t *testing.T) {
	_, alice, bob, used := sealingPage(t, "kept")
	alice.do("keep the state as a page before holders did", chromedp.Evaluate[chromedp.Void](`{
		const kept = JSON.parse(sessionStorage.getItem('duet.e2e'));
		if (!kept || !kept.holder) throw new Error('no holder kept: ' + JSON.stringify(kept));
		delete kept.holder;
		sessionStorage.setItem('duet.e2e', JSON.stringify(kept));
	}`))
	alice.do("reload", chromedp.Reload())
	alice.expectSealedOnce(bob, used, "after the reload")
	if state, _ := alice.secureState(); state != "verified" {
		t.Fatalf("after the reload the encryption is %q, want verified with the kept keys", state)
	}
}
