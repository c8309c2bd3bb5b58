package web_test

// End-to-end encryption as people use it: two real pages (app.js and
// secure.js over e2e.js) pair through the daemon and talk. A TCP proxy
// between one browser and the server plays the server's part as an
// attacker would: it reads every frame (client frames unmasked), and it
// can flip a byte of a sealed frame or send one again.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"duet/engine/enginetest"
	"duet/proto/e2e"
)

// secureState is what #secure says: its state, and the code it shows.
func (p *person) secureState() (state, code string) {
	p.t.Helper()
	v := eval[[]string](p, `[document.getElementById('secure').dataset.state, document.getElementById('secure-code').textContent]`)
	return v[0], v[1]
}

// waitSecure waits until #secure is in state.
func (p *person) waitSecure(state string) {
	p.t.Helper()
	p.waitJS("#secure says "+state, fmt.Sprintf(`document.getElementById('secure').dataset.state === %q
		&& !document.getElementById('secure').hidden`, state))
}

// expectSealedMessage waits for a message with exactly this text that
// came sealed: shown from the partner's envelope, not from plaintext.
func (p *person) expectSealedMessage(side, text string) {
	p.t.Helper()
	p.waitJS(fmt.Sprintf("a sealed %s message %q", side, text), fmt.Sprintf(`[...document.querySelectorAll('#log > li.msg.%s')]
		.some((li) => li.dataset.e2e === 'sealed' && li.querySelector('.text').textContent === %q)`, side, text))
}

// pairEncrypted pairs alice's page, at aliceURL, with bob's, at bobURL,
// and waits until both say the conversation is encrypted.
func pairEncrypted(bt *browserTest, aliceURL, bobURL string) (alice, bob *person) {
	alice, bob = bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, aliceURL, bobURL)
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	return alice, bob
}

// countText counts the log's messages with exactly this text.
func (p *person) countText(text string) int {
	p.t.Helper()
	return eval[int](p, fmt.Sprintf(`[...document.querySelectorAll('#log > li.msg .text')].filter((e) => e.textContent === %q).length`, text))
}

// TestE2EPageLinkIsVerified: a link with its secret gives an encrypted,
// verified conversation with no step but the click that connects; both
// pages show the same code, and messages go both ways sealed.
func TestE2EPageLinkIsVerified(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	token := alice.login()
	link := alice.shareLink()
	linkParts(t, bt, link)

	bob.open(link)
	if hash := eval[string](bob, `location.hash`); hash != "" {
		t.Errorf("the link's secret stays in the address bar: %q", hash)
	}
	bob.login()
	bob.acceptInvite(token)
	bob.waitPaired("alice")
	alice.waitPaired("bob")
	alice.waitSecure("verified")
	bob.waitSecure("verified")
	_, ac := alice.secureState()
	_, bc := bob.secureState()
	if ac == "" || ac != bc {
		t.Fatalf("codes: alice %q, bob %q", ac, bc)
	}
	// Verified with nothing to do, as README says, and said so beside
	// the code, which is shown still.
	for _, p := range []*person{alice, bob} {
		if text := eval[string](p, `document.getElementById('secure-text').textContent`); text != "End-to-end encrypted, verified by the link: nothing to compare." {
			t.Errorf("%s's page says %q", p.name, text)
		}
	}
	bob.say("over the link, sealed")
	alice.expectSealedMessage("theirs", "over the link, sealed")
	bob.expectSealedMessage("mine", "over the link, sealed")
	alice.say("and back")
	bob.expectSealedMessage("theirs", "and back")
	if n := bt.daemon.Hub.Stats().Messages; n != 0 {
		t.Fatalf("%d plaintext messages relayed between two encrypting pages", n)
	}
}

// TestE2EPageTokenShowsCodes: a pairing made by typing a token is
// encrypted but not verified; both pages show the same code, and once
// each person confirms it matches, it is verified.
func TestE2EPageTokenShowsCodes(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	bob.open(bt.pageURL())
	token := alice.login()
	bob.login()
	bob.connectTo(token)
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	_, ac := alice.secureState()
	_, bc := bob.secureState()
	if len(ac) != len("0000 0000 0000") || ac != bc {
		t.Fatalf("codes: alice %q, bob %q", ac, bc)
	}
	alice.screenshot("unverified")
	for _, p := range []*person{alice, bob} {
		p.do("confirm the codes match", chromedp.Click(chromedp.ID("secure-match")))
		p.waitSecure("verified")
	}
	alice.say("verified by voice")
	bob.expectSealedMessage("theirs", "verified by voice")
}

// TestE2EPageProxySeesNoPlaintext: everything between a browser and the
// server, both ways, read by a proxy with client frames unmasked, holds
// no trace of a message; the message arrives all the same.
func TestE2EPageProxySeesNoPlaintext(t *testing.T) {
	bt := startBrowserTest(t)
	px := startWSProxy(t, bt.daemon.WS, nil)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	bob.open("http://" + px.addr + "/")
	token := alice.login()
	bob.login()
	bob.connectTo(token)
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")

	const secret = "the vault code is 7-3-9-1, do not tell"
	bob.say(secret)
	alice.expectSealedMessage("theirs", secret)
	alice.say(secret + " (echo)")
	bob.expectSealedMessage("theirs", secret+" (echo)")

	frames := px.frames()
	sealed := 0
	for _, f := range frames {
		for _, needle := range []string{secret, "7-3-9-1", "vault code"} {
			if strings.Contains(f, needle) {
				t.Fatalf("the proxy read %q in a frame: %s", needle, f)
			}
		}
		if strings.Contains(f, `"seal"`) || strings.Contains(f, `"sealed"`) {
			sealed++
		}
	}
	// Two messages each way and the handshake: the frames were read.
	if sealed < 6 {
		t.Fatalf("the proxy saw %d sealed frames of %d: it did not read the conversation", sealed, len(frames))
	}
}

// TestE2EPageFlippedByteIsAnError: the server changes one byte of a
// sealed message on its way to the page: the page says a message was
// altered, and shows nothing of it as text; the next message is shown,
// with the loss reported.
func TestE2EPageFlippedByteIsAnError(t *testing.T) {
	bt := startBrowserTest(t)
	var flip sync.Once
	px := startWSProxy(t, bt.daemon.WS, func(payload []byte) [][]byte {
		// A sealed message's envelope starts 0x01 0x04: "AQQ" in base64url.
		at := bytes.Index(payload, []byte(`"data":"AQQ`))
		if at < 0 {
			return [][]byte{payload}
		}
		var out [][]byte
		flip.Do(func() {
			changed := bytes.Clone(payload)
			// A character well inside the ciphertext, changed to another
			// base64url character: the frame is still well formed.
			i := at + len(`"data":"AQQ`) + 20
			if changed[i] == 'A' {
				changed[i] = 'B'
			} else {
				changed[i] = 'A'
			}
			out = [][]byte{changed}
		})
		if out == nil {
			out = [][]byte{payload}
		}
		return out
	})
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	bob.open("http://" + px.addr + "/")
	token := alice.login()
	bob.login()
	bob.connectTo(token)
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")

	alice.say("this one is tampered with")
	e := bob.expectEntry("an altered message error", func(e logEntry) bool { return e.has("error") && e.Code == "e2e_altered" })
	if strings.Contains(e.Text, "tampered") {
		t.Fatalf("the error shows the text: %v", e)
	}
	alice.say("this one is intact")
	bob.expectSealedMessage("theirs", "this one is intact")
	bob.expectEntry("the gap reported", func(e logEntry) bool { return e.has("error") && e.Code == "e2e_missing" })
	if n := bob.countText("this one is tampered with"); n != 0 {
		t.Fatalf("the altered message was shown %d times", n)
	}
}

// TestE2EPageForgedAbortToldToBoth: the server swallows a sealed message
// of bob's and puts an abort in his name in its place, then text of its
// own as bob's. Aborts are not signed; alice's page weighs what one
// says against what bob's page did. One that says bob's browser cannot
// encrypt, from a page that has encrypted, is found forged at once;
// another (the exchange went wrong) once a sealed message of bob's
// comes after it, which a page that aborted never sends. Either way
// alice's page says someone may be interfering, shows none of the
// server's text, and answers with an abort, so that bob's page fails
// too and bob learns his messages are not read. Before, alice's page
// believed the abort (showing the server's text at once, marked
// unencrypted, for "cannot encrypt"), and bob's page went on showing
// the conversation encrypted while alice read none of it. A reload of
// alice's page between the abort and bob's next seal changes nothing
// (before, the reloaded page had forgotten the abort, and the forgery
// went unnoticed).
func TestE2EPageForgedAbortToldToBoth(t *testing.T) {
	for _, tc := range []struct {
		name, reason, abort string
		reload              bool // alice's page is reloaded between the abort and bob's next seal
	}{
		{"cannot_encrypt", "cannot_encrypt", "AQUB", false},
		{"protocol_error", "protocol_error", "AQUE", false},
		{"protocol_error_then_reload", "protocol_error", "AQUE", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bt *browserTest
			if tc.reload {
				bt = startResumeTest(t, 0)
			} else {
				bt = startBrowserTest(t)
			}
			var armed atomic.Bool
			px := startWSProxy(t, bt.daemon.WS, func(payload []byte) [][]byte {
				if !bytes.Contains(payload, []byte(`"data":"AQQ`)) || !armed.CompareAndSwap(true, false) {
					return [][]byte{payload}
				}
				return [][]byte{
					[]byte(`{"type":"sealed","from":"bob","data":"` + tc.abort + `"}`),
					[]byte(`{"type":"message","from":"bob","text":"SERVER WROTE THIS"}`),
				}
			})
			alice, bob := pairEncrypted(bt, "http://"+px.addr+"/", bt.pageURL())
			bob.say("before")
			alice.expectSealedMessage("theirs", "before")

			armed.Store(true)
			bob.say("swallowed")
			alice.waitSecure("failed")
			if tc.reload {
				alice.reloadAndResume()
				alice.waitSecure("failed")
			}
			if tc.reason == "protocol_error" {
				// Believed until bob seals again. After the reload
				// bob's page may have failed already: the resume
				// replays his "swallowed", which the proxy kept from
				// alice, and her page, finding the abort forged,
				// answers. His page then refuses the text, and keeps
				// it in the box.
				bob.typeAndEnter("after the abort")
			}
			alice.expectEntry("the forged abort found", func(e logEntry) bool {
				return e.Code == "e2e_forged_abort" || e.Code == "e2e_failed" && strings.Contains(e.Text, "may be interfering")
			})
			bob.waitSecure("failed")
			for _, text := range []string{"SERVER WROTE THIS", "swallowed", "after the abort"} {
				if n := alice.countText(text); n != 0 {
					t.Errorf("alice's page shows %q%s", text, alice.logDump())
				}
			}
		})
	}
}

// TestE2EPageReplayIsRefused: the server sends a sealed message to the
// page a second time: the page refuses it, and shows the text once.
func TestE2EPageReplayIsRefused(t *testing.T) {
	bt := startBrowserTest(t)
	var once sync.Once
	px := startWSProxy(t, bt.daemon.WS, func(payload []byte) [][]byte {
		out := [][]byte{payload}
		if bytes.Contains(payload, []byte(`"data":"AQQ`)) {
			once.Do(func() { out = append(out, bytes.Clone(payload)) })
		}
		return out
	})
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	bob.open("http://" + px.addr + "/")
	token := alice.login()
	bob.login()
	bob.connectTo(token)
	bob.waitSecure("unverified")

	alice.say("say it once")
	bob.expectSealedMessage("theirs", "say it once")
	bob.expectEntry("a replay refused", func(e logEntry) bool { return e.has("error") && e.Code == "e2e_replayed" })
	alice.say("and the next")
	bob.expectSealedMessage("theirs", "and the next")
	if n := bob.countText("say it once"); n != 1 {
		t.Fatalf("the replayed message was shown %d times", n)
	}
}

// TestE2EPageLeaveWhileDecrypting: the partner's last message, and
// the peer_left right behind it, come while the page is still
// decrypting, as on a slow phone. The message is shown, though the
// pairing ended while it was read (it was dropped silently before); and
// text in the clear that a server slips in between, while the pairing
// still encrypted, is refused as such, though the pairing has ended by
// the time its turn comes (it was shown as a plain message before).
// Altered copies of the message, each refused, keep the page reading.
func TestE2EPageLeaveWhileDecrypting(t *testing.T) {
	bt := startBrowserTest(t)
	var once sync.Once
	seqOf := regexp.MustCompile(`"seq":(\d+)`)
	px := startWSProxy(t, bt.daemon.WS, func(payload []byte) [][]byte {
		out := [][]byte{payload}
		if !bytes.Contains(payload, []byte(`"data":"AQQ`)) {
			return out
		}
		once.Do(func() {
			// Copies with a later counter (the envelope's bytes 2 to
			// 9, base64url characters 3 to 13): not refused unopened
			// as replays, each takes the page a real decryption, off
			// its own thread, before it is refused as altered.
			at := bytes.Index(payload, []byte(`"data":"`)) + len(`"data":"`) + 12
			for range 30 {
				changed := bytes.Clone(payload)
				changed[at] = 'Q'
				out = append(out, changed)
			}
			// Numbered next, where messages are numbered (resume on).
			seq := ""
			if m := seqOf.FindSubmatch(payload); m != nil {
				n, _ := strconv.Atoi(string(m[1]))
				seq = fmt.Sprintf(`,"seq":%d`, n+1)
			}
			out = append(out,
				fmt.Appendf(nil, `{"type":"message","from":"alice","text":"slipped in by the server"%s}`, seq),
				[]byte(`{"type":"peer_left","peer":"alice","reason":"left"}`))
		})
		return out
	})
	alice, bob := pairEncrypted(bt, bt.pageURL(), "http://"+px.addr+"/")

	// Bob's page decrypts as a slow phone does: each decryption waits
	// first for 500 of the page's tasks to pass (a timer would do, but
	// a page in the background has its timers slowed to one a second).
	// The altered copies keep it reading while the text and the leave
	// come.
	eval[bool](bob, `(() => {
		const decrypt = SubtleCrypto.prototype.decrypt;
		const pause = (n) => new Promise((done) => {
			const ch = new MessageChannel();
			ch.port1.onmessage = () => (--n > 0 ? ch.port2.postMessage(0) : done());
			ch.port2.postMessage(0);
		});
		SubtleCrypto.prototype.decrypt = function (...args) {
			return pause(500).then(() => decrypt.apply(this, args));
		};
		return true;
	})()`)
	alice.say("a sealed one")
	bob.expectSealedMessage("theirs", "a sealed one")
	bob.expectEntry("the slipped-in text refused", func(e logEntry) bool { return e.has("error") && e.Code == "e2e_plaintext_refused" })
	if n := bob.countText("slipped in by the server"); n != 0 {
		t.Fatalf("text in the clear slipped into an encrypted conversation was shown %d times", n)
	}
	bob.expectEntry("alice's leaving", func(e logEntry) bool { return e.Kind == "peer_left" })
}

// TestE2EPageLeaveAfterMessagesKeepsThem: in an encrypted
// conversation, messages sent and Leave clicked in the same instant
// reach the partner, then the leave: the leave waits behind the
// sealing. (Before, it overtook them, and every one was refused as
// not sent.)
func TestE2EPageLeaveAfterMessagesKeepsThem(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := pairEncrypted(bt, bt.pageURL(), bt.pageURL())

	const n = 15
	eval[bool](bob, fmt.Sprintf(`(() => {
		const box = document.getElementById('message');
		const form = document.getElementById('compose');
		for (let i = 1; i <= %d; i++) {
			box.value = 'quick ' + i;
			form.requestSubmit();
		}
		document.getElementById('leave').click();
		return true;
	})()`, n))
	alice.expectEntry("bob's leaving", func(e logEntry) bool { return e.Kind == "peer_left" })
	for i := 1; i <= n; i++ {
		alice.expectSealedMessage("theirs", fmt.Sprintf("quick %d", i))
	}
	bob.expectEntry("the leaving", func(e logEntry) bool { return e.Kind == "left" })
	for _, e := range bob.log() {
		if e.has("error") || strings.Contains(e.Text, "not sent") {
			t.Errorf("bob is told %v%s", e, bob.logDump())
		}
	}
}

// TestE2EPageSealedAfterTheEndShownNotSent: a text whose sealing is
// still under way when the partner leaves (a slow device, or the
// partner's leave arriving at that moment) is shown not sent, not
// dropped without a word.
func TestE2EPageSealedAfterTheEndShownNotSent(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := pairEncrypted(bt, bt.pageURL(), bt.pageURL())

	// Bob's page seals nothing until the test lets it.
	eval[bool](bob, `(() => {
		const encrypt = SubtleCrypto.prototype.encrypt;
		let release;
		const gate = new Promise((r) => { release = r; });
		window.releaseSeal = release;
		SubtleCrypto.prototype.encrypt = function (...args) {
			return gate.then(() => encrypt.apply(this, args));
		};
		return true;
	})()`)
	bob.say("my last words")
	alice.do("leave", chromedp.Click(chromedp.ID("leave")))
	bob.expectEntry("alice's leaving", func(e logEntry) bool { return e.Kind == "peer_left" })
	eval[bool](bob, `(window.releaseSeal(), true)`)
	bob.expectEntry("the text shown not sent", func(e logEntry) bool {
		return e.has("msg", "mine", "failed") && e.Text == "my last words"
	})
	if n := alice.countText("my last words"); n != 0 {
		t.Fatalf("alice was shown the message %d times", n)
	}
}

// TestE2EPageWithNetcat: a page paired with a real nc says, before any
// message, that the server can read the conversation, and talks in
// plaintext; a page that opened a link with a secret and finds a
// terminal at the other end sends nothing until the person agrees.
func TestE2EPageWithNetcat(t *testing.T) {
	bt := startBrowserTest(t)
	nc := startNC(t, bt.daemon.TCP)
	nc.send("/login bob")
	bobToken := nc.expectToken()

	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	aliceToken := alice.login()
	nc.send("/connect " + aliceToken)
	nc.expect("* you are connected with alice")
	alice.waitPaired("bob")
	alice.waitSecure("plain")
	e := alice.expectEntry("the plaintext warning", func(e logEntry) bool { return e.Kind == "plaintext" })
	if !strings.Contains(e.Text, "bob uses a terminal: the server can read this conversation") {
		t.Fatalf("warning: %v", e)
	}
	alice.say("plain for the terminal")
	nc.expect("<alice> plain for the terminal")
	nc.send("/leave")
	nc.expect("* you left alice")

	// carol opens a link with a secret that leads to bob's terminal.
	carol := bt.newPerson("carol")
	carol.open(bt.pageURL() + "#" + bobToken + ".oKGio6SlpqeoqaqrrK2urw")
	carol.login()
	carol.acceptInvite(bobToken)
	nc.expect("* carol is connected")
	carol.waitSecure("plain")
	carol.typeAndEnter("not in the clear unasked")
	carol.expectEntry("a refusal to send plaintext", func(e logEntry) bool { return e.Code == "e2e_not_sent" })
	if n := bt.daemon.Hub.Stats().Messages; n != 1 {
		t.Fatalf("%d plaintext messages relayed, want alice's one", n)
	}
	carol.do("agree to send without encryption", chromedp.Click(chromedp.ID("secure-plain")))
	// The first line bob's terminal gets from carol is the one refused,
	// sent once she agreed.
	nc.expect("<carol> not in the clear unasked")
	carol.say("sent after agreeing")
	nc.expect("<carol> sent after agreeing")
}

// linkToTerminal starts a browser test in which carol's page opens a
// link with a secret to bob, who is on a terminal: paired, the page
// finds it cannot encrypt, and says so.
func linkToTerminal(t *testing.T) (*browserTest, *enginetest.LineClient, *person) {
	t.Helper()
	return linkToTerminalOn(t, startBrowserTest(t))
}

// linkToTerminalOn is linkToTerminal with a browser test of the
// caller's.
func linkToTerminalOn(t *testing.T, bt *browserTest) (*browserTest, *enginetest.LineClient, *person) {
	t.Helper()
	bob := bt.daemon.DialLine(t).Login("bob")
	carol := bt.newPerson("carol")
	carol.open(bt.pageURL() + "#" + bob.Token + ".oKGio6SlpqeoqaqrrK2urw")
	carol.login()
	carol.acceptInvite(bob.Token)
	bob.Expect(`^\* carol is connected`)
	carol.waitPaired("bob")
	carol.waitSecure("plain")
	return bt, bob, carol
}

// TestE2EPageRefusedTextGoesOnAgreeing: carol opens a link with a
// secret, and bob, whose token it names, is on a terminal. The page
// refuses what carol types until she agrees to send without
// encryption, and says that the button sends it; it keeps the text in
// the box, and the click sends it, so she need not type it again.
// Before, the box was emptied as the text was refused, and the click
// sent nothing: the message was lost.
func TestE2EPageRefusedTextGoesOnAgreeing(t *testing.T) {
	bt, bob, carol := linkToTerminal(t)

	const text = "hello bob, once I agree"
	carol.typeAndEnter(text)
	e := carol.expectEntry("the refusal", func(e logEntry) bool { return e.Code == "e2e_not_sent" })
	if !strings.Contains(e.Text, "It is still in the message box: choose “Send without encryption” to send it anyway.") {
		t.Errorf("the refusal says %q", e.Text)
	}
	carol.waitJS("the refused text kept in the box", fmt.Sprintf(`document.getElementById('message').value === %q`, text))
	if n := bt.daemon.Hub.Stats().Messages; n != 0 {
		t.Fatalf("%d plaintext messages relayed before carol agreed", n)
	}

	carol.do("send without encryption", chromedp.Click(chromedp.ID("secure-plain")))
	bob.Expect(`^<carol> ` + regexp.QuoteMeta(text) + `$`)
	carol.waitJS("the box emptied once it is sent", `document.getElementById('message').value === ''`)
	carol.expectMessage("mine", "You", text)
	if n := carol.countText(text); n != 1 {
		t.Errorf("carol's page shows the text %d times%s", n, carol.logDump())
	}
	carol.say("and the next one")
	bob.Expect(`^<carol> and the next one$`)
}

// TestE2EPageReloadKeepsThePromise: carol opened a link that promised
// encryption, to bob on a terminal, and her page sends nothing until she
// agrees. She reloads the tab: the reloaded page still sends nothing
// until she agrees, and asks again. Before, the reload forgot the link's
// secret and with it the promise: what she typed next went to bob in the
// clear, unasked.
func TestE2EPageReloadKeepsThePromise(t *testing.T) {
	_, bob, carol := linkToTerminalOn(t, startResumeTest(t, 0))
	reload := func() {
		t.Helper()
		carol.reloadAndResume()
		bob.Expect(`^\* carol lost the connection`)
		bob.Expect(`^\* carol is back$`)
	}
	reload()
	carol.typeAndEnter("first words after the reload")
	e := carol.expectEntry("the refusal", func(e logEntry) bool { return e.Code == "e2e_not_sent" })
	if !strings.Contains(e.Text, "Send without encryption") {
		t.Errorf("the refusal says %q", e.Text)
	}
	if l, err := bob.TryLine(500 * time.Millisecond); err == nil {
		t.Fatalf("bob read %q before carol agreed", l)
	}
	// Agreeing outlives a reload in its turn.
	carol.do("send without encryption", chromedp.Click(chromedp.ID("secure-plain")))
	bob.Expect(`^<carol> first words after the reload$`)
	reload()
	carol.say("and after another")
	bob.Expect(`^<carol> and after another$`)
}

// TestE2EPageRefusedTextChangedIsNotSent: the click that agrees sends
// the refused text only if the box still holds it as it was refused:
// what carol has changed since is hers to send, with Send.
func TestE2EPageRefusedTextChangedIsNotSent(t *testing.T) {
	bt, bob, carol := linkToTerminal(t)

	carol.typeAndEnter("first try")
	carol.expectEntry("the refusal", func(e logEntry) bool { return e.Code == "e2e_not_sent" })
	carol.do("change the text", chromedp.Evaluate[chromedp.Void](`document.getElementById('message').value = 'second thoughts'`))
	carol.do("send without encryption", chromedp.Click(chromedp.ID("secure-plain")))
	carol.expectEntry("the agreement", func(e logEntry) bool { return e.Kind == "plaintext_agreed" })
	if v := eval[string](carol, `document.getElementById('message').value`); v != "second thoughts" {
		t.Fatalf("the box holds %q, want the changed text kept", v)
	}
	carol.do("send", chromedp.Click(chromedp.ID("send")))
	bob.Expect(`^<carol> second thoughts$`)
	if n := bt.daemon.Hub.Stats().Messages; n != 1 {
		t.Fatalf("%d plaintext messages relayed, want the one carol sent with Send", n)
	}
}

// netcat is a real nc connected to the daemon's line port.
type netcat struct {
	t     *testing.T
	stdin io.WriteCloser
	lines chan string
}

func startNC(t *testing.T, addr string) *netcat {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(enginetest.ToolPath(t, "nc"), "-N", host, port)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	nc := &netcat{t: t, stdin: stdin, lines: make(chan string, 256)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			nc.lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(nc.lines)
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return nc
}

func (nc *netcat) send(line string) {
	nc.t.Helper()
	if _, err := io.WriteString(nc.stdin, line+"\n"); err != nil {
		nc.t.Fatalf("nc: %v", err)
	}
}

// expect reads lines until one is want, failing on a line from a person
// that is not it (a message the terminal should not have got) or after
// waitTimeout.
func (nc *netcat) expect(want string) {
	nc.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case l, ok := <-nc.lines:
			if !ok {
				nc.t.Fatalf("nc: closed before %q", want)
			}
			if l == want {
				return
			}
			if strings.HasPrefix(l, "<") {
				nc.t.Fatalf("nc: got %q, want %q", l, want)
			}
		case <-timeout:
			nc.t.Fatalf("nc: no %q", want)
		}
	}
}

// expectToken reads lines until the welcome and returns its token.
func (nc *netcat) expectToken() string {
	nc.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case l := <-nc.lines:
			if _, tok, ok := strings.Cut(l, "your token is "); ok && len(tok) >= 32 {
				return tok[:32]
			}
		case <-timeout:
			nc.t.Fatal("nc: no welcome")
		}
	}
}

// wsProxy forwards TCP connections to the daemon's web port. On a
// WebSocket connection it reads the frames both ways: a client frame is
// unmasked and recorded, then passed on as it came; a server text frame
// is recorded and handed to mangle (nil: passed on), which returns the
// payloads to send in its place.
type wsProxy struct {
	addr   string
	mangle func([]byte) [][]byte
	mu     sync.Mutex
	seen   []string
}

func startWSProxy(t *testing.T, target string, mangle func([]byte) [][]byte) *wsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &wsProxy{addr: ln.Addr().String(), mangle: mangle}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, s)
			connsMu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); px.pipe(c, s, true); s.Close() }()
			go func() { defer wg.Done(); px.pipe(s, c, false); c.Close() }()
		}
	}()
	return px
}

func (px *wsProxy) frames() []string {
	px.mu.Lock()
	defer px.mu.Unlock()
	return append([]string(nil), px.seen...)
}

func (px *wsProxy) record(b []byte) {
	px.mu.Lock()
	px.seen = append(px.seen, string(b))
	px.mu.Unlock()
}

// pipe copies from src to dst. The HTTP head is passed on as it is; if
// it upgrades to WebSocket, the frames after it are read one by one.
func (px *wsProxy) pipe(src, dst net.Conn, fromClient bool) {
	r := bufio.NewReader(src)
	var head bytes.Buffer
	for {
		line, err := r.ReadBytes('\n')
		head.Write(line)
		if err != nil {
			dst.Write(head.Bytes())
			return
		}
		if bytes.Equal(line, []byte("\r\n")) {
			break
		}
	}
	if _, err := dst.Write(head.Bytes()); err != nil {
		return
	}
	if !bytes.Contains(bytes.ToLower(head.Bytes()), []byte("upgrade: websocket")) {
		// A page or an asset: pass the rest through.
		io.Copy(dst, r)
		return
	}
	for {
		fin, op, key, payload, err := readFrame(r)
		if err != nil {
			return
		}
		plain := bytes.Clone(payload)
		if key != nil {
			for i := range plain {
				plain[i] ^= key[i%4]
			}
		}
		px.record(plain)
		out := [][]byte{payload}
		if !fromClient && op == 1 && fin && px.mangle != nil {
			out = px.mangle(payload)
		}
		// In one write, as a server's frames written together come:
		// the page may read them in one go.
		var batch []byte
		for _, p := range out {
			batch = append(append(batch, frameHead(fin, op, key, len(p))...), p...)
		}
		if _, err := dst.Write(batch); err != nil {
			return
		}
	}
}

// readFrame reads one WebSocket frame (RFC 6455 section 5.2); payload is
// as sent, masked when key is not nil.
func readFrame(r *bufio.Reader) (fin bool, op byte, key []byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 {
		key = make([]byte, 4)
		if _, err = io.ReadFull(r, key); err != nil {
			return
		}
	}
	if n > 1<<20 {
		return fin, op, key, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(r, payload)
	return
}

// frameHead writes a frame's head for a payload of n bytes.
func frameHead(fin bool, op byte, key []byte, n int) []byte {
	b := []byte{op, 0}
	if fin {
		b[0] |= 0x80
	}
	switch {
	case n < 126:
		b[1] = byte(n)
	case n < 1<<16:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if key != nil {
		b[1] |= 0x80
		b = append(b, key...)
	}
	return b
}

// TestE2EPageWithGoClient: a client written in Go from PROTOCOL.md and
// E2E.md (proto/e2e over the JSON protocol, no browser) opens the page's
// share link as a program would, pairs through the daemon, and talks
// with the page: both arrive at the same code, the link verifies the
// keys, and each reads what the other sealed.
func TestE2EPageWithGoClient(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	alice.login()
	token, secret := linkParts(t, bt, alice.shareLink())
	secretBytes, err := base64.RawURLEncoding.DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}

	bob := bt.daemon.DialWS(t).Login("bob")
	bob.Connect(token)
	if ev := bob.Expect("paired"); ev["peer"] != "alice" || ev["initiator"] != true || ev["peer_proto"] != "json" {
		t.Fatalf("paired: %v", ev)
	}
	s, out, err := e2e.Start(e2e.Config{
		Role: e2e.Initiator, Token: token, InitiatorName: "bob", ResponderName: "alice", LinkSecret: secretBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	seal := func(envs [][]byte) {
		for _, env := range envs {
			bob.Send(map[string]string{"type": "seal", "data": e2e.EncodeData(env)})
		}
	}
	// next reads frames until a sealed one, and returns what it holds.
	next := func() e2e.Result {
		t.Helper()
		for {
			ev := bob.Next()
			if ev["type"] != "sealed" {
				continue
			}
			env, err := e2e.DecodeData(ev["data"].(string))
			if err != nil {
				t.Fatalf("sealed frame %v: %v", ev, err)
			}
			res, err := s.Receive(env)
			if err != nil {
				t.Fatalf("the page's envelope: %v", err)
			}
			seal(res.Out)
			return res
		}
	}
	seal(out)
	for s.State() != e2e.StateConfirmed {
		next()
	}
	if !s.LinkSecretUsed() {
		t.Fatal("the Go side did not use the link's secret")
	}
	alice.waitSecure("verified")
	if _, code := alice.secureState(); code != s.Code() {
		t.Fatalf("codes: page %q, Go %q", code, s.Code())
	}
	env, err := s.Seal("from a Go client")
	if err != nil {
		t.Fatal(err)
	}
	seal([][]byte{env})
	alice.expectSealedMessage("theirs", "from a Go client")
	alice.say("from the page")
	if res := next(); res.Kind != e2e.KindMessage || res.Text != "from the page" || res.Gap != 0 {
		t.Fatalf("the Go client read %+v", res)
	}
}

// linkPairResumable starts a daemon with session resume on, where bob's
// page opens the link alice's page shares: their talk is encrypted and
// verified.
func linkPairResumable(t *testing.T) (bt *browserTest, alice, bob *person) {
	t.Helper()
	chromium := setUpBrowserTest(t)
	bt = launchBrowser(t, chromium, enginetest.Start(t, nil))
	alice, bob = bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	token := alice.login()
	bob.open(alice.shareLink())
	bob.login()
	bob.acceptInvite(token)
	alice.waitSecure("verified")
	bob.waitSecure("verified")
	return bt, alice, bob
}

// TestE2EPageReloadKeepsEncryption: a page reloaded in the middle of an
// encrypted conversation resumes its session and goes on under the same
// keys, from what it kept in sessionStorage, with nothing new shown to
// the person: still verified, and the messages sealed.
func TestE2EPageReloadKeepsEncryption(t *testing.T) {
	bt, alice, bob := linkPairResumable(t)
	_, code := bob.secureState()
	alice.say("before the reload")
	bob.expectSealedMessage("theirs", "before the reload")

	bob.do("reload", chromedp.Reload())
	bob.waitJS("the page is online", `document.getElementById('state').dataset.state === 'online'`)
	bob.waitJS("the reloaded page back with alice", `document.getElementById('peer').textContent === 'Talking with alice'`)
	bob.waitSecure("verified")
	if _, again := bob.secureState(); again != code {
		t.Fatalf("after the reload the code is %q, before it %q", again, code)
	}
	alice.say("after the reload")
	bob.expectSealedMessage("theirs", "after the reload")
	bob.say("still sealed")
	alice.expectSealedMessage("theirs", "still sealed")
	if n := bt.daemon.Hub.Stats().Messages; n != 0 {
		t.Fatalf("%d plaintext messages relayed", n)
	}
}

// TestE2EPageKeysLostToldToPartner: bob's page could not keep the
// pairing's keys (its storage was full), and is reloaded. The page has
// none, and alice's still holds them: an exchange begun anew fails, and
// both pages said someone between them may be interfering. Each says
// instead what happened, and neither sends in the clear unasked.
func TestE2EPageKeysLostToldToPartner(t *testing.T) {
	bt, alice, bob := linkPairResumable(t)
	bob.fillStorage()
	alice.say("while bob's storage is full")
	bob.expectSealedMessage("theirs", "while bob's storage is full")
	bob.do("reload", chromedp.Reload())
	bob.waitJS("the reloaded page back with alice", `document.getElementById('peer').textContent === 'Talking with alice'`)

	bob.expectHonestFailure("this tab lost the conversation’s keys")
	alice.expectHonestFailure("bob’s tab lost the keys of this conversation")
	alice.typeAndEnter("unasked")
	alice.expectEntry("the text not sent", func(e logEntry) bool { return e.Code == "e2e_not_sent" })
	if n := bt.daemon.Hub.Stats().Messages; n != 0 {
		t.Fatalf("%d plaintext messages relayed", n)
	}
}

// securePair starts a daemon (resume off) and pairs alice's page with
// bob's by token: their talk is encrypted, not verified.
func securePair(t *testing.T) (alice, bob *person) {
	t.Helper()
	bt := startBrowserTest(t)
	alice, bob = bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, bt.pageURL(), bt.pageURL())
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	return alice, bob
}

// TestE2EPageCodesDifferToldToPartner: bob confirms that the codes
// match; alice finds they differ. bob's page, which had the keys
// confirmed, is told that alice found the codes differ. Before, it said
// "Encryption failed: The keys did not match", which is not what
// happened on either page, with a capital after the colon.
func TestE2EPageCodesDifferToldToPartner(t *testing.T) {
	alice, bob := securePair(t)
	bob.do("the codes match", chromedp.Click(chromedp.ID("secure-match")))
	bob.waitSecure("verified")
	alice.do("they differ", chromedp.Click(chromedp.ID("secure-differ")))
	alice.waitSecure("failed")
	if text := eval[string](alice, `document.getElementById('secure-text').textContent`); text != "Encryption failed: the codes differ: someone between you may be reading this conversation." {
		t.Errorf("alice's page says %q", text)
	}

	bob.waitSecure("failed")
	const told = "Encryption failed: alice found that the codes differ (or alice’s page could not confirm the keys): someone between you may be interfering."
	if text := eval[string](bob, `document.getElementById('secure-text').textContent`); text != told {
		t.Errorf("bob's page says %q, want %q", text, told)
	}
	e := bob.expectEntry("the failure in the log", func(e logEntry) bool { return e.Code == "e2e_failed" })
	if !strings.HasPrefix(e.Text, told+" ") {
		t.Errorf("bob's log says %q, want it to begin %q", e.Text, told)
	}
}

// TestE2EPageUnreadInTitle: while the tab is hidden, each message from
// the partner counts in the title, "(2) duet", sealed ones as much as
// plaintext; showing the tab again clears the count.
func TestE2EPageUnreadInTitle(t *testing.T) {
	alice, bob := securePair(t)

	// Headless Chromium shows every tab; bob's is made to read as hidden,
	// as a tab in the background does.
	bob.do("hide the tab", chromedp.Evaluate[chromedp.Void](`Object.defineProperty(document, 'hidden', { configurable: true, get: () => true })`))
	alice.say("are you there?")
	alice.say("hello?")
	bob.expectSealedMessage("theirs", "hello?")
	if title := eval[string](bob, `document.title`); title != "(2) duet" {
		t.Errorf("bob's hidden tab, with two sealed messages unread, is titled %q", title)
	}
	bob.do("show the tab", chromedp.Evaluate[chromedp.Void](`delete document.hidden; document.dispatchEvent(new Event('visibilitychange'))`))
	bob.waitJS("the title without a count", `document.title === 'duet'`)
}

// TestE2EPageWaitingNotLostSilently: what the person types while the
// conversation is being secured waits for the keys, as the page says;
// should the pairing end first, those messages are shown not sent,
// rather than vanish without a word.
func TestE2EPageWaitingNotLostSilently(t *testing.T) {
	bt := startBrowserTest(t)
	// No sealed frame reaches bob: his side of the exchange never ends.
	px := startWSProxy(t, bt.daemon.WS, func(payload []byte) [][]byte {
		if bytes.Contains(payload, []byte(`"type":"sealed"`)) {
			return nil
		}
		return [][]byte{payload}
	})
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, bt.pageURL(), "http://"+px.addr+"/")
	bob.waitSecure("securing")
	bob.say("hello, are we secure yet?")
	bob.expectEntry("the waiting notice", func(e logEntry) bool { return e.Kind == "e2e_waiting" })

	bob.do("leave", chromedp.Click(chromedp.ID("leave")))
	bob.expectEntry("a left notice", func(e logEntry) bool { return e.Kind == "left" })
	bob.expectEntry("the waiting message shown not sent", func(e logEntry) bool {
		return e.has("msg", "mine", "failed") && e.Text == "hello, are we secure yet?"
	})
	if n := alice.countText("hello, are we secure yet?"); n != 0 {
		t.Fatalf("alice was shown the message %d times", n)
	}
}

// TestE2EPageBrokenTextKept: a message holding half of a surrogate pair
// (an emoji cut in two), which has no UTF-8 form, is refused by the page
// with a word, and stays in the box to be mended, in an encrypted
// conversation as in a plain one. (Sealing refused it after the box was
// emptied: the text was gone.)
func TestE2EPageBrokenTextKept(t *testing.T) {
	alice, bob := securePair(t)
	// In JavaScript: Go has no string for half a surrogate pair.
	const broken = `'cut in two: \ud83d'`
	alice.do("send broken text", chromedp.Evaluate[chromedp.Void](`
		document.getElementById('message').value = `+broken+`;
		document.getElementById('compose').requestSubmit();`))
	alice.expectEntry("an invalid_utf8 error", func(e logEntry) bool { return e.Code == "invalid_utf8" })
	if kept := eval[bool](alice, `document.getElementById('message').value === `+broken); !kept {
		t.Fatalf("alice's message box no longer holds the text%s", alice.logDump())
	}
	alice.do("empty the box", chromedp.Evaluate[chromedp.Void](`document.getElementById('message').value = ''`))
	talk(alice, bob, "mended: 🙂")
}

// TestE2EPageLogoutShowsNoWaitingText: what alice typed while the
// conversation was being secured is not shown, as not sent, on the
// login screen her logout leaves for the next person.
func TestE2EPageLogoutShowsNoWaitingText(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	alice.login()
	// bob, a Go client, never answers the exchange.
	connectByToken(t, bt.daemon, alice)
	alice.waitPaired("bob")
	alice.waitSecure("securing")
	alice.say("private words typed while securing")
	alice.expectEntry("the waiting notice", func(e logEntry) bool { return e.Kind == "e2e_waiting" })
	alice.do("log out", chromedp.Click(chromedp.ID("logout")))
	alice.waitJS("the login form", `!document.getElementById('login-view').hidden`)
	alice.expectEntry("the logged out notice", func(e logEntry) bool { return e.Text == "Logged out." })
	alice.do("settle", chromedp.Sleep(500*time.Millisecond))
	if n := alice.countText("private words typed while securing"); n != 0 {
		t.Errorf("the login screen shows alice's message %d times%s", n, alice.logDump())
	}
}

// TestE2EPageInsecurePartnerPlaintextShown: bob's page is not a secure
// context (plain http from a name other than localhost), so it tells
// alice's page it cannot encrypt and sends in the clear at once. alice's
// page says encryption failed and shows his messages marked unencrypted;
// it had refused them as text injected into an encrypted conversation,
// and they were lost while bob's page showed them sent. bob's page does
// not say he chose to send without encryption: he was not asked.
func TestE2EPageInsecurePartnerPlaintextShown(t *testing.T) {
	chromium := setUpBrowserTest(t)
	d := enginetest.Start(t, nil)
	bt := launchBrowserWith(t, chromium, d, chromedp.Flag("host-resolver-rules", "MAP insecure.test 127.0.0.1"))
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	aliceToken := alice.login()

	bob := bt.newPerson("bob")
	bob.open(strings.Replace(bt.pageURL(), "127.0.0.1", "insecure.test", 1))
	bob.login()
	if eval[bool](bob, `window.isSecureContext`) {
		t.Fatal("bob's page is a secure context")
	}
	bob.connectTo(aliceToken)
	bob.waitPaired("alice")
	bob.waitSecure("plain")
	if text := eval[string](bob, `document.getElementById('secure-text').textContent`); strings.Contains(text, "You chose") {
		t.Errorf("bob's #secure says he chose: %q", text)
	}
	bob.say("hello alice, from an http page")
	alice.waitSecure("failed")
	e := alice.expectEntry("bob's message", func(e logEntry) bool {
		return e.has("msg", "theirs") && e.Text == "hello alice, from an http page"
	})
	if !e.has("unencrypted") {
		t.Errorf("bob's message is not marked unencrypted: %v", e)
	}
	alice.expectNoCode("e2e_plaintext_refused")
	// Chromium's own word that it ignores a header meant for a secure
	// context is the browser's, not the page's.
	for _, problem := range bob.takeProblems() {
		if !strings.Contains(problem, "Cross-Origin-Opener-Policy") {
			t.Errorf("bob: the page reported %s", problem)
		}
	}
}

// TestE2EPageRefusedPlaintextShownOnAgreeing: bob's page aborts the
// exchange (the codes differ, say) and goes on in the clear; alice has
// not agreed to. His plaintext is held, not shown, until she chooses to
// send without encryption: then it is shown, marked unencrypted. It was
// dropped for good before.
func TestE2EPageRefusedPlaintextShownOnAgreeing(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	alice.login()
	bob := pairByLink(t, bt.daemon, alice)
	bob.sealEnvs([][]byte{bob.s.Abort(e2e.ReasonHandshakeFailed)})
	alice.waitSecure("failed")
	// The link's secret proved the keys: there was no code to find
	// different. The words follow "Encryption failed: " in lower case.
	if text := eval[string](alice, `document.getElementById('secure-text').textContent`); text != "Encryption failed: the keys did not match: someone between you may be interfering." {
		t.Errorf("alice's page says %q", text)
	}
	bob.ws.Say("said before alice agreed")
	alice.expectEntry("the held notice", func(e logEntry) bool { return e.Code == "e2e_plaintext_held" })
	if n := alice.countText("said before alice agreed"); n != 0 {
		t.Fatalf("shown before alice agreed, %d times%s", n, alice.logDump())
	}
	alice.do("send without encryption", chromedp.Click(chromedp.ID("secure-plain")))
	e := alice.expectEntry("bob's held message", func(e logEntry) bool {
		return e.has("msg", "theirs") && e.Text == "said before alice agreed"
	})
	if !e.has("unencrypted") {
		t.Errorf("bob's message is not marked unencrypted: %v", e)
	}
	bob.ws.Say("said after")
	alice.expectMessage("theirs", "bob", "said after")
	if n := alice.countText("said before alice agreed"); n != 1 {
		t.Errorf("bob's held message is shown %d times%s", n, alice.logDump())
	}
}

// TestE2EPageStaleLinkSaysWhatToDo: carol opens alice's link while
// alice talks with bob on a terminal; alice's page makes a new link
// after that pairing (bob could only paste hers into /connect, secret
// and all), so once bob leaves, carol's connect, with the link she
// holds, cannot be secured. Both pages say why and what to do: carol
// asks for alice's current link; alice sends it. Before, both said
// only that the link was not one alice's page made, as if someone
// between them forged it.
func TestE2EPageStaleLinkSaysWhatToDo(t *testing.T) {
	bt := startBrowserTest(t)
	alice, carol := bt.newPerson("alice"), bt.newPerson("carol")
	alice.open(bt.pageURL())
	token := alice.login()
	carol.open(alice.shareLink())
	carol.login()
	bob := bt.daemon.DialLine(t).Login("bob")
	bob.Send("/connect " + token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.waitPaired("bob")
	bob.Send("/leave")
	bob.Expect(`^\* you left alice$`)

	carol.acceptInvite(token)
	carol.waitPaired("alice")
	alice.waitPaired("carol")
	carol.waitSecure("failed")
	alice.waitSecure("failed")
	carol.expectEntry("what to do", func(e logEntry) bool {
		return e.Code == "e2e_failed" && strings.Contains(e.Text, "alice’s page no longer knows the link you used") &&
			strings.Contains(e.Text, "Ask alice for their current link")
	})
	alice.expectEntry("what to do", func(e logEntry) bool {
		return e.Code == "e2e_failed" && strings.Contains(e.Text, "carol used a link of yours this page no longer knows") &&
			strings.Contains(e.Text, "Send carol your current link")
	})

	// Carol does as told, with alice's token alone: the secret alice's
	// page no longer knows is dropped with the failure, so the pairing
	// is secured, not verified. Before, the page kept it for the token,
	// and every connect failed the same way until a reload.
	carol.do("leave", chromedp.Click(chromedp.ID("leave")))
	alice.waitJS("carol gone", `document.getElementById('peer').textContent === 'Not connected to anyone'`)
	carol.connectTo(token)
	carol.waitPaired("alice")
	alice.waitPaired("carol")
	carol.waitSecure("unverified")
	alice.waitSecure("unverified")
}
